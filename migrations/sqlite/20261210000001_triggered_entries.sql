-- no-transaction
-- Event-triggered campaigns (real-time journeys).
--
-- A run may now be an `event` run: one per campaign and UTC day (its tick is
-- the day's midnight), holding the entries that interactions triggered that
-- day. Widening the CHECK on `runs.trigger` means rebuilding the table, which
-- SQLite does with foreign keys off (entries and deliveries refer to runs by
-- name; the new table takes the name back), hence no implicit transaction
-- around this file and an explicit one inside it.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE runs_new (
    id            INTEGER PRIMARY KEY,
    campaign      TEXT   NOT NULL,
    -- manual (herald run), schedule (a cron tick), sequence (follow-up steps)
    -- or event (entries triggered by interactions, one run per UTC day)
    trigger       TEXT   NOT NULL CHECK (trigger IN ('manual', 'schedule', 'sequence', 'event')),
    tick          BIGINT,
    status        TEXT   NOT NULL DEFAULT 'planning'
                  CHECK (status IN ('planning', 'sending', 'done', 'failed')),
    created_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    planned       BIGINT NOT NULL DEFAULT 0,
    UNIQUE (campaign, trigger, tick)
);
INSERT INTO runs_new (id, campaign, trigger, tick, status, created_at, finished_at, planned)
    SELECT id, campaign, trigger, tick, status, created_at, finished_at, planned FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;

-- The interaction that entered the customer, for a triggered entry: at most
-- one entry per campaign and interaction, however often or by however many
-- processes it is looked at.
ALTER TABLE entries ADD COLUMN cause_id BIGINT;
CREATE UNIQUE INDEX entries_cause ON entries (campaign, cause_id) WHERE cause_id IS NOT NULL;
COMMIT;
PRAGMA foreign_keys = ON;
