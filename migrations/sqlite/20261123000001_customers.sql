-- Customers, their interactions and the suppression list.
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC) on both backends,
-- so one SQL text compares and offsets them on SQLite and PostgreSQL alike.

CREATE TABLE customers (
    id          INTEGER PRIMARY KEY,
    email       TEXT    NOT NULL UNIQUE,
    external_id TEXT    UNIQUE,
    first_name  TEXT,
    last_name   TEXT,
    status      TEXT    NOT NULL DEFAULT 'subscribed'
                CHECK (status IN ('subscribed', 'unsubscribed', 'bounced', 'complained')),
    timezone    TEXT,
    attributes  TEXT    NOT NULL DEFAULT '{}' CHECK (json_type(attributes) = 'object'),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE interactions (
    id          INTEGER PRIMARY KEY,
    -- No foreign key: interactions are a high-volume append-only log, and every
    -- writer takes the id from customers (or from a delivery) in the same step.
    customer_id INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    occurred_at INTEGER NOT NULL,
    campaign    TEXT,
    step        TEXT,
    delivery_id INTEGER,
    -- the source system's event id: re-importing the same event changes nothing
    external_id TEXT,
    -- a JSON object; checked by every writer (a CHECK would parse each row again)
    data        TEXT    NOT NULL DEFAULT '{}'
);

-- Only imported events carry an external id: a partial index skips the rest.
CREATE UNIQUE INDEX interactions_external_id ON interactions (external_id) WHERE external_id IS NOT NULL;

-- "did customer C have kind K since T"
CREATE INDEX interactions_customer_kind_time ON interactions (customer_id, kind, occurred_at);
-- "which customers had kind K since T"
CREATE INDEX interactions_kind_time_customer ON interactions (kind, occurred_at, customer_id);

CREATE TABLE suppressions (
    email      TEXT    PRIMARY KEY,
    reason     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
