//! Follow-up sequences: moving campaign entries from one step to the next in
//! set-based statements.
//!
//! An entry is `active` while its customer is in the sequence. Its current
//! step is its latest delivery: steps are queued in order, at most one
//! delivery per entry and step, so an entry has a delivery for step A and none
//! for the step after it exactly while it stands at A. Moving on therefore
//! writes the next step's delivery and nothing else.
//!
//! A transition from step A to step B takes every active entry whose A message
//! was sent at or before a cut-off (`now - B.wait`) and which has no B
//! delivery yet, then, in one transaction:
//! 1. marks those that reached the campaign's goal since entering (`goal`),
//! 2. queues B for those for whom B's `when:` holds,
//! 3. ends the rest (`exited`, with the reason).
//!
//! Every statement is idempotent: a second worker doing the same transition
//! finds nothing left to do.

use sqlx::AssertSqlSafe;

use super::audience::bind_all;
use super::{Backend, Context, Store, StoreError, named, with_pool};
use crate::clock::Millis;
use crate::segment::{self, Compiled, Condition, Param, Predicate};
use crate::status::{DeliveryStatus, EntryState};

/// One step-to-step move of a campaign's entries.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub campaign: &'a str,
    /// `None`: from the entry itself, to the first step of a triggered
    /// campaign that waits (entries made at or before the cut-off are due).
    pub from_step: Option<&'a str>,
    pub to_step: &'a str,
    /// Entries whose `from_step` message was sent at or before this are due.
    pub cutoff: Millis,
    /// `to_step`'s `when:`.
    pub when: Option<&'a Condition>,
    /// The campaign's `goal:`.
    pub goal: Option<&'a Condition>,
}

impl Transition<'_> {
    /// A condition about the entry `e` of customer `c`, its placeholders
    /// numbered from `first`.
    fn compile(
        &self,
        condition: &Condition,
        now: Millis,
        backend: Backend,
        first: usize,
    ) -> Compiled {
        segment::compile(
            Predicate::Entry {
                condition,
                entry: "e",
            },
            &segment::Context::new(backend, now, self.campaign).params_from(first),
        )
    }

    /// The parameters of [`due`] in the order every transition statement binds
    /// them after its conditions' own: campaign, from step, to step, cut-off,
    /// then `now`.
    fn due_params(&self, now: Millis) -> [Param; 5] {
        [
            Param::Text(self.campaign.into()),
            Param::Text(self.from_step.unwrap_or("").into()),
            Param::Text(self.to_step.into()),
            Param::Int(self.cutoff),
            Param::Int(now),
        ]
    }
}

/// What a transition did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub goal: u64,
    pub exited: u64,
    pub queued: u64,
}

/// What settling a campaign's entries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    pub completed: u64,
    pub exited: u64,
}

/// One row of `herald status`: entries of a campaign by state and step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepState {
    pub state: EntryState,
    pub step: Option<String>,
    /// For active entries: the status of the current step's delivery
    /// (queued, sending, sent …).
    pub delivery: Option<DeliveryStatus>,
    pub reason: Option<String>,
    pub entries: i64,
    /// For active entries whose step was sent: the earliest send time.
    pub earliest_sent: Option<Millis>,
    /// For queued deliveries: the earliest time one is due.
    pub earliest_due: Option<Millis>,
}

/// How many transactions a PostgreSQL transition is split into, run at once.
const ADVANCE_SHARDS: i64 = 2;

/// `FROM … WHERE …` of the entries `e` due for a transition: active, their
/// `from` message sent by the cut-off, nothing of the `to` step queued yet.
/// With `customer`, the customer row is joined as `c`. `$C` = campaign, `$F` =
/// from step, `$T` = to step, `$X` = cut-off.
///
/// From the entry itself (`from_entry`), the entries made by the cut-off are
/// due, and `$F` is the empty string (bound so that every transition binds
/// the same parameters).
fn due(c: usize, f: usize, t: usize, x: usize, customer: bool, from_entry: bool) -> String {
    let join = customer_join(customer);
    if from_entry {
        return format!(
            "FROM entries e{join} \
             WHERE e.campaign = ${c} AND e.state = 'active' AND e.entered_at <= ${x} AND ${f} = '' \
             AND NOT EXISTS (SELECT 1 FROM deliveries n WHERE n.entry_id = e.id AND n.step = ${t})"
        );
    }
    format!(
        "FROM deliveries d JOIN entries e ON e.id = d.entry_id{join} \
         WHERE d.campaign = ${c} AND d.step = ${f} AND d.status = 'sent' AND d.sent_at <= ${x} \
         AND e.campaign = ${c} AND e.state = 'active' \
         AND NOT EXISTS (SELECT 1 FROM deliveries n WHERE n.entry_id = e.id AND n.step = ${t})"
    )
}

/// In the transaction that queued `$queued` deliveries into sequence run
/// `$run`: counts them into the run and marks it sending, so that a crash
/// right after the commit leaves a run the worker resumes, never deliveries in
/// a run nobody sends. A later shard or transition reopens a run a sweep may
/// already have finished. (A macro: the transaction is either backend's.)
macro_rules! open_run {
    ($tx:expr, $run:expr, $queued:expr) => {
        if $queued > 0 {
            sqlx::query("UPDATE runs SET status = 'sending', planned = planned + $2 WHERE id = $1")
                .bind($run)
                .bind($queued as i64)
                .execute(&mut *$tx)
                .await
                .context("opening a sequence run")?;
        }
    };
}

/// The customer row of entry `e` as `c`, joined only for conditions that
/// read it.
fn customer_join(read: bool) -> &'static str {
    if read {
        " JOIN customers c ON c.id = e.customer_id"
    } else {
        ""
    }
}

/// Whether a compiled condition needs the customer row.
fn reads_customer(a: Option<&Compiled>) -> bool {
    a.is_some_and(|a| a.reads_customer)
}

impl Store {
    /// Runs one transition (see the module docs) in one transaction, queueing
    /// the next step's deliveries under `run_id`.
    pub async fn advance(
        &self,
        t: &Transition<'_>,
        run_id: i64,
        now: Millis,
    ) -> Result<Moved, StoreError> {
        if let super::Pool::Postgres(pool) = &self.pool {
            return self.advance_in_one(pool, t, run_id, now).await;
        }
        let mut moved = Moved::default();
        let goal = t.goal.map(|g| t.compile(g, now, self.backend(), 1));
        let when = t.when.map(|w| t.compile(w, now, self.backend(), 1));
        let (goal, when) = (goal.as_ref(), when.as_ref());
        let _gate = self.write_gate().await;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await.context("starting a transition")?;
            if let Some(goal) = goal {
                let n = goal.params.len();
                let (c, f, to, x, now_p) = (n + 1, n + 2, n + 3, n + 4, n + 5);
                let sql = format!(
                    "UPDATE entries SET state = 'goal', exit_reason = 'goal', goal_at = ${now_p}, \
                     finished_at = ${now_p}, updated_at = ${now_p} WHERE id IN (SELECT e.id {} AND ({}))",
                    due(c, f, to, x, goal.reads_customer, t.from_step.is_none()),
                    goal.predicate
                );
                let mut params = goal.params.clone();
                params.extend(t.due_params(now));
                moved.goal = bind_all!(sqlx::query(AssertSqlSafe(sql)), &params)
                    .execute(&mut *tx)
                    .await
                    .context("marking goals reached")?
                    .rows_affected();
            }
            // Those for whom `when:` holds get the next step (entries that
            // reached the goal are no longer active) …
            let n = when.map_or(0, |w| w.params.len());
            let (c, f, to, x, now_p, run) = (n + 1, n + 2, n + 3, n + 4, n + 5, n + 6);
            let queue = format!(
                "INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, status, \
                 created_at, updated_at) SELECT ${run}, e.id, e.campaign, ${to}, e.customer_id, \
                 'queued', ${now_p}, ${now_p} {} AND ({}) ON CONFLICT DO NOTHING",
                due(c, f, to, x, reads_customer(when), t.from_step.is_none()),
                when.map_or("1 = 1", |w| w.predicate.as_str())
            );
            let mut params = when.map(|w| w.params.clone()).unwrap_or_default();
            params.extend(t.due_params(now));
            params.push(Param::Int(run_id));
            moved.queued = bind_all!(sqlx::query(AssertSqlSafe(queue)), &params)
                .execute(&mut *tx)
                .await
                .context("queueing the next step")?
                .rows_affected();
            open_run!(tx, run_id, moved.queued);
            // … and whoever is still due after that leaves the sequence.
            let exit = format!(
                "UPDATE entries SET state = 'exited', exit_reason = $6, finished_at = $5, \
                 updated_at = $5 WHERE id IN (SELECT e.id {})",
                due(1, 2, 3, 4, false, t.from_step.is_none())
            );
            let mut params = t.due_params(now).to_vec();
            params.push(Param::Text(format!("when: {}", t.to_step)));
            moved.exited = bind_all!(sqlx::query(AssertSqlSafe(exit)), &params)
                .execute(&mut *tx)
                .await
                .context("ending entries whose condition fails")?
                .rows_affected();
            tx.commit().await.context("committing a transition")?;
            Ok::<_, StoreError>(())
        })?;
        Ok(moved)
    }

    /// PostgreSQL: the whole transition as one statement. The due entries are
    /// found once (a materialised CTE) and the conditions are plain predicates
    /// over them, so EXISTS / NOT EXISTS become hashed semi / anti joins rather
    /// than a subquery per entry. Transitions of one campaign are serialised
    /// across workers by an advisory lock, so the insert needs no conflict
    /// handling (the unique key still stands behind it).
    async fn advance_in_one(
        &self,
        pool: &sqlx::PgPool,
        t: &Transition<'_>,
        run_id: i64,
        now: Millis,
    ) -> Result<Moved, StoreError> {
        let backend = self.backend();
        let goal = t.goal.map(|g| t.compile(g, now, backend, 1));
        let g = goal.as_ref().map_or(0, |a| a.params.len());
        let when = t.when.map(|w| t.compile(w, now, backend, g + 1));
        let b = g + when.as_ref().map_or(0, |a| a.params.len());
        let (c, f, to, x, now_p, reason, run) = (b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7);
        let (shards, shard) = (b + 8, b + 9);
        let customer = |a: &Option<Compiled>| customer_join(reads_customer(a.as_ref()));
        let (goal_cte, not_goal, goal_count) = match &goal {
            Some(a) => (
                format!(
                    "g AS (UPDATE entries SET state = 'goal', exit_reason = 'goal', goal_at = ${now_p}, \
                     finished_at = ${now_p}, updated_at = ${now_p} FROM (SELECT e.id FROM due e{} \
                     WHERE {}) m WHERE entries.id = m.id AND entries.state = 'active' \
                     RETURNING entries.id), ",
                    customer(&goal),
                    a.predicate
                ),
                " AND NOT EXISTS (SELECT 1 FROM g WHERE g.id = e.id)",
                "(SELECT COUNT(*) FROM g)",
            ),
            None => (String::new(), "", "CAST(0 AS BIGINT)"),
        };
        let when_sql = when.as_ref().map_or("1 = 1", |a| a.predicate.as_str());
        let sql = format!(
            "WITH due AS MATERIALIZED (SELECT e.id, e.customer_id, e.entered_at {due} \
               AND e.id % ${shards} = ${shard}), \
             {goal_cte}\
             ok AS MATERIALIZED (SELECT e.id, e.customer_id FROM due e{when_join} \
               WHERE ({when_sql}){not_goal}), \
             q AS (INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, status, \
               created_at, updated_at) SELECT ${run}, ok.id, ${c}, ${to}, ok.customer_id, 'queued', \
               ${now_p}, ${now_p} FROM ok RETURNING 1), \
             x AS (UPDATE entries SET state = 'exited', exit_reason = ${reason}, finished_at = ${now_p}, \
               updated_at = ${now_p} FROM due e WHERE entries.id = e.id AND entries.state = 'active' \
               AND NOT EXISTS (SELECT 1 FROM ok WHERE ok.id = e.id){not_goal} RETURNING 1) \
             SELECT {goal_count}, (SELECT COUNT(*) FROM x), (SELECT COUNT(*) FROM q)",
            due = due(c, f, to, x, false, t.from_step.is_none()),
            when_join = customer(&when),
        );
        let mut params: Vec<Param> = Vec::new();
        params.extend(goal.iter().flat_map(|a| a.params.iter().cloned()));
        params.extend(when.iter().flat_map(|a| a.params.iter().cloned()));
        params.extend(t.due_params(now));
        params.extend([
            Param::Text(format!("when: {}", t.to_step)),
            Param::Int(run_id),
        ]);
        // The entries are split into shards by id, each its own transaction on
        // its own connection, so the server writes them on several cores.
        // A shard that fails leaves the others committed; the next tick does
        // what is left (every statement is idempotent).
        let shards = (0..ADVANCE_SHARDS).map(|shard| {
            let mut params = params.clone();
            params.extend([Param::Int(ADVANCE_SHARDS), Param::Int(shard)]);
            let sql = &sql;
            async move {
                let mut tx = pool.begin().await.context("starting a transition")?;
                // One transition of a campaign's shard at a time across
                // workers; hash joins over a million entries want more than
                // the 4 MB default.
                sqlx::query(
                    "SELECT pg_advisory_xact_lock(hashtext('herald.advance:' || $2), hashtext($1))",
                )
                .bind(t.campaign)
                .bind(shard.to_string())
                .execute(&mut *tx)
                .await
                .context("waiting for the campaign's transition lock")?;
                sqlx::query("SET LOCAL work_mem = '64MB'")
                    .execute(&mut *tx)
                    .await
                    .context("sizing a transition's memory")?;
                let counts: (i64, i64, i64) =
                    bind_all!(sqlx::query_as(AssertSqlSafe(sql.as_str())), &params)
                        .fetch_one(&mut *tx)
                        .await
                        .context("advancing entries")?;
                open_run!(tx, run_id, counts.2);
                tx.commit().await.context("committing a transition")?;
                Ok::<_, StoreError>(counts)
            }
        });
        let counts = futures_util::future::try_join_all(shards)
            .await?
            .into_iter()
            .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
        Ok(Moved {
            goal: counts.0 as u64,
            exited: counts.1 as u64,
            queued: counts.2 as u64,
        })
    }

    /// Completes active entries whose last step was sent, and ends those whose
    /// current step's message will never be sent (failed, bounced, skipped),
    /// with that as the reason.
    pub async fn settle_entries(
        &self,
        campaign: &str,
        last_step: &str,
        now: Millis,
    ) -> Result<Settled, StoreError> {
        let _gate = self.write_gate().await;
        let (completed, exited) = with_pool!(self, |pool| {
            let mut tx = pool.begin().await.context("starting to settle entries")?;
            let completed = sqlx::query(
                "UPDATE entries SET state = 'completed', finished_at = $3, updated_at = $3 \
                 WHERE state = 'active' AND id IN (SELECT d.entry_id FROM deliveries d \
                 WHERE d.campaign = $1 AND d.step = $2 AND d.status = 'sent')",
            )
            .bind(campaign)
            .bind(last_step)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("completing entries")?
            .rows_affected();
            // A message that will never be sent is its entry's latest: an entry
            // only moves on from a sent one.
            let exited = sqlx::query(
                "UPDATE entries SET state = 'exited', finished_at = $2, updated_at = $2, \
                 exit_reason = (SELECT d.status || COALESCE(': ' || d.reason, '') FROM deliveries d \
                   WHERE d.entry_id = entries.id ORDER BY d.id DESC LIMIT 1) \
                 WHERE state = 'active' AND id IN (SELECT d.entry_id FROM deliveries d \
                 WHERE d.campaign = $1 AND d.status IN ('failed', 'bounced', 'skipped'))",
            )
            .bind(campaign)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("ending entries whose message failed")?
            .rows_affected();
            tx.commit().await.context("committing settled entries")?;
            Ok::<_, StoreError>((completed, exited))
        })?;
        Ok(Settled { completed, exited })
    }

    /// Removes a sequence run its transitions queued nothing into (a tick with
    /// no one due leaves no trace).
    pub async fn discard_empty_run(&self, run_id: i64) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "DELETE FROM runs WHERE id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE run_id = $1)",
            )
            .bind(run_id)
            .execute(pool)
            .await
            .map(|_| ())
        })
        .context("removing an empty sequence run")?;
        Ok(())
    }

    /// Entries of a campaign grouped by state, current step (the entry's latest
    /// delivery), the status of that step's delivery and exit reason, for
    /// `herald status`. The latest deliveries are found in one grouped pass
    /// rather than a look-up per entry (about half the time at 1,000,000).
    pub async fn sequence_status(&self, campaign: &str) -> Result<Vec<StepState>, StoreError> {
        type Row = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT e.state, d.step, CASE WHEN e.state = 'active' THEN d.status END, \
                 e.exit_reason, COUNT(*), \
                 MIN(CASE WHEN e.state = 'active' AND d.status = 'sent' THEN d.sent_at END), \
                 MIN(CASE WHEN e.state = 'active' AND d.status = 'queued' \
                     THEN COALESCE(d.next_attempt_at, d.created_at) END) \
                 FROM entries e \
                 LEFT JOIN (SELECT entry_id, MAX(id) AS id FROM deliveries WHERE campaign = $1 \
                   GROUP BY entry_id) latest ON latest.entry_id = e.id \
                 LEFT JOIN deliveries d ON d.id = latest.id \
                 WHERE e.campaign = $1 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            )
            .bind(campaign)
            .fetch_all(pool)
            .await
        })
        .context("reading a campaign's status")?;
        rows.into_iter()
            .map(|r| {
                Ok(StepState {
                    state: named(&r.0)?,
                    step: r.1,
                    delivery: r.2.as_deref().map(named).transpose()?,
                    reason: r.3,
                    entries: r.4,
                    earliest_sent: r.5,
                    earliest_due: r.6,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("reading a campaign's status")
    }
}
