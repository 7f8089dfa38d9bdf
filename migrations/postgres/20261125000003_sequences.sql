-- Follow-up sequences: where each entry stands and how it ended (the reason of
-- an entry that exited is in exit_reason).
-- step:        the step most recently queued for this entry
-- finished_at: when it completed, reached the goal or exited
-- goal_at:     when the goal was found reached (a conversion)
ALTER TABLE entries ADD COLUMN step TEXT;
ALTER TABLE entries ADD COLUMN finished_at BIGINT;
ALTER TABLE entries ADD COLUMN goal_at BIGINT;
-- (campaign, state) is a prefix of the new index.
DROP INDEX entries_campaign_state;
CREATE INDEX entries_campaign_state_step ON entries (campaign, state, step);
-- The frequency cap looks up a customer's sent messages; queued rows (a
-- planned run, a sequence step) need not be indexed for it, and inserting
-- them is cheaper without.
DROP INDEX deliveries_customer_sent;
CREATE INDEX deliveries_customer_sent ON deliveries (customer_id, sent_at) WHERE status = 'sent';
