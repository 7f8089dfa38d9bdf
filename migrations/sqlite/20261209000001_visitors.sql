-- People the `/v1` API has heard of who are not customers yet: an anonymous
-- visitor (a Segment `anonymousId`), or a `userId` whose identify with an
-- email has not arrived. Their events wait in `visitor_events` and move to
-- `interactions` in the transaction that links them to a customer; the visitor
-- row is then deleted. `key` is the visitor's first identity ("a:<anonymousId>"
-- or "u:<userId>"), so a writer knows it before inserting.
CREATE TABLE visitors (
    key        TEXT   PRIMARY KEY,
    traits     TEXT   NOT NULL DEFAULT '{}' CHECK (json_type(traits) = 'object'),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Every anonymousId (and every userId not kept in customers.external_id) the
-- API has seen, and whose it is: a visitor's, or, once linked, a customer's.
-- An erased customer's identities go with the customer.
CREATE TABLE identities (
    kind        TEXT   NOT NULL CHECK (kind IN ('anonymous', 'user')),
    value       TEXT   NOT NULL,
    visitor     TEXT   REFERENCES visitors (key) ON DELETE CASCADE,
    customer_id INTEGER REFERENCES customers (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, value),
    CHECK ((visitor IS NULL) <> (customer_id IS NULL))
);
CREATE INDEX identities_visitor ON identities (visitor) WHERE visitor IS NOT NULL;
CREATE INDEX identities_customer ON identities (customer_id) WHERE customer_id IS NOT NULL;

-- A visitor's events, as they will be in `interactions`. `external_id` is the
-- Segment messageId: a retried call adds nothing, here or after the move.
CREATE TABLE visitor_events (
    id          INTEGER PRIMARY KEY,
    visitor     TEXT   NOT NULL REFERENCES visitors (key) ON DELETE CASCADE,
    kind        TEXT   NOT NULL,
    occurred_at INTEGER NOT NULL,
    external_id TEXT,
    data        TEXT   NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX visitor_events_external_id ON visitor_events (external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX visitor_events_visitor ON visitor_events (visitor);
