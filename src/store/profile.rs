//! One customer's records: the 360° view, their interactions page by page,
//! everything held on them (export), and erasure.
//!
//! A customer's entries and deliveries are found through the campaigns that
//! have runs: `entries (campaign, customer_id, seq)` is unique, so one index
//! probe per campaign finds them, and deliveries follow by `(entry_id, step)`.
//! No index on `customer_id` is added to the two tables planning fills.

use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::customers::{COLUMNS, CustomerRow, CustomerWrite, StoredCustomer, from_row};
use super::{Context, Store, StoreError, named, with_pool};
use crate::clock::{Millis, rfc3339};
use crate::customer::{CustomerRef, Email, erasure_mark};
use crate::status::{DeliveryStatus, EntryState};

/// One stored interaction.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct InteractionRow {
    pub id: i64,
    pub kind: String,
    #[serde(serialize_with = "rfc3339::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: Millis,
    pub campaign: Option<String>,
    pub step: Option<String>,
    pub delivery_id: Option<i64>,
    pub external_id: Option<String>,
    pub data: Map<String, Value>,
}

/// One message (delivery) to the customer, with its opens and clicks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct MessageRow {
    pub delivery_id: i64,
    pub campaign: String,
    pub step: String,
    pub status: DeliveryStatus,
    pub reason: Option<String>,
    pub message_id: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    #[serde(serialize_with = "rfc3339::optional")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<Millis>,
    #[serde(serialize_with = "rfc3339::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    #[serde(serialize_with = "rfc3339::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Millis,
    pub opens: i64,
    #[serde(serialize_with = "rfc3339::optional")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub first_opened_at: Option<Millis>,
    pub clicks: i64,
    #[serde(serialize_with = "rfc3339::optional")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub first_clicked_at: Option<Millis>,
}

/// One entry of the customer into a campaign.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct EntryRow {
    pub id: i64,
    pub campaign: String,
    pub seq: i32,
    pub state: EntryState,
    pub exit_reason: Option<String>,
    #[serde(serialize_with = "rfc3339::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub entered_at: Millis,
    #[serde(serialize_with = "rfc3339::optional")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Millis>,
    #[serde(serialize_with = "rfc3339::optional")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub goal_at: Option<Millis>,
}

/// A row of the suppression list about the customer's address: the address
/// itself, or the erasure mark of an earlier erasure.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct SuppressionRow {
    /// The address, or its erasure mark (`erased:…`).
    pub entry: String,
    /// Whether `entry` is the erasure mark rather than the address.
    pub hashed: bool,
    pub reason: String,
    #[serde(serialize_with = "rfc3339::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
}

/// Which interactions a page holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InteractionFilter {
    pub kind: Option<String>,
    /// Only interactions at or after this time.
    pub since: Option<Millis>,
}

/// Where the previous page ended: its last row's `(occurred_at, id)`. Pages
/// run newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageKey {
    pub occurred_at: Millis,
    pub id: i64,
}

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Erased {
    /// The customer row removed, if there was one.
    pub customer_id: Option<i64>,
    pub email: Option<Email>,
    pub interactions: u64,
    pub entries: u64,
    pub deliveries: u64,
    /// Suppression rows removed: the address itself, and the erasure mark
    /// when it was forgotten.
    pub suppressions: u64,
    /// Whether the address's erasure mark is on the suppression list now.
    pub mark_kept: bool,
}

const INTERACTION_COLUMNS: &str =
    "id, kind, occurred_at, campaign, step, delivery_id, external_id, data";

type InteractionTuple = (
    i64,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Json<Map<String, Value>>,
);

fn interaction(r: InteractionTuple) -> InteractionRow {
    InteractionRow {
        id: r.0,
        kind: r.1,
        occurred_at: r.2,
        campaign: r.3,
        step: r.4,
        delivery_id: r.5,
        external_id: r.6,
        data: r.7.0,
    }
}

/// The customer's entries, one index probe per campaign that has runs.
const CUSTOMER_ENTRIES: &str = "SELECT e.* FROM (SELECT DISTINCT campaign FROM runs) k \
     JOIN entries e ON e.campaign = k.campaign AND e.customer_id = $1";

impl Store {
    /// The customer named by id or email.
    pub async fn customer_by_ref(
        &self,
        who: &CustomerRef,
    ) -> Result<Option<StoredCustomer>, StoreError> {
        let (column, id, email) = match who {
            CustomerRef::Id(id) => ("id", Some(*id), None),
            CustomerRef::Email(e) => ("email", None, Some(e.as_str())),
        };
        let sql = format!("SELECT {COLUMNS} FROM customers WHERE {column} = $1");
        let row: Option<CustomerRow> = with_pool!(self, |pool| {
            let q = sqlx::query_as(AssertSqlSafe(&*sql));
            match (id, email) {
                (Some(id), _) => q.bind(id),
                (None, email) => q.bind(email),
            }
            .fetch_optional(pool)
            .await
        })
        .context("reading a customer")?;
        row.map(from_row).transpose().context("reading a customer")
    }

    /// The suppression rows about `email`: the address and its erasure mark.
    pub async fn suppressions_about(
        &self,
        email: &Email,
        now: Millis,
    ) -> Result<Vec<SuppressionRow>, StoreError> {
        let mark = erasure_mark(&self.erasure_key(now).await?, email);
        let rows: Vec<(String, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT email, reason, created_at FROM suppressions WHERE email = $1 OR email = $2 \
                 ORDER BY created_at, email",
            )
            .bind(email.as_str())
            .bind(&mark)
            .fetch_all(pool)
            .await
        })
        .context("reading the suppression list")?;
        Ok(rows
            .into_iter()
            .map(|(entry, reason, created_at)| SuppressionRow {
                hashed: entry == mark,
                entry,
                reason,
                created_at,
            })
            .collect())
    }

    /// The customer's `per_kind` latest interactions of each kind, newest
    /// first, in one statement.
    pub async fn latest_interactions(
        &self,
        customer_id: i64,
        per_kind: i64,
    ) -> Result<Vec<InteractionRow>, StoreError> {
        let sql = format!(
            "SELECT {INTERACTION_COLUMNS} FROM (SELECT {INTERACTION_COLUMNS}, \
             ROW_NUMBER() OVER (PARTITION BY kind ORDER BY occurred_at DESC, id DESC) AS n \
             FROM interactions WHERE customer_id = $1) r WHERE n <= $2 \
             ORDER BY occurred_at DESC, id DESC"
        );
        let rows: Vec<InteractionTuple> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(customer_id)
                .bind(per_kind)
                .fetch_all(pool)
                .await
        })
        .context("reading a customer's latest interactions")?;
        Ok(rows.into_iter().map(interaction).collect())
    }

    /// A page of the customer's interactions, newest first: at most `limit`
    /// rows after `after` (keyset on `(occurred_at, id)`), of `filter`.
    pub async fn interactions_page(
        &self,
        customer_id: i64,
        filter: &InteractionFilter,
        after: Option<PageKey>,
        limit: i64,
    ) -> Result<Vec<InteractionRow>, StoreError> {
        let sql = format!(
            "SELECT {INTERACTION_COLUMNS} FROM interactions WHERE customer_id = $1 \
             AND (CAST($2 AS TEXT) IS NULL OR kind = $2) \
             AND (CAST($3 AS BIGINT) IS NULL OR occurred_at >= $3) \
             AND (CAST($4 AS BIGINT) IS NULL OR occurred_at < $4 OR (occurred_at = $4 AND id < $5)) \
             ORDER BY occurred_at DESC, id DESC LIMIT $6"
        );
        let rows: Vec<InteractionTuple> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(customer_id)
                .bind(filter.kind.as_deref())
                .bind(filter.since)
                .bind(after.map(|k| k.occurred_at))
                .bind(after.map(|k| k.id).unwrap_or(0))
                .bind(limit)
                .fetch_all(pool)
                .await
        })
        .context("reading a customer's interactions")?;
        Ok(rows.into_iter().map(interaction).collect())
    }

    /// The customer's `limit` latest messages (by send time, else creation),
    /// each with its opens and clicks.
    pub async fn messages_of(
        &self,
        customer_id: i64,
        limit: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let event = |agg: &str, kind: &str| {
            format!(
                "(SELECT {agg} FROM interactions i WHERE i.customer_id = d.customer_id \
                 AND i.kind = '{kind}' AND i.delivery_id = d.id)"
            )
        };
        let sql = format!(
            "SELECT d.id, d.campaign, d.step, d.status, d.reason, d.message_id, d.attempts, \
             d.last_error, d.sent_at, d.created_at, d.updated_at, {}, {}, {}, {} \
             FROM ({CUSTOMER_ENTRIES}) e JOIN deliveries d ON d.entry_id = e.id \
             ORDER BY COALESCE(d.sent_at, d.created_at) DESC, d.id DESC LIMIT $2",
            event("COUNT(*)", "email_opened"),
            event("MIN(i.occurred_at)", "email_opened"),
            event("COUNT(*)", "email_clicked"),
            event("MIN(i.occurred_at)", "email_clicked"),
        );
        type Row = (
            i64,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            i32,
            Option<String>,
            Option<i64>,
            i64,
            i64,
            i64,
            Option<i64>,
            i64,
            Option<i64>,
        );
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(customer_id)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
        .context("reading a customer's messages")?;
        rows.into_iter()
            .map(|r| {
                Ok(MessageRow {
                    delivery_id: r.0,
                    campaign: r.1,
                    step: r.2,
                    status: named(&r.3)?,
                    reason: r.4,
                    message_id: r.5,
                    attempts: r.6,
                    last_error: r.7,
                    sent_at: r.8,
                    created_at: r.9,
                    updated_at: r.10,
                    opens: r.11,
                    first_opened_at: r.12,
                    clicks: r.13,
                    first_clicked_at: r.14,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("reading a customer's messages")
    }

    /// Every entry of the customer into a campaign, oldest first.
    pub async fn entries_of(&self, customer_id: i64) -> Result<Vec<EntryRow>, StoreError> {
        let sql = format!(
            "SELECT e.id, e.campaign, e.seq, e.state, e.exit_reason, e.entered_at, \
             e.finished_at, e.goal_at FROM ({CUSTOMER_ENTRIES}) e ORDER BY e.entered_at, e.id"
        );
        type Row = (
            i64,
            String,
            i32,
            String,
            Option<String>,
            i64,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(customer_id)
                .fetch_all(pool)
                .await
        })
        .context("reading a customer's entries")?;
        rows.into_iter()
            .map(|r| {
                Ok(EntryRow {
                    id: r.0,
                    campaign: r.1,
                    seq: r.2,
                    state: named(&r.3)?,
                    exit_reason: r.4,
                    entered_at: r.5,
                    finished_at: r.6,
                    goal_at: r.7,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("reading a customer's entries")
    }

    /// Rewrites one customer row by id (the caller merged it with what was
    /// stored, as [`crate::import::merge`] does); false when the row is gone.
    /// An update, never an upsert: a customer erased meanwhile stays erased.
    pub async fn update_customer(&self, id: i64, w: &CustomerWrite) -> Result<bool, StoreError> {
        let n = with_pool!(self, |pool| {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE customers SET external_id = $2, first_name = $3, last_name = $4, \
                 status = $5, timezone = $6, attributes = {}, updated_at = $8 WHERE id = $1",
                self.backend().json_param(7)
            )))
            .bind(id)
            .bind(&w.external_id)
            .bind(&w.first_name)
            .bind(&w.last_name)
            .bind(w.status.as_str())
            .bind(&w.timezone)
            .bind(Json(&w.attributes))
            .bind(w.updated_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .context("updating a customer")?;
        Ok(n == 1)
    }

    /// Erases a customer in one transaction: their interactions, deliveries,
    /// entries and row, and their address from the suppression list, which
    /// keeps only the address's erasure mark (or not even that, with
    /// `forget_suppression`). An address with no customer still has its
    /// suppression rows handled. `None` when nothing at all was held.
    pub async fn erase_customer(
        &self,
        who: &CustomerRef,
        forget_suppression: bool,
        now: Millis,
    ) -> Result<Option<Erased>, StoreError> {
        let key = self.erasure_key(now).await?;
        let _gate = self.write_gate().await;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await.context("starting an erasure")?;
            let found: Option<(i64, String)> = match who {
                CustomerRef::Id(id) => {
                    sqlx::query_as("SELECT id, email FROM customers WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                }
                CustomerRef::Email(e) => {
                    sqlx::query_as("SELECT id, email FROM customers WHERE email = $1")
                        .bind(e.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                }
            }
            .context("finding the customer to erase")?;
            let email = match (&found, who) {
                (Some((_, e)), _) => Email::from_store(e.clone()),
                (None, CustomerRef::Email(e)) => e.clone(),
                (None, CustomerRef::Id(_)) => return Ok(None),
            };
            let mut erased = Erased {
                customer_id: found.as_ref().map(|(id, _)| *id),
                email: Some(email.clone()),
                ..Erased::default()
            };
            if let Some((id, _)) = found {
                erased.interactions =
                    sqlx::query("DELETE FROM interactions WHERE customer_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .context("erasing interactions")?
                        .rows_affected();
                let deliveries = format!(
                    "DELETE FROM deliveries WHERE entry_id IN (SELECT id FROM ({CUSTOMER_ENTRIES}) e)"
                );
                erased.deliveries = sqlx::query(AssertSqlSafe(deliveries))
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .context("erasing deliveries")?
                    .rows_affected();
                let entries = format!(
                    "DELETE FROM entries WHERE id IN (SELECT id FROM ({CUSTOMER_ENTRIES}) e)"
                );
                erased.entries = sqlx::query(AssertSqlSafe(entries))
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .context("erasing entries")?
                    .rows_affected();
                sqlx::query("DELETE FROM customers WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .context("erasing the customer")?;
            }
            erased.suppressions = sqlx::query("DELETE FROM suppressions WHERE email = $1")
                .bind(email.as_str())
                .execute(&mut *tx)
                .await
                .context("erasing the address from the suppression list")?
                .rows_affected();
            let mark = erasure_mark(&key, &email);
            if forget_suppression {
                erased.suppressions += sqlx::query("DELETE FROM suppressions WHERE email = $1")
                    .bind(&mark)
                    .execute(&mut *tx)
                    .await
                    .context("forgetting the erasure mark")?
                    .rows_affected();
            } else {
                sqlx::query(
                    "INSERT INTO suppressions (email, reason, created_at) VALUES ($1, 'erased', $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&mark)
                .bind(now)
                .execute(&mut *tx)
                .await
                .context("keeping the erasure mark")?;
                erased.mark_kept = true;
            }
            // Nothing was held on the address (at most its mark, kept): the
            // transaction is dropped, so no mark is made for a stranger.
            if found.is_none() && erased.suppressions == 0 {
                return Ok(None);
            }
            tx.commit().await.context("committing an erasure")?;
            Ok(Some(erased))
        })
    }
}
