//! Opens and clicks go through a channel to one writer task, which commits
//! whatever has arrived in one transaction (one multi-row INSERT): a burst of
//! opens costs a few transactions, not one each. On shutdown the writer drains
//! the channel before it stops, so every event accepted is written.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::machine::{self, MachineReason};
use crate::clock::Millis;
use crate::store::interactions::InteractionWrite;
use crate::store::{Store, StoreError};

/// Events waiting for the writer. At ~10 k events/s this is seconds of
/// buffer: enough to ride out a slow commit, bounded against a dead database.
const QUEUE: usize = 65_536;
/// Most events per transaction.
const BATCH: usize = 4_000;
/// How long a request waits for room in a full queue before the event is
/// dropped (the response never waits longer, and never fails).
pub const ENQUEUE_WAIT: Duration = Duration::from_secs(1);
/// Tries for the last batches at shutdown when the database fails.
const FINAL_TRIES: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Open,
    Click,
}

/// An open or click from a verified token.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    pub delivery_id: i64,
    pub customer_id: i64,
    pub at: Millis,
    /// What the User-Agent says (the timing rule needs the delivery).
    pub machine: Option<MachineReason>,
    pub link: Option<(u32, String)>,
}

/// Counters for logs, `herald serve`'s summary and the benchmark.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    dropped: AtomicU64,
    written: AtomicU64,
    /// Events of genuine tokens whose delivery no longer exists.
    orphaned: AtomicU64,
    transactions: AtomicU64,
    lost: AtomicU64,
}

/// What the writer did: events accepted, dropped (a full queue), written,
/// orphaned (their delivery is gone), lost (the database failed at the end),
/// and the transactions it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub accepted: u64,
    pub dropped: u64,
    pub written: u64,
    pub orphaned: u64,
    pub transactions: u64,
    pub lost: u64,
}

impl Counters {
    fn totals(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            accepted: get(&self.accepted),
            dropped: get(&self.dropped),
            written: get(&self.written),
            orphaned: get(&self.orphaned),
            transactions: get(&self.transactions),
            lost: get(&self.lost),
        }
    }
}

/// Hands events to the writer. Clones share the queue; the writer stops
/// once every clone is dropped and the queue is written.
#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::Sender<Event>,
    counters: Arc<Counters>,
}

/// The writer task, started by [`start`].
#[derive(Debug)]
pub struct Writer {
    task: JoinHandle<Result<(), StoreError>>,
    counters: Arc<Counters>,
}

/// Starts the writer: events given to the returned [`Events`] are written
/// to `store` in batches.
pub fn start(store: Store) -> (Events, Writer) {
    let counters = Arc::new(Counters::default());
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(store, rx, counters.clone()));
    (
        Events {
            tx,
            counters: counters.clone(),
        },
        Writer { task, counters },
    )
}

impl Events {
    /// Hands an event to the writer; never fails the request.
    pub async fn record(&self, event: Event) {
        let outcome = match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(event)) => {
                match tokio::time::timeout(ENQUEUE_WAIT, self.tx.send(event)).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(()),
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        };
        match outcome {
            Ok(()) => self.counters.accepted.fetch_add(1, Ordering::Relaxed),
            Err(()) => {
                tracing::warn!("tracking events queue full: an event was dropped");
                self.counters.dropped.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

impl Writer {
    /// Waits until every [`Events`] is dropped and the queue drained; returns
    /// what was done, and the error that lost events, if any.
    pub async fn finish(self) -> (Totals, Result<(), StoreError>) {
        let written = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(StoreError::internal(
                "writing tracking events",
                format!("the writer task ended: {e}"),
            )),
        };
        (self.counters.totals(), written)
    }
}

/// Writes batches until the channel is closed and drained. A failing database
/// is retried with backoff (events queue up meanwhile); once the channel is
/// closed, a batch that still fails after a few tries is counted as lost.
async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Event>,
    counters: Arc<Counters>,
) -> Result<(), StoreError> {
    let mut buf: Vec<Event> = Vec::with_capacity(BATCH);
    let mut last_error = None;
    loop {
        if rx.recv_many(&mut buf, BATCH).await == 0 {
            return match last_error {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            match write_batch(&store, &buf, &counters).await {
                Ok(()) => break,
                Err(e) => {
                    tries += 1;
                    // The senders are gone (shutdown): give up after a few tries.
                    if rx.is_closed() && tries >= FINAL_TRIES {
                        tracing::error!(error = %e, events = buf.len(), "tracking events lost");
                        counters.lost.fetch_add(buf.len() as u64, Ordering::Relaxed);
                        last_error = Some(e);
                        break;
                    }
                    tracing::warn!(error = %e, events = buf.len(), retry_in = ?delay, "writing tracking events failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        buf.clear();
    }
}

async fn write_batch(
    store: &Store,
    events: &[Event],
    counters: &Counters,
) -> Result<(), StoreError> {
    let mut ids: Vec<i64> = events.iter().map(|e| e.delivery_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let deliveries: HashMap<i64, _> = store
        .tracked_deliveries(&ids)
        .await?
        .into_iter()
        .map(|d| (d.id, d))
        .collect();
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        // A genuine token's delivery is gone (its customer was deleted): skip.
        let Some(d) = deliveries
            .get(&e.delivery_id)
            .filter(|d| d.customer_id == e.customer_id)
        else {
            continue;
        };
        let machine = e.machine.or_else(|| machine::by_timing(e.at, d.sent_at));
        let mut data = Map::new();
        if let Some((index, url)) = &e.link {
            data.insert("url".into(), Value::String(url.clone()));
            data.insert("link".into(), Value::from(*index));
        }
        data.insert("machine".into(), Value::Bool(machine.is_some()));
        if let Some(reason) = machine {
            data.insert("machine_reason".into(), Value::from(reason.as_str()));
        }
        rows.push(InteractionWrite {
            customer_id: d.customer_id,
            kind: match e.kind {
                Kind::Open => "email_opened",
                Kind::Click => "email_clicked",
            }
            .to_string(),
            occurred_at: e.at,
            campaign: Some(d.campaign.clone()),
            step: Some(d.step.clone()),
            delivery_id: Some(d.id),
            external_id: None,
            data,
        });
    }
    let orphaned = (events.len() - rows.len()) as u64;
    if !rows.is_empty() {
        store.write_interactions(&rows).await?;
        counters.transactions.fetch_add(1, Ordering::Relaxed);
    }
    counters
        .written
        .fetch_add(rows.len() as u64, Ordering::Relaxed);
    counters.orphaned.fetch_add(orphaned, Ordering::Relaxed);
    Ok(())
}
