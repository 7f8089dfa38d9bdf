-- Planning inserts one entry and one delivery per customer of the audience in
-- set-based statements; PostgreSQL checks every foreign key row by row (an
-- index probe each). These three are implied by others or by how the rows are
-- made (runs are never deleted; a delivery's customer is its entry's customer,
-- and deleting a customer still cascades through entries to deliveries), and
-- checking them cost about 1 s per 100,000 planned deliveries
-- (docs/performance.md).
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_run_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_customer_id_fkey;
ALTER TABLE entries DROP CONSTRAINT IF EXISTS entries_run_id_fkey;
