//! Every route Herald serves, on one listener, one file (or folder) per
//! route family:
//!
//! | family | routes |
//! |---|---|
//! | [`tracking`] | `GET /o/{token}.gif` pixel, `GET /c/{token}` click redirect, `GET`/`POST /u/{token}` unsubscribe page and RFC 8058 one-click |
//! | [`webhooks`] | `POST /webhook`: bounce and complaint reports, bearer-authenticated |
//! | [`health`] | `GET /healthz` liveness, `GET /readyz` readiness (the database answers) |
//! | [`metrics`] | `GET /metrics`: Prometheus text, or OpenMetrics when asked |
//! | [`api`] | `/v1`: the JSON API, authenticated by API keys |
//! Handlers parse, authenticate and answer;
//! what a request does is the library's (`tracking`, `store`, `metrics`):
//! no SQL here, and no module outside `cli` imports this one.
//!
//! [`serve`] takes a bound listener and a shutdown future, so the worker,
//! `herald serve` and the tests (port 0) run the same service. Body limits
//! are the route families' own (the unsubscribe form, the webhook batch);
//! every other route reads no body.

pub mod api;
mod health;
pub mod metrics;
mod tracking;
mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::ingest::writer::{self as ingest_writer, Ingest};
use crate::metrics::Metrics;
use crate::store::triggers::TriggerRule;
use crate::store::{Store, StoreError};
use crate::token::{Signer, TokenError};
use crate::tracking::writer::{self, Events};
use crate::tracking::{Senders, Totals};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the HTTP service failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error("{lost} tracking events could not be written before stopping: {source}")]
    Unflushed {
        lost: u64,
        #[source]
        source: StoreError,
    },
}

/// What the service takes from the campaign files: each campaign's sender
/// (the unsubscribe pages) and the triggers new API events enter customers by.
#[derive(Debug, Clone)]
pub struct Campaigns {
    pub senders: Senders,
    pub triggers: Arc<[TriggerRule]>,
    /// The `kind: transactional` campaigns `POST /v1/send` may send, each
    /// with its first step.
    pub transactional: Arc<HashMap<String, String>>,
}

impl Campaigns {
    pub fn new(campaigns: &[crate::campaign::Campaign]) -> Campaigns {
        Campaigns {
            senders: Senders::new(campaigns),
            triggers: crate::pipeline::trigger_rules(campaigns).into(),
            transactional: Arc::new(transactional(campaigns)),
        }
    }
}

/// The transactional campaigns of `campaigns`, each with its first step.
fn transactional(campaigns: &[crate::campaign::Campaign]) -> HashMap<String, String> {
    campaigns
        .iter()
        .filter(|c| c.kind == crate::campaign::CampaignKind::Transactional)
        .filter_map(|c| Some((c.name.clone(), c.steps.first()?.id.clone())))
        .collect()
}

impl Default for Campaigns {
    fn default() -> Campaigns {
        Campaigns::from(Senders::default())
    }
}

/// Senders only: no campaign is triggered.
impl From<Senders> for Campaigns {
    fn from(senders: Senders) -> Campaigns {
        Campaigns {
            senders,
            triggers: Arc::from(Vec::new()),
            transactional: Default::default(),
        }
    }
}

/// What the handlers share; cloning it clones one `Arc`.
#[derive(Clone)]
struct AppState(Arc<Shared>);

struct Shared {
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// Verifies tracking tokens with the keys the send pipeline signs with.
    signer: Signer,
    /// Opens and clicks, to the batching writer.
    events: Events,
    /// Whose emails an unsubscribe stops.
    senders: Senders,
    /// `None` (no `webhook_secret`): `POST /webhook` is not found.
    webhook: Option<webhooks::Secret>,
    /// The `/v1` API's per-key rate limits.
    access: api::Access,
    /// Segment calls, to the batching writer.
    ingest: Ingest,
    /// What `POST /v1/send` may send: campaign → first step.
    transactional: Arc<HashMap<String, String>>,
    /// Send calls, to their batching writer.
    sends: crate::ingest::sends::Sends,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Runs the service on `listener` until `shutdown` completes, then waits for
/// requests in progress and writes every tracking event accepted.
///
/// Tokens are verified with the same keys the send pipeline signs with
/// ([`Store::tracking_keys`]). `metrics` counts tracking events by kind and
/// is served at `/metrics` with whatever else feeds it (the worker's send
/// pipeline). `campaigns` names each campaign's sender on the unsubscribe
/// pages, and holds the triggers new events enter customers by.
pub async fn serve(
    store: Store,
    settings: &Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    metrics: Metrics,
    campaigns: impl Into<Campaigns>,
) -> Result<(), HttpError> {
    serve_with_clock(
        store,
        settings,
        listener,
        shutdown,
        Arc::new(SystemClock),
        metrics,
        campaigns,
    )
    .await
    .map(|_| ())
}

/// [`serve`] with the clock events are stamped with; returns what the
/// tracking writer did.
pub async fn serve_with_clock(
    store: Store,
    settings: &Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    campaigns: impl Into<Campaigns>,
) -> Result<Totals, HttpError> {
    let Campaigns {
        senders,
        triggers,
        transactional,
    } = campaigns.into();
    let signer = Signer::new(&store.tracking_keys(&settings.secrets, clock.now()).await?)?;
    let (events, writer) = writer::start(store.clone());
    let (ingest, ingest_writer) = ingest_writer::start(store.clone(), clock.clone(), triggers);
    let (sends, send_writer) = crate::ingest::sends::start(store.clone());
    let state = AppState(Arc::new(Shared {
        store,
        clock,
        metrics,
        signer,
        events,
        senders,
        webhook: settings
            .webhook_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(webhooks::Secret::new),
        access: api::Access::new(settings.api_rate),
        ingest,
        transactional,
        sends,
    }));
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    // The router and with it every `Events` and `Ingest` is gone: the writers
    // drain and end.
    let ingested = ingest_writer.finish().await;
    send_writer.finish().await;
    let (totals, written) = writer.finish().await;
    tracing::info!(
        accepted = totals.accepted,
        written = totals.written,
        transactions = totals.transactions,
        dropped = totals.dropped,
        orphaned = totals.orphaned,
        api_calls = ingested.stored,
        api_refused = ingested.refused,
        api_new_events = ingested.new_events,
        api_entered = ingested.entered,
        "HTTP service stopped"
    );
    served?;
    if let Err(source) = written {
        return Err(HttpError::Unflushed {
            lost: totals.lost,
            source,
        });
    }
    Ok(totals)
}

/// Every route family, on one state.
fn router(state: AppState) -> Router {
    Router::new()
        .merge(tracking::routes())
        .merge(webhooks::routes())
        .merge(health::routes())
        .merge(metrics::routes())
        .nest("/v1", api::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}
