-- An entry's current step is its latest delivery (steps are queued in order,
-- one per entry at most), so moving on to the next step inserts that step's
-- delivery and no longer rewrites the entry (docs/performance.md, sequences).
DROP INDEX entries_campaign_state_step;
ALTER TABLE entries DROP COLUMN step;
CREATE INDEX entries_campaign_state ON entries (campaign, state);
