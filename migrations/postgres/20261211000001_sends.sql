-- Transactional sends (`POST /v1/send`).
--
-- `entries.data` is what the call handed the template as `data`.
ALTER TABLE entries ADD COLUMN data JSONB CHECK (data IS NULL OR jsonb_typeof(data) = 'object');

-- One row per accepted call: the message's public id, and the caller's
-- Idempotency-Key, unique per API key, so the same key never sends twice
-- (the row is written in the transaction that queues the message). The hash
-- of the request tells a retry from a different request reusing the key.
CREATE TABLE sends (
    id              TEXT   PRIMARY KEY,
    api_key_id      BIGINT NOT NULL REFERENCES api_keys (id),
    idempotency_key TEXT   NOT NULL,
    request_hash    TEXT   NOT NULL,
    campaign        TEXT   NOT NULL,
    customer_id     BIGINT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    delivery_id     BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    UNIQUE (api_key_id, idempotency_key)
);
CREATE INDEX sends_customer ON sends (customer_id);
CREATE INDEX sends_delivery ON sends (delivery_id);
