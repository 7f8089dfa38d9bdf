//! Bulk writes for `herald seed`: new customers only, their interactions in bulk.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::{Backend, Context, Pool, Store, StoreError, with_pool};
use crate::clock::{Millis, now_millis};
use crate::customer::CustomerStatus;

/// One customer for [`Store::write_seed`], with its interactions (oldest
/// first); [`crate::seed`] generates them.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedCustomer {
    pub email: String,
    pub external_id: String,
    pub first_name: String,
    pub last_name: String,
    pub status: CustomerStatus,
    pub timezone: &'static str,
    pub created_at: Millis,
    pub attributes: Map<String, Value>,
    pub interactions: Vec<SeedInteraction>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeedInteraction {
    pub kind: &'static str,
    pub occurred_at: Millis,
    pub data: Map<String, Value>,
}

/// The secondary indexes of `interactions`, exactly as the first migration
/// creates them. A large seed drops them and builds them again at the end: one
/// sort beats ten million random B-tree inserts. [`Store::ensure_indexes`]
/// (run by `Store::open`) rebuilds any that an interrupted seed left out.
const INTERACTION_INDEXES: &[(&str, &str)] = &[
    (
        "interactions_customer_kind_time",
        "(customer_id, kind, occurred_at)",
    ),
    (
        "interactions_kind_time_customer",
        "(kind, occurred_at, customer_id)",
    ),
];
/// The index a bulk seed keeps on SQLite: new customers get increasing ids and
/// each one's interactions are written in (kind, time) order, so its inserts are
/// appends. PostgreSQL builds every index faster afterwards (in parallel workers).
const KEPT_DURING_BULK_SQLITE: &str = "interactions_customer_kind_time";

/// Rows per customer insert statement (9 parameters each).
const CUSTOMER_CHUNK: usize = 1000;
/// Rows per interaction insert statement on SQLite (4 parameters each).
const INTERACTION_CHUNK: usize = 4000;

impl Store {
    /// Drops the secondary interaction indexes before a bulk load.
    pub async fn drop_interaction_indexes(&self) -> Result<(), StoreError> {
        let keep = match self.backend() {
            Backend::Sqlite => KEPT_DURING_BULK_SQLITE,
            Backend::Postgres => "",
        };
        for (name, _) in INTERACTION_INDEXES.iter().filter(|(n, _)| *n != keep) {
            let sql = format!("DROP INDEX IF EXISTS {name}");
            with_pool!(self, |pool| sqlx::query(AssertSqlSafe(sql.as_str()))
                .execute(pool)
                .await
                .map(|_| ()))
            .context("dropping an index for a bulk load")?;
        }
        Ok(())
    }

    /// Gives PostgreSQL's planner the statistics of freshly loaded tables.
    /// Until autovacuum gets to them, it guesses 0.5 % of the rows for an
    /// equality: 49,000 interactions for one customer of a million, a plan
    /// cost over `jit_above_cost`, and 8–30 ms of JIT compilation in every
    /// `GET /v1/customers/…` (p50 26 ms, measured) where 2 ms suffice.
    /// SQLite plans these look-ups by index without statistics.
    pub async fn analyze_after_bulk_load(&self) -> Result<(), StoreError> {
        if let Pool::Postgres(pool) = &self.pool {
            sqlx::query("ANALYZE customers, interactions")
                .execute(pool)
                .await
                .context("updating the planner's statistics after a bulk load")?;
        }
        Ok(())
    }

    /// Creates any secondary interaction index that is missing.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let present: Vec<String> = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'interactions'",
            )
            .fetch_all(pool)
            .await,
            Pool::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT indexname::text FROM pg_indexes WHERE tablename = 'interactions' \
                 AND schemaname = current_schema()",
                )
                .fetch_all(pool)
                .await
            }
        }
        .context("listing indexes")?;
        let missing: Vec<(&str, &str)> = INTERACTION_INDEXES
            .iter()
            .filter(|(name, _)| !present.iter().any(|p| p == name))
            .copied()
            .collect();
        match &self.pool {
            // One writer: build one index after the other, with more sorter
            // memory on this connection only.
            Pool::Sqlite(pool) => {
                for (name, columns) in missing {
                    tracing::info!(index = name, "building index");
                    let sql =
                        format!("CREATE INDEX IF NOT EXISTS {name} ON interactions {columns}");
                    let mut conn = pool.acquire().await.context("building an index")?;
                    sqlx::query("PRAGMA cache_size = -32768")
                        .execute(&mut *conn)
                        .await
                        .context("building an index")?;
                    let built = sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await;
                    sqlx::query("PRAGMA cache_size = -16384")
                        .execute(&mut *conn)
                        .await
                        .context("building an index")?;
                    built.context("building an index")?;
                }
            }
            // Both at once, each on its own connection.
            Pool::Postgres(pool) => {
                let builds = missing.into_iter().map(|(name, columns)| async move {
                    tracing::info!(index = name, "building index");
                    let sql =
                        format!("CREATE INDEX IF NOT EXISTS {name} ON interactions {columns}");
                    let mut tx = pool.begin().await.context("building an index")?;
                    sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
                        .execute(&mut *tx)
                        .await
                        .context("building an index")?;
                    sqlx::query(AssertSqlSafe(sql))
                        .execute(&mut *tx)
                        .await
                        .context("building an index")?;
                    tx.commit().await.context("building an index")
                });
                for result in futures_util::future::join_all(builds).await {
                    result?;
                }
            }
        }
        Ok(())
    }

    /// Inserts the customers that are not stored yet (by email or external id) and
    /// the interactions of exactly those, in one transaction. Seeding twice with the
    /// same arguments therefore adds nothing the second time.
    ///
    /// Returns (customers inserted, interactions inserted).
    pub async fn write_seed(&self, batch: &[SeedCustomer]) -> Result<(u64, u64), StoreError> {
        let now = now_millis();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await.context("starting a seed batch")?;
            let started = std::time::Instant::now();
            tx.prepare_bulk().await?;
            let ids: HashMap<String, i64> = tx
                .insert_customers(batch, now)
                .await?
                .into_iter()
                .map(|(id, email)| (email, id))
                .collect();
            let customers_took = started.elapsed();
            let mut rows: Vec<(i64, &SeedInteraction)> = batch
                .iter()
                .filter_map(|c| ids.get(&c.email).map(|id| (*id, c)))
                .flat_map(|(id, c)| c.interactions.iter().map(move |i| (id, i)))
                .collect();
            // Index order: inserts into (customer_id, kind, occurred_at) append.
            rows.sort_unstable_by(|a, b| {
                (a.0, a.1.kind, a.1.occurred_at).cmp(&(b.0, b.1.kind, b.1.occurred_at))
            });
            let interactions = tx.insert_interactions(&rows).await?;
            let interactions_took = started.elapsed() - customers_took;
            tx.commit().await.context("committing a seed batch")?;
            tracing::debug!(
                customers_ms = customers_took.as_millis() as u64,
                interactions_ms = interactions_took.as_millis() as u64,
                "seed batch written"
            );
            Ok((ids.len() as u64, interactions))
        })
    }
}

/// The bulk paths of each backend for seeding.
trait SeedWriter {
    async fn prepare_bulk(&mut self) -> Result<(), StoreError>;
    /// Inserts customers not yet stored; returns (id, email) of those inserted.
    async fn insert_customers(
        &mut self,
        batch: &[SeedCustomer],
        now: Millis,
    ) -> Result<Vec<(i64, String)>, StoreError>;
    async fn insert_interactions(
        &mut self,
        rows: &[(i64, &SeedInteraction)],
    ) -> Result<u64, StoreError>;
}

impl SeedWriter for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn prepare_bulk(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn insert_customers(
        &mut self,
        batch: &[SeedCustomer],
        now: Millis,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut out = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(CUSTOMER_CHUNK) {
            let sql = format!(
                "INSERT INTO customers (email, external_id, first_name, last_name, status, \
                 timezone, attributes, created_at, updated_at) VALUES {} \
                 ON CONFLICT DO NOTHING RETURNING id, email",
                Backend::Sqlite.values_list(chunk.len(), 9)
            );
            let mut q = sqlx::query_as::<_, (i64, String)>(AssertSqlSafe(&*sql))
                .persistent(chunk.len() == CUSTOMER_CHUNK);
            for c in chunk {
                q = q
                    .bind(&c.email)
                    .bind(&c.external_id)
                    .bind(&c.first_name)
                    .bind(&c.last_name)
                    .bind(c.status.as_str())
                    .bind(c.timezone)
                    .bind(Json(&c.attributes))
                    .bind(c.created_at)
                    .bind(now);
            }
            out.extend(
                q.fetch_all(&mut **self)
                    .await
                    .context("seeding customers")?,
            );
        }
        Ok(out)
    }

    async fn insert_interactions(
        &mut self,
        rows: &[(i64, &SeedInteraction)],
    ) -> Result<u64, StoreError> {
        let mut inserted = 0;
        for chunk in rows.chunks(INTERACTION_CHUNK) {
            let sql = format!(
                "INSERT INTO interactions (customer_id, kind, occurred_at, data) VALUES {}",
                Backend::Sqlite.values_list(chunk.len(), 4)
            );
            let mut q =
                sqlx::query(AssertSqlSafe(&*sql)).persistent(chunk.len() == INTERACTION_CHUNK);
            for (id, i) in chunk {
                q = q
                    .bind(*id)
                    .bind(i.kind)
                    .bind(i.occurred_at)
                    .bind(Json(&i.data));
            }
            inserted += q
                .execute(&mut **self)
                .await
                .context("seeding interactions")?
                .rows_affected();
        }
        Ok(inserted)
    }
}

impl SeedWriter for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn prepare_bulk(&mut self) -> Result<(), StoreError> {
        // Synthetic data can be made again: don't wait for each commit's flush
        // (the database stays consistent either way).
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut **self)
            .await
            .context("starting a seed batch")?;
        Ok(())
    }

    async fn insert_customers(
        &mut self,
        batch: &[SeedCustomer],
        now: Millis,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        // One statement of column arrays: cheaper to parse and plan than a
        // VALUES list of thousands of parameters.
        let col = |f: fn(&SeedCustomer) -> String| batch.iter().map(f).collect::<Vec<String>>();
        let attributes: Vec<Json<&Map<String, Value>>> =
            batch.iter().map(|c| Json(&c.attributes)).collect();
        let created: Vec<i64> = batch.iter().map(|c| c.created_at).collect();
        sqlx::query_as::<_, (i64, String)>(
            "INSERT INTO customers (email, external_id, first_name, last_name, status, timezone, \
             attributes, created_at, updated_at) \
             SELECT e, x, f, l, s, t, a, c, $9 FROM UNNEST($1::text[], $2::text[], $3::text[], \
             $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::bigint[]) AS u(e, x, f, l, s, t, a, c) \
             ON CONFLICT DO NOTHING RETURNING id, email",
        )
        .bind(col(|c| c.email.clone()))
        .bind(col(|c| c.external_id.clone()))
        .bind(col(|c| c.first_name.clone()))
        .bind(col(|c| c.last_name.clone()))
        .bind(col(|c| c.status.as_str().to_string()))
        .bind(col(|c| c.timezone.to_string()))
        .bind(attributes)
        .bind(created)
        .bind(now)
        .fetch_all(&mut **self)
        .await
        .context("seeding customers")
    }

    async fn insert_interactions(
        &mut self,
        rows: &[(i64, &SeedInteraction)],
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        // COPY is PostgreSQL's bulk path: one round trip for the whole batch.
        let mut text = String::with_capacity(rows.len() * 80);
        for (id, i) in rows {
            let data = serde_json::to_string(&i.data).unwrap_or_else(|_| "{}".into());
            let _ = writeln!(
                text,
                "{id}\t{}\t{}\t{}",
                i.kind,
                i.occurred_at,
                copy_escape(&data)
            );
        }
        let mut copy = self
            .copy_in_raw("COPY interactions (customer_id, kind, occurred_at, data) FROM STDIN")
            .await
            .context("starting COPY of interactions")?;
        copy.send(text.into_bytes())
            .await
            .context("sending interactions")?;
        copy.finish()
            .await
            .context("finishing COPY of interactions")
    }
}

/// Escapes a value for COPY's text format.
fn copy_escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}
