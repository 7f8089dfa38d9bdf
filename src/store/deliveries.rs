//! Runs, entries and deliveries: planning in set-based statements, claiming
//! batches under a lease, and recording outcomes in batched transactions.
//!
//! The `deliveries` row decides who gets what, never a job: its unique key
//! (entry, step) makes a second send of a step within one entry impossible, and
//! its status moves queued → sending (claimed, with a lease) → sent | failed |
//! bounced | skipped. A claim whose lease ran out (its worker died) returns to
//! queued.

use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::{Backend, Context, Pool, Store, StoreError, named, with_pool};
use crate::clock::Millis;
use crate::customer::{CustomerStatus, Email};
use crate::mailer::Reply;
use crate::segment::Compiled;
use crate::status::{DeliveryStatus, RunStatus, SkipReason};

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Manual,
    Schedule,
    Sequence,
    /// Entries made by interactions, one run per campaign and UTC day.
    Event,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::Sequence => "sequence",
            Trigger::Event => "event",
        }
    }
}

/// When a customer who already entered a campaign may enter it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    Never,
    /// Whenever the previous entry is no longer active.
    Always,
    /// When the previous entry began at least this many milliseconds ago and is
    /// no longer active.
    After(Millis),
}

/// A claimed delivery with what rendering and the pre-send checks need.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub delivery_id: i64,
    pub entry_id: i64,
    pub step: String,
    pub attempts: i32,
    /// Given at the first claim and kept across retries ('' outside a claim).
    pub message_id: String,
    pub customer_id: i64,
    pub email: Email,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub timezone: Option<String>,
    pub created_at: Millis,
    pub attributes: Map<String, Value>,
    pub status: CustomerStatus,
    pub suppressed: bool,
    /// Campaign emails sent to this customer within the frequency-cap window.
    pub recent_sends: i64,
}

/// How an entry began, for its templates ([`Store::entry_contexts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EntryContext {
    pub entry_id: i64,
    /// The interaction that entered it: (kind, occurred_at, data).
    pub cause: Option<(String, Millis, Map<String, Value>)>,
    /// The data a transactional send handed in.
    pub data: Option<Map<String, Value>>,
}

/// The outcome of one delivery, to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent {
        message_id: String,
    },
    /// Back to the queue until `at`.
    Retry {
        at: Millis,
        error: String,
        unknown: bool,
    },
    Failed {
        error: String,
    },
    /// Refused for good by the relay; the reply says whether the address is
    /// to be suppressed ([`Reply::is_hard_bounce`]).
    Bounced {
        reply: Reply,
    },
    Skipped {
        reason: SkipReason,
    },
    /// Back to the queue until `at` without using up an attempt: outside the
    /// send window, or given back unstarted at shutdown.
    Deferred {
        at: Millis,
    },
}

/// Counts of a run's deliveries by status, and skips by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub planned: i64,
    pub queued: i64,
    pub sending: i64,
    pub sent: i64,
    pub failed: i64,
    pub bounced: i64,
    /// By reason, as stored (a [`SkipReason`]'s text).
    pub skipped: Vec<(String, i64)>,
}

impl RunCounts {
    pub fn skipped_total(&self) -> i64 {
        self.skipped.iter().map(|(_, n)| n).sum()
    }
}

/// Whether `reentry` lets a customer enter again, over `prev`: the customer's
/// earlier entries into the campaign (`max_seq`, `last_entered`, and `active`,
/// how many are still active; NULL `customer_id` when there are none), with
/// the cut-off of [`reentry_since`] bound at `$since`.
fn reentry_allows(reentry: Reentry, since: usize) -> String {
    match reentry {
        Reentry::Never => "prev.customer_id IS NULL".to_string(),
        Reentry::Always => "prev.customer_id IS NULL OR prev.active = 0".to_string(),
        Reentry::After(_) => format!(
            "prev.customer_id IS NULL OR (prev.active = 0 AND prev.last_entered <= ${since})"
        ),
    }
}

/// The latest time an earlier entry may have begun for [`reentry_allows`].
fn reentry_since(reentry: Reentry, now: Millis) -> Millis {
    match reentry {
        Reentry::After(d) => now - d,
        _ => now,
    }
}

impl Backend {
    /// Row locking for a claim: workers skip rows another worker holds.
    fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }
}

impl Store {
    /// Creates a run. A scheduled run is created once per (campaign, tick): a
    /// second worker firing the same tick gets `None`.
    pub async fn create_run(
        &self,
        campaign: &str,
        trigger: Trigger,
        tick: Option<Millis>,
        now: Millis,
    ) -> Result<Option<i64>, StoreError> {
        let id: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "INSERT INTO runs (campaign, trigger, tick, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(campaign)
            .bind(trigger.as_str())
            .bind(tick)
            .bind(now)
            .fetch_optional(pool)
            .await
        })
        .context("creating a run")?;
        Ok(id)
    }

    /// The run created for a schedule tick, with its status (`planning` means
    /// its planner died before committing: planning it again is safe).
    pub async fn run_of_tick(
        &self,
        campaign: &str,
        trigger: Trigger,
        tick: Millis,
    ) -> Result<Option<(i64, RunStatus)>, StoreError> {
        let row: Option<(i64, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, status FROM runs WHERE campaign = $1 AND trigger = $2 AND tick = $3",
            )
            .bind(campaign)
            .bind(trigger.as_str())
            .bind(tick)
            .fetch_optional(pool)
            .await
        })
        .context("reading a tick's run")?;
        row.map(|(id, status)| Ok((id, named(&status)?)))
            .transpose()
            .context("reading a tick's run")
    }

    /// A run's status; `None` when there is no such run.
    pub async fn run_status(&self, run_id: i64) -> Result<Option<RunStatus>, StoreError> {
        let status: Option<String> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(pool)
                .await
        })
        .context("reading a run's status")?;
        status
            .map(|s| named(&s))
            .transpose()
            .context("reading a run's status")
    }

    /// Enters the audience into the campaign and queues `first_step` for each new
    /// entry, in one transaction of two set-based statements. Running it twice
    /// for the same run adds nothing. Returns the number of deliveries queued.
    pub async fn plan_run(
        &self,
        run_id: i64,
        campaign: &str,
        audience: &Compiled,
        reentry: Reentry,
        first_step: &str,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let n = audience.params.len();
        let (p_campaign, p_run, p_now, p_since, p_step) = (n + 1, n + 2, n + 3, n + 4, n + 5);
        let allowed = reentry_allows(reentry, p_since);
        let since = reentry_since(reentry, now);
        let entries_sql = format!(
            "INSERT INTO entries (campaign, customer_id, seq, run_id, entered_at, state, updated_at) \
             SELECT ${p_campaign}, a.id, COALESCE(prev.max_seq, 0) + 1, ${p_run}, ${p_now}, 'active', ${p_now} \
             FROM (SELECT c.id FROM customers c WHERE {}) a \
             LEFT JOIN (SELECT customer_id, MAX(seq) AS max_seq, MAX(entered_at) AS last_entered, \
                               SUM(CASE WHEN state = 'active' THEN 1 ELSE 0 END) AS active \
                        FROM entries WHERE campaign = ${p_campaign} GROUP BY customer_id) prev \
               ON prev.customer_id = a.id \
             WHERE ({allowed}) AND ${p_since} IS NOT NULL \
             ON CONFLICT DO NOTHING",
            audience.predicate
        );
        let deliveries_sql = "INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, \
             status, created_at, updated_at) \
             SELECT e.run_id, e.id, e.campaign, $1, e.customer_id, 'queued', $2, $2 \
             FROM entries e WHERE e.run_id = $3 ON CONFLICT DO NOTHING";
        let _gate = self.write_gate().await;
        // PostgreSQL queues the deliveries from the entries the INSERT returns
        // (one statement, no second pass over `entries`); SQLite reads them back.
        let entries_then_deliveries = format!(
            "WITH e AS ({entries_sql} RETURNING id, customer_id) \
             INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, \
             status, created_at, updated_at) \
             SELECT ${p_run}, e.id, ${p_campaign}, ${p_step}, e.customer_id, 'queued', ${p_now}, ${p_now} \
             FROM e ON CONFLICT DO NOTHING"
        );
        let planned = with_pool!(self, |pool| {
            let mut tx = pool.begin().await.context("starting to plan a run")?;
            let postgres = self.backend() == Backend::Postgres;
            let enter = if postgres {
                &entries_then_deliveries
            } else {
                &entries_sql
            };
            let q = sqlx::query(AssertSqlSafe(enter.as_str()));
            let entered = super::audience::bind_all!(q, &audience.params)
                .bind(campaign)
                .bind(run_id)
                .bind(now)
                .bind(since)
                .bind(first_step)
                .execute(&mut *tx)
                .await
                .context("entering the audience")?
                .rows_affected();
            let planned = if postgres {
                entered
            } else {
                sqlx::query(deliveries_sql)
                    .bind(first_step)
                    .bind(now)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await
                    .context("queueing deliveries")?
                    .rows_affected()
            };
            sqlx::query(
                "UPDATE runs SET status = 'sending', \
                 planned = (SELECT COUNT(*) FROM deliveries WHERE run_id = $1) WHERE id = $1",
            )
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .context("updating the run")?;
            tx.commit().await.context("committing the plan")?;
            Ok::<_, StoreError>(planned)
        })?;
        Ok(planned)
    }

    /// Returns the run's claims whose lease ran out to the queue: their holder died or
    /// stalled (a live holder renews its leases, [`Store::renew_claims`]). Such a
    /// message may have been sent before its holder stopped, so it is marked
    /// `outcome_unknown`; one that has used up `max_attempts` claims fails
    /// instead of going round again. `holder`'s own claims are never taken: a
    /// send pass does not re-claim what it still holds.
    pub async fn requeue_expired(
        &self,
        run_id: i64,
        now: Millis,
        holder: &str,
        max_attempts: u32,
    ) -> Result<u64, StoreError> {
        let _gate = self.write_gate().await;
        let n = with_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            // $1 now, $2 the run, $3 the asking holder, $4 whether unknown.
            let expired = "run_id = $2 AND status = 'sending' AND lease_until < $1 \
                 AND (claimed_by IS NULL OR claimed_by <> $3)";
            let failed = sqlx::query(AssertSqlSafe(format!(
                "UPDATE deliveries SET status = 'failed', lease_until = NULL, updated_at = $1, \
                 outcome_unknown = (outcome_unknown OR $4), reason = 'no outcome after ' || CAST(attempts AS TEXT) || \
                 ' claims: the worker holding it stopped each time', \
                 last_error = COALESCE(last_error, 'lease expired') \
                 WHERE {expired} AND attempts >= $5"
            )))
            .bind(now)
            .bind(run_id)
            .bind(holder)
            .bind(true)
            .bind(i64::from(max_attempts))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let requeued = sqlx::query(AssertSqlSafe(format!(
                "UPDATE deliveries SET status = 'queued', lease_until = NULL, updated_at = $1, \
                 outcome_unknown = (outcome_unknown OR $4) WHERE {expired}"
            )))
            .bind(now)
            .bind(run_id)
            .bind(holder)
            .bind(true)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(failed + requeued)
        }
        .await)
        .context("requeueing expired claims")?;
        Ok(n)
    }

    /// Extends the lease of every delivery of the run `holder` still holds to
    /// `until`, in one statement; returns how many it holds.
    pub async fn renew_claims(
        &self,
        run_id: i64,
        holder: &str,
        until: Millis,
    ) -> Result<u64, StoreError> {
        let _gate = self.write_gate().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE deliveries SET lease_until = $2 \
                 WHERE run_id = $3 AND status = 'sending' AND claimed_by = $1",
            )
            .bind(holder)
            .bind(until)
            .bind(run_id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .context("renewing leases")?;
        Ok(n)
    }

    /// Gives back what `holder` still holds at the end of its send pass
    /// (claims no sender started): queued again at once, the claim's attempt
    /// returned.
    pub async fn release_claims(
        &self,
        run_id: i64,
        holder: &str,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let _gate = self.write_gate().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE deliveries SET status = 'queued', lease_until = NULL, \
                 attempts = attempts - 1, updated_at = $2 \
                 WHERE run_id = $3 AND status = 'sending' AND claimed_by = $1",
            )
            .bind(holder)
            .bind(now)
            .bind(run_id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .context("releasing claims")?;
        Ok(n)
    }

    /// Claims up to `limit` due deliveries of a run: marks them `sending` with a
    /// lease (state before the wire) and returns them with their customer.
    ///
    /// The first claim of a delivery also gives it its Message-ID,
    /// `ids.0 || 32 random hex digits || ids.1`, which later claims (retries)
    /// keep: unique across installs and databases, and no counter shows.
    pub async fn claim(
        &self,
        run_id: i64,
        limit: i64,
        (now, lease_until): (Millis, Millis),
        cap_since: Option<Millis>,
        ids: (&str, &str),
        holder: &str,
    ) -> Result<Vec<Claimed>, StoreError> {
        let claim_sql = format!(
            "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_until = $1, \
             claimed_by = $7, updated_at = $2, message_id = COALESCE(message_id, $5 || {} || $6) \
             WHERE id IN (SELECT id FROM deliveries WHERE run_id = $3 \
             AND status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= $2) \
             ORDER BY id LIMIT $4 {}) RETURNING id",
            self.backend().random_hex(),
            self.backend().skip_locked()
        );
        let ids: Vec<i64> = with_pool!(self, |pool| {
            let _gate = self.write_gate().await;
            sqlx::query_scalar(AssertSqlSafe(claim_sql.as_str()))
                .bind(lease_until)
                .bind(now)
                .bind(run_id)
                .bind(limit)
                .bind(ids.0)
                .bind(ids.1)
                .bind(holder)
                .fetch_all(pool)
                .await
        })
        .context("claiming deliveries")?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let id_list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
        let from = format!(
            "d.id, d.entry_id, d.step, d.attempts, COALESCE(d.message_id, '') FROM deliveries d \
             JOIN customers c ON c.id = d.customer_id WHERE {} ORDER BY d.id",
            self.backend().in_json_ids("d.id", 1)
        );
        self.read_claimed(&from, &id_list, cap_since, "")
            .await
            .context("reading claimed deliveries")
    }

    /// Customers as a claim of `step` would show them, without any delivery: for
    /// dry runs and previews (delivery and entry ids are 0).
    pub async fn customers_as_claims(
        &self,
        customer_ids: &[i64],
        step: &str,
        cap_since: Option<Millis>,
    ) -> Result<Vec<Claimed>, StoreError> {
        if customer_ids.is_empty() {
            return Ok(Vec::new());
        }
        let id_list = serde_json::to_string(customer_ids).unwrap_or_else(|_| "[]".into());
        let from = format!(
            "CAST(0 AS BIGINT), CAST(0 AS BIGINT), $3, 0, '' FROM customers c WHERE {} ORDER BY c.id",
            self.backend().in_json_ids("c.id", 1)
        );
        self.read_claimed(&from, &id_list, cap_since, step)
            .await
            .context("reading customers")
    }

    /// The claim rows: `from` supplies the delivery columns, the FROM clause
    /// (aliasing customers as `c`) and the filter on the ids bound at `$1`.
    async fn read_claimed(
        &self,
        from: &str,
        id_list: &str,
        cap_since: Option<Millis>,
        step: &str,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        let (head, rest) = from.split_once(" FROM ").unwrap_or((from, ""));
        let (tables, filter) = rest.split_once(" WHERE ").unwrap_or((rest, "1 = 1"));
        let sql = format!(
            "SELECT {head}, c.id, c.email, c.external_id, c.first_name, c.last_name, c.timezone, \
             c.created_at, c.attributes, c.status, \
             CASE WHEN s.email IS NULL THEN 0 ELSE 1 END, \
             CASE WHEN $2 IS NULL THEN 0 ELSE (SELECT COUNT(*) FROM deliveries x \
               WHERE x.customer_id = c.id AND x.status = 'sent' AND x.sent_at >= $2) END \
             FROM {tables} LEFT JOIN suppressions s ON s.email = c.email WHERE {filter}"
        );
        type Row = (
            i64,
            i64,
            String,
            i32,
            String,
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            Json<Map<String, Value>>,
            String,
            i32,
            i64,
        );
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(id_list)
                .bind(cap_since)
                .bind(step)
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(Claimed {
                    delivery_id: r.0,
                    entry_id: r.1,
                    step: r.2,
                    attempts: r.3,
                    message_id: r.4,
                    customer_id: r.5,
                    email: Email::from_store(r.6),
                    external_id: r.7,
                    first_name: r.8,
                    last_name: r.9,
                    timezone: r.10,
                    created_at: r.11,
                    attributes: r.12.0,
                    status: named(&r.13)?,
                    suppressed: r.14 != 0,
                    recent_sends: r.15,
                })
            })
            .collect()
    }

    /// The `per_customer` most recent interactions of `kind` for each customer,
    /// newest first, in one query.
    pub async fn recent_events(
        &self,
        customer_ids: &[i64],
        kind: &str,
        per_customer: i64,
    ) -> Result<Vec<(i64, Millis, Map<String, Value>)>, StoreError> {
        if customer_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(customer_ids).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "SELECT customer_id, occurred_at, data FROM (SELECT customer_id, occurred_at, data, \
             ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY occurred_at DESC, id DESC) AS n \
             FROM interactions WHERE kind = $2 AND {}) r WHERE n <= $3 \
             ORDER BY customer_id, occurred_at DESC",
            self.backend().in_json_ids("customer_id", 1)
        );
        type Row = (i64, i64, Json<Map<String, Value>>);
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(&ids)
                .bind(kind)
                .bind(per_customer)
                .fetch_all(pool)
                .await
        })
        .context("reading recent events")?;
        Ok(rows.into_iter().map(|(c, t, d)| (c, t, d.0)).collect())
    }

    /// The latest interaction of `kind` anyone had: (occurred_at, data), from
    /// the end of the (kind, time) index.
    pub async fn latest_of_kind(
        &self,
        kind: &str,
    ) -> Result<Option<(Millis, Map<String, Value>)>, StoreError> {
        let row: Option<(i64, Json<Map<String, Value>>)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT occurred_at, data FROM interactions WHERE kind = $1 \
                 ORDER BY occurred_at DESC LIMIT 1",
            )
            .bind(kind)
            .fetch_optional(pool)
            .await
        })
        .context("reading an example interaction")?;
        Ok(row.map(|(t, d)| (t, d.0)))
    }

    /// What these entries' templates see of how they began: the interaction
    /// that entered a triggered entry, the data a transactional send handed
    /// in; in one query. Entries with neither are left out.
    pub async fn entry_contexts(&self, entry_ids: &[i64]) -> Result<Vec<EntryContext>, StoreError> {
        if entry_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(entry_ids).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "SELECT e.id, i.kind, i.occurred_at, i.data, e.data FROM entries e \
             LEFT JOIN interactions i ON i.id = e.cause_id \
             WHERE {} AND (e.cause_id IS NOT NULL OR e.data IS NOT NULL)",
            self.backend().in_json_ids("e.id", 1)
        );
        type Data = Option<Json<Map<String, Value>>>;
        type Row = (i64, Option<String>, Option<i64>, Data, Data);
        let rows: Vec<Row> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(&ids)
                .fetch_all(pool)
                .await
        })
        .context("reading how entries began")?;
        Ok(rows
            .into_iter()
            .map(|(entry_id, kind, at, cause, data)| EntryContext {
                entry_id,
                cause: match (kind, at) {
                    (Some(kind), Some(at)) => {
                        Some((kind, at, cause.map(|d| d.0).unwrap_or_default()))
                    }
                    _ => None,
                },
                data: data.map(|d| d.0),
            })
            .collect())
    }

    /// The data of the latest transactional send of `campaign`, as an
    /// example for previews.
    pub async fn latest_send_data(
        &self,
        campaign: &str,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        let row: Option<Json<Map<String, Value>>> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT data FROM entries WHERE campaign = $1 AND data IS NOT NULL \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(campaign)
            .fetch_optional(pool)
            .await
        })
        .context("reading an example send")?;
        Ok(row.map(|d| d.0))
    }

    /// Records outcomes in one transaction: statuses, `email_sent` and
    /// `email_bounced` interactions, suppressions for hard bounces.
    ///
    /// Only claims `holder` still holds are written: a claim that expired and
    /// was taken over by another send pass is that pass's to record.
    pub async fn record_outcomes(
        &self,
        outcomes: &[(i64, Outcome)],
        now: Millis,
        holder: &str,
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let sent: Vec<i64> = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Sent { .. }))
            .map(|(id, _)| *id)
            .collect();
        let sent_list = serde_json::to_string(&sent).unwrap_or_else(|_| "[]".into());
        // Skips come in groups (everyone unsubscribed, everyone over the cap):
        // one statement per reason.
        let mut skipped: std::collections::BTreeMap<SkipReason, Vec<i64>> = Default::default();
        // Deferrals come in groups too (everyone in a time zone waits for the
        // same opening; a shutdown gives everything back at once): one
        // statement per time.
        let mut deferred: std::collections::BTreeMap<Millis, Vec<i64>> = Default::default();
        for (id, o) in outcomes {
            match o {
                Outcome::Skipped { reason } => skipped.entry(*reason).or_default().push(*id),
                Outcome::Deferred { at } => deferred.entry(*at).or_default().push(*id),
                _ => {}
            }
        }
        let b = self.backend();
        let mark_skipped = format!(
            "UPDATE deliveries SET status = 'skipped', reason = $2, lease_until = NULL, \
             updated_at = $3 WHERE {} AND status = 'sending' AND claimed_by = $4",
            b.in_json_ids("id", 1)
        );
        // Back to the queue until the time, the claim's attempt given back.
        let mark_deferred = format!(
            "UPDATE deliveries SET status = 'queued', next_attempt_at = $2, \
             attempts = attempts - 1, lease_until = NULL, updated_at = $3 \
             WHERE {} AND status = 'sending' AND claimed_by = $4",
            b.in_json_ids("id", 1)
        );
        // Only deliveries this worker still held become sent, and only those get
        // an `email_sent`: a claim that expired and moved on is left alone.
        let mark_sent = format!(
            "UPDATE deliveries SET status = 'sent', sent_at = $2, lease_until = NULL, \
             updated_at = $2 WHERE {} AND status = 'sending' AND claimed_by = $3 \
             RETURNING id, customer_id, campaign, step, message_id",
            b.in_json_ids("id", 1)
        );
        let sent_interactions = "INSERT INTO interactions (customer_id, kind, occurred_at, campaign, \
             step, delivery_id, data) SELECT customer_id, 'email_sent', $2, campaign, step, id, ";
        // PostgreSQL does both in one statement (a data-modifying CTE); SQLite
        // feeds the ids the UPDATE returned into the INSERT.
        let sent_pg = format!(
            "WITH sent AS ({mark_sent}) {sent_interactions}{} FROM sent",
            b.json_object_of("message_id", "message_id")
        );
        let sent_sqlite = format!(
            "{sent_interactions}{} FROM deliveries WHERE {}",
            b.json_object_of("message_id", "message_id"),
            b.in_json_ids("id", 1)
        );
        if b == Backend::Postgres && sent.len() == outcomes.len() {
            // The common case, all sent: one statement, atomic by itself, so no
            // BEGIN and COMMIT round trips.
            if let Pool::Postgres(pool) = &self.pool {
                sqlx::query(AssertSqlSafe(sent_pg.as_str()))
                    .bind(&sent_list)
                    .bind(now)
                    .bind(holder)
                    .execute(pool)
                    .await
                    .context("marking deliveries sent")?;
                return Ok(());
            }
        }
        let _gate = self.write_gate().await;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await.context("starting to record outcomes")?;
            if !sent.is_empty() {
                match b {
                    Backend::Postgres => {
                        sqlx::query(AssertSqlSafe(sent_pg.as_str()))
                            .bind(&sent_list)
                            .bind(now)
                            .bind(holder)
                            .execute(&mut *tx)
                            .await
                            .context("marking deliveries sent")?;
                    }
                    Backend::Sqlite => {
                        let marked: Vec<(i64, i64, String, String, Option<String>)> =
                            sqlx::query_as(AssertSqlSafe(mark_sent.as_str()))
                                .bind(&sent_list)
                                .bind(now)
                                .bind(holder)
                                .fetch_all(&mut *tx)
                                .await
                                .context("marking deliveries sent")?;
                        let ids: Vec<i64> = marked.iter().map(|m| m.0).collect();
                        sqlx::query(AssertSqlSafe(sent_sqlite.as_str()))
                            .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .context("recording email_sent")?;
                    }
                }
            }
            for (reason, ids) in &skipped {
                sqlx::query(AssertSqlSafe(mark_skipped.as_str()))
                    .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
                    .bind(reason.as_str())
                    .bind(now)
                    .bind(holder)
                    .execute(&mut *tx)
                    .await
                    .context("marking deliveries skipped")?;
            }
            for (at, ids) in &deferred {
                sqlx::query(AssertSqlSafe(mark_deferred.as_str()))
                    .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
                    .bind(at)
                    .bind(now)
                    .bind(holder)
                    .execute(&mut *tx)
                    .await
                    .context("deferring deliveries")?;
            }
            for (id, outcome) in outcomes {
                match outcome {
                    Outcome::Sent { .. } => {}
                    Outcome::Retry { at, error, unknown } => {
                        sqlx::query(
                            "UPDATE deliveries SET status = 'queued', next_attempt_at = $2, \
                             last_error = $3, lease_until = NULL, updated_at = $4, \
                             outcome_unknown = (outcome_unknown OR $5) \
                             WHERE id = $1 AND status = 'sending' AND claimed_by = $6",
                        )
                        .bind(id)
                        .bind(at)
                        .bind(error)
                        .bind(now)
                        .bind(*unknown)
                        .bind(holder)
                        .execute(&mut *tx)
                        .await
                        .context("requeueing a delivery")?;
                    }
                    Outcome::Failed { error } => {
                        sqlx::query(
                            "UPDATE deliveries SET status = 'failed', reason = $2, last_error = $2, \
                             lease_until = NULL, updated_at = $3 \
                             WHERE id = $1 AND status = 'sending' AND claimed_by = $4",
                        )
                        .bind(id)
                        .bind(error)
                        .bind(now)
                        .bind(holder)
                        .execute(&mut *tx)
                        .await
                        .context("marking a delivery failed")?;
                    }
                    Outcome::Skipped { .. } | Outcome::Deferred { .. } => {}
                    Outcome::Bounced { reply } => {
                        let held = sqlx::query(
                            "UPDATE deliveries SET status = 'bounced', reason = $2, last_error = $2, \
                             lease_until = NULL, updated_at = $3 \
                             WHERE id = $1 AND status = 'sending' AND claimed_by = $4",
                        )
                        .bind(id)
                        .bind(reply.to_string())
                        .bind(now)
                        .bind(holder)
                        .execute(&mut *tx)
                        .await
                        .context("marking a delivery bounced")?
                        .rows_affected();
                        if held == 0 {
                            continue;
                        }
                        let hard = reply.is_hard_bounce();
                        let data = serde_json::json!({ "code": reply.code, "reply": reply.text, "hard": hard });
                        sqlx::query(
                            "INSERT INTO interactions (customer_id, kind, occurred_at, campaign, step, delivery_id, data) \
                             SELECT customer_id, 'email_bounced', $2, campaign, step, id, $3 FROM deliveries WHERE id = $1",
                        )
                        .bind(id)
                        .bind(now)
                        .bind(Json(&data))
                        .execute(&mut *tx)
                        .await
                        .context("recording email_bounced")?;
                        if hard {
                            sqlx::query(
                                "INSERT INTO suppressions (email, reason, created_at) \
                                 SELECT c.email, 'hard_bounce', $2 FROM deliveries d JOIN customers c ON c.id = d.customer_id \
                                 WHERE d.id = $1 ON CONFLICT DO NOTHING",
                            )
                            .bind(id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .context("suppressing a bounced address")?;
                            sqlx::query(
                                "UPDATE customers SET status = 'bounced', updated_at = $2 \
                                 WHERE id = (SELECT customer_id FROM deliveries WHERE id = $1) AND status = 'subscribed'",
                            )
                            .bind(id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .context("marking a customer bounced")?;
                        }
                    }
                }
            }
            tx.commit().await.context("committing outcomes")?;
            Ok::<_, StoreError>(())
        })
    }

    /// Status counts of a run.
    pub async fn run_counts(&self, run_id: i64) -> Result<RunCounts, StoreError> {
        let rows: Vec<(String, Option<String>, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT status, CASE WHEN status = 'skipped' THEN reason END, COUNT(*) \
                 FROM deliveries WHERE run_id = $1 GROUP BY 1, 2 ORDER BY 1, 2",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await
        })
        .context("counting a run's deliveries")?;
        let mut c = RunCounts::default();
        for (status, reason, n) in rows {
            c.planned += n;
            match named(&status).context("counting a run's deliveries")? {
                DeliveryStatus::Queued => c.queued += n,
                DeliveryStatus::Sending => c.sending += n,
                DeliveryStatus::Sent => c.sent += n,
                DeliveryStatus::Failed => c.failed += n,
                DeliveryStatus::Bounced => c.bounced += n,
                DeliveryStatus::Skipped => c.skipped.push((reason.unwrap_or_default(), n)),
            }
        }
        Ok(c)
    }

    /// When something of the run can next be claimed: the earliest retry of a
    /// queued delivery, or the lease end of one held by a worker (perhaps a dead
    /// one). `None` when nothing is left to send.
    pub async fn next_attempt(&self, run_id: i64) -> Result<Option<Millis>, StoreError> {
        let at: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT MIN(CASE WHEN status = 'queued' THEN COALESCE(next_attempt_at, 0) \
                 ELSE lease_until END) FROM deliveries \
                 WHERE run_id = $1 AND status IN ('queued', 'sending')",
            )
            .bind(run_id)
            .fetch_one(pool)
            .await
        })
        .context("reading the next retry")?;
        Ok(at)
    }

    /// Runs of a campaign that were planned but not finished (a crash, a stop).
    pub async fn unfinished_runs(&self, campaign: &str) -> Result<Vec<i64>, StoreError> {
        let ids: Vec<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM runs WHERE campaign = $1 AND status = 'sending' ORDER BY id",
            )
            .bind(campaign)
            .fetch_all(pool)
            .await
        })
        .context("listing unfinished runs")?;
        Ok(ids)
    }

    /// Runs being sent that have a delivery due at `now` (queued and due, or
    /// claimed under a lease that has run out): (run, campaign), in one
    /// statement. [`Store::next_attempt`]'s rule, for every run at once.
    pub async fn due_runs(&self, now: Millis) -> Result<Vec<(i64, String)>, StoreError> {
        let runs: Vec<(i64, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT r.id, r.campaign FROM runs r WHERE r.status = 'sending' AND EXISTS ( \
                 SELECT 1 FROM deliveries d WHERE d.run_id = r.id AND \
                 ((d.status = 'queued' AND COALESCE(d.next_attempt_at, 0) <= $1) \
                 OR (d.status = 'sending' AND d.lease_until <= $1))) ORDER BY r.id",
            )
            .bind(now)
            .fetch_all(pool)
            .await
        })
        .context("listing the runs with deliveries due")?;
        Ok(runs)
    }

    /// Runs of a campaign created but never planned: the run row is written
    /// first, then planned in one transaction, so a planner that died in
    /// between leaves its run `planning`.
    pub async fn planning_runs(&self, campaign: &str) -> Result<Vec<i64>, StoreError> {
        let ids: Vec<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM runs WHERE campaign = $1 AND status = 'planning' ORDER BY id",
            )
            .bind(campaign)
            .fetch_all(pool)
            .await
        })
        .context("listing runs left in planning")?;
        Ok(ids)
    }

    /// Marks a run done, unless deliveries were queued into it since `planned`
    /// was read ([`Store::run_planned`]) or it is an event run whose day is
    /// not over (triggers and sends may still queue into it; see
    /// [`Store::finish_past_event_runs`]); whether it did.
    pub async fn finish_run(
        &self,
        run_id: i64,
        now: Millis,
        planned: i64,
    ) -> Result<bool, StoreError> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE runs SET status = 'done', finished_at = $2 WHERE id = $1 AND planned = $3 \
                 AND NOT (trigger = 'event' AND tick + 86400000 > $2)",
            )
            .bind(run_id)
            .bind(now)
            .bind(planned)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .context("finishing a run")?;
        Ok(done > 0)
    }

    /// Finishes the event runs whose day is over and which have nothing left
    /// to send, counting their deliveries into `planned`; how many. During its
    /// day an event run is `sending` and its count is not kept (every trigger
    /// would update the one row).
    pub async fn finish_past_event_runs(&self, now: Millis) -> Result<u64, StoreError> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE runs SET status = 'done', finished_at = $1, \
                 planned = (SELECT COUNT(*) FROM deliveries d WHERE d.run_id = runs.id) \
                 WHERE trigger = 'event' AND status = 'sending' AND tick + 86400000 <= $1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.run_id = runs.id \
                   AND d.status IN ('queued', 'sending'))",
            )
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .context("finishing past event runs")?;
        Ok(done)
    }

    /// How many deliveries were queued into a run (0 when there is no such run).
    pub async fn run_planned(&self, run_id: i64) -> Result<i64, StoreError> {
        let planned: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT planned FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(pool)
                .await
        })
        .context("reading a run's size")?;
        Ok(planned.unwrap_or(0))
    }
}

impl Store {
    /// The key stored under `name`, generated (32 random bytes, hex) on first use.
    /// Concurrent first uses agree: the first insert wins and everyone reads it.
    pub async fn generated_key(&self, name: &str, now: Millis) -> Result<String, StoreError> {
        let fresh = super::random_hex::<32>("generating a key")?;
        let value: String = with_pool!(self, |pool| async {
            sqlx::query(
                "INSERT INTO generated_keys (name, value, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .bind(&fresh)
            .bind(now)
            .execute(pool)
            .await?;
            sqlx::query_scalar("SELECT value FROM generated_keys WHERE name = $1")
                .bind(name)
                .fetch_one(pool)
                .await
        }
        .await)
        .context("reading a generated key")?;
        Ok(value)
    }
}
