//! Customers: look-ups by key and batched upserts.

use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::{Backend, Context, Pool, Store, StoreError, named, with_pool};
use crate::clock::{Millis, rfc3339};
use crate::customer::{CustomerStatus, Email, erasure_mark};

/// A customer as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct StoredCustomer {
    pub id: i64,
    pub email: Email,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub status: CustomerStatus,
    pub timezone: Option<String>,
    pub attributes: Map<String, Value>,
    #[serde(serialize_with = "rfc3339::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    #[serde(serialize_with = "rfc3339::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Millis,
}

pub(super) type CustomerRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Json<Map<String, Value>>,
    i64,
    i64,
);

pub(super) const COLUMNS: &str = "id, email, external_id, first_name, last_name, status, timezone, \
                       attributes, created_at, updated_at";

pub(super) fn from_row(r: CustomerRow) -> Result<StoredCustomer, sqlx::Error> {
    Ok(StoredCustomer {
        id: r.0,
        email: Email::from_store(r.1),
        external_id: r.2,
        first_name: r.3,
        last_name: r.4,
        status: named(&r.5)?,
        timezone: r.6,
        attributes: r.7.0,
        created_at: r.8,
        updated_at: r.9,
    })
}

/// The full new state of one customer row, written by [`Store::write_customers`].
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerWrite {
    pub email: Email,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub status: CustomerStatus,
    pub timezone: Option<String>,
    pub attributes: Map<String, Value>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Rows per upsert statement: 9 parameters each stays far below SQLite's
/// 32,766 and PostgreSQL's 65,535 bound-parameter limits.
pub const WRITE_BATCH: usize = 1000;

impl Store {
    /// The stored customers whose email or external id is among the given ones.
    pub async fn customers_by_keys(
        &self,
        emails: &[&str],
        external_ids: &[&str],
    ) -> Result<Vec<StoredCustomer>, StoreError> {
        if emails.is_empty() && external_ids.is_empty() {
            return Ok(Vec::new());
        }
        let b = self.backend();
        let sql = format!(
            "SELECT {COLUMNS} FROM customers WHERE {} UNION SELECT {COLUMNS} FROM customers WHERE {}",
            b.in_json_array("email", 1),
            b.in_json_array("external_id", 2)
        );
        let emails = json_list(emails);
        let ids = json_list(external_ids);
        let rows: Vec<CustomerRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(&emails)
                .bind(&ids)
                .fetch_all(pool)
                .await
        })
        .context("looking up customers")?;
        rows.into_iter()
            .map(from_row)
            .collect::<Result<_, _>>()
            .context("looking up customers")
    }

    /// One customer by normalised email.
    pub async fn customer_by_email(
        &self,
        email: &str,
    ) -> Result<Option<StoredCustomer>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM customers WHERE email = $1");
        let row: Option<CustomerRow> =
            with_pool!(self, |pool| sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(email)
                .fetch_optional(pool)
                .await)
            .context("reading a customer")?;
        row.map(from_row).transpose().context("reading a customer")
    }

    /// Puts an address on the suppression list; returns whether it was new.
    pub async fn suppress(
        &self,
        email: &str,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO suppressions (email, reason, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(email)
            .bind(reason)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .context("suppressing an address")?;
        Ok(n == 1)
    }

    /// Inserts or fully replaces customers by email, in one transaction per call.
    ///
    /// The caller has merged each row with what was stored; this writes the result.
    /// Returns the number of rows written.
    pub async fn write_customers(&self, rows: &[CustomerWrite]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let marks = self.erasure_marks(rows).await?;
        let now = rows[0].updated_at;
        // An erased address that comes back is suppressed again, in the same
        // transaction as its row: it is never mailable in between. Checked after
        // the upsert, which waits for a concurrent erasure of the same row.
        macro_rules! suppress_erased {
            ($tx:expr) => {
                let found: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT email FROM suppressions WHERE {}",
                    self.backend().in_json_array("email", 1)
                )))
                .bind(json_list(
                    &marks.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
                ))
                .fetch_all(&mut *$tx)
                .await
                .context("looking up erased addresses")?;
                for (mark, email) in &marks {
                    if found.contains(mark) {
                        sqlx::query(
                            "INSERT INTO suppressions (email, reason, created_at) \
                             VALUES ($1, 'erased', $2) ON CONFLICT DO NOTHING",
                        )
                        .bind(email.as_str())
                        .bind(now)
                        .execute(&mut *$tx)
                        .await
                        .context("suppressing an erased address")?;
                    }
                }
            };
        }
        let mut written = 0;
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await.context("starting a customer batch")?;
                for chunk in rows.chunks(WRITE_BATCH) {
                    let sql = format!(
                        "INSERT INTO customers ({UPSERT_COLUMNS}) VALUES {} {UPSERT_CONFLICT}",
                        Backend::Sqlite.values_list(chunk.len(), 9)
                    );
                    let mut q =
                        sqlx::query(AssertSqlSafe(&*sql)).persistent(chunk.len() == WRITE_BATCH);
                    for r in chunk {
                        q = q
                            .bind(r.email.as_str())
                            .bind(&r.external_id)
                            .bind(&r.first_name)
                            .bind(&r.last_name)
                            .bind(r.status.as_str())
                            .bind(&r.timezone)
                            .bind(Json(&r.attributes))
                            .bind(r.created_at)
                            .bind(r.updated_at);
                    }
                    written += q
                        .execute(&mut *tx)
                        .await
                        .context("writing customers")?
                        .rows_affected();
                }
                suppress_erased!(tx);
                tx.commit().await.context("committing customers")?;
            }
            // Column arrays in one statement: far cheaper for PostgreSQL to parse
            // and plan than a VALUES list of thousands of parameters.
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await.context("starting a customer batch")?;
                let text = |f: fn(&CustomerWrite) -> Option<&str>| -> Vec<Option<&str>> {
                    rows.iter().map(f).collect()
                };
                let sql = format!(
                    "INSERT INTO customers ({UPSERT_COLUMNS}) SELECT * FROM UNNEST($1::text[], \
                     $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], \
                     $8::bigint[], $9::bigint[]) {UPSERT_CONFLICT}"
                );
                written = sqlx::query(AssertSqlSafe(sql))
                    .bind(text(|r| Some(r.email.as_str())))
                    .bind(text(|r| r.external_id.as_deref()))
                    .bind(text(|r| r.first_name.as_deref()))
                    .bind(text(|r| r.last_name.as_deref()))
                    .bind(text(|r| Some(r.status.as_str())))
                    .bind(text(|r| r.timezone.as_deref()))
                    .bind(rows.iter().map(|r| Json(&r.attributes)).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
                    .execute(&mut *tx)
                    .await
                    .context("writing customers")?
                    .rows_affected();
                suppress_erased!(tx);
                tx.commit().await.context("committing customers")?;
            }
        }
        Ok(written)
    }
}

impl Store {
    /// The key of this database's erasure marks ([`erasure_mark`]), generated
    /// on first use and never rotated (a new key would forget every erased
    /// address); read once per process.
    pub(crate) async fn erasure_key(&self, now: Millis) -> Result<String, StoreError> {
        self.erasure_key
            .get_or_try_init(|| self.generated_key("erasure", now))
            .await
            .cloned()
    }

    /// Each row's erasure mark with its address.
    async fn erasure_marks(
        &self,
        rows: &[CustomerWrite],
    ) -> Result<Vec<(String, Email)>, StoreError> {
        let key = self.erasure_key(rows[0].updated_at).await?;
        Ok(rows
            .iter()
            .map(|r| (erasure_mark(&key, &r.email), r.email.clone()))
            .collect())
    }
}

const UPSERT_COLUMNS: &str = "email, external_id, first_name, last_name, status, timezone, \
                              attributes, created_at, updated_at";
const UPSERT_CONFLICT: &str = "ON CONFLICT (email) DO UPDATE SET external_id = excluded.external_id, \
     first_name = excluded.first_name, last_name = excluded.last_name, \
     status = excluded.status, timezone = excluded.timezone, \
     attributes = excluded.attributes, updated_at = excluded.updated_at";

pub(crate) fn json_list(items: &[&str]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_string())
}
