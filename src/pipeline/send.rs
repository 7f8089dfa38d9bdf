//! Sending a planned run.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use lettre::message::Mailbox;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};

use futures_util::FutureExt as _;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use super::subject_key;
use crate::campaign::Campaign;
use crate::clock::{Clock, Millis};
use crate::config::Settings;
use crate::mailer::{Limiter, Mailer, Outgoing, SendError};
use crate::message::{self, Dkim, Envelope};
use crate::render::links::{self, Tracking};
use crate::render::{self, RenderError, Rendered, Templates};
use crate::store::deliveries::{Claimed, Outcome};
use crate::store::{Store, StoreError};
use crate::token::Signer;

/// Outcome writers per run. Two (one gathering while the other commits) were
/// measured slower than one on PostgreSQL: smaller groups cost more than the
/// overlap saves.
const OUTCOME_WRITERS: usize = 1;

/// Consecutive 5.7.x replies (the relay refuses the sender) that stop a run.
const SENDER_REFUSALS_TO_STOP: u32 = 5;
/// A pass whose first this many messages all fail for good stops: something
/// wrong for every message (a template, the relay's settings, a full disk)
/// is reported once instead of failing the whole audience.
const FIRST_FAILURES_TO_STOP: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "campaign {campaign}: the relay refuses the sender ({reply}); stopped after {count} such replies"
    )]
    SenderRefused {
        campaign: String,
        reply: String,
        count: u32,
    },
    #[error(
        "campaign {campaign}: the first {count} messages all failed ({error}); stopped, the rest stay queued"
    )]
    EveryMessageFails {
        campaign: String,
        error: String,
        count: u32,
    },
}

/// Claims sorted by [`Engine::triage`].
pub(crate) struct Triage {
    pub send: Vec<Claimed>,
    pub skip: Vec<(i64, Outcome)>,
    /// With the time the window opens for them.
    pub defer: Vec<(Claimed, Millis)>,
}

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

/// Everything a send needs, built once per process. Cheap to clone: the
/// parts are shared.
#[derive(Clone)]
pub struct Engine {
    pub store: Store,
    pub mailer: Arc<Mailer>,
    pub templates: Arc<Templates>,
    pub signer: Signer,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub dkim: Option<Arc<Dkim>>,
    /// Each campaign's `limits.rate`, shared by every run of it in this process.
    pub limiters: Arc<HashMap<String, Arc<Limiter>>>,
    /// `smtp_concurrency` permits: messages between render and recorded
    /// outcome, across every run this process sends at once.
    pub slots: Arc<Semaphore>,
    /// Counters and histograms for `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

/// A sender's result on its way to the writer; the ack says it is committed.
type Recorded = (i64, Outcome, Option<oneshot::Sender<()>>);

/// A claimed delivery on its way to a sender, with the batch's `events.KIND`.
struct Work {
    claimed: Claimed,
    events: Arc<Events>,
}

type Events = HashMap<(i64, String), Vec<Value>>;

/// What the senders of one run share besides the engine.
struct Senders {
    campaign: Arc<Campaign>,
    limiter: Option<Arc<Limiter>>,
    work: tokio::sync::Mutex<mpsc::Receiver<Work>>,
    outcomes: mpsc::Sender<Recorded>,
    stop: watch::Receiver<bool>,
    /// Why the pass stopped early (the relay refused the sender too often,
    /// or its first messages all failed): claims stop, and senders give back
    /// what they had not started. The first reason stands.
    stopped: std::sync::Mutex<Option<EngineError>>,
    refusals: AtomicU32,
    /// The first outcomes of the pass: how many, and the first failure while
    /// every one of them failed for good.
    opening: std::sync::Mutex<(u32, Option<String>)>,
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

    /// Counts one of the pass's first outcomes; when the first
    /// [`FIRST_FAILURES_TO_STOP`] all failed for good, halts the pass.
    fn opening(&self, outcome: &Outcome) {
        let Ok(mut opening) = self.opening.lock() else {
            return;
        };
        let (seen, first_failure) = &mut *opening;
        if *seen >= FIRST_FAILURES_TO_STOP || matches!(outcome, Outcome::Deferred { .. }) {
            return;
        }
        *seen += 1;
        match (outcome, *seen) {
            (Outcome::Failed { error }, 1) => *first_failure = Some(error.clone()),
            (Outcome::Failed { .. }, _) => {}
            _ => *first_failure = None,
        }
        if *seen == FIRST_FAILURES_TO_STOP
            && let Some(error) = first_failure.take()
        {
            let count = *seen;
            self.stop_early(EngineError::EveryMessageFails {
                campaign: self.campaign.name.clone(),
                error,
                count,
            });
        }
    }
}

/// The claims of one send pass: who holds them, and until when they are
/// surely still held.
///
/// The pass renews every lease it holds each quarter lease, so a claim never
/// expires while its pass works, however slowly the batch drains (a rate
/// limit, a slow relay). A sender starts a message only while the last
/// successful renewal is less than half a lease old: if renewals fail (the
/// database is gone) or the process stalled, it stops before another worker
/// could take the claim over, and gives the message back.
struct Lease {
    holder: String,
    span: Millis,
    /// The end of the lease every held claim has at least.
    valid_until: AtomicI64,
}

impl Lease {
    fn new(now: Millis, span: Millis) -> Result<Lease, StoreError> {
        let random = crate::store::random_hex::<8>("naming a send pass")?;
        Ok(Lease {
            holder: format!("{}.{random}", std::process::id()),
            span: span.max(1),
            valid_until: AtomicI64::new(now + span.max(1)),
        })
    }

    /// Whether a message may go on the wire now.
    fn may_start(&self, now: Millis) -> bool {
        now < self.valid_until.load(Ordering::Relaxed) - self.span / 2
    }

    /// How often the leases are renewed.
    fn every(&self) -> std::time::Duration {
        std::time::Duration::from_millis((self.span / 4).clamp(20, 30_000) as u64)
    }

    /// Renews the pass's leases until `done` is dropped or set.
    async fn keep(
        self: Arc<Self>,
        store: Store,
        clock: Arc<dyn Clock>,
        mut done: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every()) => {}
                _ = super::stopped(done.clone()) => return,
            }
            if *done.borrow_and_update() {
                return;
            }
            let at = clock.now();
            match store.renew_claims(&self.holder, at + self.span).await {
                Ok(_) => {
                    self.valid_until
                        .fetch_max(at + self.span, Ordering::Relaxed);
                }
                Err(error) => tracing::warn!(%error, holder = %self.holder, "leases not renewed"),
            }
        }
    }
}

impl Engine {
    /// Sends the run's due deliveries until none is left to claim now, or `stop`
    /// turns true (then in-flight sends finish and unstarted claims go back).
    ///
    /// One task claims batches ahead (leased, so other workers skip them) and
    /// feeds `smtp_concurrency` sender tasks, which render, send and wait for
    /// their outcome to be committed before taking the next message: a crash
    /// can repeat at most the messages in flight. One writer task commits the
    /// outcomes in group commits.
    pub async fn send_run(
        &self,
        campaign: &Campaign,
        run_id: i64,
        stop: watch::Receiver<bool>,
    ) -> Result<RunSummary, EngineError> {
        // What the relay announces decides how messages are built.
        self.mailer.probe().await;
        let concurrency = self.settings.smtp_concurrency.max(1);
        let batch = claim_size(concurrency, [campaign.limits.rate, self.settings.smtp_rate]);
        let lease = Arc::new(Lease::new(
            self.clock.now(),
            self.settings.send_lease.as_millis(),
        )?);
        let (renewing, renewing_rx) = watch::channel(false);
        let renewer = tokio::spawn(lease.clone().keep(
            self.store.clone(),
            self.clock.clone(),
            renewing_rx,
        ));
        // Half a batch waits for the senders while the next one is claimed.
        let (work_tx, work_rx) = mpsc::channel::<Work>((batch / 2).max(concurrency));
        let (out_tx, out_rx) = mpsc::channel::<Recorded>(concurrency * 4);
        let out_rx = Arc::new(tokio::sync::Mutex::new(out_rx));
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..OUTCOME_WRITERS {
            writers.spawn(write_outcomes(
                self.store.clone(),
                self.clock.clone(),
                out_rx.clone(),
                self.metrics.clone(),
                lease.clone(),
            ));
        }
        let shared = Arc::new(Senders {
            campaign: Arc::new(campaign.clone()),
            limiter: self.limiters.get(&campaign.name).cloned(),
            work: tokio::sync::Mutex::new(work_rx),
            outcomes: out_tx.clone(),
            stop: stop.clone(),
            stopped: std::sync::Mutex::new(None),
            refusals: AtomicU32::new(0),
            opening: std::sync::Mutex::new((0, None)),
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
                    written = Err(EngineError::Store(StoreError::Query {
                        context: "recording outcomes",
                        source: sqlx::Error::Protocol(format!("writer task ended: {e}")),
                    }))
                }
            }
        }
        let _ = renewing.send(true);
        let _ = renewer.await;
        // Whatever is still held was never started (a sender task that ended
        // abnormally): it goes back at once.
        let released = self
            .store
            .release_claims(&lease.holder, self.clock.now())
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
            let now = self.clock.now();
            self.store
                .requeue_expired(now, &shared.lease.holder, self.settings.max_attempts)
                .await?;
            let cap_since = self
                .settings
                .frequency_cap
                .map(|c| now - c.window.as_millis());
            let claimed = self
                .store
                .claim(
                    run_id,
                    batch,
                    (now, now + self.settings.send_lease.as_millis()),
                    cap_since,
                    (&prefix, &suffix),
                    &shared.lease.holder,
                )
                .await?;
            if claimed.is_empty() {
                return Ok((skipped, deferred, false));
            }
            let Triage {
                send: sendable,
                skip,
                defer,
            } = self.triage(campaign, claimed);
            skipped += skip.len() as u64;
            deferred += defer.len() as u64;
            let defer = defer
                .into_iter()
                .map(|(c, at)| (c.delivery_id, Outcome::Deferred { at }));
            for (id, outcome) in skip.into_iter().chain(defer) {
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

    /// Sorts claims: those to send now; those to skip (with the reason): the
    /// customer's status and the suppression list are checked again at send
    /// time, and the frequency cap applies across campaigns; and those to defer
    /// to the next opening of the campaign's send window, in the customer's
    /// time zone (else the campaign's).
    pub(crate) fn triage(&self, campaign: &Campaign, claimed: Vec<Claimed>) -> Triage {
        let now = self.clock.now();
        let mut t = Triage {
            send: Vec::with_capacity(claimed.len()),
            skip: Vec::new(),
            defer: Vec::new(),
        };
        for c in claimed {
            let reason = if c.status != "subscribed" {
                Some(c.status.clone())
            } else if c.suppressed {
                Some("suppressed".to_string())
            } else if self
                .settings
                .frequency_cap
                .is_some_and(|cap| c.recent_sends >= i64::from(cap.count))
            {
                Some("frequency_cap".to_string())
            } else if step_of(campaign, &c.step).is_none() {
                Some("step_removed".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                t.skip.push((c.delivery_id, Outcome::Skipped { reason }));
                continue;
            }
            if let Some(window) = &campaign.send_window {
                let tz = c
                    .timezone
                    .as_deref()
                    .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
                    .unwrap_or(campaign.timezone);
                let open = window.next_open(now, tz);
                if open > now {
                    t.defer.push((c, open));
                    continue;
                }
            }
            t.send.push(c);
        }
        t
    }

    /// `events.KIND` for every customer of the batch, one query per kind.
    pub(crate) async fn events(
        &self,
        campaign: &Campaign,
        batch: &[Claimed],
    ) -> Result<HashMap<(i64, String), Vec<Value>>, StoreError> {
        let mut wanted: HashMap<&str, u32> = HashMap::new();
        for c in batch {
            if let Some(step) = step_of(campaign, &c.step) {
                for (kind, n) in &step.events {
                    let e = wanted.entry(kind.as_str()).or_default();
                    *e = (*e).max(*n);
                }
            }
        }
        let ids: Vec<i64> = batch.iter().map(|c| c.customer_id).collect();
        let mut out: HashMap<(i64, String), Vec<Value>> = HashMap::new();
        for (kind, n) in wanted {
            for (customer, at, data) in self.store.recent_events(&ids, kind, i64::from(n)).await? {
                out.entry((customer, kind.to_string()))
                    .or_default()
                    .push(render::event_context(at, &data));
            }
        }
        Ok(out)
    }

    /// Renders, builds and sends one message; never fails, returns the outcome.
    async fn deliver(
        &self,
        campaign: &Campaign,
        c: &Claimed,
        events: &Events,
        limiter: Option<&Limiter>,
        lease: &Lease,
    ) -> Outcome {
        let message_id = c.message_id.as_str();
        let bytes = match self.build(campaign, c, message_id, events) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(campaign = %campaign.name, step = %c.step, delivery = c.delivery_id, %error, "message not built");
                return Outcome::Failed { error };
            }
        };
        if let Some(l) = limiter {
            let waited = std::time::Instant::now();
            l.wait().await;
            self.metrics.observe_rate_limit_wait(waited.elapsed());
        }
        if !lease.may_start(self.clock.now()) {
            // Not started: the claim may not be ours for long enough.
            return Outcome::Deferred {
                at: self.clock.now(),
            };
        }
        let to: lettre::Address = match c.email.parse() {
            Ok(a) => a,
            Err(e) => {
                return Outcome::Failed {
                    error: format!("invalid recipient {:?}: {e}", c.email),
                };
            }
        };
        let file_id = format!("{}-{}-{}", campaign.name, sanitize(&c.step), c.delivery_id);
        let started = std::time::Instant::now();
        let result = self
            .mailer
            .send(Outgoing {
                from: self
                    .settings
                    .bounce_address
                    .as_ref()
                    .unwrap_or(&campaign.from.email),
                to: &to,
                id: &file_id,
                message: &bytes,
            })
            .await;
        self.metrics.observe_send_latency(started.elapsed());
        match result {
            Ok(_) => Outcome::Sent {
                message_id: message_id.to_string(),
            },
            Err(e) => {
                let shown = e.to_string();
                let outcome = self.failure(c, e);
                if let Outcome::Failed { error } = &outcome {
                    tracing::warn!(campaign = %campaign.name, step = %c.step, delivery = c.delivery_id, attempt = c.attempts, %error, "message failed for good");
                } else {
                    tracing::info!(campaign = %campaign.name, step = %c.step, delivery = c.delivery_id, attempt = c.attempts, error = %shown, "send failed");
                }
                outcome
            }
        }
    }

    fn failure(&self, c: &Claimed, e: SendError) -> Outcome {
        match e {
            SendError::Permanent(reply) => Outcome::Bounced {
                code: reply.code,
                suppress: reply.is_hard_bounce(),
                text: reply.text,
            },
            SendError::Local(error) => Outcome::Failed { error },
            e if (c.attempts as u32) < self.settings.max_attempts => Outcome::Retry {
                at: self.clock.now() + backoff(&self.settings, c.delivery_id, c.attempts as u32),
                unknown: matches!(e, SendError::Unknown(_)),
                error: e.to_string(),
            },
            e => Outcome::Failed {
                error: format!("gave up after {} attempts: {e}", c.attempts),
            },
        }
    }

    pub(crate) fn build(
        &self,
        campaign: &Campaign,
        c: &Claimed,
        message_id: &str,
        events: &HashMap<(i64, String), Vec<Value>>,
    ) -> Result<Vec<u8>, String> {
        self.compose(campaign, c, message_id, events)
            .map(|(_, bytes)| bytes)
            .map_err(|e| e.to_string())
    }

    /// Renders one customer's message and builds it: the parts as sent (links
    /// tracked) and the message as it goes on the wire (DKIM-signed when
    /// configured).
    ///
    /// A panic in a library while rendering or building is this message's
    /// failure, not the run's: it comes back as [`BuildError::Panic`].
    pub(crate) fn compose(
        &self,
        campaign: &Campaign,
        c: &Claimed,
        message_id: &str,
        events: &HashMap<(i64, String), Vec<Value>>,
    ) -> Result<(Rendered, Vec<u8>), BuildError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.compose_unguarded(campaign, c, message_id, events)
        }))
        .unwrap_or_else(|panic| Err(BuildError::Panic(panic_text(&*panic))))
    }

    fn compose_unguarded(
        &self,
        campaign: &Campaign,
        c: &Claimed,
        message_id: &str,
        events: &HashMap<(i64, String), Vec<Value>>,
    ) -> Result<(Rendered, Vec<u8>), BuildError> {
        let step = step_of(campaign, &c.step).ok_or_else(|| BuildError::StepRemoved {
            step: c.step.clone(),
        })?;
        let tracking = Tracking {
            signer: &self.signer,
            base_url: &self.settings.public_url,
            delivery_id: c.delivery_id as u64,
            customer_id: c.customer_id as u64,
        };
        let unsubscribe = tracking.unsubscribe_url();
        let customer = render::customer_context(
            c.customer_id,
            &c.email,
            c.external_id.as_deref(),
            c.first_name.as_deref(),
            c.last_name.as_deref(),
            c.timezone.as_deref(),
            c.created_at,
            &c.attributes,
        );
        let mut kinds = Map::new();
        for (kind, _) in &step.events {
            let list = events
                .get(&(c.customer_id, kind.clone()))
                .cloned()
                .unwrap_or_default();
            kinds.insert(kind.clone(), Value::Array(list));
        }
        let context = render::message_context(
            customer,
            &campaign.name,
            &step.id,
            kinds,
            &unsubscribe,
            self.settings.postal_address.as_deref(),
            self.clock.now(),
        );
        let mut rendered = self.templates.render(
            &step.template,
            &subject_key(&campaign.name, &step.id),
            context,
        )?;
        if campaign.tracking {
            rendered.html = tracking.apply(&rendered.html, &unsubscribe);
        } else if let Cow::Owned(safe) = links::neutralise_script_links(&rendered.html) {
            rendered.html = safe;
        }
        let name = message::display_name(c.first_name.as_deref(), c.last_name.as_deref());
        let address = c.email.parse().map_err(|e| BuildError::Recipient {
            email: c.email.clone(),
            message: format!("{e}"),
        })?;
        let mailto = self
            .settings
            .unsubscribe_mailto
            .as_ref()
            .map(|a| format!("mailto:{a}?subject=unsubscribe"));
        let list_id = message::list_id(
            &campaign.name,
            campaign.description.as_deref(),
            &campaign.from,
        );
        let feedback_id = message::feedback_id(
            &campaign.name,
            &step.id,
            &self.settings.feedback_tag,
            &campaign.from,
        );
        let env = Envelope {
            eight_bit: self.mailer.eight_bit(),
            list_id: &list_id,
            feedback_id: &feedback_id,
            from: &campaign.from,
            reply_to: campaign.reply_to.as_ref(),
            to: Mailbox::new(name, address),
            message_id: message_id.to_string(),
            unsubscribe_url: &unsubscribe,
            unsubscribe_mailto: mailto.as_deref(),
        };
        let msg = message::build(&rendered, &env)
            .map_err(|e| BuildError::Message(e.to_string()))?
            .formatted();
        let bytes = match &self.dkim {
            Some(dkim) => dkim
                .sign(&msg)
                .map_err(|e| BuildError::Message(e.to_string()))?,
            None => msg,
        };
        Ok((rendered, bytes))
    }
}

/// Deliveries claimed at a time: enough to keep `concurrency` senders busy,
/// and no more than about a second's worth at the slowest rate that applies.
/// What a pass holds, another worker cannot take: a rate-limited run claimed
/// in large batches would be sent by one worker alone, however many share it.
fn claim_size(concurrency: usize, rates: [Option<crate::quantity::Rate>; 2]) -> usize {
    let busy = (concurrency * 64).clamp(64, 1000);
    let per_second = rates
        .into_iter()
        .flatten()
        .map(|r| r.per_second().ceil() as usize)
        .min();
    match per_second {
        Some(n) => n.clamp(concurrency, busy),
        None => busy,
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
            let outcome = Outcome::Deferred {
                at: engine.clock.now(),
            };
            part.pending = true;
            let _ = shared.outcomes.send((c.delivery_id, outcome, None)).await;
            continue;
        }
        let Ok(_permit) = engine.slots.acquire().await else {
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
        shared.opening(&outcome);
        match &outcome {
            Outcome::Sent { .. } => {
                part.sent += 1;
                shared.refusals.store(0, Ordering::Relaxed);
            }
            Outcome::Retry { .. } => part.retried += 1,
            Outcome::Failed { .. } => part.failed += 1,
            Outcome::Skipped { .. } => part.skipped += 1,
            Outcome::Deferred { .. } => {
                // Given back for want of a lease: stop this pass, the next
                // one (here or on another worker) carries on.
                part.deferred += 1;
                part.pending = true;
                shared.abort.store(true, Ordering::Relaxed);
            }
            Outcome::Bounced {
                code,
                text,
                suppress,
            } => {
                part.bounced += 1;
                if !suppress && text.starts_with("5.7.") {
                    let n = shared.refusals.fetch_add(1, Ordering::Relaxed) + 1;
                    if n >= SENDER_REFUSALS_TO_STOP {
                        shared.stop_early(EngineError::SenderRefused {
                            campaign: shared.campaign.name.clone(),
                            reply: format!("{code} {text}"),
                            count: n,
                        });
                    }
                }
            }
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
}

/// Why one customer's message could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("step {step} is no longer in the campaign")]
    StepRemoved { step: String },
    #[error("template: {0}")]
    Render(#[from] RenderError),
    #[error("invalid recipient {email:?}: {message}")]
    Recipient { email: String, message: String },
    #[error("{0}")]
    Message(String),
    #[error("internal error while building the message: {0}")]
    Panic(String),
}

/// What a caught panic said.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

fn step_of<'c>(campaign: &'c Campaign, id: &str) -> Option<&'c crate::campaign::Step> {
    campaign.steps.iter().find(|s| s.id == id)
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

/// `retry_backoff × 2^(attempt-1)`, at most an hour, ±20 % jitter derived from
/// the delivery so retries of one burst spread out.
fn backoff(settings: &Settings, delivery_id: i64, attempt: u32) -> Millis {
    let base = settings.retry_backoff.as_millis().max(1);
    let exp = base
        .saturating_mul(1i64 << attempt.saturating_sub(1).min(20))
        .min(3_600_000);
    let mut z = (delivery_id as u64) ^ (u64::from(attempt) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 27;
    let per_mille = (z % 401) as i64 - 200; // -200..=200 ‰ = ±20 %
    exp + exp * per_mille / 1000
}

/// Commits outcomes as they come, in batches of whatever has arrived, and acks
/// each sender once its outcome is durable. Several writers may share the
/// receiver: while one commit is in flight the next group gathers and goes.
async fn write_outcomes(
    store: Store,
    clock: Arc<dyn Clock>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Recorded>>>,
    metrics: crate::metrics::Metrics,
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
