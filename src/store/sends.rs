//! Transactional sends (`POST /v1/send`): one message of a `kind:
//! transactional` campaign to one customer, on request, exactly once per
//! Idempotency-Key.
//!
//! A call is accepted in one transaction (with the other calls of its group,
//! [`Store::accept_sends`]): the customer's entry (with the call's `data`
//! for the template), its first step's delivery queued into the campaign's
//! `event` run of the day, and the `sends` row holding the caller's key. The
//! key is unique per API key, so a retried call (after a timeout, a restart,
//! on another server) finds the row and gets the same message back; two
//! calls racing with one key queue one message (the loser takes back its
//! entry and delivery and reads the winner's). From then on the delivery is sent like
//! any other: leased, at most once per (entry, step).

use serde_json::{Map, Value};
use sqlx::types::Json;

use super::{Context, Store, StoreError, named, with_pool};
use crate::clock::Millis;
use crate::customer::Email;
use crate::status::DeliveryStatus;

/// Who a send is for: a customer's email, or the id the caller knows them by
/// (a Segment `userId`).
#[derive(Debug, Clone)]
pub enum Recipient {
    Email(Email),
    ExternalId(String),
}

/// One checked call, as the caller made it.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub api_key_id: i64,
    pub idempotency_key: String,
    /// A digest of the call's campaign, recipient and data.
    pub request_hash: String,
    pub campaign: String,
    /// The campaign's first step.
    pub step: String,
    pub to: Recipient,
    pub data: Map<String, Value>,
    pub now: Millis,
}

/// What became of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Queued now, under this public id.
    New(String),
    /// The key was used before for the same request: its message's id.
    Again(String),
    /// The key was used before for a different request.
    KeyReused,
    /// No customer has that email or id.
    UnknownRecipient,
}

/// A transactional message as `GET /v1/messages/{id}` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SendStatus {
    pub id: String,
    /// The API key that sent it.
    pub api_key_id: i64,
    pub campaign: String,
    pub email: Email,
    pub status: DeliveryStatus,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// The Message-ID header, once the message was first handed to the relay.
    pub message_id: Option<String>,
    pub attempts: i32,
    pub created_at: Millis,
    pub sent_at: Option<Millis>,
}

/// The earlier call with the caller's key: (id, request hash).
const EARLIER: &str =
    "SELECT id, request_hash FROM sends WHERE api_key_id = $1 AND idempotency_key = $2";

/// Tries of a group whose transaction met another's (two calls for one
/// customer numbering their entries at once, on PostgreSQL).
const TRIES: usize = 3;

impl Store {
    /// Accepts one transactional send (see the module docs).
    pub async fn accept_send(&self, r: &SendRequest) -> Result<Accepted, StoreError> {
        let mut all = self.accept_sends(std::slice::from_ref(r)).await?;
        all.pop()
            .ok_or_else(|| StoreError::internal("accepting a send", "no outcome for the call"))
    }

    /// Accepts a group of sends in one transaction, each as [`accept_send`]
    /// would on its own and in order (a key repeated within the group is a
    /// retry of its first call); their outcomes, in order.
    ///
    /// [`accept_send`]: Store::accept_send
    pub async fn accept_sends(
        &self,
        requests: &[SendRequest],
    ) -> Result<Vec<Accepted>, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.accept_sends_once(requests).await {
                Err(e) if tries < TRIES && e.is_conflict() => {
                    tracing::debug!(error = %e, "sends met others; trying again");
                }
                other => return other,
            }
        }
    }

    async fn accept_sends_once(
        &self,
        requests: &[SendRequest],
    ) -> Result<Vec<Accepted>, StoreError> {
        let mut ids = Vec::with_capacity(requests.len());
        for _ in requests {
            ids.push(format!(
                "msg_{}",
                super::random_hex::<12>("naming a message")?
            ));
        }
        let backend = self.backend();
        let _gate = self.write_gate().await;
        with_pool!(self, |pool| {
            let mut tx = pool
                .begin_with(backend.begin_read_write())
                .await
                .context("starting sends")?;
            let mut out = Vec::with_capacity(requests.len());
            // Campaign → (its event run, messages queued into it).
            let mut runs: Vec<(&str, i64, u64)> = Vec::new();
            for (r, id) in requests.iter().zip(ids) {
                let earlier: Option<(String, String)> = sqlx::query_as(EARLIER)
                    .bind(r.api_key_id)
                    .bind(&r.idempotency_key)
                    .fetch_optional(&mut *tx)
                    .await
                    .context("looking up an Idempotency-Key")?;
                if let Some((id, hash)) = earlier {
                    out.push(repeat(id, &hash, r));
                    continue;
                }
                let customer: Option<i64> = match &r.to {
                    Recipient::Email(email) => {
                        sqlx::query_scalar("SELECT id FROM customers WHERE email = $1")
                            .bind(email.as_str())
                            .fetch_optional(&mut *tx)
                            .await
                    }
                    Recipient::ExternalId(x) => {
                        sqlx::query_scalar("SELECT id FROM customers WHERE external_id = $1")
                            .bind(x)
                            .fetch_optional(&mut *tx)
                            .await
                    }
                }
                .context("finding a send's recipient")?;
                let Some(customer) = customer else {
                    out.push(Accepted::UnknownRecipient);
                    continue;
                };
                let run = match runs.iter().position(|(c, _, _)| *c == r.campaign) {
                    Some(at) => at,
                    None => {
                        let (run_id, _) = super::triggers::event_run!(tx, &r.campaign, r.now);
                        runs.push((&r.campaign, run_id, 0));
                        runs.len() - 1
                    }
                };
                let run_id = runs[run].1;
                let entry: i64 = sqlx::query_scalar(
                    "INSERT INTO entries (campaign, customer_id, seq, run_id, entered_at, state, \
                     updated_at, data) \
                     SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, 'active', $4, $5 \
                     FROM entries WHERE campaign = $1 AND customer_id = $2 RETURNING id",
                )
                .bind(&r.campaign)
                .bind(customer)
                .bind(run_id)
                .bind(r.now)
                .bind(Json(&r.data))
                .fetch_one(&mut *tx)
                .await
                .context("entering a send's recipient")?;
                let delivery: i64 = sqlx::query_scalar(
                    "INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, \
                     status, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6) RETURNING id",
                )
                .bind(run_id)
                .bind(entry)
                .bind(&r.campaign)
                .bind(&r.step)
                .bind(customer)
                .bind(r.now)
                .fetch_one(&mut *tx)
                .await
                .context("queueing a send")?;
                let stored: Option<String> = sqlx::query_scalar(
                    "INSERT INTO sends (id, api_key_id, idempotency_key, request_hash, campaign, \
                     customer_id, delivery_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (api_key_id, idempotency_key) DO NOTHING RETURNING id",
                )
                .bind(&id)
                .bind(r.api_key_id)
                .bind(&r.idempotency_key)
                .bind(&r.request_hash)
                .bind(&r.campaign)
                .bind(customer)
                .bind(delivery)
                .bind(r.now)
                .fetch_optional(&mut *tx)
                .await
                .context("recording an Idempotency-Key")?;
                if stored.is_none() {
                    // Another server's call with this key committed first
                    // (PostgreSQL): this call's entry and delivery go, and the
                    // caller gets that message.
                    sqlx::query("DELETE FROM deliveries WHERE id = $1")
                        .bind(delivery)
                        .execute(&mut *tx)
                        .await
                        .context("undoing a repeated send")?;
                    sqlx::query("DELETE FROM entries WHERE id = $1")
                        .bind(entry)
                        .execute(&mut *tx)
                        .await
                        .context("undoing a repeated send")?;
                    let (id, hash): (String, String) = sqlx::query_as(EARLIER)
                        .bind(r.api_key_id)
                        .bind(&r.idempotency_key)
                        .fetch_one(&mut *tx)
                        .await
                        .context("looking up an Idempotency-Key")?;
                    out.push(repeat(id, &hash, r));
                    continue;
                }
                runs[run].2 += 1;
                out.push(Accepted::New(id));
            }
            for (campaign, _, queued) in &runs {
                super::triggers::queued_into!(backend, tx, *queued, *campaign);
            }
            tx.commit().await.context("committing sends")?;
            Ok::<_, StoreError>(out)
        })
    }

    /// A transactional message by its public id.
    pub async fn send_status(&self, id: &str) -> Result<Option<SendStatus>, StoreError> {
        type Row = (
            String,
            i64,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            i32,
            i64,
            Option<i64>,
        );
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT s.id, s.api_key_id, s.campaign, c.email, d.status, d.reason, d.message_id, d.attempts, \
                 s.created_at, d.sent_at FROM sends s JOIN deliveries d ON d.id = s.delivery_id \
                 JOIN customers c ON c.id = s.customer_id WHERE s.id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .context("reading a message")?;
        row.map(|r| {
            Ok(SendStatus {
                id: r.0,
                api_key_id: r.1,
                campaign: r.2,
                email: Email::from_store(r.3),
                status: named(&r.4)?,
                reason: r.5,
                message_id: r.6,
                attempts: r.7,
                created_at: r.8,
                sent_at: r.9,
            })
        })
        .transpose()
        .context("reading a message")
    }
}

/// A call whose key was used before: the same request gets its message back.
fn repeat(id: String, hash: &str, r: &SendRequest) -> Accepted {
    if hash == r.request_hash {
        Accepted::Again(id)
    } else {
        Accepted::KeyReused
    }
}
