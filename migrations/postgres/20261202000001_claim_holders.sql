-- Who holds a claimed delivery: the send pass that claimed it (process id and
-- a random part). The holder renews its leases while it works, never re-claims
-- its own rows, and an outcome is recorded only by the holder of the claim, so
-- a claim taken over after a stall cannot be overwritten by the stalled pass.
ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
-- Only claimed rows are indexed: renewing a holder's leases and finding
-- expired ones read these, and few rows are `sending` at any time.
CREATE INDEX deliveries_holders ON deliveries (claimed_by) WHERE status = 'sending';
CREATE INDEX deliveries_leases ON deliveries (lease_until) WHERE status = 'sending';
