//! Transactional send calls (`POST /v1/send`) in group commits: requests hand
//! their checked call to one writer task through a bounded queue and wait; the
//! writer takes whatever calls have arrived (up to [`GROUP`]), accepts them in
//! one transaction ([`Store::accept_sends`]) and answers each once it is
//! committed. A thousand calls a second cost a few transactions a second
//! instead of a thousand, each of which (on SQLite) waited for the one
//! writer's lock in turn.
//!
//! Why a group may be accepted twice harmlessly: a call's Idempotency-Key is
//! what makes it unique, so a group whose commit failed is simply tried
//! again; if it fails again, each call is tried on its own, so one bad call
//! does not hold the others hostage.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::writer::{ENQUEUE_WAIT, IngestError};
use crate::store::sends::{Accepted, SendRequest};
use crate::store::{Store, StoreError};

/// Calls waiting for the writer.
const QUEUE: usize = 4096;
/// Most calls accepted in one transaction.
pub const GROUP: usize = 500;

struct Job {
    call: SendRequest,
    reply: oneshot::Sender<Result<Accepted, StoreError>>,
}

/// Hands calls to the writer; clones share its queue.
#[derive(Debug, Clone)]
pub struct Sends {
    tx: mpsc::Sender<Job>,
}

/// The writer task, started by [`start`].
#[derive(Debug)]
pub struct SendWriter {
    task: JoinHandle<()>,
}

/// Starts the writer on `store`.
pub fn start(store: Store) -> (Sends, SendWriter) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(store, rx));
    (Sends { tx }, SendWriter { task })
}

impl Sends {
    /// Accepts `call`; answers once it is committed.
    pub async fn submit(&self, call: SendRequest) -> Result<Accepted, IngestError> {
        let (reply, answer) = oneshot::channel();
        match tokio::time::timeout(ENQUEUE_WAIT, self.tx.send(Job { call, reply })).await {
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

impl SendWriter {
    /// Waits until every [`Sends`] is dropped and the queue is accepted.
    pub async fn finish(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the send writer task ended abnormally");
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (calls, replies): (Vec<SendRequest>, Vec<_>) =
            jobs.into_iter().map(|j| (j.call, j.reply)).unzip();
        match store.accept_sends(&calls).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A request that gave up waiting is gone; its call stands.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if calls.len() > 1 => {
                tracing::warn!(error = %e, calls = calls.len(), "a group of sends failed; accepting them one by one");
                for (call, reply) in calls.iter().zip(replies) {
                    let result = store.accept_send(call).await;
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "a send could not be accepted");
                    }
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a send could not be accepted");
                for reply in replies {
                    let _ =
                        reply.send(Err(StoreError::internal("accepting a send", e.to_string())));
                }
            }
        }
    }
}
