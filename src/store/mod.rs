//! The only module that speaks SQL.
//!
//! One [`Store`] serves SQLite and PostgreSQL. Statements are written once
//! wherever the dialects agree (`$1` placeholders work on both in sqlx); the few
//! that differ live side by side in [`crate::dialect`]. Every statement runs in the
//! shared test suite on both backends.

pub mod api_keys;
pub mod audience;
pub mod backup;
pub mod customers;
pub mod deliveries;
pub mod ingest;
pub mod interactions;
mod nodelay;
pub mod profile;
pub mod seed;
pub mod sends;
pub mod sequence;
pub mod stats;
pub mod tracking;
pub mod triggers;
pub mod wake;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use crate::dialect::Backend;

use crate::config::redact;

/// Runs `$body` with `$pool` bound to the backend's concrete pool type.
///
/// The body is compiled once per backend, so a statement written once in the
/// body is one SQL text executed by both drivers.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("no database at {path}: check database_url")]
    Missing { path: String },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while {context}: {source}")]
    Query {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A failure on Herald's side of a store operation, not the database's:
    /// no randomness from the operating system, or the task that carried the
    /// writes ended abnormally.
    #[error("internal error while {context}: {source}")]
    Internal {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// An [`StoreError::Internal`] failure while doing `context`.
    pub fn internal(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Internal {
            context,
            source: source.into(),
        }
    }

    /// Whether the statement met a concurrent transaction's write (a unique
    /// key taken meanwhile, a deadlock, a serialization failure): the same
    /// transaction tried again sees the other's outcome.
    pub fn is_conflict(&self) -> bool {
        let StoreError::Query {
            source: sqlx::Error::Database(db),
            ..
        } = self
        else {
            return false;
        };
        db.is_unique_violation() || matches!(db.code().as_deref(), Some("40001" | "40P01"))
    }
}

/// `N` random bytes from the operating system, as hex.
pub(crate) fn random_hex<const N: usize>(context: &'static str) -> Result<String, StoreError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::internal(context, e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Statements slower than [`SLOW_AFTER`] are logged at debug (`HERALD_LOG=sqlx=debug`
/// shows them): sqlx's default warning printed the full SQL text of ordinary
/// set-based statements on large data (an audience of a million, an index
/// build) to every user.
const SLOW_STATEMENTS: log::LevelFilter = log::LevelFilter::Debug;
const SLOW_AFTER: Duration = Duration::from_secs(1);

/// Adds what the statement was doing to a driver error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { context, source })
    }
}

/// A column holding one of Herald's named states ([`crate::status`]), as its
/// enum. The tables' CHECK constraints allow no other text; a row that still
/// has one is a decoding error of that row, like a wrong column type.
pub(crate) fn named<T>(text: &str) -> Result<T, sqlx::Error>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A connection pool to Herald's database, SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Pool,
    /// SQLite allows one writer at a time; writers of this process queue here
    /// instead of meeting `SQLITE_BUSY` and sleeping in the busy handler.
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The erasure-mark key, once read ([`Store::erasure_key`]).
    erasure_key: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl Store {
    /// Connects (creating an SQLite file on first use) without migrating.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, true).await
    }

    /// Connects to a database that must exist already (no SQLite file is
    /// created), without migrating: what reads it is left as it was found.
    pub async fn connect_existing(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, false).await
    }

    async fn connect_with(url: &str, create: bool) -> Result<Store, StoreError> {
        use sqlx::ConnectOptions as _;
        let err = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        let pool = match Backend::of_url(url) {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url).map_err(err)?;
                let file = options.get_filename();
                if !create && !file.exists() {
                    return Err(StoreError::Missing {
                        path: file.display().to_string(),
                    });
                }
                let options = options
                    .create_if_missing(create)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
                    // 16 MiB of page cache per connection keeps bulk loads off the disk
                    // while staying far inside the memory budget.
                    .pragma("cache_size", "-16384")
                    // A multi-row insert that may fail halfway keeps the pages it
                    // changes in a statement journal: in memory, not a temp file
                    // (writing that file was 12 % of the server's CPU samples while
                    // ingesting; docs/performance.md).
                    .pragma("temp_store", "memory")
                    .log_slow_statements(SLOW_STATEMENTS, SLOW_AFTER);
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(4)
                        .connect_with(options)
                        .await
                        .map_err(err)?,
                )
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(err)?
                    .log_slow_statements(SLOW_STATEMENTS, SLOW_AFTER);
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(8)
                        .acquire_timeout(Duration::from_secs(30))
                        .after_connect(|_, _| {
                            Box::pin(async {
                                nodelay::apply();
                                Ok(())
                            })
                        })
                        .connect_with(options)
                        .await
                        .map_err(err)?,
                )
            }
        };
        Ok(Store {
            pool,
            gate: Default::default(),
            erasure_key: Default::default(),
        })
    }

    /// Held around the hot write transactions on SQLite (none on PostgreSQL,
    /// whose row locks let writers proceed side by side).
    pub(crate) async fn write_gate(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.gate.lock().await),
            Pool::Postgres(_) => None,
        }
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        store.ensure_indexes().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies Herald's migrations. They are recorded in `herald_migrations`, apart
    /// from the job queue's own `_sqlx_migrations`, so neither sees the other's as
    /// unknown.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut m = sqlx::migrate!("./migrations/sqlite");
                m.dangerous_set_table_name("herald_migrations");
                m.run(pool).await?;
            }
            Pool::Postgres(pool) => {
                let mut m = sqlx::migrate!("./migrations/postgres");
                m.dangerous_set_table_name("herald_migrations");
                m.run(pool).await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }

    /// Rows per table, for summaries.
    pub async fn table_counts(&self) -> Result<TableCounts, StoreError> {
        let sql = "SELECT (SELECT COUNT(*) FROM customers), (SELECT COUNT(*) FROM interactions), \
                   (SELECT COUNT(*) FROM suppressions)";
        let (customers, interactions, suppressions): (i64, i64, i64) =
            with_pool!(self, |pool| sqlx::query_as(sql).fetch_one(pool).await)
                .context("counting rows")?;
        Ok(TableCounts {
            customers,
            interactions,
            suppressions,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableCounts {
    pub customers: i64,
    pub interactions: i64,
    pub suppressions: i64,
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn internal_failures_say_what_was_being_done_and_keep_their_cause() {
        let e = StoreError::internal("recording outcomes", "the writer task ended: panicked");
        assert_eq!(
            e.to_string(),
            "internal error while recording outcomes: the writer task ended: panicked"
        );
        assert!(e.source().is_some());
    }
}
