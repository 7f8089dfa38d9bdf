//! Bulk writes for `herald seed`: new customers only, their interactions in bulk.

use std::collections::HashMap;
use std::fmt::Write as _;

use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::{Context, Pool, Store, StoreError, values_list, with_pool};
use crate::clock::now_millis;
use crate::seed::SeedCustomer;

/// Rows per customer insert statement (9 parameters each).
const CUSTOMER_CHUNK: usize = 1000;
/// Rows per interaction insert statement on SQLite (4 parameters each).
const INTERACTION_CHUNK: usize = 4000;

impl Store {
    /// Inserts the customers that are not stored yet (by email or external id) and
    /// the interactions of exactly those, in one transaction. Seeding twice with the
    /// same arguments therefore adds nothing the second time.
    ///
    /// Returns (customers inserted, interactions inserted).
    pub async fn write_seed(&self, batch: &[SeedCustomer]) -> Result<(u64, u64), StoreError> {
        let now = now_millis();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await.context("starting a seed batch")?;
            let mut ids: HashMap<String, i64> = HashMap::with_capacity(batch.len());
            for chunk in batch.chunks(CUSTOMER_CHUNK) {
                let sql = format!(
                    "INSERT INTO customers (email, external_id, first_name, last_name, status, \
                     timezone, attributes, created_at, updated_at) VALUES {} \
                     ON CONFLICT DO NOTHING RETURNING id, email",
                    values_list(self.backend(), chunk.len(), 9)
                );
                let mut q = sqlx::query_as::<_, (i64, String)>(AssertSqlSafe(&*sql))
                    .persistent(chunk.len() == CUSTOMER_CHUNK);
                for c in chunk {
                    q = q
                        .bind(&c.email)
                        .bind(&c.external_id)
                        .bind(&c.first_name)
                        .bind(&c.last_name)
                        .bind(c.status)
                        .bind(c.timezone)
                        .bind(Json(&c.attributes))
                        .bind(c.created_at)
                        .bind(now);
                }
                ids.extend(
                    q.fetch_all(&mut *tx)
                        .await
                        .context("seeding customers")?
                        .into_iter()
                        .map(|(id, e)| (e, id)),
                );
            }
            let rows = batch
                .iter()
                .filter_map(|c| ids.get(&c.email).map(|id| (*id, c)))
                .flat_map(|(id, c)| c.interactions.iter().map(move |i| (id, i)));
            let mut interactions = 0u64;
            match &self.pool {
                // COPY is PostgreSQL's bulk path: one round trip for the whole batch.
                Pool::Postgres(_) => {
                    let mut text = String::with_capacity(batch.len() * 1024);
                    for (id, i) in rows {
                        let data = serde_json::to_string(&i.data).unwrap_or_else(|_| "{}".into());
                        let _ = writeln!(
                            text,
                            "{id}\t{}\t{}\t{}",
                            i.kind,
                            i.occurred_at,
                            copy_escape(&data)
                        );
                        interactions += 1;
                    }
                    copy_interactions(&mut tx, text).await?;
                }
                Pool::Sqlite(_) => {
                    let rows: Vec<_> = rows.collect();
                    for chunk in rows.chunks(INTERACTION_CHUNK) {
                        let sql = format!(
                            "INSERT INTO interactions (customer_id, kind, occurred_at, data) VALUES {}",
                            values_list(self.backend(), chunk.len(), 4)
                        );
                        let mut q = sqlx::query(AssertSqlSafe(&*sql))
                            .persistent(chunk.len() == INTERACTION_CHUNK);
                        for (id, i) in chunk {
                            q = q
                                .bind(*id)
                                .bind(i.kind)
                                .bind(i.occurred_at)
                                .bind(Json(&i.data));
                        }
                        interactions += q
                            .execute(&mut *tx)
                            .await
                            .context("seeding interactions")?
                            .rows_affected();
                    }
                }
            }
            tx.commit().await.context("committing a seed batch")?;
            Ok((ids.len() as u64, interactions))
        })
    }
}

/// Sends COPY text on PostgreSQL; a no-op on SQLite, whose transactions never get here.
trait CopyIn {
    async fn copy_text(&mut self, text: String) -> Result<(), StoreError>;
}

impl CopyIn for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn copy_text(&mut self, text: String) -> Result<(), StoreError> {
        let mut copy = self
            .copy_in_raw("COPY interactions (customer_id, kind, occurred_at, data) FROM STDIN")
            .await
            .context("starting COPY of interactions")?;
        copy.send(text.into_bytes())
            .await
            .context("sending interactions")?;
        copy.finish()
            .await
            .context("finishing COPY of interactions")?;
        Ok(())
    }
}

impl CopyIn for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn copy_text(&mut self, _text: String) -> Result<(), StoreError> {
        Ok(())
    }
}

async fn copy_interactions<T: CopyIn>(tx: &mut T, text: String) -> Result<(), StoreError> {
    if text.is_empty() {
        return Ok(());
    }
    tx.copy_text(text).await
}

/// Escapes a value for COPY's text format.
fn copy_escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}
