//! Orchestration: the only module that knows store, render, message and mailer.
//!
//! A run is planned in set-based statements (`Store::plan_run`), then sent by
//! [`Engine::send_run`]: claim a batch under a lease, check each customer again,
//! render and build each message, send it at the allowed rate, and record every
//! outcome — in batched transactions, but before a sender takes its next
//! message, so a crash can repeat at most the messages in flight.

mod compose;
mod engine;
pub mod jobs;
pub mod preview;
pub mod send;
pub mod sequence;
mod triage;
mod trigger;

use std::path::Path;

use tokio::sync::watch;

use crate::campaign::{self, Campaign};
use crate::config::Settings;
use crate::render::{RenderError, Templates};
use crate::status::RunStatus;
use crate::store::StoreError;
use crate::store::deliveries::{Reentry, RunCounts, Trigger};

pub use compose::BuildError;
pub use engine::Engine;
pub use preview::{
    Preview, PreviewError, SampleOf, TemplateCheck, TemplateFailure, check_sample, check_templates,
    preview,
};
pub use send::RunSummary;
pub use trigger::trigger_rules;

/// The key of a step's compiled subject line.
pub fn subject_key(campaign: &str, step: &str) -> String {
    format!("{campaign}/{step}")
}

/// Loads `templates_dir` and compiles every step's subject of `campaigns`.
pub fn templates_for(
    templates_dir: &Path,
    campaigns: &[Campaign],
) -> Result<Templates, RenderError> {
    let mut templates = Templates::load(templates_dir)?;
    for c in campaigns {
        for s in &c.steps {
            templates.add_subject(&subject_key(&c.name, &s.id), &s.subject)?;
        }
    }
    Ok(templates)
}

/// Settings for an engine that only renders (preview, validate): no SMTP pool is
/// set up, and `scratch`, an existing directory, stands in for the outbox (the
/// mailer creates its outbox, and nothing may appear where real mail goes).
pub fn render_only(settings: &Settings, scratch: &Path) -> Settings {
    let mut s = settings.clone();
    s.smtp_url = None;
    s.outbox_dir = scratch.to_path_buf();
    s
}

/// Why a send pass (or the planning before it) stopped.
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

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Templates(#[from] RenderError),
    #[error(transparent)]
    Mailer(#[from] crate::mailer::MailerError),
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    #[error("DKIM key {path}: {message}")]
    Dkim { path: String, message: String },
}

/// Completes once `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// What one run of a campaign did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: i64,
    pub planned: u64,
    pub counts: RunCounts,
    pub pending: bool,
    /// An earlier run (stopped or crashed) that this call finished.
    pub resumed: bool,
}

fn reentry(r: campaign::Reentry) -> Reentry {
    match r {
        campaign::Reentry::Never => Reentry::Never,
        campaign::Reentry::Always => Reentry::Always,
        campaign::Reentry::After(span) => Reentry::After(span.as_millis()),
    }
}

/// What [`plan_run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanOutcome {
    /// A new run, with its first step queued for `planned` customers.
    Planned { run_id: i64, planned: u64 },
    /// The tick already has a run (another worker or an earlier job planned it).
    AlreadyPlanned { run_id: i64 },
    /// The campaign has no steps.
    NoSteps,
}

/// Creates a run and enters the audience in set-based statements. A second call
/// for the same schedule tick plans nothing, unless the first planner died
/// before committing (its run is still `planning`): then the tick is planned
/// again, which is safe because planning is one transaction and idempotent.
pub async fn plan_run(
    engine: &Engine,
    campaign: &Campaign,
    trigger: Trigger,
    tick: Option<i64>,
) -> Result<PlanOutcome, EngineError> {
    let Some(first) = campaign.steps.first() else {
        return Ok(PlanOutcome::NoSteps);
    };
    let store = engine.store();
    let run_id = match store
        .create_run(&campaign.name, trigger, tick, engine.now())
        .await?
    {
        Some(id) => id,
        None => {
            let existing = match tick {
                Some(t) => store.run_of_tick(&campaign.name, trigger, t).await?,
                None => None,
            };
            match existing {
                Some((id, RunStatus::Planning)) => {
                    tracing::info!(campaign = %campaign.name, run = id, "planning a run whose planner stopped");
                    id
                }
                Some((id, _)) => return Ok(PlanOutcome::AlreadyPlanned { run_id: id }),
                None => return Ok(PlanOutcome::NoSteps),
            }
        }
    };
    let planned = plan_into(engine, campaign, first, run_id).await?;
    Ok(PlanOutcome::Planned { run_id, planned })
}

/// Enters the audience into `run_id` and queues the first step: one
/// transaction, idempotent.
async fn plan_into(
    engine: &Engine,
    campaign: &Campaign,
    first: &campaign::Step,
    run_id: i64,
) -> Result<u64, EngineError> {
    let now = engine.now();
    let audience = campaign.audience_sql(engine.store().backend(), now);
    let planned = engine
        .store()
        .plan_run(
            run_id,
            &campaign.name,
            &audience,
            reentry(campaign.reentry),
            &first.id,
            now,
        )
        .await?;
    Ok(planned)
}

/// Plans the campaign's runs whose planner stopped before it committed (they
/// are still `planning`), so that they are sent like any unfinished run.
/// Planning again is safe: it is one idempotent transaction, and a planner
/// still at work elsewhere makes the second one add nothing.
pub async fn resume_planning(engine: &Engine, campaign: &Campaign) -> Result<(), EngineError> {
    let Some(first) = campaign.steps.first() else {
        return Ok(());
    };
    for run_id in engine.store().planning_runs(&campaign.name).await? {
        let planned = plan_into(engine, campaign, first, run_id).await?;
        tracing::info!(campaign = %campaign.name, run = run_id, planned, "planned a run whose planner stopped");
    }
    Ok(())
}

/// What one [`send_pass`] did and what is left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// What was sent; `None` when the run was already done.
    pub summary: Option<send::RunSummary>,
    /// When something of the run is next due (a retry, or a lease held by
    /// another worker); `None` when nothing is left.
    pub next: Option<i64>,
    /// Whether this pass marked the run done.
    pub finished: bool,
}

/// Sends what is due in a run now, then marks the run done if nothing is left.
/// Safe to call from several workers at once: claims are leased.
pub async fn send_pass(
    engine: &Engine,
    campaign: &Campaign,
    run_id: i64,
    stop: watch::Receiver<bool>,
) -> Result<Pass, EngineError> {
    if engine.store().run_status(run_id).await? != Some(RunStatus::Sending) {
        return Ok(Pass::default());
    }
    let summary = engine.send_run(campaign, run_id, stop).await?;
    // Deliveries may be queued into the run while this pass ends (a sequence
    // transition's later shard): the run is finished only if nothing was
    // queued since its deliveries were counted; otherwise it stays `sending`
    // and the new deliveries are joined like any due work. An event run is
    // not finished during its day ([`crate::store::Store::finish_run`]).
    let planned = engine.store().run_planned(run_id).await?;
    let next = engine.store().next_attempt(run_id).await?;
    let finished = next.is_none()
        && engine
            .store()
            .finish_run(run_id, engine.now(), planned)
            .await?;
    Ok(Pass {
        summary: Some(summary),
        next,
        finished,
    })
}

/// Finishes the campaign's unfinished runs (after a crash or a stop: planned
/// if their planner stopped, then sent), then plans a new run and sends it.
/// With `wait`, retries are waited for until the run is complete or `stop` is
/// set; without, it returns once nothing is due now (a worker picks the rest
/// up later). A second call for the same schedule tick plans nothing.
///
/// Returns a report per run it sent: the resumed ones first, then the new one
/// (none when the campaign has no steps or the tick was planned already).
pub async fn run_campaign(
    engine: &Engine,
    campaign: &Campaign,
    trigger: Trigger,
    tick: Option<i64>,
    wait: bool,
    stop: watch::Receiver<bool>,
) -> Result<Vec<RunReport>, EngineError> {
    let mut reports = Vec::new();
    resume_planning(engine, campaign).await?;
    for run_id in engine.store().unfinished_runs(&campaign.name).await? {
        tracing::info!(campaign = %campaign.name, run = run_id, "resuming an unfinished run");
        let pending = send_until_done(engine, campaign, run_id, wait, stop.clone()).await?;
        let counts = engine.store().run_counts(run_id).await?;
        reports.push(RunReport {
            run_id,
            planned: counts.planned as u64,
            counts,
            pending,
            resumed: true,
        });
    }
    let (run_id, planned) = match plan_run(engine, campaign, trigger, tick).await? {
        PlanOutcome::Planned { run_id, planned } => (run_id, planned),
        PlanOutcome::AlreadyPlanned { .. } | PlanOutcome::NoSteps => return Ok(reports),
    };
    tracing::debug!(campaign = %campaign.name, run = run_id, planned, "run planned");
    let pending = send_until_done(engine, campaign, run_id, wait, stop).await?;
    let counts = engine.store().run_counts(run_id).await?;
    tracing::debug!(campaign = %campaign.name, run = run_id, sent = counts.sent, "run sent");
    reports.push(RunReport {
        run_id,
        planned,
        counts,
        pending,
        resumed: false,
    });
    Ok(reports)
}

/// The longest `herald run` waits for a retry or a send window before it
/// returns and leaves the rest to `herald worker`.
const WAIT_AT_MOST: i64 = 15 * 60 * 1000;

/// Sends a run; with `wait`, sleeps until retries (or a dead worker's leases)
/// come due. Returns whether deliveries are still pending.
async fn send_until_done(
    engine: &Engine,
    campaign: &Campaign,
    run_id: i64,
    wait: bool,
    mut stop: watch::Receiver<bool>,
) -> Result<bool, EngineError> {
    loop {
        let pass = send_pass(engine, campaign, run_id, stop.clone()).await?;
        let Some(next) = pass.next else {
            return Ok(false);
        };
        if !wait || *stop.borrow() || next - engine.now() > WAIT_AT_MOST {
            // Far-off work (a send window hours away) is the worker's.
            return Ok(true);
        }
        // Poll at least every second: the rows in the way may be held by another
        // live worker, which finishes them long before its lease ends.
        let delay = (next - engine.now()).clamp(0, 1_000) as u64;
        tracing::debug!(campaign = %campaign.name, run = run_id, until = next, "waiting for retries");
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(delay)) => {}
            _ = stop.changed() => return Ok(true),
        }
    }
}

/// What a dry run found: who would get the first step, and what would stop it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DryRun {
    pub audience: u64,
    pub rendered: u64,
    pub skipped: Vec<(String, u64)>,
    /// (email, error) of the first few customers whose message did not render.
    pub errors: Vec<(String, String)>,
    pub failed: u64,
}

/// Customers rendered per batch in a dry run.
const DRY_RUN_BATCH: usize = 500;

/// Plans and renders the first step for the whole audience without writing
/// anything or sending anything.
pub async fn dry_run(engine: &Engine, campaign: &Campaign) -> Result<DryRun, EngineError> {
    let mut report = DryRun::default();
    let Some(first) = campaign.steps.first() else {
        return Ok(report);
    };
    let now = engine.now();
    let audience = campaign.audience_sql(engine.store().backend(), now);
    let ids = engine.store().audience_ids(&audience).await?;
    report.audience = ids.len() as u64;
    let cap_since = engine.cap_since(now);
    let mut skipped: std::collections::BTreeMap<String, u64> = Default::default();
    for chunk in ids.chunks(DRY_RUN_BATCH) {
        let claims = engine
            .store()
            .customers_as_claims(chunk, &first.id, cap_since)
            .await?;
        let triage::Triage { send, skip, defer } = engine.triage(campaign, claims);
        // A dry run renders for everyone it would send to, now or in the window.
        let mut sendable = send;
        sendable.extend(defer.into_iter().map(|(c, _)| c));
        for (_, reason) in skip {
            *skipped.entry(reason.to_string()).or_default() += 1;
        }
        let events = engine.events(campaign, &sendable).await?;
        for c in &sendable {
            match engine.compose(campaign, c, "dry-run@localhost", &events) {
                Ok(_) => report.rendered += 1,
                Err(e) => {
                    report.failed += 1;
                    if report.errors.len() < 10 {
                        report.errors.push((c.email.to_string(), e.to_string()));
                    }
                }
            }
        }
    }
    report.skipped = skipped.into_iter().collect();
    Ok(report)
}
