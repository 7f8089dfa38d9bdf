-- Keys Herald generates for itself when the operator configured none: the
-- tracking-token secret of a fresh SQLite demo, for example. A configured
-- `secret` always takes precedence.
CREATE TABLE generated_keys (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
