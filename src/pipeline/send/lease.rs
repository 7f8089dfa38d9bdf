//! The claims of one send pass: who holds them, and until when they are
//! surely still held.
//!
//! The pass renews every lease it holds each quarter lease, so a claim never
//! expires while its pass works, however slowly the batch drains (a rate
//! limit, a slow relay). A sender starts a message only while the last
//! successful renewal is less than half a lease old: if renewals fail (the
//! database is gone) or the process stalled, it stops before another worker
//! could take the claim over, and gives the message back.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::watch;

use crate::clock::{Clock, Millis};
use crate::store::{Store, StoreError};

pub(super) struct Lease {
    /// The run whose deliveries the pass claims.
    pub(super) run_id: i64,
    /// The name the pass's claims carry (`claimed_by`).
    pub(super) holder: String,
    span: Millis,
    /// The end of the lease every held claim has at least.
    valid_until: AtomicI64,
}

impl Lease {
    pub(super) fn new(run_id: i64, now: Millis, span: Millis) -> Result<Lease, StoreError> {
        let random = crate::store::random_hex::<8>("naming a send pass")?;
        Ok(Lease {
            run_id,
            holder: format!("{}.{random}", std::process::id()),
            span: span.max(1),
            valid_until: AtomicI64::new(now + span.max(1)),
        })
    }

    /// The end of a lease taken at `now`.
    pub(super) fn until(&self, now: Millis) -> Millis {
        now + self.span
    }

    /// Whether a message may go on the wire now.
    pub(super) fn may_start(&self, now: Millis) -> bool {
        now < self.valid_until.load(Ordering::Relaxed) - self.span / 2
    }

    /// How often the leases are renewed.
    fn every(&self) -> std::time::Duration {
        std::time::Duration::from_millis((self.span / 4).clamp(20, 30_000) as u64)
    }

    /// Renews the pass's leases until `done` is dropped or set.
    pub(super) async fn keep(
        self: Arc<Self>,
        store: Store,
        clock: Arc<dyn Clock>,
        mut done: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every()) => {}
                _ = crate::pipeline::stopped(done.clone()) => return,
            }
            if *done.borrow_and_update() {
                return;
            }
            let at = clock.now();
            match store
                .renew_claims(self.run_id, &self.holder, self.until(at))
                .await
            {
                Ok(_) => {
                    self.valid_until
                        .fetch_max(self.until(at), Ordering::Relaxed);
                }
                Err(error) => tracing::warn!(%error, holder = %self.holder, "leases not renewed"),
            }
        }
    }
}
