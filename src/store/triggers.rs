//! Event-triggered entries: in the transaction that stores new interactions
//! (an API group, an import batch), each one that a campaign's `trigger:`
//! matches enters its customer into that campaign.
//!
//! The rules of an entry, in one set-based statement per campaign:
//! - the interaction is new in this transaction (the insert's `RETURNING`:
//!   a retried call, whose event is already stored, triggers nothing) and
//!   occurred within [`FRESH_FOR`] of now;
//! - its kind is the trigger's event and its data passes the `where:` tests;
//! - its customer matches the audience at that moment (subscribed, address
//!   not suppressed, the condition holds);
//! - the campaign's re-entry rule allows another entry;
//! - of a customer's several triggering events in one transaction, the first
//!   enters (the others find the entry active).
//!
//! The entry records the interaction as its cause (`entries.cause_id`), unique
//! per campaign: however many processes see the event, and however often,
//! it enters at most once. A first step without a wait is queued in the same
//! transaction, into the campaign's `event` run of the day (`sending` all
//! day), so a worker sends it as soon as it looks ([`Store::due_runs`]);
//! PostgreSQL also tells listening workers at commit (`pg_notify`). A first
//! step that waits is left to the worker's advance.
//!
//! Everything here runs inside the caller's transaction, so the statements
//! are built by functions and run by the [`enter_triggered`] macro (the
//! transaction is either backend's).

use crate::clock::Millis;
use crate::dialect::Backend;
use crate::segment::{self, Condition, FieldTest, Param, Predicate};

use super::deliveries::Reentry;

/// The channel on which PostgreSQL tells workers that deliveries were queued.
pub const WORK_CHANNEL: &str = "herald_work";

/// One day in milliseconds: an event run holds one UTC day's entries.
const DAY: Millis = 86_400_000;
/// An interaction that occurred longer ago than this when it is stored
/// triggers nothing: an import of last year's orders, or a client replaying
/// an old queue, must not send "thanks for your order" today.
pub const FRESH_FOR: Millis = 3 * DAY;

/// How often a process tells workers of queued work at most. A notification
/// costs a global lock at commit on PostgreSQL; a worker woken by one keeps
/// looking for a moment ([`crate::pipeline`]'s lingering pass), so it sees
/// what the next transactions queue without being told again.
pub const NOTIFY_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether this process should notify now ([`NOTIFY_EVERY`]).
pub fn notify_due() -> bool {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1;
    let last = LAST.load(Ordering::Relaxed);
    if last != 0 && now < last + NOTIFY_EVERY.as_millis() as u64 {
        return false;
    }
    LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}

/// One event-triggered campaign, as the store enters customers into it.
#[derive(Debug, Clone)]
pub struct TriggerRule {
    pub campaign: String,
    /// The interaction kind that enters.
    pub event: String,
    /// The trigger's `where:` tests on the interaction's data.
    pub filter: Vec<FieldTest>,
    /// Who may enter (everyone subscribed and not suppressed when the file
    /// has no `audience:`).
    pub audience: Condition,
    pub reentry: Reentry,
    /// A transactional campaign's: customers who unsubscribed from marketing
    /// still enter ([`Predicate::Recipients`]).
    pub transactional: bool,
    /// The step queued at once for each entry: the first, when it does not
    /// wait. `None` leaves the entry to the worker's advance.
    pub first_step: Option<String>,
}

/// An interaction new in the transaction: its id and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    pub id: i64,
    pub kind: String,
}

impl Fresh {
    /// From a `RETURNING id, kind` row of either backend.
    pub(crate) fn from_row<R>(row: &R) -> Result<Fresh, sqlx::Error>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(Fresh {
            id: row.try_get(0)?,
            kind: row.try_get(1)?,
        })
    }
}

/// What the triggers of one transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entered {
    /// Customers entered, over all campaigns.
    pub entries: u64,
    /// First-step deliveries queued.
    pub queued: u64,
}

impl Entered {
    pub fn add(&mut self, other: &Entered) {
        self.entries += other.entries;
        self.queued += other.queued;
    }
}

/// The tick of the event run that holds entries made at `now`: the UTC day's
/// midnight.
pub fn event_tick(now: Millis) -> Millis {
    now - now.rem_euclid(DAY)
}

/// The ids of the fresh interactions of `rule`'s kind, as the JSON array the
/// statements bind; `None` when there are none.
pub fn matching_ids(rule: &TriggerRule, fresh: &[Fresh]) -> Option<String> {
    let ids: Vec<i64> = fresh
        .iter()
        .filter(|f| f.kind == rule.event)
        .map(|f| f.id)
        .collect();
    (!ids.is_empty()).then(|| serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
}

/// The statement entering into run `run_id` the customers of the interactions
/// bound as a JSON array of ids, with its parameters: the audience's and the
/// trigger's own, then campaign, run, now, the kind, the ids, the oldest
/// occurrence that still triggers and, for `reentry: DURATION`, the latest
/// start of an earlier entry.
pub fn enter_sql(
    rule: &TriggerRule,
    backend: Backend,
    now: Millis,
    run_id: i64,
    ids: &str,
) -> (String, Vec<Param>) {
    let cx = segment::Context::new(backend, now, &rule.campaign);
    let who = if rule.transactional {
        Predicate::Recipients(&rule.audience)
    } else {
        Predicate::Audience(&rule.audience)
    };
    let audience = segment::compile(who, &cx);
    let a = audience.params.len();
    let data = segment::compile(
        Predicate::EventData(&rule.filter),
        &cx.clone().params_from(a + 1),
    );
    let n = a + data.params.len();
    let (c, run, now_p, kind, list, oldest, since) =
        (n + 1, n + 2, n + 3, n + 4, n + 5, n + 6, n + 7);
    // Per candidate, one probe of the customer's latest entry through the
    // (campaign, customer, seq) key, as a scalar subquery PostgreSQL keeps per
    // row: only a customer's latest entry can be active, and it began last.
    // (A grouped join over the campaign's entries, as planning a whole
    // audience does, or a NOT EXISTS over active ones, which PostgreSQL runs
    // through the partial index of all the campaign's active entries, reads
    // them all for every group of events: 15–45 ms a group at 60,000.)
    let blocked = match rule.reentry {
        Reentry::Never => "1 = 1".to_string(),
        Reentry::Always => "p.state = 'active'".to_string(),
        Reentry::After(_) => format!("p.state = 'active' OR p.entered_at > ${since}"),
    };
    let allowed = format!(
        "COALESCE((SELECT CASE WHEN {blocked} THEN 0 ELSE 1 END FROM entries p \
         WHERE p.campaign = ${c} AND p.customer_id = i.customer_id \
         ORDER BY p.seq DESC LIMIT 1), 1) = 1"
    );
    let sql = format!(
        "INSERT INTO entries (campaign, customer_id, seq, run_id, entered_at, state, updated_at, cause_id) \
         SELECT ${c}, i.customer_id, COALESCE((SELECT MAX(p.seq) FROM entries p \
           WHERE p.campaign = ${c} AND p.customer_id = i.customer_id), 0) + 1, \
           ${run}, ${now_p}, 'active', ${now_p}, i.id \
         FROM interactions i JOIN customers c ON c.id = i.customer_id \
         WHERE {ids} AND i.kind = ${kind} AND i.occurred_at >= ${oldest} \
         AND ({data}) AND ({audience}) AND {allowed} \
         ORDER BY i.id \
         ON CONFLICT DO NOTHING",
        ids = backend.in_json_ids("i.id", list),
        data = data.predicate,
        audience = audience.predicate,
    );
    let mut params = audience.params;
    params.extend(data.params);
    params.extend([
        Param::Text(rule.campaign.clone()),
        Param::Int(run_id),
        Param::Int(now),
        Param::Text(rule.event.clone()),
        Param::Text(ids.to_string()),
        Param::Int(now - FRESH_FOR),
    ]);
    if let Reentry::After(d) = rule.reentry {
        params.push(Param::Int(now - d));
    }
    (sql, params)
}

/// Queues `$1` (the first step) at `$2` (now) for the entries of campaign
/// `$3` caused by the interactions whose ids are the JSON array `$4`.
pub fn queue_sql(backend: Backend) -> String {
    format!(
        "INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, status, \
         created_at, updated_at) \
         SELECT e.run_id, e.id, e.campaign, $1, e.customer_id, 'queued', $2, $2 FROM entries e \
         WHERE e.campaign = $3 AND {} AND e.state = 'active' ON CONFLICT DO NOTHING",
        backend.in_json_ids("e.cause_id", 4)
    )
}

/// The campaign `$campaign`'s `event` run of the UTC day of `$now`, created
/// (status `sending`) when this is the day's first: `(run id, created)`. In
/// transaction `$tx` of either backend.
macro_rules! event_run {
    ($tx:expr, $campaign:expr, $now:expr) => {{
        use $crate::store::Context as _;
        let tick = $crate::store::triggers::event_tick($now);
        let created: Option<i64> = sqlx::query_scalar(
            "INSERT INTO runs (campaign, trigger, tick, status, created_at) \
             VALUES ($1, 'event', $2, 'sending', $3) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind($campaign)
        .bind(tick)
        .bind($now)
        .fetch_optional(&mut *$tx)
        .await
        .context("opening the day's event run")?;
        match created {
            Some(id) => (id, true),
            None => (
                sqlx::query_scalar::<_, i64>(
                    "SELECT id FROM runs WHERE campaign = $1 AND trigger = 'event' AND tick = $2",
                )
                .bind($campaign)
                .bind(tick)
                .fetch_one(&mut *$tx)
                .await
                .context("finding the day's event run")?,
                false,
            ),
        }
    }};
}
pub(crate) use event_run;

/// After `$queued` deliveries were queued into the day's event run: on
/// PostgreSQL, tells listening workers at commit ([`super::wake`]), at most
/// once per [`NOTIFY_EVERY`] per process. The run row itself is not touched:
/// an event run stays `sending` all its day (so no pass can finish it while
/// a trigger queues into it) and is counted and finished once the day is
/// over ([`super::Store::finish_past_event_runs`]); an update of that one row
/// by every group would serialise the writers on it.
macro_rules! queued_into {
    ($backend:expr, $tx:expr, $queued:expr, $campaign:expr) => {{
        use $crate::store::Context as _;
        if $queued > 0
            && $backend == $crate::store::Backend::Postgres
            && $crate::store::triggers::notify_due()
        {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind($crate::store::triggers::WORK_CHANNEL)
                .bind($campaign)
                .execute(&mut *$tx)
                .await
                .context("telling workers of queued messages")?;
        }
    }};
}
pub(crate) use queued_into;

/// Enters customers into the campaigns whose `$rules` (`&[TriggerRule]`) match
/// the `$fresh` (`&[Fresh]`) interactions of transaction `$tx` on backend
/// `$backend`, at `$now`; evaluates to an [`Entered`]. Campaigns are taken in
/// name order, so two transactions meet the same rows (the day's run, the
/// entries' keys) in the same order.
macro_rules! enter_triggered {
    ($backend:expr, $tx:expr, $rules:expr, $fresh:expr, $now:expr) => {{
        use $crate::store::Context as _;
        let backend: $crate::store::Backend = $backend;
        let now: $crate::clock::Millis = $now;
        let mut total = $crate::store::triggers::Entered::default();
        let mut rules: Vec<&$crate::store::triggers::TriggerRule> = $rules.iter().collect();
        rules.sort_by(|a, b| a.campaign.cmp(&b.campaign));
        for rule in rules {
            let Some(ids) = $crate::store::triggers::matching_ids(rule, $fresh) else {
                continue;
            };
            let (run_id, created) = $crate::store::triggers::event_run!($tx, &rule.campaign, now);
            let (sql, params) =
                $crate::store::triggers::enter_sql(rule, backend, now, run_id, &ids);
            let entries =
                $crate::store::audience::bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), &params)
                    .execute(&mut *$tx)
                    .await
                    .context("entering triggered customers")?
                    .rows_affected();
            let mut queued = 0;
            if entries == 0 {
                if created {
                    sqlx::query("DELETE FROM runs WHERE id = $1")
                        .bind(run_id)
                        .execute(&mut *$tx)
                        .await
                        .context("removing an empty event run")?;
                }
            } else if let Some(step) = &rule.first_step {
                queued = sqlx::query(sqlx::AssertSqlSafe($crate::store::triggers::queue_sql(
                    backend,
                )))
                .bind(step)
                .bind(now)
                .bind(&rule.campaign)
                .bind(&ids)
                .execute(&mut *$tx)
                .await
                .context("queueing triggered messages")?
                .rows_affected();
                $crate::store::triggers::queued_into!(backend, $tx, queued, &rule.campaign);
            }
            total.add(&$crate::store::triggers::Entered { entries, queued });
        }
        total
    }};
}
pub(crate) use enter_triggered;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_run_holds_one_utc_day() {
        let day = 20_000 * DAY;
        assert_eq!(event_tick(day), day);
        assert_eq!(event_tick(day + DAY - 1), day);
        assert_eq!(event_tick(day + DAY), day + DAY);
    }

    #[test]
    fn only_the_triggers_kind_is_looked_at() {
        let rule = TriggerRule {
            campaign: "cart".into(),
            event: "cart_abandoned".into(),
            filter: Vec::new(),
            audience: Condition::All(Vec::new()),
            reentry: Reentry::Always,
            transactional: false,
            first_step: None,
        };
        let fresh = |id, kind: &str| Fresh {
            id,
            kind: kind.into(),
        };
        assert_eq!(matching_ids(&rule, &[fresh(1, "page_view")]), None);
        assert_eq!(
            matching_ids(
                &rule,
                &[
                    fresh(1, "cart_abandoned"),
                    fresh(2, "purchase"),
                    fresh(3, "cart_abandoned")
                ]
            )
            .as_deref(),
            Some("[1,3]")
        );
    }
}
