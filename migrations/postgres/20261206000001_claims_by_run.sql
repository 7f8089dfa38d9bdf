-- Claims are found through their run (`deliveries_run_status`): renewing,
-- releasing and requeueing claims name the run they belong to, so these two
-- partial indexes on `sending` rows serve nothing any more, and every claim and
-- every outcome no longer has to maintain them.
DROP INDEX deliveries_holders;
DROP INDEX deliveries_leases;
