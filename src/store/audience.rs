//! Running a compiled audience: count, sample, stream every member, explain.
//!
//! The predicate comes from [`crate::segment`]; this module wraps it in the
//! statements below, binds its parameters and executes them, on either backend.

use futures_util::TryStreamExt as _;
use sqlx::AssertSqlSafe;

use super::{Context, Store, StoreError, with_pool};
use crate::customer::Email;
use crate::segment::Compiled;

/// One member as shown by `herald audience --sample`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: i64,
    pub email: Email,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// Binds the audience's parameters, in order, onto a query of either backend.
macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                $crate::segment::Param::Text(s) => q.bind(s.as_str()),
                $crate::segment::Param::Int(i) => q.bind(*i),
                $crate::segment::Param::Float(f) => q.bind(*f),
            };
        }
        q
    }};
}
pub(crate) use bind_all;

/// The statement counting an audience's members (also what `herald audience
/// --explain` shows).
pub fn count_sql(audience: &Compiled) -> String {
    format!(
        "SELECT COUNT(*) FROM customers c WHERE {}",
        audience.predicate
    )
}

/// Members' id and email in id order.
fn members_sql(audience: &Compiled) -> String {
    format!(
        "SELECT c.id, c.email FROM customers c WHERE {} ORDER BY c.id",
        audience.predicate
    )
}

/// `limit` random members with their names.
fn sample_sql(audience: &Compiled, limit: usize) -> String {
    format!(
        "SELECT c.id, c.email, c.first_name, c.last_name FROM customers c WHERE {} \
         ORDER BY random() LIMIT {limit}",
        audience.predicate
    )
}

impl Store {
    /// How many customers the audience holds right now.
    pub async fn audience_count(&self, audience: &Compiled) -> Result<i64, StoreError> {
        let sql = count_sql(audience);
        with_pool!(self, |pool| {
            bind_all!(sqlx::query_scalar(AssertSqlSafe(&*sql)), &audience.params)
                .fetch_one(pool)
                .await
        })
        .context("counting an audience")
    }

    /// Up to `limit` members chosen at random.
    pub async fn audience_sample(
        &self,
        audience: &Compiled,
        limit: usize,
    ) -> Result<Vec<Member>, StoreError> {
        let sql = sample_sql(audience, limit);
        let rows: Vec<(i64, String, Option<String>, Option<String>)> = with_pool!(self, |pool| {
            bind_all!(sqlx::query_as(AssertSqlSafe(&*sql)), &audience.params)
                .fetch_all(pool)
                .await
        })
        .context("sampling an audience")?;
        Ok(rows
            .into_iter()
            .map(|(id, email, first_name, last_name)| Member {
                id,
                email: Email::from_store(email),
                first_name,
                last_name,
            })
            .collect())
    }

    /// Calls `each(id, email)` for every member in id order, streaming rows from
    /// the database: the audience is never held in memory.
    pub async fn audience_for_each<E>(
        &self,
        audience: &Compiled,
        mut each: impl FnMut(i64, &str) -> Result<(), E>,
    ) -> Result<Result<(), E>, StoreError> {
        let sql = members_sql(audience);
        with_pool!(self, |pool| {
            let mut rows = bind_all!(
                sqlx::query_as::<_, (i64, String)>(AssertSqlSafe(&*sql)),
                &audience.params
            )
            .fetch(pool);
            while let Some((id, email)) = rows.try_next().await.context("listing an audience")? {
                if let Err(e) = each(id, &email) {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(()))
        })
    }

    /// Every member's id, in order (for tests and small audiences).
    pub async fn audience_ids(&self, audience: &Compiled) -> Result<Vec<i64>, StoreError> {
        let mut ids = Vec::new();
        self.audience_for_each(audience, |id, _| {
            ids.push(id);
            Ok::<_, std::convert::Infallible>(())
        })
        .await?
        .unwrap_or_else(|never| match never {});
        Ok(ids)
    }

    /// The database's plan for counting the audience, one line per row.
    pub async fn audience_plan(&self, audience: &Compiled) -> Result<Vec<String>, StoreError> {
        let count = count_sql(audience);
        let lines = match &self.pool {
            super::Pool::Sqlite(pool) => {
                let sql = format!("EXPLAIN QUERY PLAN {count}");
                let rows: Vec<(i64, i64, i64, String)> =
                    bind_all!(sqlx::query_as(AssertSqlSafe(&*sql)), &audience.params)
                        .fetch_all(pool)
                        .await
                        .context("explaining an audience")?;
                // Indent by depth: a row's parent is an earlier row's id.
                let mut depth: Vec<(i64, usize)> = Vec::new();
                rows.into_iter()
                    .map(|(id, parent, _, detail)| {
                        let d = depth
                            .iter()
                            .find(|(i, _)| *i == parent)
                            .map_or(0, |(_, d)| d + 1);
                        depth.push((id, d));
                        format!("{}{detail}", "  ".repeat(d))
                    })
                    .collect()
            }
            super::Pool::Postgres(pool) => {
                let sql = format!("EXPLAIN {count}");
                bind_all!(
                    sqlx::query_scalar::<_, String>(AssertSqlSafe(&*sql)),
                    &audience.params
                )
                .fetch_all(pool)
                .await
                .context("explaining an audience")?
            }
        };
        Ok(lines)
    }
}
