//! Waking a worker when work may have arrived, instead of making it poll the
//! runs: a triggered message is queued by whichever process stored the event
//! (an API server, an import), and the worker should send it within
//! milliseconds, not at its next look a second later.
//!
//! - PostgreSQL: the transaction that queues deliveries calls `pg_notify` on
//!   [`WORK_CHANNEL`]; workers `LISTEN` on a connection of their own, and the
//!   notification arrives when that transaction commits.
//! - SQLite: `PRAGMA data_version` changes on a connection whenever another
//!   connection (of any process) commits to the file; a connection of its own
//!   asks every [`SQLITE_EVERY`], which costs a few microseconds.
//!
//! A wake-up says only "look now": what is due is decided by the rows, so a
//! spurious or a lost wake-up costs a look, or waits for the next regular one.

use std::time::Duration;

use sqlx::ConnectOptions as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::triggers::WORK_CHANNEL;
use super::{Context, Pool, Store, StoreError};

/// How often an SQLite worker checks the file for commits.
pub const SQLITE_EVERY: Duration = Duration::from_millis(20);
/// How long a lost PostgreSQL listener waits before connecting again.
const RECONNECT: Duration = Duration::from_secs(1);

/// Wake-ups for one worker; the watching task stops when this is dropped.
#[derive(Debug)]
pub struct Wake {
    rx: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Wake {
    /// Completes at the next wake-up (at once if one came since the last
    /// call); never, once the watching task has ended.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Store {
    /// Starts watching for work ([`Wake`]), on a connection of its own.
    pub async fn wake(&self) -> Result<Wake, StoreError> {
        let (tx, rx) = watch::channel(0u64);
        let task = match &self.pool {
            Pool::Sqlite(pool) => {
                let mut conn = pool
                    .connect_options()
                    .connect()
                    .await
                    .context("opening the connection that watches for work")?;
                tokio::spawn(async move {
                    let mut seen: Option<i64> = None;
                    loop {
                        tokio::time::sleep(SQLITE_EVERY).await;
                        let version: Result<i64, _> = sqlx::query_scalar("PRAGMA data_version")
                            .fetch_one(&mut conn)
                            .await;
                        match version {
                            Ok(v) if seen != Some(v) => {
                                if seen.is_some() {
                                    tx.send_modify(|n| *n += 1);
                                }
                                seen = Some(v);
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "watching the database for work");
                                tokio::time::sleep(RECONNECT).await;
                            }
                        }
                        if tx.is_closed() {
                            return;
                        }
                    }
                })
            }
            Pool::Postgres(pool) => {
                let pool = pool.clone();
                let mut listener = listen(&pool).await.context("listening for work")?;
                tokio::spawn(async move {
                    loop {
                        match listener.recv().await {
                            Ok(_) => {
                                tx.send_modify(|n| *n += 1);
                            }
                            Err(error) => {
                                tracing::warn!(%error, "listening for work; connecting again");
                                tokio::time::sleep(RECONNECT).await;
                                match listen(&pool).await {
                                    Ok(l) => {
                                        listener = l;
                                        // Work may have come while nobody listened.
                                        tx.send_modify(|n| *n += 1);
                                    }
                                    Err(error) => {
                                        tracing::warn!(%error, "listening for work");
                                    }
                                }
                            }
                        }
                        if tx.is_closed() {
                            return;
                        }
                    }
                })
            }
        };
        Ok(Wake { rx, task })
    }
}

async fn listen(pool: &sqlx::PgPool) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(WORK_CHANNEL).await?;
    Ok(listener)
}
