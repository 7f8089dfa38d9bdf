//! `herald worker`: apalis queues and cron schedules around the pipeline.
//!
//! Every apalis type stays in this module. The rest of Herald sees
//! [`run_worker`] and [`setup`].
//!
//! Three kinds of work, all in apalis's SQL storage inside Herald's own
//! database (apalis-sqlite or apalis-postgres):
//!
//! - a cron scheduler per campaign with a `schedule:` (apalis-cron, in the
//!   campaign's time zone) pushes a [`PlanJob`] for each tick, with the tick as
//!   idempotency key, so several workers firing the same tick queue one job;
//! - a [`PlanJob`] creates the run (unique per campaign and tick, so a second
//!   job for the same tick plans nothing), plans it in set-based statements and
//!   queues [`SEND_SHARDS`] [`SendJob`]s, so that several workers can share a
//!   large run;
//! - a [`SendJob`] sends the run's due deliveries in leased batches until none
//!   is due now, then either finishes the run or queues itself again for the
//!   next retry.
//!
//! apalis is at-least-once: a job may run twice, or run on two workers. No job
//! decides who gets a message; the `runs` and `deliveries` rows do, so a second
//! run of any job is harmless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{
    BackendExt, BoxDynError, Data, Monitor, PollSnapshot, PollStrategy, TaskBuilder, TaskSink,
    WorkerBuilder, WorkerBuilderExt,
};
use apalis_cron::{CronScheduler, Tick};
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Engine, EngineError, Pass, PlanOutcome, plan_run, send_pass};
use crate::campaign::Campaign;
use crate::store::deliveries::Trigger;
use crate::store::{Pool, Store};

/// The queue of planning jobs. Named explicitly: apalis would otherwise use
/// the Rust type path, and moving the type would strand queued jobs.
pub const PLAN_QUEUE: &str = "herald.plan";
/// The queue of sending jobs.
pub const SEND_QUEUE: &str = "herald.send";
/// Send jobs queued per planned run: up to this many workers (or tasks of one
/// worker) share a run. Extra jobs find nothing to claim and end at once.
pub const SEND_SHARDS: usize = 4;
/// Send jobs one worker runs at a time (runs of different campaigns proceed
/// side by side; SMTP connections are bounded by `smtp_concurrency` across all).
const SEND_JOBS_PER_WORKER: usize = 4;
/// How often follow-up steps are advanced (cron with seconds, in UTC): every
/// 15 seconds, so a `wait:` is kept to within a quarter minute.
const ADVANCE_SCHEDULE: &str = "0/15 * * * * *";
/// How often a worker polls the queues when idle.
const POLL: Duration = Duration::from_millis(500);
/// How often a worker looks for runs with work due that it is not sending, to
/// join them (see [`join_runs`]).
const JOIN_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("setting up the job queue tables: {0}")]
    Setup(String),
    #[error("queueing a job: {0}")]
    Push(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the worker stopped with an error: {0}")]
    Monitor(String),
}

/// Plan a run of `campaign` (a cron tick's, or one asked for by hand).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanJob {
    pub campaign: String,
    /// The tick's time (ms since the epoch) for scheduled runs.
    pub tick: Option<i64>,
}

/// Send what is due in one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendJob {
    pub campaign: String,
    pub run_id: i64,
}

/// Creates apalis's tables (its own migrations, recorded in `_sqlx_migrations`,
/// apart from Herald's `herald_migrations`). SQLite's storage setup would also
/// switch the connection to `synchronous = OFF`; only the migrations are run,
/// so Herald's durability settings stay as they are.
///
/// Run it once, first, before anything else of the process uses the store
/// (`herald worker` and `herald migrate` do): an SQLite connection that read the
/// schema while these migrations ran keeps that stale view, and a job push
/// through it fails. [`run_worker`] and [`enqueue_plan`] expect the tables.
pub async fn setup(store: &Store) -> Result<(), WorkerError> {
    // Two workers starting at once on a fresh SQLite file race to record the
    // same migration (sqlx locks only on PostgreSQL); the loser finds them
    // applied when it looks again.
    let mut attempt = 0;
    loop {
        let result = match &store.pool {
            Pool::Sqlite(pool) => SqliteStorage::<()>::migrations()
                .run(pool)
                .await
                .map_err(|e| e.to_string()),
            Pool::Postgres(pool) => PostgresStorage::<()>::setup(pool)
                .await
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "job queue tables: trying again");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(WorkerError::Setup(e)),
        }
    }
}

/// The two queues on whichever backend the store uses.
#[derive(Clone)]
enum Queues {
    Sqlite {
        plan: SqliteStorage<PlanJob>,
        send: SqliteStorage<SendJob>,
    },
    Postgres {
        plan: PostgresStorage<PlanJob>,
        send: PostgresStorage<SendJob>,
    },
}

impl Queues {
    fn new(store: &Store) -> Queues {
        match &store.pool {
            Pool::Sqlite(pool) => {
                let config = |queue: &str| apalis_sqlite::Config::default().queue(queue);
                Queues::Sqlite {
                    plan: SqliteStorage::new(pool).with_config(config(PLAN_QUEUE)),
                    send: SqliteStorage::new(pool).with_config(config(SEND_QUEUE)),
                }
            }
            Pool::Postgres(pool) => {
                let config = |queue: &str| apalis_postgres::Config::default().queue(queue);
                Queues::Postgres {
                    plan: PostgresStorage::new(pool).with_config(config(PLAN_QUEUE)),
                    send: PostgresStorage::new(pool).with_config(config(SEND_QUEUE)),
                }
            }
        }
    }

    async fn push_plan(&self, job: PlanJob) -> Result<(), WorkerError> {
        let mut task = TaskBuilder::new(job.clone());
        if let Some(tick) = job.tick {
            // One job per tick, however many workers fired it.
            task = task.idempotency_key(format!("{}@{tick}", job.campaign));
        }
        let task = task.build();
        let r = match self {
            Queues::Sqlite { plan, .. } => plan.clone().push_task(task).await.map_err(show),
            Queues::Postgres { plan, .. } => plan.clone().push_task(task).await.map_err(show),
        };
        r.map_err(WorkerError::Push)
    }

    /// Queues [`SEND_SHARDS`] send jobs for a newly planned run.
    async fn share_run(&self, campaign: &str, run_id: i64) -> Result<(), WorkerError> {
        for _ in 0..SEND_SHARDS {
            let job = SendJob {
                campaign: campaign.to_string(),
                run_id,
            };
            self.push_send(job, Duration::ZERO).await?;
        }
        Ok(())
    }

    async fn push_send(&self, job: SendJob, after: Duration) -> Result<(), WorkerError> {
        let task = TaskBuilder::new(job).run_after(after).build();
        let r = match self {
            Queues::Sqlite { send, .. } => send.clone().push_task(task).await.map_err(show),
            Queues::Postgres { send, .. } => send.clone().push_task(task).await.map_err(show),
        };
        r.map_err(WorkerError::Push)
    }
}

fn show(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What every job handler shares.
struct Shared {
    engine: Engine,
    campaigns: HashMap<String, Campaign>,
    queues: Queues,
    stop: watch::Receiver<bool>,
    /// Runs this process is sending now.
    sending: std::sync::Mutex<std::collections::HashSet<i64>>,
}

/// This process's mark on a run it is sending; gone when dropped.
struct Sending<'a> {
    shared: &'a Shared,
    run_id: i64,
}

impl Shared {
    /// Marks the run as being sent here, unless it already is.
    fn start_sending(&self, run_id: i64) -> Option<Sending<'_>> {
        // Not `then_some`: it would build a mark (and drop it, locking this
        // mutex again) even when the run is already marked.
        let inserted = self.sending.lock().ok()?.insert(run_id);
        inserted.then(|| Sending {
            shared: self,
            run_id,
        })
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.shared.sending.lock() {
            runs.remove(&self.run_id);
        }
    }
}

impl Shared {
    fn campaign(&self, name: &str) -> Result<&Campaign, BoxDynError> {
        self.campaigns.get(name).ok_or_else(|| {
            format!("campaign {name} is not among the loaded campaign files; job dropped").into()
        })
    }
}

type Ctx = Data<Arc<Shared>>;

async fn on_plan(job: PlanJob, ctx: Ctx) -> Result<(), BoxDynError> {
    let campaign = ctx.campaign(&job.campaign)?;
    let trigger = if job.tick.is_some() {
        Trigger::Schedule
    } else {
        Trigger::Manual
    };
    match plan_run(&ctx.engine, campaign, trigger, job.tick).await? {
        PlanOutcome::Planned { run_id, planned } => {
            tracing::info!(campaign = %campaign.name, run = run_id, planned, tick = ?job.tick, "run planned");
            ctx.queues.share_run(&campaign.name, run_id).await?;
        }
        PlanOutcome::AlreadyPlanned { run_id } => {
            tracing::debug!(campaign = %campaign.name, run = run_id, tick = ?job.tick, "tick already planned by another job")
        }
        PlanOutcome::NoSteps => {}
    }
    Ok(())
}

async fn on_send(job: SendJob, ctx: Ctx) -> Result<(), BoxDynError> {
    let Some(pass) = pass_here(&ctx, &job).await? else {
        // A pass of this process is sending the run already (it uses every
        // SMTP slot the process has); other workers join it on their own.
        return Ok(());
    };
    if let Some(at) = pass.next {
        // Come back when the next retry (or a dead worker's lease) is due; at
        // least a second later, and at once after a stop so the next start
        // carries on.
        let wait = if *ctx.stop.borrow() {
            Duration::ZERO
        } else {
            let ms = (at - ctx.engine.now()).clamp(1_000, 3_600_000);
            Duration::from_millis(ms as u64)
        };
        ctx.queues.push_send(job, wait).await?;
    }
    Ok(())
}

/// One send pass over the run in this process, unless one is under way here
/// already (`None`). Logs what it did.
async fn pass_here(shared: &Shared, job: &SendJob) -> Result<Option<Pass>, BoxDynError> {
    let campaign = shared.campaign(&job.campaign)?;
    let Some(_sending) = shared.start_sending(job.run_id) else {
        return Ok(None);
    };
    let pass = send_pass(&shared.engine, campaign, job.run_id, shared.stop.clone()).await?;
    if let Some(s) = &pass.summary
        && (s.sent + s.failed + s.bounced + s.skipped) > 0
    {
        tracing::info!(
            campaign = %campaign.name, run = job.run_id, sent = s.sent, skipped = s.skipped,
            failed = s.failed, bounced = s.bounced, retried = s.retried, "send pass"
        );
    }
    if pass.finished {
        let c = shared.engine.store().run_counts(job.run_id).await?;
        tracing::info!(
            campaign = %campaign.name, run = job.run_id, sent = c.sent, skipped = c.skipped_total(),
            failed = c.failed, bounced = c.bounced, "run complete"
        );
    }
    Ok(Some(pass))
}

/// Joins, every [`JOIN_EVERY`] and whenever the database says work may have
/// arrived ([`crate::store::wake`]: a triggered message queued by an API
/// server), each run of a loaded campaign that has work due now and no pass
/// in this process, until `stop`; then waits for the passes it started.
///
/// This is how workers share a run. Send jobs alone cannot do it: apalis hands
/// a job to whichever worker polls first, and the one that is sending the run
/// may take every job of it. The deliveries decide who sends what (claims are
/// leased and skip what another pass holds), so joining is always safe.
async fn join_runs(shared: Arc<Shared>) {
    let mut passes = tokio::task::JoinSet::new();
    let mut stop = shared.stop.clone();
    let mut wake = match shared.engine.store().wake().await {
        Ok(wake) => Some(wake),
        Err(error) => {
            tracing::warn!(%error, "cannot watch the database for work; looking every second");
            None
        }
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(JOIN_EVERY) => {}
            _ = async {
                match wake.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = super::stopped(stop.clone()) => break,
        }
        if *stop.borrow_and_update() {
            break;
        }
        while passes.try_join_next().is_some() {}
        let due = match due_runs(&shared).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "looking for runs to join");
                continue;
            }
        };
        for job in due {
            let shared = shared.clone();
            passes.spawn(async move {
                match pass_here(&shared, &job).await {
                    Ok(Some(_)) => {
                        tracing::debug!(campaign = %job.campaign, run = job.run_id, "joined a run")
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(campaign = %job.campaign, run = job.run_id, %error, "send pass failed")
                    }
                }
            });
        }
    }
    while passes.join_next().await.is_some() {}
}

/// Runs of loaded campaigns, not being sent here, with a delivery due now.
async fn due_runs(shared: &Shared) -> Result<Vec<SendJob>, EngineError> {
    let now = shared.engine.now();
    let due = shared.engine.store().due_runs(now).await?;
    let here = shared.sending.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(due
        .into_iter()
        .filter(|(run_id, campaign)| {
            !here.contains(run_id) && shared.campaigns.contains_key(campaign)
        })
        .map(|(run_id, campaign)| SendJob { campaign, run_id })
        .collect())
}

async fn on_tick(tick: Tick<Tz>, name: Data<String>, ctx: Ctx) -> Result<(), BoxDynError> {
    let at = tick.get_timestamp() as i64 * 1000;
    tracing::info!(campaign = %*name, tick = at, "schedule fired");
    ctx.queues
        .push_plan(PlanJob {
            campaign: name.to_string(),
            tick: Some(at),
        })
        .await?;
    Ok(())
}

async fn on_advance(tick: Tick, ctx: Ctx) -> Result<(), BoxDynError> {
    let at = tick.get_timestamp() as i64 * 1000;
    let finished = ctx.engine.store().finish_past_event_runs(at).await?;
    if finished > 0 {
        tracing::info!(runs = finished, "event runs of past days finished");
    }
    for campaign in ctx.campaigns.values() {
        let done = super::sequence::advance(&ctx.engine, campaign, at).await?;
        let m = done.moved;
        if m.queued + m.goal + m.exited + done.completed + done.ended > 0 {
            tracing::info!(
                campaign = %campaign.name, queued = m.queued, goal = m.goal, exited = m.exited,
                completed = done.completed, ended = done.ended, "sequence advanced"
            );
        }
        if let Some(run_id) = done.run_id {
            ctx.queues.share_run(&campaign.name, run_id).await?;
        }
    }
    Ok(())
}

/// Runs schedules and jobs until `stop` turns true: in-flight sends finish,
/// unstarted claims go back, and queued jobs stay for the next start.
///
/// At start, every unfinished run of a loaded campaign (a crash, a stop, a
/// `herald run` that was interrupted) is planned if its planner stopped, and
/// gets a send job, so nothing is left behind. The job tables must exist ([`setup`]).
pub async fn run_worker(
    engine: Engine,
    campaigns: Vec<Campaign>,
    name: &str,
    stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let queues = Queues::new(engine.store());
    for c in &campaigns {
        super::resume_planning(&engine, c).await?;
        for run_id in engine
            .store()
            .unfinished_runs(&c.name)
            .await
            .map_err(EngineError::from)?
        {
            tracing::info!(campaign = %c.name, run = run_id, "resuming an unfinished run");
            queues
                .push_send(
                    SendJob {
                        campaign: c.name.clone(),
                        run_id,
                    },
                    Duration::ZERO,
                )
                .await?;
        }
    }
    let scheduled: Vec<(String, cron::Schedule, Tz)> = campaigns
        .iter()
        .filter_map(|c| {
            c.schedule
                .as_ref()
                .map(|s| (c.name.clone(), s.cron.clone(), c.timezone))
        })
        .collect();
    let shared = Arc::new(Shared {
        engine,
        campaigns: campaigns.into_iter().map(|c| (c.name.clone(), c)).collect(),
        queues: queues.clone(),
        stop: stop.clone(),
        sending: Default::default(),
    });
    for (campaign, _, tz) in &scheduled {
        tracing::info!(campaign = %campaign, timezone = %tz, "schedule loaded");
    }
    let mut monitor = Monitor::new().shutdown_timeout(Duration::from_secs(60));
    let advance_schedule: cron::Schedule = ADVANCE_SCHEDULE
        .parse()
        .map_err(|e| WorkerError::Setup(format!("advance schedule: {e}")))?;
    {
        let shared = shared.clone();
        let worker_name = format!("{name}.advance");
        monitor = monitor.register(move |_| {
            WorkerBuilder::new(worker_name.clone())
                .backend(CronScheduler::new(advance_schedule.clone()))
                .data(shared.clone())
                .build(on_advance)
        });
    }
    for (campaign, schedule, tz) in scheduled {
        let shared = shared.clone();
        let worker_name = format!("{name}.cron.{campaign}");
        monitor = monitor.register(move |_| {
            WorkerBuilder::new(worker_name.clone())
                .backend(CronScheduler::new(schedule.clone()).with_timezone(tz))
                .data(campaign.clone())
                .data(shared.clone())
                .build(on_tick)
        });
    }
    // The two storages are different types with the same worker set-up.
    macro_rules! register_queues {
        ($plan:expr, $send:expr) => {{
            let (plan, send) = ($plan, $send);
            let (s1, s2) = (shared.clone(), shared.clone());
            let (n1, n2) = (format!("{name}.plan"), format!("{name}.send"));
            monitor
                .register(move |_| {
                    WorkerBuilder::new(n1.clone())
                        .backend(plan.clone().poll_with_strategy(Ticker::default()))
                        .data(s1.clone())
                        .build(on_plan)
                })
                .register(move |_| {
                    WorkerBuilder::new(n2.clone())
                        .backend(send.clone().poll_with_strategy(Ticker::default()))
                        .concurrency(SEND_JOBS_PER_WORKER)
                        .data(s2.clone())
                        .build(on_send)
                })
        }};
    }
    monitor = match queues {
        Queues::Sqlite { plan, send } => register_queues!(plan, send),
        Queues::Postgres { plan, send } => register_queues!(plan, send),
    };
    let joiner = tokio::spawn(join_runs(shared));
    let ran = monitor
        .run_with_signal(async move {
            super::stopped(stop).await;
            Ok(())
        })
        .await
        .map_err(|e| WorkerError::Monitor(e.to_string()));
    // The monitor ends on a stop (then the joiner's passes are finishing) or
    // on an error (then the joiner is stopped here).
    if ran.is_err() {
        joiner.abort();
    }
    let _ = joiner.await;
    ran
}

/// Wakes a queue's poller every [`POLL`], so a job queued by another process
/// (or queued to run later) is fetched within that time.
///
/// apalis's own interval strategy replaces a timer that fired with a new one
/// it does not poll, so no wake-up is registered until something else polls
/// the worker; a delayed job could then wait for the next heartbeat (30 s).
/// This one always leaves a polled timer behind.
struct Ticker {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Default for Ticker {
    fn default() -> Self {
        Ticker {
            sleep: Box::pin(tokio::time::sleep(POLL)),
        }
    }
}

impl PollStrategy for Ticker {
    fn poll_drive(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _: &PollSnapshot,
    ) -> std::task::Poll<Option<()>> {
        use std::future::Future as _;
        let mut fired = false;
        while self.sleep.as_mut().poll(cx).is_ready() {
            fired = true;
            let next = tokio::time::Instant::now() + POLL;
            self.sleep.as_mut().reset(next);
        }
        if fired {
            std::task::Poll::Ready(Some(()))
        } else {
            std::task::Poll::Pending
        }
    }
}

/// Queues a plan job by hand (`herald worker --now CAMPAIGN`), into the job
/// tables [`setup`] made.
pub async fn enqueue_plan(store: &Store, campaign: &str) -> Result<(), WorkerError> {
    Queues::new(store)
        .push_plan(PlanJob {
            campaign: campaign.to_string(),
            tick: None,
        })
        .await
}

/// The first tick of the campaign's schedule strictly after `after` (ms since
/// the epoch), evaluated in the campaign's time zone as the worker's cron
/// scheduler does; `None` without a schedule.
pub fn next_tick(campaign: &Campaign, after: i64) -> Option<i64> {
    use chrono::TimeZone as _;
    let schedule = campaign.schedule.as_ref()?;
    let start = campaign.timezone.timestamp_millis_opt(after).single()?;
    schedule
        .cron
        .after(&start)
        .next()
        .map(|t| t.timestamp_millis())
}
