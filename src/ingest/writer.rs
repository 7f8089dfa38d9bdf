//! The tasks that store API calls (one on SQLite, [`POSTGRES_WRITERS`] on
//! PostgreSQL): requests hand their checked calls to them through a bounded
//! queue and wait; a writer takes whatever requests have arrived (up to
//! [`GROUP`] calls), stores them together, and answers each with its calls'
//! outcomes once the transaction is committed. A burst of requests costs a
//! few transactions, and an answered call is durable. Calls of requests
//! answered one after the other are stored in that order; calls of requests
//! in flight at the same time may be stored in either order, as with any
//! HTTP API (identity resolution ends in the same place either way).
//!
//! Why a group may be stored twice harmlessly: each try resolves afresh
//! against what is stored, events are keyed by their `messageId`, and
//! identify merges to the same customer; so a group whose commit failed (a
//! deadlock, a visitor deleted by another process) is simply resolved and
//! written again, up to [`TRIES`] times, before its requests are answered
//! 503 (and Segment's clients retry them).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::resolve;
use super::spec::{Event, Refusal};
use crate::clock::Clock;
use crate::store::triggers::{Entered, TriggerRule};
use crate::store::{Backend, Store, StoreError};

/// Requests waiting for the writer; a full queue holds a request up to
/// [`ENQUEUE_WAIT`], then it is answered 503.
const QUEUE: usize = 1024;
/// Most calls stored in one group.
pub const GROUP: usize = 5000;
/// How long a request waits for room in a full queue.
pub const ENQUEUE_WAIT: Duration = Duration::from_secs(5);
/// Tries of one group before its requests are answered with the error.
const TRIES: u32 = 3;
/// Writer tasks on PostgreSQL: while one group waits on the database, the
/// next is read and resolved. Calls that change who is who are serialised
/// by the identity locks ([`crate::store::Store::lock_identities`]), as
/// between processes. One on SQLite, which has one writer and no such locks.
const POSTGRES_WRITERS: usize = 2;
/// Times a group takes its locks again when the people its calls reach
/// changed between loading and locking.
const LOCK_ROUNDS: usize = 3;

/// Each call's outcome, in the order submitted.
pub type Outcomes = Vec<Result<(), Refusal>>;

struct Job {
    events: Vec<Event>,
    reply: oneshot::Sender<Result<Outcomes, StoreError>>,
}

/// Why calls were not stored; the request is answered 503 and may be retried.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the API's queue is full; retry later")]
    Busy,
    #[error("the API is stopping; retry later")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the writer did, for logs and `herald serve`'s summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestTotals {
    /// Calls stored (new or already stored).
    pub stored: u64,
    /// Calls refused by resolution (conflicts).
    pub refused: u64,
    /// Events that were new (a retried call's are not).
    pub new_events: u64,
    pub groups: u64,
    /// Customers the new events entered into event-triggered campaigns.
    pub entered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    stored: AtomicU64,
    refused: AtomicU64,
    new_events: AtomicU64,
    groups: AtomicU64,
    entered: AtomicU64,
}

/// Hands calls to the writer; clones share its queue.
#[derive(Debug, Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Job>,
}

/// The writer task, started by [`start`].
#[derive(Debug)]
pub struct Writer {
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// Starts the writer on `store`, stamping with `clock`; new events enter
/// their customers into the campaigns whose `rules` they match.
pub fn start(store: Store, clock: Arc<dyn Clock>, rules: Arc<[TriggerRule]>) -> (Ingest, Writer) {
    let counters = Arc::new(Counters::default());
    let (tx, rx) = mpsc::channel(QUEUE);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let writers = match store.backend() {
        Backend::Sqlite => 1,
        Backend::Postgres => POSTGRES_WRITERS,
    };
    let tasks = (0..writers)
        .map(|_| {
            tokio::spawn(run(
                store.clone(),
                clock.clone(),
                rules.clone(),
                rx.clone(),
                counters.clone(),
            ))
        })
        .collect();
    (Ingest { tx }, Writer { tasks, counters })
}

impl Ingest {
    /// Stores `events`; answers once they are committed, with each one's outcome.
    pub async fn submit(&self, events: Vec<Event>) -> Result<Outcomes, IngestError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job { events, reply };
        match tokio::time::timeout(ENQUEUE_WAIT, self.tx.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(IngestError::Stopped),
            Err(_) => return Err(IngestError::Busy),
        }
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(IngestError::Stopped),
        }
    }
}

impl Writer {
    /// Waits until every [`Ingest`] is dropped and the queue is stored.
    pub async fn finish(self) -> IngestTotals {
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "an API writer task ended abnormally");
            }
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngestTotals {
            stored: get(&self.counters.stored),
            refused: get(&self.counters.refused),
            new_events: get(&self.counters.new_events),
            groups: get(&self.counters.groups),
            entered: get(&self.counters.entered),
        }
    }
}

/// Takes the requests waiting, up to [`GROUP`] calls; none once the queue is
/// closed and empty.
async fn next_group(rx: &tokio::sync::Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut calls = first.events.len();
    let mut jobs = vec![first];
    while calls < GROUP {
        match rx.try_recv() {
            Ok(job) => {
                calls += job.events.len();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    Some(jobs)
}

async fn run(
    store: Store,
    clock: Arc<dyn Clock>,
    rules: Arc<[TriggerRule]>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    counters: Arc<Counters>,
) {
    while let Some(jobs) = next_group(&rx).await {
        let events: Vec<&Event> = jobs.iter().flat_map(|j| j.events.iter()).collect();
        let mut delay = Duration::from_millis(20);
        let mut tries = 0;
        let result = loop {
            tries += 1;
            match store_group(&store, clock.now(), &events, &rules).await {
                Ok(done) => break Ok(done),
                Err(e) if tries < TRIES => {
                    tracing::warn!(error = %e, calls = events.len(), "storing API calls failed; resolving again");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(done) => {
                count(&counters, &done);
                let mut outcomes = done.outcomes.into_iter();
                for job in jobs {
                    let mine: Outcomes = outcomes.by_ref().take(job.events.len()).collect();
                    // A request that gave up waiting is gone; its calls are stored.
                    let _ = job.reply.send(Ok(mine));
                }
            }
            // One request's calls may be what fails the group: each request
            // is tried once on its own, so the others are not held hostage.
            Err(e) if jobs.len() > 1 => {
                tracing::warn!(error = %e, requests = jobs.len(), "a group of API calls failed; storing its requests one by one");
                for job in jobs {
                    let mine: Vec<&Event> = job.events.iter().collect();
                    let result = store_group(&store, clock.now(), &mine, &rules).await;
                    let reply = match result {
                        Ok(done) => {
                            count(&counters, &done);
                            Ok(done.outcomes)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, calls = mine.len(), "API calls could not be stored");
                            Err(e)
                        }
                    };
                    let _ = job.reply.send(reply);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, calls = events.len(), "API calls could not be stored");
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::internal(
                        "storing API calls",
                        e.to_string(),
                    )));
                }
            }
        }
    }
}

fn count(counters: &Counters, done: &Stored) {
    let refused = done.outcomes.iter().filter(|o| o.is_err()).count() as u64;
    counters.refused.fetch_add(refused, Ordering::Relaxed);
    counters
        .stored
        .fetch_add(done.outcomes.len() as u64 - refused, Ordering::Relaxed);
    counters
        .new_events
        .fetch_add(done.new_events, Ordering::Relaxed);
    counters
        .entered
        .fetch_add(done.entered.entries, Ordering::Relaxed);
    counters.groups.fetch_add(1, Ordering::Relaxed);
    if done.entered.entries > 0 {
        tracing::debug!(
            entered = done.entered.entries,
            queued = done.entered.queued,
            "events entered customers into triggered campaigns"
        );
    }
}

/// What storing one group did.
struct Stored {
    outcomes: Outcomes,
    new_events: u64,
    entered: Entered,
}

/// Locks, loads, resolves and writes one group (entering customers into the
/// campaigns whose `rules` its new events match); each call's outcome, how
/// many events were new, and what the triggers did.
///
/// What the calls name is loaded first. The names of the calls that change
/// who is who ([`resolve::racy_keys`]), with the visitors and customers they
/// reach ([`resolve::reached`]), are then locked (PostgreSQL) and loaded
/// again under the lock; if the people reached changed meanwhile, the locks
/// are taken again with them. A group of plain events of known customers
/// takes no lock and one load.
async fn store_group(
    store: &Store,
    now: crate::clock::Millis,
    events: &[&Event],
    rules: &[TriggerRule],
) -> Result<Stored, StoreError> {
    let keys = resolve::keys(events.iter().copied());
    let mut known = store.load_known(&keys).await?;
    let needed = |known: &resolve::Known| {
        let mut names = resolve::racy_keys(events.iter().copied(), known);
        let people = resolve::reached(known, &names);
        names.extend(people);
        names
    };
    let mut wanted = needed(&known);
    let mut lock = store.lock_identities(&wanted).await?;
    let mut settled = !lock.is_held();
    for _ in 0..LOCK_ROUNDS {
        if settled {
            break;
        }
        known = store.load_known(&keys).await?;
        let need = needed(&known);
        if wanted.covers(&need) {
            settled = true;
        } else {
            lock.release().await;
            wanted.extend(need);
            lock = store.lock_identities(&wanted).await?;
        }
    }
    if !settled {
        lock.release().await;
        return Err(StoreError::internal(
            "storing API calls",
            "the people the calls reach kept changing; resolving again",
        ));
    }
    let written = async {
        let resolve::Resolved { mut plan, outcomes } =
            resolve::resolve(events.iter().copied(), known, now);
        store.write_customers(&plan.customers).await?;
        let new: Vec<&str> = plan
            .customers
            .iter()
            .filter(|c| !plan.customer_ids.contains_key(&c.email))
            .map(|c| c.email.as_str())
            .collect();
        let mut ids: HashMap<_, _> = std::mem::take(&mut plan.customer_ids);
        if !new.is_empty() {
            let written = store.customer_keys(&new, &[]).await?;
            ids.extend(written.into_iter().map(|k| (k.email, k.id)));
        }
        let (new_events, entered) = store.apply_plan(&plan, &ids, rules).await?;
        Ok::<_, StoreError>(Stored {
            outcomes,
            new_events,
            entered,
        })
    }
    .await;
    lock.release().await;
    written
}
