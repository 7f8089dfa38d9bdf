//! What the tracking service reads and writes: the deliveries a token names,
//! unsubscribes, bounce and complaint reports, and a readiness probe.

use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::{Context, Store, StoreError, with_pool};
use crate::clock::Millis;
use crate::customer::CustomerStatus;

/// A sent (or sending) delivery, as the tracking service needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedDelivery {
    pub id: i64,
    pub customer_id: i64,
    pub campaign: String,
    pub step: String,
    /// When the relay (or the outbox) accepted it; `None` while in flight.
    pub sent_at: Option<Millis>,
}

type DeliveryRow = (i64, i64, String, String, Option<i64>);

fn delivery(r: DeliveryRow) -> TrackedDelivery {
    TrackedDelivery {
        id: r.0,
        customer_id: r.1,
        campaign: r.2,
        step: r.3,
        sent_at: r.4,
    }
}

/// What an unsubscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The customer was subscribed (or not yet suppressed): now they are not.
    Now,
    /// Nothing changed: a repeat, or a customer already off the list.
    Already,
    /// No such customer (deleted since the message went out).
    UnknownCustomer,
}

/// A bounce or complaint to record for a known customer, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub customer_id: i64,
    pub email: String,
    pub delivery: Option<TrackedDelivery>,
    /// `email_bounced` or `email_complained`.
    pub kind: &'static str,
    pub data: Map<String, Value>,
    /// The customer's new status, applied only to a customer still `subscribed`.
    pub status: Option<CustomerStatus>,
    /// Puts the address on the suppression list with this reason.
    pub suppression: Option<&'static str>,
    /// The reporter's event id: a report seen before changes nothing.
    pub external_id: Option<String>,
}

impl Store {
    /// The deliveries among `ids` (missing ones are left out).
    pub async fn tracked_deliveries(
        &self,
        ids: &[i64],
    ) -> Result<Vec<TrackedDelivery>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, customer_id, campaign, step, sent_at FROM deliveries WHERE {}",
            self.backend().in_json_ids("id", 1)
        );
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let rows: Vec<DeliveryRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(&list)
                .fetch_all(pool)
                .await
        })
        .context("reading tracked deliveries")?;
        Ok(rows.into_iter().map(delivery).collect())
    }

    /// The delivery with this Message-ID and its customer's email.
    pub async fn delivery_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Option<(TrackedDelivery, String)>, StoreError> {
        let row: Option<(i64, i64, String, String, Option<i64>, String)> =
            with_pool!(self, |pool| {
                sqlx::query_as(
                    "SELECT d.id, d.customer_id, d.campaign, d.step, d.sent_at, c.email \
                     FROM deliveries d JOIN customers c ON c.id = d.customer_id \
                     WHERE d.message_id = $1",
                )
                .bind(message_id)
                .fetch_optional(pool)
                .await
            })
            .context("finding a delivery by Message-ID")?;
        Ok(row.map(|r| (delivery((r.0, r.1, r.2, r.3, r.4)), r.5)))
    }

    /// The campaign of a delivery and its customer's email, for the
    /// unsubscribe page; `None` when either is gone or they do not belong
    /// together.
    pub async fn unsubscribe_context(
        &self,
        delivery_id: i64,
        customer_id: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT d.campaign, c.email FROM deliveries d \
                 JOIN customers c ON c.id = d.customer_id \
                 WHERE d.id = $1 AND d.customer_id = $2",
            )
            .bind(delivery_id)
            .bind(customer_id)
            .fetch_optional(pool)
            .await
        })
        .context("reading an unsubscribe link's delivery")
    }

    /// Unsubscribes a customer: status `unsubscribed` (from `subscribed` only),
    /// the address on the suppression list, and one `unsubscribed` interaction
    /// when either of those changed. Committed before it returns; a repeat
    /// changes nothing.
    pub async fn unsubscribe(
        &self,
        customer_id: i64,
        delivery_id: Option<i64>,
        data: &Map<String, Value>,
        now: Millis,
    ) -> Result<Unsubscribed, StoreError> {
        let _gate = self.write_gate().await;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await.context("starting an unsubscribe")?;
            // The row lock taken here makes a concurrent repeat wait and then
            // find nothing left to change.
            let changed: Option<String> = sqlx::query_scalar(
                "UPDATE customers SET status = 'unsubscribed', updated_at = $2 \
                 WHERE id = $1 AND status = 'subscribed' RETURNING email",
            )
            .bind(customer_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .context("unsubscribing a customer")?;
            let email = match &changed {
                Some(e) => e.clone(),
                None => {
                    let found: Option<String> =
                        sqlx::query_scalar("SELECT email FROM customers WHERE id = $1")
                            .bind(customer_id)
                            .fetch_optional(&mut *tx)
                            .await
                            .context("reading a customer")?;
                    match found {
                        Some(e) => e,
                        None => return Ok(Unsubscribed::UnknownCustomer),
                    }
                }
            };
            let suppressed = sqlx::query(
                "INSERT INTO suppressions (email, reason, created_at) VALUES ($1, 'unsubscribed', $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&email)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("suppressing an unsubscribed address")?
            .rows_affected()
                == 1;
            if changed.is_none() && !suppressed {
                return Ok(Unsubscribed::Already);
            }
            sqlx::query(
                "INSERT INTO interactions (customer_id, kind, occurred_at, campaign, step, delivery_id, data) \
                 VALUES ($1, 'unsubscribed', $2, (SELECT campaign FROM deliveries WHERE id = $3), \
                 (SELECT step FROM deliveries WHERE id = $3), $3, $4)",
            )
            .bind(customer_id)
            .bind(now)
            .bind(delivery_id)
            .bind(Json(data))
            .execute(&mut *tx)
            .await
            .context("recording an unsubscribe")?;
            tx.commit().await.context("committing an unsubscribe")?;
            Ok(Unsubscribed::Now)
        })
    }

    /// Records a bounce or complaint; returns false when `external_id` was
    /// recorded before (then nothing is written).
    pub async fn record_feedback(&self, f: &Feedback, now: Millis) -> Result<bool, StoreError> {
        let _gate = self.write_gate().await;
        let (campaign, step, delivery_id) = match &f.delivery {
            Some(d) => (Some(d.campaign.as_str()), Some(d.step.as_str()), Some(d.id)),
            None => (None, None, None),
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await.context("starting to record a report")?;
            let inserted = sqlx::query(
                "INSERT INTO interactions (customer_id, kind, occurred_at, campaign, step, delivery_id, \
                 external_id, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (external_id) WHERE external_id IS NOT NULL DO NOTHING",
            )
            .bind(f.customer_id)
            .bind(f.kind)
            .bind(now)
            .bind(campaign)
            .bind(step)
            .bind(delivery_id)
            .bind(&f.external_id)
            .bind(Json(&f.data))
            .execute(&mut *tx)
            .await
            .context("recording a report")?
            .rows_affected()
                == 1;
            if !inserted {
                return Ok(false);
            }
            if let Some(status) = f.status {
                sqlx::query(
                    "UPDATE customers SET status = $2, updated_at = $3 \
                     WHERE id = $1 AND status = 'subscribed'",
                )
                .bind(f.customer_id)
                .bind(status.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .context("changing a customer's status")?;
            }
            if let Some(reason) = f.suppression {
                sqlx::query(
                    "INSERT INTO suppressions (email, reason, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&f.email)
                .bind(reason)
                .bind(now)
                .execute(&mut *tx)
                .await
                .context("suppressing a reported address")?;
            }
            tx.commit().await.context("committing a report")?;
            Ok(true)
        })
    }

    /// Whether the address is on the suppression list, and why.
    pub async fn suppression_of(&self, email: &str) -> Result<Option<String>, StoreError> {
        let reason: Option<String> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT reason FROM suppressions WHERE email = $1")
                .bind(email)
                .fetch_optional(pool)
                .await
        })
        .context("reading the suppression list")?;
        Ok(reason)
    }

    /// Sent deliveries, oldest first, as (delivery id, customer id): for
    /// benchmarks that need real tracking tokens.
    pub async fn sent_deliveries(&self, limit: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows: Vec<(i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, customer_id FROM deliveries WHERE status = 'sent' ORDER BY id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await
        })
        .context("listing sent deliveries")?;
        Ok(rows)
    }

    /// Interactions of one kind, across customers: for summaries and tests.
    pub async fn count_interactions(&self, kind: &str) -> Result<i64, StoreError> {
        let n: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM interactions WHERE kind = $1")
                .bind(kind)
                .fetch_one(pool)
                .await
        })
        .context("counting interactions")?;
        Ok(n)
    }

    /// A round trip to the database: readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: i32 = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT 1").fetch_one(pool).await
        })
        .context("checking the database")?;
        Ok(())
    }

    /// The tracking-token keys: the configured secrets, else a key generated
    /// once for this database (so every process on it signs and verifies alike).
    pub async fn tracking_keys(
        &self,
        configured: &[String],
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        if !configured.is_empty() {
            return Ok(configured.to_vec());
        }
        tracing::warn!(
            "no secret configured: using a tracking key generated for this database; set HERALD_SECRET in production"
        );
        Ok(vec![self.generated_key("tracking", now).await?])
    }
}
