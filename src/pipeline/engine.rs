//! The engine: everything a send needs, built once per process, behind a
//! narrow face. The send loop ([`super::send`]), the pure triage
//! ([`super::triage`]) and composing ([`super::compose`]) each take from it
//! only what they need; outside `pipeline`, callers see the store, the clock,
//! the metrics and a description of where mail goes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use tokio::sync::Semaphore;

use super::compose::{BuildError, Composed, Composer, Events};
use super::triage::{self, Triage};
use super::{SetupError, templates_for};
use crate::campaign::{Campaign, CampaignKind};
use crate::clock::{Clock, Millis};
use crate::config::Settings;
use crate::mailer::{Limiter, Mailer};
use crate::message::Dkim;
use crate::metrics::Metrics;
use crate::render;
use crate::store::deliveries::Claimed;
use crate::store::{Store, StoreError};
use crate::token::Signer;

/// Everything a send needs, built once per process. Cheap to clone: one
/// shared allocation.
#[derive(Clone)]
pub struct Engine(Arc<Parts>);

struct Parts {
    store: Store,
    mailer: Mailer,
    composer: Composer,
    settings: Settings,
    clock: Arc<dyn Clock>,
    /// Each campaign's `limits.rate`, shared by every run of it in this process.
    limiters: HashMap<String, Arc<Limiter>>,
    /// `smtp_concurrency` permits: messages between render and recorded
    /// outcome, across every run this process sends at once.
    slots: Semaphore,
    /// Counters and histograms for `/metrics`.
    metrics: Metrics,
}

impl Engine {
    /// Builds the engine: mailer, templates (with every subject), token signer
    /// (the configured secrets, else a key generated once per database), DKIM.
    pub async fn new(
        store: Store,
        settings: Settings,
        templates_dir: &Path,
        campaigns: &[Campaign],
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, SetupError> {
        let templates = templates_for(templates_dir, campaigns)?;
        // The tracking service verifies with the same list (`Store::tracking_keys`).
        let signer = Signer::new(&store.tracking_keys(&settings.secrets, clock.now()).await?)?;
        let dkim = match (
            &settings.dkim_selector,
            &settings.dkim_domain,
            &settings.dkim_key,
        ) {
            (Some(selector), Some(domain), Some(path)) => {
                let shown = path.display().to_string();
                let pem = std::fs::read_to_string(path).map_err(|e| SetupError::Dkim {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
                let dkim =
                    Dkim::new(selector, domain, &pem, &shown).map_err(|e| SetupError::Dkim {
                        path: shown,
                        message: e.to_string(),
                    })?;
                Some(dkim)
            }
            _ => None,
        };
        let limiters = campaigns
            .iter()
            .filter_map(|c| {
                c.limits
                    .rate
                    .map(|r| (c.name.clone(), Arc::new(Limiter::new(r))))
            })
            .collect();
        Ok(Engine(Arc::new(Parts {
            metrics: Metrics::new(),
            limiters,
            slots: Semaphore::new(settings.smtp_concurrency.max(1)),
            mailer: Mailer::new(&settings)?,
            composer: Composer::new(templates, signer, dkim, &settings),
            store,
            settings,
            clock,
        })))
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The engine's clock's now.
    pub fn now(&self) -> Millis {
        self.0.clock.now()
    }

    /// Counters and histograms for `/metrics`, shared with the HTTP service.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Where mail goes: the relay, or the outbox folder.
    pub fn describe_mail(&self) -> String {
        self.0.mailer.describe()
    }

    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.0.clock.clone()
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub(crate) fn mailer(&self) -> &Mailer {
        &self.0.mailer
    }

    pub(crate) fn slots(&self) -> &Semaphore {
        &self.0.slots
    }

    /// The campaign's own rate limiter, if it sets `limits.rate`.
    pub(crate) fn limiter(&self, campaign: &str) -> Option<Arc<Limiter>> {
        self.0.limiters.get(campaign).cloned()
    }

    /// The start of the frequency cap's window at `now`, if a cap is set.
    pub(crate) fn cap_since(&self, now: Millis) -> Option<Millis> {
        self.0
            .settings
            .frequency_cap
            .map(|c| now - c.window.as_millis())
    }

    /// Sorts claims into send, skip and defer now ([`triage::triage`]).
    pub(crate) fn triage(&self, campaign: &Campaign, claimed: Vec<Claimed>) -> Triage {
        triage::triage(campaign, claimed, self.now(), self.0.settings.frequency_cap)
    }

    /// Renders and builds one customer's message ([`Composer::compose`]) as
    /// it would go to this engine's relay now.
    pub(crate) fn compose(
        &self,
        campaign: &Campaign,
        c: &Claimed,
        message_id: &str,
        events: &Events,
    ) -> Result<Composed, BuildError> {
        self.0.composer.compose(
            campaign,
            c,
            message_id,
            events,
            self.now(),
            self.0.mailer.eight_bit(),
        )
    }

    /// `events.KIND` for every customer of the batch, one query per kind.
    pub(crate) async fn events(
        &self,
        campaign: &Campaign,
        batch: &[Claimed],
    ) -> Result<Events, StoreError> {
        let mut wanted: HashMap<&str, u32> = HashMap::new();
        for c in batch {
            if let Some(step) = campaign.step(&c.step) {
                for (kind, n) in &step.events {
                    let e = wanted.entry(kind.as_str()).or_default();
                    *e = (*e).max(*n);
                }
            }
        }
        let ids: Vec<i64> = batch.iter().map(|c| c.customer_id).collect();
        let mut out = Events::default();
        for (kind, n) in wanted {
            for (customer, at, data) in self.0.store.recent_events(&ids, kind, i64::from(n)).await?
            {
                out.by_kind
                    .entry((customer, kind.to_string()))
                    .or_default()
                    .push(render::event_context(at, &data));
            }
        }
        let transactional = campaign.kind == CampaignKind::Transactional;
        if campaign.trigger.is_some() || transactional {
            let entries: Vec<i64> = batch
                .iter()
                .map(|c| c.entry_id)
                .filter(|&e| e > 0)
                .collect();
            for e in self.0.store.entry_contexts(&entries).await? {
                let mut extra = Map::new();
                if let Some((kind, at, data)) = e.cause {
                    extra.insert("trigger".into(), render::trigger_context(&kind, at, data));
                }
                if let Some(data) = e.data {
                    extra.insert("data".into(), Value::Object(data));
                }
                out.entries.insert(e.entry_id, extra);
            }
        }
        // A preview or a template check (no entry, id 0) shows examples: the
        // customer's latest interaction of the trigger's kind, else the latest
        // anyone had; the data of the campaign's latest send.
        if batch.iter().any(|c| c.entry_id == 0) {
            let mut example = Map::new();
            let mut theirs: HashMap<i64, Value> = HashMap::new();
            if let Some(trigger) = &campaign.trigger {
                let kind = trigger.event.as_str();
                for (customer, at, data) in self.0.store.recent_events(&ids, kind, 1).await? {
                    theirs.insert(customer, render::trigger_context(kind, at, data));
                }
                if let Some((at, data)) = self.0.store.latest_of_kind(kind).await? {
                    example.insert("trigger".into(), render::trigger_context(kind, at, data));
                }
            }
            if transactional
                && let Some(data) = self.0.store.latest_send_data(&campaign.name).await?
            {
                example.insert("data".into(), Value::Object(data));
            }
            for c in batch.iter().filter(|c| c.entry_id == 0) {
                let mut extra = example.clone();
                if let Some(t) = theirs.get(&c.customer_id) {
                    extra.insert("trigger".into(), t.clone());
                }
                if !extra.is_empty() {
                    out.previews.insert(c.customer_id, extra);
                }
            }
        }
        Ok(out)
    }
}
