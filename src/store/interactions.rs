//! Interactions: batched inserts and key resolution for imports.

use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::customers::json_list;
use super::triggers::{Entered, Fresh, TriggerRule, enter_triggered};
use super::{Context, Store, StoreError, with_pool};
use crate::clock::Millis;
use crate::customer::Email;

/// One interaction to record. Serialised (by its field names) for
/// PostgreSQL's batch insert.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InteractionWrite {
    pub customer_id: i64,
    pub kind: String,
    pub occurred_at: Millis,
    pub campaign: Option<String>,
    pub step: Option<String>,
    pub delivery_id: Option<i64>,
    pub external_id: Option<String>,
    pub data: Map<String, Value>,
}

/// A customer's id with the keys an import may name it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerKeys {
    pub id: i64,
    pub email: Email,
    pub external_id: Option<String>,
}

/// Rows per insert statement (8 parameters each).
pub(super) const INSERT_BATCH: usize = 2000;

/// Inserts `$rows` (`&[InteractionWrite]`) in transaction `$tx` of backend
/// `$backend`, skipping rows whose `external_id` is stored; evaluates to how
/// many were inserted. A macro, so that the statements run in either
/// backend's transaction.
///
/// SQLite takes a multi-row VALUES list; PostgreSQL one JSON array of the rows
/// (`jsonb_to_recordset`): one short statement text, prepared once, where a
/// VALUES list of 16,000 parameters was parsed and planned anew for every
/// batch of a different size.
macro_rules! insert_interactions {
    ($backend:expr, $tx:expr, $rows:expr) => {
        $crate::store::interactions::insert_interactions!(
            $backend,
            $tx,
            $rows,
            None::<&mut Vec<$crate::store::triggers::Fresh>>
        )
    };
    ($backend:expr, $tx:expr, $rows:expr, $fresh:expr) => {{
        let mut fresh: Option<&mut Vec<$crate::store::triggers::Fresh>> = $fresh;
        let returning = if fresh.is_some() { " RETURNING id, kind" } else { "" };
        let mut inserted: u64 = 0;
        for chunk in $rows.chunks($crate::store::interactions::INSERT_BATCH) {
            let q = match $backend {
                $crate::store::Backend::Sqlite => {
                    let sql = format!(
                        "INSERT INTO interactions (customer_id, kind, occurred_at, campaign, step, \
                         delivery_id, external_id, data) VALUES {} \
                         ON CONFLICT (external_id) WHERE external_id IS NOT NULL DO NOTHING{returning}",
                        $backend.values_list(chunk.len(), 8)
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .persistent(chunk.len() == $crate::store::interactions::INSERT_BATCH);
                    for r in chunk {
                        q = q
                            .bind(r.customer_id)
                            .bind(&r.kind)
                            .bind(r.occurred_at)
                            .bind(&r.campaign)
                            .bind(&r.step)
                            .bind(r.delivery_id)
                            .bind(&r.external_id)
                            .bind(sqlx::types::Json(&r.data));
                    }
                    q
                }
                $crate::store::Backend::Postgres => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO interactions (customer_id, kind, occurred_at, campaign, step, \
                     delivery_id, external_id, data) \
                     SELECT customer_id, kind, occurred_at, campaign, step, delivery_id, \
                     external_id, data FROM jsonb_to_recordset($1::jsonb) AS r(customer_id bigint, \
                     kind text, occurred_at bigint, campaign text, step text, delivery_id bigint, \
                     external_id text, data jsonb) \
                     ON CONFLICT (external_id) WHERE external_id IS NOT NULL DO NOTHING{returning}",
                )))
                .bind(sqlx::types::Json(chunk)),
            };
            inserted += match fresh.as_deref_mut() {
                Some(out) => {
                    let rows = $crate::store::Context::context(
                        q.fetch_all(&mut *$tx).await,
                        "writing interactions",
                    )?;
                    let before = out.len();
                    for row in &rows {
                        out.push($crate::store::Context::context(
                            $crate::store::triggers::Fresh::from_row(row),
                            "writing interactions",
                        )?);
                    }
                    (out.len() - before) as u64
                }
                None => $crate::store::Context::context(
                    q.execute(&mut *$tx).await,
                    "writing interactions",
                )?
                .rows_affected(),
            };
        }
        inserted
    }};
}
pub(crate) use insert_interactions;

impl Store {
    /// Ids of the customers with any of these emails or external ids.
    pub async fn customer_keys(
        &self,
        emails: &[&str],
        external_ids: &[&str],
    ) -> Result<Vec<CustomerKeys>, StoreError> {
        if emails.is_empty() && external_ids.is_empty() {
            return Ok(Vec::new());
        }
        let b = self.backend();
        let sql = format!(
            "SELECT id, email, external_id FROM customers WHERE {} \
             UNION SELECT id, email, external_id FROM customers WHERE {}",
            b.in_json_array("email", 1),
            b.in_json_array("external_id", 2)
        );
        let (emails, ids) = (json_list(emails), json_list(external_ids));
        let rows: Vec<(i64, String, Option<String>)> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(&emails)
                .bind(&ids)
                .fetch_all(pool)
                .await
        })
        .context("resolving customers")?;
        Ok(rows
            .into_iter()
            .map(|(id, email, external_id)| CustomerKeys {
                id,
                email: Email::from_store(email),
                external_id,
            })
            .collect())
    }

    /// Inserts interactions in one transaction; rows whose `external_id` is
    /// already stored are skipped. Returns how many were inserted.
    pub async fn write_interactions(&self, rows: &[InteractionWrite]) -> Result<u64, StoreError> {
        Ok(self.write_interactions_triggering(rows, &[], 0).await?.0)
    }

    /// [`Store::write_interactions`], entering the customers of the new
    /// interactions into the campaigns whose `rules` they match, at `now`, in
    /// the same transaction ([`super::triggers`]).
    pub async fn write_interactions_triggering(
        &self,
        rows: &[InteractionWrite],
        rules: &[TriggerRule],
        now: Millis,
    ) -> Result<(u64, Entered), StoreError> {
        let b = self.backend();
        let _gate = self.write_gate().await;
        let mut fresh: Vec<Fresh> = Vec::new();
        let collect = !rules.is_empty();
        with_pool!(self, |pool| {
            let mut tx = pool
                .begin()
                .await
                .context("starting an interaction batch")?;
            let inserted = insert_interactions!(b, tx, rows, collect.then_some(&mut fresh));
            let entered = enter_triggered!(b, tx, rules, &fresh, now);
            tx.commit().await.context("committing interactions")?;
            Ok::<_, StoreError>((inserted, entered))
        })
    }

    /// A customer's interactions of one kind, newest first.
    pub async fn interactions_of(
        &self,
        customer_id: i64,
        kind: &str,
    ) -> Result<Vec<(Millis, Map<String, Value>)>, StoreError> {
        let rows: Vec<(i64, Json<Map<String, Value>>)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT occurred_at, data FROM interactions WHERE customer_id = $1 AND kind = $2 \
                 ORDER BY occurred_at DESC, id DESC",
            )
            .bind(customer_id)
            .bind(kind)
            .fetch_all(pool)
            .await
        })
        .context("reading interactions")?;
        Ok(rows.into_iter().map(|(t, d)| (t, d.0)).collect())
    }
}
