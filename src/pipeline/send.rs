//! Sending a planned run.

use std::collections::HashMap;
use std::sync::Arc;

use lettre::message::Mailbox;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::subject_key;
use crate::campaign::Campaign;
use crate::clock::{Clock, Millis};
use crate::config::Settings;
use crate::mailer::{Limiter, Mailer, Outgoing, SendError};
use crate::message::{self, Dkim, Envelope};
use crate::render::{self, RenderError, Rendered, Templates, links::Tracking};
use crate::store::deliveries::{Claimed, Outcome};
use crate::store::{Store, StoreError};
use crate::token::Signer;

/// Consecutive 5.7.x replies (the relay refuses the sender) that stop a run.
const SENDER_REFUSALS_TO_STOP: u32 = 5;

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
}

/// What a send pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub bounced: u64,
    pub skipped: u64,
    /// Whether queued deliveries are left (waiting for a retry, or stopped).
    pub pending: bool,
}

/// Everything a send needs, built once per process.
pub struct Engine {
    pub store: Store,
    pub mailer: Arc<Mailer>,
    pub templates: Arc<Templates>,
    pub signer: Signer,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub dkim: Option<Arc<Dkim>>,
}

/// A sender's result on its way to the writer; the ack says it is committed.
type Recorded = (i64, Outcome, Option<oneshot::Sender<()>>);

impl Engine {
    /// Sends the run's due deliveries until none is left to claim now, or `stop`
    /// turns true (then in-flight sends finish and unstarted claims go back).
    pub async fn send_run(
        &self,
        campaign: &Campaign,
        run_id: i64,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunSummary, EngineError> {
        let concurrency = self.settings.smtp_concurrency.max(1);
        let batch = (concurrency * 64).clamp(64, 1000) as i64;
        let limiter = campaign.limits.rate.map(|r| Arc::new(Limiter::new(r)));
        let mut summary = RunSummary::default();
        let mut refusals = 0u32;
        loop {
            if *stop.borrow() {
                summary.pending = true;
                break;
            }
            let now = self.clock.now();
            self.store.requeue_expired(now).await?;
            let cap_since = self
                .settings
                .frequency_cap
                .map(|c| now - c.window.as_millis());
            let claimed = self
                .store
                .claim(
                    run_id,
                    batch,
                    now,
                    now + self.settings.send_lease.as_millis(),
                    cap_since,
                )
                .await?;
            if claimed.is_empty() {
                summary.pending = self.store.next_attempt(run_id).await?.is_some();
                break;
            }
            let (sendable, skips) = self.triage(campaign, claimed);
            summary.skipped += skips.len() as u64;
            let mut outcomes: Vec<(i64, Outcome)> = skips;
            // The Message-ID is stored before the message goes on the wire.
            let ids: Vec<(i64, String)> = sendable
                .iter()
                .map(|c| (c.delivery_id, self.message_id(campaign, c)))
                .collect();
            self.store.set_message_ids(&ids).await?;
            let events = self.events(campaign, &sendable).await?;
            let (tx, rx) = mpsc::channel::<Recorded>(concurrency * 4);
            let writer = tokio::spawn(write_outcomes(self.store.clone(), self.clock.clone(), rx));
            for o in outcomes.drain(..) {
                if tx.send((o.0, o.1, None)).await.is_err() {
                    break;
                }
            }
            let stop_now = stop.clone();
            let work = futures_util::stream::iter(sendable.into_iter().zip(ids));
            let results: Vec<Option<Outcome>> = {
                use futures_util::StreamExt;
                work.map(|(c, (_, message_id))| {
                    let tx = tx.clone();
                    let events = &events;
                    let limiter = limiter.clone();
                    let stop_now = stop_now.clone();
                    async move {
                        if *stop_now.borrow() {
                            // Not started: give the claim back untouched.
                            let outcome = Outcome::Retry {
                                at: self.clock.now(),
                                error: "released at shutdown".into(),
                                unknown: false,
                            };
                            let _ = tx.send((c.delivery_id, outcome, None)).await;
                            return None;
                        }
                        let outcome = self
                            .deliver(campaign, &c, &message_id, events, limiter.as_deref())
                            .await;
                        let (ack, acked) = oneshot::channel();
                        let kept = outcome.clone();
                        if tx.send((c.delivery_id, outcome, Some(ack))).await.is_ok() {
                            let _ = acked.await;
                        }
                        Some(kept)
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await
            };
            drop(tx);
            match writer.await {
                Ok(result) => result?,
                Err(e) => {
                    return Err(EngineError::Store(StoreError::Query {
                        context: "recording outcomes",
                        source: sqlx::Error::Protocol(format!("writer task ended: {e}")),
                    }));
                }
            }
            for outcome in results.into_iter().flatten() {
                match outcome {
                    Outcome::Sent { .. } => {
                        summary.sent += 1;
                        refusals = 0;
                    }
                    Outcome::Retry { .. } => summary.retried += 1,
                    Outcome::Failed { .. } => summary.failed += 1,
                    Outcome::Skipped { .. } => summary.skipped += 1,
                    Outcome::Bounced {
                        code,
                        text,
                        suppress,
                    } => {
                        summary.bounced += 1;
                        if !suppress && text.starts_with("5.7.") {
                            refusals += 1;
                            if refusals >= SENDER_REFUSALS_TO_STOP {
                                return Err(EngineError::SenderRefused {
                                    campaign: campaign.name.clone(),
                                    reply: format!("{code} {text}"),
                                    count: refusals,
                                });
                            }
                        }
                    }
                }
            }
            if stop.has_changed().unwrap_or(false) && *stop.borrow_and_update() {
                summary.pending = true;
                break;
            }
        }
        Ok(summary)
    }

    /// Splits claims into those to send and those to skip (with the reason):
    /// the customer's status and the suppression list are checked again at send
    /// time, and the frequency cap applies across campaigns.
    pub(crate) fn triage(
        &self,
        campaign: &Campaign,
        claimed: Vec<Claimed>,
    ) -> (Vec<Claimed>, Vec<(i64, Outcome)>) {
        let mut send = Vec::with_capacity(claimed.len());
        let mut skip = Vec::new();
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
            match reason {
                Some(reason) => skip.push((c.delivery_id, Outcome::Skipped { reason })),
                None => send.push(c),
            }
        }
        (send, skip)
    }

    fn message_id(&self, campaign: &Campaign, c: &Claimed) -> String {
        message::message_id(c.delivery_id as u64, &campaign.name, &campaign.from)
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
        message_id: &str,
        events: &HashMap<(i64, String), Vec<Value>>,
        limiter: Option<&Limiter>,
    ) -> Outcome {
        let bytes = match self.build(campaign, c, message_id, events) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(campaign = %campaign.name, step = %c.step, delivery = c.delivery_id, %error, "message not built");
                return Outcome::Failed { error };
            }
        };
        if let Some(l) = limiter {
            l.wait().await;
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
        let result = self
            .mailer
            .send(Outgoing {
                from: &campaign.from.email,
                to: &to,
                id: &file_id,
                message: &bytes,
            })
            .await;
        match result {
            Ok(_) => Outcome::Sent {
                message_id: message_id.to_string(),
            },
            Err(e) => {
                tracing::info!(campaign = %campaign.name, step = %c.step, delivery = c.delivery_id, attempt = c.attempts, error = %e, "send failed");
                self.failure(c, e)
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
            .map(|(_, msg)| msg.formatted())
            .map_err(|e| e.to_string())
    }

    /// Renders one customer's message and builds it: the parts as sent (links
    /// tracked) and the signed lettre message.
    pub(crate) fn compose(
        &self,
        campaign: &Campaign,
        c: &Claimed,
        message_id: &str,
        events: &HashMap<(i64, String), Vec<Value>>,
    ) -> Result<(Rendered, lettre::Message), BuildError> {
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
            &context,
        )?;
        if campaign.tracking {
            rendered.html = tracking.apply(&rendered.html, &unsubscribe);
        }
        let name = match (&c.first_name, &c.last_name) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(f), None) => Some(f.clone()),
            _ => None,
        };
        let address = c.email.parse().map_err(|e| BuildError::Recipient {
            email: c.email.clone(),
            message: format!("{e}"),
        })?;
        let mailto = self
            .settings
            .unsubscribe_mailto
            .as_ref()
            .map(|a| format!("mailto:{a}?subject=unsubscribe"));
        let env = Envelope {
            from: &campaign.from,
            reply_to: campaign.reply_to.as_ref(),
            to: Mailbox::new(name, address),
            message_id: message_id.to_string(),
            unsubscribe_url: &unsubscribe,
            unsubscribe_mailto: mailto.as_deref(),
        };
        let mut msg =
            message::build(&rendered, &env).map_err(|e| BuildError::Message(e.to_string()))?;
        if let Some(dkim) = &self.dkim {
            dkim.sign(&mut msg);
        }
        Ok((rendered, msg))
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
/// each sender once its outcome is durable.
async fn write_outcomes(
    store: Store,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::Receiver<Recorded>,
) -> Result<(), StoreError> {
    let mut buf: Vec<Recorded> = Vec::with_capacity(256);
    while rx.recv_many(&mut buf, 512).await > 0 {
        let batch: Vec<(i64, Outcome)> = buf.iter().map(|(id, o, _)| (*id, o.clone())).collect();
        store.record_outcomes(&batch, clock.now()).await?;
        for (_, _, ack) in buf.drain(..) {
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
        }
    }
    Ok(())
}
