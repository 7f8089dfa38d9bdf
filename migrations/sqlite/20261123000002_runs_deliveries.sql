-- Runs of a campaign, each customer's entries into it, and one delivery per
-- (entry, step): the unique key that makes a second send of a step impossible.

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    campaign      TEXT   NOT NULL,
    -- manual (herald run), schedule (a cron tick) or sequence (follow-up steps)
    trigger       TEXT   NOT NULL CHECK (trigger IN ('manual', 'schedule', 'sequence')),
    -- a cron tick's time: with the unique key below, several workers firing the
    -- same tick create one run
    tick          BIGINT,
    status        TEXT   NOT NULL DEFAULT 'planning'
                  CHECK (status IN ('planning', 'sending', 'done', 'failed')),
    created_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    planned       BIGINT NOT NULL DEFAULT 0,
    UNIQUE (campaign, trigger, tick)
);

CREATE TABLE entries (
    id          INTEGER PRIMARY KEY,
    campaign    TEXT   NOT NULL,
    customer_id BIGINT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    -- 1 for a customer's first entry into the campaign, 2 for a re-entry, ...
    seq         INTEGER NOT NULL,
    run_id      BIGINT NOT NULL REFERENCES runs (id),
    entered_at  BIGINT NOT NULL,
    state       TEXT   NOT NULL DEFAULT 'active'
                CHECK (state IN ('active', 'completed', 'goal', 'exited')),
    exit_reason TEXT,
    updated_at  BIGINT NOT NULL,
    UNIQUE (campaign, customer_id, seq)
);
CREATE INDEX entries_campaign_state ON entries (campaign, state);
CREATE INDEX entries_run ON entries (run_id);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    run_id          BIGINT NOT NULL REFERENCES runs (id),
    entry_id        BIGINT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    campaign        TEXT   NOT NULL,
    step            TEXT   NOT NULL,
    customer_id     BIGINT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    status          TEXT   NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'bounced', 'skipped')),
    -- why skipped or failed: unsubscribed, suppressed, frequency_cap, template, ...
    reason          TEXT,
    message_id      TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    -- a claimed delivery belongs to its worker until then; after a crash it returns
    lease_until     BIGINT,
    last_error      TEXT,
    -- the relay's reply was lost once: a retry may have duplicated it
    outcome_unknown INTEGER NOT NULL DEFAULT 0,
    sent_at         BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (entry_id, step)
);
CREATE INDEX deliveries_run_status ON deliveries (run_id, status, next_attempt_at);
CREATE INDEX deliveries_customer_sent ON deliveries (customer_id, sent_at);
CREATE INDEX deliveries_campaign_step ON deliveries (campaign, step, status);
