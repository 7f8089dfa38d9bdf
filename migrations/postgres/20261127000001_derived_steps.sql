-- Advancing a sequence writes as little as it can (docs/performance.md,
-- sequences): 1,000,000 waiting customers are one transition.
--
-- An entry's current step is its latest delivery (steps are queued in order,
-- one per entry at most), so moving on to the next step inserts that step's
-- delivery and no longer rewrites the entry.
DROP INDEX IF EXISTS entries_campaign_state_step;
ALTER TABLE entries DROP COLUMN IF EXISTS step;
-- Active entries of a campaign (planning's re-entry rule, a transition's
-- candidates). Partial, so an entry that finishes leaves it without an insert.
CREATE INDEX entries_active ON entries (campaign) WHERE state = 'active';
-- Nothing looks entries up by run on PostgreSQL (planning reads back what its
-- INSERT returns).
DROP INDEX IF EXISTS entries_run;
-- Room on each page for the update that finishes an entry.
ALTER TABLE entries SET (fillfactor = 90);
-- The foreign key from deliveries to entries was checked row by row (a key
-- share lock on the entry) for every queued message: about 5 µs each. Queued
-- deliveries take their entry from the statement that made or read it, so the
-- check only ever guarded deletes; a statement-level trigger now removes the
-- deliveries of deleted entries (a deleted customer cascades to its entries).
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_entry_id_fkey;
CREATE FUNCTION herald_entries_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM deliveries d USING gone g WHERE d.entry_id = g.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER entries_deleted AFTER DELETE ON entries
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION herald_entries_deleted();
