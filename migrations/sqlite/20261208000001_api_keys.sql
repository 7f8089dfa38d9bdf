-- API keys of the `/v1` HTTP API. Only a SHA-256 digest of each key is kept
-- (keys are 32 random bytes, so a fast hash is enough); `prefix` is the key's
-- public part, shown in lists and used to find the row, after which the
-- digests are compared in constant time. A revoked key stays listed; its name
-- can be given to a new key.
CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('ingest', 'read', 'admin')),
    prefix       TEXT NOT NULL UNIQUE,
    key_hash     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
