-- Event-triggered campaigns (real-time journeys).
--
-- A run may now be an `event` run: one per campaign and UTC day (its tick is
-- the day's midnight), holding the entries that interactions triggered that
-- day.
ALTER TABLE runs DROP CONSTRAINT IF EXISTS runs_trigger_check;
ALTER TABLE runs ADD CONSTRAINT runs_trigger_check
    CHECK (trigger IN ('manual', 'schedule', 'sequence', 'event'));

-- The interaction that entered the customer, for a triggered entry: at most
-- one entry per campaign and interaction, however often or by however many
-- processes it is looked at.
ALTER TABLE entries ADD COLUMN cause_id BIGINT;
CREATE UNIQUE INDEX entries_cause ON entries (campaign, cause_id) WHERE cause_id IS NOT NULL;
