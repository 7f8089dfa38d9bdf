//! Follow-up sequences: moving campaign entries from one step to the next in
//! set-based statements.
//!
//! An entry is `active` while its customer is in the sequence; `step` is the
//! step most recently queued for it. A transition from step A to step B takes
//! every active entry at A whose A message was sent at or before a cut-off
//! (`now - B.wait`), then, in one transaction:
//! 1. marks those that reached the campaign's goal since entering (`goal`),
//! 2. ends those for whom B's `when:` does not hold (`exited`, with the reason),
//! 3. queues B for the rest and moves them to B.
//!
//! Every statement is idempotent: a second worker doing the same transition
//! finds nothing left to do.

use sqlx::AssertSqlSafe;

use super::audience::bind_all;
use super::{Backend, Context, Store, StoreError, with_pool};
use crate::clock::Millis;
use crate::segment::{self, Audience, Condition, Param};

/// One step-to-step move of a campaign's entries.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub campaign: &'a str,
    pub from_step: &'a str,
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
    ) -> Audience {
        let mut cx = segment::Context::new(backend, now, self.campaign).for_entry("e");
        cx.first_param = first;
        segment::compile_condition(condition, &cx)
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
    pub state: String,
    pub step: Option<String>,
    /// For active entries: the status of the current step's delivery
    /// (queued, sending, sent …).
    pub delivery: Option<String>,
    pub reason: Option<String>,
    pub entries: i64,
    /// For active entries whose step was sent: the earliest send time.
    pub earliest_sent: Option<Millis>,
    /// For queued deliveries: the earliest time one is due.
    pub earliest_due: Option<Millis>,
}

/// `e` is due for the transition: active at `from`, its `from` message sent by
/// the cut-off. `$F` = from step, `$X` = cut-off, `$C` = campaign.
fn due(c: usize, f: usize, x: usize) -> String {
    format!(
        "e.campaign = ${c} AND e.state = 'active' AND e.step = ${f} \
         AND EXISTS (SELECT 1 FROM deliveries d WHERE d.entry_id = e.id AND d.step = ${f} \
         AND d.status = 'sent' AND d.sent_at <= ${x})"
    )
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
        if self.backend() == Backend::Postgres {
            return self.advance_in_one(t, run_id, now).await;
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
                let (c, f, x, now_p) = (n + 1, n + 2, n + 3, n + 4);
                let sql = format!(
                    "UPDATE entries SET state = 'goal', exit_reason = 'goal', goal_at = ${now_p}, \
                     finished_at = ${now_p}, updated_at = ${now_p} WHERE id IN (SELECT e.id FROM entries e \
                     JOIN customers c ON c.id = e.customer_id WHERE {} AND ({}))",
                    due(c, f, x),
                    goal.predicate
                );
                let mut params = goal.params.clone();
                params.extend([
                    Param::Text(t.campaign.into()),
                    Param::Text(t.from_step.into()),
                    Param::Int(t.cutoff),
                    Param::Int(now),
                ]);
                moved.goal = bind_all!(sqlx::query(AssertSqlSafe(sql)), &params)
                    .execute(&mut *tx)
                    .await
                    .context("marking goals reached")?
                    .rows_affected();
            }
            if let Some(when) = when {
                let n = when.params.len();
                let (c, f, x, now_p, reason) = (n + 1, n + 2, n + 3, n + 4, n + 5);
                let sql = format!(
                    "UPDATE entries SET state = 'exited', exit_reason = ${reason}, \
                     finished_at = ${now_p}, updated_at = ${now_p} WHERE id IN (SELECT e.id FROM entries e \
                     JOIN customers c ON c.id = e.customer_id WHERE {} AND NOT ({}))",
                    due(c, f, x),
                    when.predicate
                );
                let mut params = when.params.clone();
                params.extend([
                    Param::Text(t.campaign.into()),
                    Param::Text(t.from_step.into()),
                    Param::Int(t.cutoff),
                    Param::Int(now),
                    Param::Text(format!("when: {}", t.to_step)),
                ]);
                moved.exited = bind_all!(sqlx::query(AssertSqlSafe(sql)), &params)
                    .execute(&mut *tx)
                    .await
                    .context("ending entries whose condition fails")?
                    .rows_affected();
            }
            let queue = format!(
                "INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, status, \
                 created_at, updated_at) SELECT $4, e.id, e.campaign, $5, e.customer_id, 'queued', $6, $6 \
                 FROM entries e WHERE {} ON CONFLICT DO NOTHING",
                due(1, 2, 3)
            );
            moved.queued = sqlx::query(AssertSqlSafe(queue))
                .bind(t.campaign)
                .bind(t.from_step)
                .bind(t.cutoff)
                .bind(run_id)
                .bind(t.to_step)
                .bind(now)
                .execute(&mut *tx)
                .await
                .context("queueing the next step")?
                .rows_affected();
            sqlx::query(
                "UPDATE entries SET step = $3, updated_at = $4 WHERE campaign = $1 \
                 AND state = 'active' AND step = $2 AND EXISTS (SELECT 1 FROM deliveries d \
                 WHERE d.entry_id = entries.id AND d.step = $3)",
            )
            .bind(t.campaign)
            .bind(t.from_step)
            .bind(t.to_step)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("moving entries to the next step")?;
            tx.commit().await.context("committing a transition")?;
            Ok::<_, StoreError>(())
        })?;
        Ok(moved)
    }

    /// PostgreSQL: the whole transition as one statement. The due entries are
    /// found and both conditions evaluated once (a materialised CTE); the goal,
    /// exit and queue writes touch disjoint rows.
    async fn advance_in_one(
        &self,
        t: &Transition<'_>,
        run_id: i64,
        now: Millis,
    ) -> Result<Moved, StoreError> {
        let backend = self.backend();
        let goal = t.goal.map(|g| t.compile(g, now, backend, 1));
        let g = goal.as_ref().map_or(0, |a| a.params.len());
        let when = t.when.map(|w| t.compile(w, now, backend, g + 1));
        let b = g + when.as_ref().map_or(0, |a| a.params.len());
        let (c, f, x, now_p, reason, run, to) = (b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7);
        let goal_sql = goal.as_ref().map_or("false".to_string(), |a| {
            format!("COALESCE(({}), false)", a.predicate)
        });
        let when_sql = when.as_ref().map_or("true".to_string(), |a| {
            format!("COALESCE(({}), false)", a.predicate)
        });
        let sql = format!(
            "WITH due AS MATERIALIZED (SELECT e.id, e.customer_id, {goal_sql} AS goal, {when_sql} AS ok \
               FROM entries e JOIN customers c ON c.id = e.customer_id WHERE {due}), \
             g AS (UPDATE entries SET state = 'goal', exit_reason = 'goal', goal_at = ${now_p}, \
               finished_at = ${now_p}, updated_at = ${now_p} FROM due \
               WHERE entries.id = due.id AND entries.state = 'active' AND due.goal RETURNING 1), \
             x AS (UPDATE entries SET state = 'exited', exit_reason = ${reason}, finished_at = ${now_p}, \
               updated_at = ${now_p} FROM due WHERE entries.id = due.id AND entries.state = 'active' \
               AND NOT due.goal AND NOT due.ok RETURNING 1), \
             q AS (INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, status, \
               created_at, updated_at) SELECT ${run}, due.id, ${c}, ${to}, due.customer_id, 'queued', \
               ${now_p}, ${now_p} FROM due WHERE NOT due.goal AND due.ok ON CONFLICT DO NOTHING \
               RETURNING entry_id), \
             s AS (UPDATE entries SET step = ${to}, updated_at = ${now_p} FROM q \
               WHERE entries.id = q.entry_id AND entries.state = 'active' RETURNING 1) \
             SELECT (SELECT COUNT(*) FROM g), (SELECT COUNT(*) FROM x), (SELECT COUNT(*) FROM q), \
               (SELECT COUNT(*) FROM s)",
            due = due(c, f, x)
        );
        let mut params: Vec<Param> = Vec::new();
        params.extend(goal.iter().flat_map(|a| a.params.iter().cloned()));
        params.extend(when.iter().flat_map(|a| a.params.iter().cloned()));
        params.extend([
            Param::Text(t.campaign.into()),
            Param::Text(t.from_step.into()),
            Param::Int(t.cutoff),
            Param::Int(now),
            Param::Text(format!("when: {}", t.to_step)),
            Param::Int(run_id),
            Param::Text(t.to_step.into()),
        ]);
        let counts: (i64, i64, i64, i64) = with_pool!(self, |pool| {
            bind_all!(sqlx::query_as(AssertSqlSafe(sql)), &params)
                .fetch_one(pool)
                .await
        })
        .context("advancing entries")?;
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
                 WHERE campaign = $1 AND state = 'active' AND step = $2 AND EXISTS (SELECT 1 \
                 FROM deliveries d WHERE d.entry_id = entries.id AND d.step = $2 AND d.status = 'sent')",
            )
            .bind(campaign)
            .bind(last_step)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("completing entries")?
            .rows_affected();
            let exited = sqlx::query(
                "UPDATE entries SET state = 'exited', finished_at = $2, updated_at = $2, \
                 exit_reason = (SELECT d.status || COALESCE(': ' || d.reason, '') FROM deliveries d \
                   WHERE d.entry_id = entries.id AND d.step = entries.step) \
                 WHERE campaign = $1 AND state = 'active' AND EXISTS (SELECT 1 FROM deliveries d \
                 WHERE d.entry_id = entries.id AND d.step = entries.step \
                 AND d.status IN ('failed', 'bounced', 'skipped'))",
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

    /// Marks a sequence run as sending with its planned count, or removes it
    /// when it queued nothing (a tick with no one due leaves no trace).
    pub async fn open_sequence_run(&self, run_id: i64) -> Result<u64, StoreError> {
        let planned: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(pool)
                .await
        })
        .context("counting a run's deliveries")?;
        with_pool!(self, |pool| {
            if planned == 0 {
                sqlx::query(
                    "DELETE FROM runs WHERE id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM deliveries WHERE run_id = $1)",
                )
                .bind(run_id)
                .execute(pool)
                .await
                .map(|_| ())
            } else {
                sqlx::query("UPDATE runs SET status = 'sending', planned = $2 WHERE id = $1")
                    .bind(run_id)
                    .bind(planned)
                    .execute(pool)
                    .await
                    .map(|_| ())
            }
        })
        .context("opening a sequence run")?;
        Ok(planned as u64)
    }

    /// Entries of a campaign grouped by state, current step, the status of that
    /// step's delivery and exit reason, for `herald status`.
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
                "SELECT e.state, e.step, CASE WHEN e.state = 'active' THEN d.status END, \
                 e.exit_reason, COUNT(*), \
                 MIN(CASE WHEN e.state = 'active' AND d.status = 'sent' THEN d.sent_at END), \
                 MIN(CASE WHEN e.state = 'active' AND d.status = 'queued' \
                     THEN COALESCE(d.next_attempt_at, d.created_at) END) \
                 FROM entries e LEFT JOIN deliveries d ON d.entry_id = e.id AND d.step = e.step \
                 WHERE e.campaign = $1 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            )
            .bind(campaign)
            .fetch_all(pool)
            .await
        })
        .context("reading a campaign's status")?;
        Ok(rows
            .into_iter()
            .map(|r| StepState {
                state: r.0,
                step: r.1,
                delivery: r.2,
                reason: r.3,
                entries: r.4,
                earliest_sent: r.5,
                earliest_due: r.6,
            })
            .collect())
    }
}
