-- Claims are found through their run (`deliveries_run_status`), not through
-- these two partial indexes. On PostgreSQL, every claimed row that moved on
-- left a dead entry in them until vacuum, and the planner, whose statistics
-- saw no `sending` rows, read a holder's whole history of entries for each
-- group of outcomes it recorded: a send of 20,000 messages spent 10 of its 14
-- seconds there. Renewing, releasing and requeueing claims now name the run.
DROP INDEX deliveries_holders;
DROP INDEX deliveries_leases;
