//! The send loop of one pass over a run: the plumbing that applies the
//! delivery rules ([`rules`]) to claimed batches.
//!
//! - A feeder claims batches ahead under a lease ([`lease`]), sorts each
//!   ([`crate::pipeline::triage`]) and hands the sendable claims to the senders.
//! - `smtp_concurrency` senders each compose ([`crate::pipeline::compose`]),
//!   wait for the rate limiter, send, and wait for their outcome to be
//!   committed before taking the next message: a crash can repeat at most the
//!   messages in flight.
//! - One writer commits outcomes in group commits and acks each sender.

mod lease;
pub(crate) mod rules;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot, watch};

use self::lease::Lease;
use self::rules::{Retries, StopRule, claim_size};
use super::compose::{Events, panic_text};
use super::triage::Triage;
use super::{Engine, EngineError};
use crate::campaign::Campaign;
use crate::clock::Clock;
use crate::mailer::{Limiter, Outgoing};
use crate::message;
use crate::metrics::Metrics;
use crate::store::deliveries::{Claimed, Outcome};
use crate::store::{Store, StoreError};

/// Outcome writers per run. Two (one gathering while the other commits) were
/// measured slower than one on PostgreSQL: smaller groups cost more than the
/// overlap saves.
const OUTCOME_WRITERS: usize = 1;
/// How long a pass over a run of a campaign sent on demand (triggered or
/// transactional) waits for more work once nothing is due, and how often it
/// looks meanwhile: the next triggered message goes out within
/// [`LINGER_POLL`] instead of waiting for a new pass to start, and a pass
/// ends after [`LINGER`] without work.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// What a send pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub bounced: u64,
    pub skipped: u64,
    /// Put back until the send window opens.
    pub deferred: u64,
    /// Whether queued deliveries are left (waiting for a retry, or stopped).
    pub pending: bool,
}

impl RunSummary {
    fn add(&mut self, o: &RunSummary) {
        self.sent += o.sent;
        self.retried += o.retried;
        self.failed += o.failed;
        self.bounced += o.bounced;
        self.skipped += o.skipped;
        self.deferred += o.deferred;
        self.pending |= o.pending;
    }

    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Sent { .. } => self.sent += 1,
            Outcome::Retry { .. } => self.retried += 1,
            Outcome::Failed { .. } => self.failed += 1,
            Outcome::Bounced { .. } => self.bounced += 1,
            Outcome::Skipped { .. } => self.skipped += 1,
            Outcome::Deferred { .. } => self.deferred += 1,
        }
    }
}

/// A sender's result on its way to the writer; the ack says it is committed.
type Recorded = (i64, Outcome, Option<oneshot::Sender<()>>);

/// A claimed delivery on its way to a sender, with the batch's `events.KIND`.
struct Work {
    claimed: Claimed,
    events: Arc<Events>,
}

/// What the senders of one pass share besides the engine.
struct Senders {
    campaign: Arc<Campaign>,
    limiter: Option<Arc<Limiter>>,
    work: tokio::sync::Mutex<mpsc::Receiver<Work>>,
    outcomes: mpsc::Sender<Recorded>,
    stop: watch::Receiver<bool>,
    rule: StopRule,
    /// Why the pass stopped early ([`StopRule`]): claims stop, and senders
    /// give back what they had not started. The first reason stands.
    stopped: std::sync::Mutex<Option<EngineError>>,
    abort: AtomicBool,
    lease: Arc<Lease>,
}

impl Senders {
    fn halted(&self) -> bool {
        *self.stop.borrow() || self.abort.load(Ordering::Relaxed)
    }

    /// Halts the pass with `reason`, unless it was halted for one already.
    fn stop_early(&self, reason: EngineError) {
        self.abort.store(true, Ordering::Relaxed);
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.get_or_insert(reason);
        }
    }
}

impl Engine {
    /// Sends the run's due deliveries until none is left to claim now, or `stop`
    /// turns true (then in-flight sends finish and unstarted claims go back).
    pub async fn send_run(
        &self,
        campaign: &Campaign,
        run_id: i64,
        stop: watch::Receiver<bool>,
    ) -> Result<RunSummary, EngineError> {
        // What the relay announces decides how messages are built.
        self.mailer().probe().await;
        let settings = self.settings();
        let concurrency = settings.smtp_concurrency.max(1);
        let batch = claim_size(concurrency, [campaign.limits.rate, settings.smtp_rate]);
        let lease = Arc::new(Lease::new(
            run_id,
            self.now(),
            settings.send_lease.as_millis(),
        )?);
        let (renewing, renewing_rx) = watch::channel(false);
        let renewer = tokio::spawn(lease.clone().keep(
            self.store().clone(),
            self.clock(),
            renewing_rx,
        ));
        // Half a batch waits for the senders while the next one is claimed.
        let (work_tx, work_rx) = mpsc::channel::<Work>((batch / 2).max(concurrency));
        let (out_tx, out_rx) = mpsc::channel::<Recorded>(concurrency * 4);
        let out_rx = Arc::new(tokio::sync::Mutex::new(out_rx));
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..OUTCOME_WRITERS {
            writers.spawn(write_outcomes(
                self.store().clone(),
                self.clock(),
                out_rx.clone(),
                self.metrics().clone(),
                lease.clone(),
            ));
        }
        let shared = Arc::new(Senders {
            campaign: Arc::new(campaign.clone()),
            limiter: self.limiter(&campaign.name),
            work: tokio::sync::Mutex::new(work_rx),
            outcomes: out_tx.clone(),
            stop: stop.clone(),
            rule: StopRule::new(&campaign.name),
            stopped: std::sync::Mutex::new(None),
            abort: AtomicBool::new(false),
            lease: lease.clone(),
        });
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            senders.spawn(sender(self.clone(), shared.clone()));
        }
        let mut summary = RunSummary::default();
        let claimed = self
            .feed(campaign, run_id, batch as i64, &shared, work_tx, &out_tx)
            .await;
        if claimed.is_err() {
            shared.abort.store(true, Ordering::Relaxed);
        }
        while let Some(part) = senders.join_next().await {
            match part {
                Ok(p) => summary.add(&p),
                Err(e) => tracing::error!(error = %e, "a sender task ended abnormally"),
            }
        }
        drop(out_tx);
        let stopped = shared.stopped.lock().map(|mut r| r.take()).unwrap_or(None);
        drop(shared);
        let mut written = Ok(());
        while let Some(w) = writers.join_next().await {
            match w {
                Ok(Ok(())) => {}
                Ok(Err(e)) => written = Err(EngineError::Store(e)),
                Err(e) => {
                    written = Err(EngineError::Store(StoreError::internal(
                        "recording outcomes",
                        format!("the writer task ended: {e}"),
                    )))
                }
            }
        }
        let _ = renewing.send(true);
        let _ = renewer.await;
        // Whatever is still held was never started (a sender task that ended
        // abnormally): it goes back at once.
        let released = self
            .store()
            .release_claims(run_id, &lease.holder, self.now())
            .await?;
        if released > 0 {
            tracing::warn!(campaign = %campaign.name, run = run_id, released, "unstarted claims given back");
            summary.pending = true;
        }
        let (skipped, deferred, pending) = claimed?;
        summary.skipped += skipped;
        summary.deferred += deferred;
        summary.pending |= pending;
        written?;
        match stopped {
            Some(reason) => Err(reason),
            None => Ok(summary),
        }
    }

    /// Claims batches and hands them to the senders until nothing is due or
    /// the run is halted. Returns (skipped, deferred, whether deliveries are
    /// pending).
    async fn feed(
        &self,
        campaign: &Campaign,
        run_id: i64,
        batch: i64,
        shared: &Senders,
        work: mpsc::Sender<Work>,
        outcomes: &mpsc::Sender<Recorded>,
    ) -> Result<(u64, u64, bool), EngineError> {
        let (prefix, suffix) = message::message_id_parts(&campaign.name, &campaign.from);
        let mut skipped = 0u64;
        let mut deferred = 0u64;
        loop {
            if shared.halted() {
                return Ok((skipped, deferred, true));
            }
            let now = self.now();
            self.store()
                .requeue_expired(
                    run_id,
                    now,
                    &shared.lease.holder,
                    self.settings().max_attempts,
                )
                .await?;
            let claimed = self
                .store()
                .claim(
                    run_id,
                    batch,
                    (now, shared.lease.until(now)),
                    self.cap_since(now),
                    (&prefix, &suffix),
                    &shared.lease.holder,
                )
                .await?;
            if claimed.is_empty() {
                if lingers(campaign) && self.work_arrives(run_id, shared).await? {
                    continue;
                }
                return Ok((skipped, deferred, false));
            }
            let Triage {
                send: sendable,
                skip,
                defer,
            } = self.triage(campaign, claimed);
            skipped += skip.len() as u64;
            deferred += defer.len() as u64;
            let skip = skip
                .into_iter()
                .map(|(id, reason)| (id, Outcome::Skipped { reason }));
            let defer = defer
                .into_iter()
                .map(|(c, at)| (c.delivery_id, Outcome::Deferred { at }));
            for (id, outcome) in skip.chain(defer) {
                if outcomes.send((id, outcome, None)).await.is_err() {
                    return Ok((skipped, deferred, true));
                }
            }
            let events = Arc::new(self.events(campaign, &sendable).await?);
            for claimed in sendable {
                let item = Work {
                    claimed,
                    events: events.clone(),
                };
                if work.send(item).await.is_err() {
                    return Ok((skipped, deferred, true));
                }
            }
        }
    }

    /// Waits up to [`LINGER`] for a delivery of the run to fall due (one
    /// queued by a trigger or a send meanwhile); whether one did. A halted
    /// pass stops waiting at once.
    async fn work_arrives(&self, run_id: i64, shared: &Senders) -> Result<bool, EngineError> {
        let until = std::time::Instant::now() + LINGER;
        while std::time::Instant::now() < until {
            if shared.halted() {
                return Ok(false);
            }
            tokio::time::sleep(LINGER_POLL).await;
            if self
                .store()
                .next_attempt(run_id)
                .await?
                .is_some_and(|at| at <= self.now())
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Composes and sends one message; never fails, returns the outcome.
    async fn deliver(
        &self,
        campaign: &Campaign,
        c: &Claimed,
        events: &Events,
        limiter: Option<&Limiter>,
        lease: &Lease,
    ) -> Outcome {
        let composed = match self.compose(campaign, c, &c.message_id, events) {
            Ok(composed) => composed,
            Err(error) => {
                let error = error.to_string();
                tracing::warn!(campaign = %campaign.name, step = %c.step, delivery = c.delivery_id, %error, "message not built");
                return Outcome::Failed { error };
            }
        };
        if let Some(l) = limiter {
            let waited = std::time::Instant::now();
            l.wait().await;
            self.metrics().observe_rate_limit_wait(waited.elapsed());
        }
        if !lease.may_start(self.now()) {
            // Not started: the claim may not be ours for long enough.
            return Outcome::Deferred { at: self.now() };
        }
        let file_id = format!("{}-{}-{}", campaign.name, sanitize(&c.step), c.delivery_id);
        let started = std::time::Instant::now();
        let result = self
            .mailer()
            .send(Outgoing {
                from: self
                    .settings()
                    .bounce_address
                    .as_ref()
                    .unwrap_or(&campaign.from.email),
                to: &composed.to,
                id: &file_id,
                message: &composed.bytes,
            })
            .await;
        self.metrics().observe_send_latency(started.elapsed());
        let e = match result {
            Ok(_) => {
                return Outcome::Sent {
                    message_id: c.message_id.clone(),
                };
            }
            Err(e) => e,
        };
        let shown = e.to_string();
        let retries = Retries {
            max_attempts: self.settings().max_attempts,
            backoff: self.settings().retry_backoff,
        };
        let attempts = u32::try_from(c.attempts).unwrap_or(0);
        let outcome = rules::failure(e, c.delivery_id, attempts, retries, self.now());
        if let Outcome::Failed { error } = &outcome {
            tracing::warn!(campaign = %campaign.name, step = %c.step, delivery = c.delivery_id, attempt = c.attempts, %error, "message failed for good");
        } else {
            tracing::info!(campaign = %campaign.name, step = %c.step, delivery = c.delivery_id, attempt = c.attempts, error = %shown, "send failed");
        }
        outcome
    }
}

/// One sender: takes claimed deliveries one at a time, sends each, and waits
/// for its outcome to be committed before taking the next.
async fn sender(engine: Engine, shared: Arc<Senders>) -> RunSummary {
    let mut part = RunSummary::default();
    loop {
        let next = shared.work.lock().await.recv().await;
        let Some(Work { claimed: c, events }) = next else {
            break;
        };
        if shared.halted() {
            // Not started: give the claim back untouched.
            let outcome = Outcome::Deferred { at: engine.now() };
            part.pending = true;
            let _ = shared.outcomes.send((c.delivery_id, outcome, None)).await;
            continue;
        }
        let Ok(_permit) = engine.slots().acquire().await else {
            break;
        };
        let delivered = std::panic::AssertUnwindSafe(engine.deliver(
            &shared.campaign,
            &c,
            &events,
            shared.limiter.as_deref(),
            &shared.lease,
        ))
        .catch_unwind()
        .await;
        let outcome = delivered.unwrap_or_else(|panic| {
            let error = format!("internal error while sending: {}", panic_text(&*panic));
            tracing::error!(campaign = %shared.campaign.name, step = %c.step, delivery = c.delivery_id, %error, "message failed");
            Outcome::Failed { error }
        });
        part.count(&outcome);
        if let Outcome::Deferred { .. } = outcome {
            // Given back for want of a lease: stop this pass, the next one
            // (here or on another worker) carries on.
            part.pending = true;
            shared.abort.store(true, Ordering::Relaxed);
        }
        if let Some(reason) = shared.rule.observe(&outcome) {
            shared.stop_early(reason);
        }
        let (ack, acked) = oneshot::channel();
        if shared
            .outcomes
            .send((c.delivery_id, outcome, Some(ack)))
            .await
            .is_ok()
        {
            let _ = acked.await;
        }
    }
    part
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Commits outcomes as they come, in batches of whatever has arrived, and acks
/// each sender once its outcome is durable. Several writers may share the
/// receiver: while one commit is in flight the next group gathers and goes.
async fn write_outcomes(
    store: Store,
    clock: Arc<dyn Clock>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Recorded>>>,
    metrics: Metrics,
    lease: Arc<Lease>,
) -> Result<(), StoreError> {
    let mut buf: Vec<Recorded> = Vec::with_capacity(256);
    loop {
        if rx.lock().await.recv_many(&mut buf, 512).await == 0 {
            return Ok(());
        }
        let batch: Vec<(i64, Outcome)> = buf.iter().map(|(id, o, _)| (*id, o.clone())).collect();
        store
            .record_outcomes(&batch, clock.now(), &lease.holder)
            .await?;
        for (_, outcome) in &batch {
            metrics.outcome(outcome);
        }
        for (_, _, ack) in buf.drain(..) {
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
        }
    }
}

/// Whether a pass over `campaign`'s runs waits a moment for more work
/// ([`LINGER`]): its messages are queued one customer at a time, by triggers
/// and transactional sends, and should go out as they come.
fn lingers(campaign: &Campaign) -> bool {
    campaign.trigger.is_some() || campaign.kind == crate::campaign::CampaignKind::Transactional
}
