//! The tracking service: the only HTTP module.
//!
//! | route | answer |
//! |---|---|
//! | `GET /o/{token}.gif` | 1x1 GIF; records `email_opened` through the batched writer |
//! | `GET /c/{token}` | 302 to the URL signed into the token; records `email_clicked` |
//! | `GET /u/{token}` | a confirmation page with a button, naming the sender and the address; changes nothing |
//! | `POST /u/{token}` | the button and RFC 8058 one-click: unsubscribes, committed before the 200 |
//! | `POST /webhook` | bounce and complaint reports, bearer-authenticated ([`webhook`]) |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (the database answers) |
//!
//! Tokens are verified before anything else: a forged, truncated, tampered or
//! wrong-purpose token gets 404 and writes nothing (the pixel's 404 still
//! carries the GIF). A genuine pixel request always gets its GIF, whatever
//! the database does. HEAD requests are answered like GET but record nothing.

pub mod machine;
mod pages;
mod senders;
pub mod webhook;
pub mod writer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::store::tracking::Unsubscribed;
use crate::store::{Store, StoreError};
use crate::token::{Purpose, Signer, Token, TokenError};
pub use senders::Senders;
pub use writer::Totals;
use writer::{Counters, Event, Kind};

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the tracking service failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error("{lost} tracking events could not be written before stopping: {source}")]
    Unflushed {
        lost: u64,
        #[source]
        source: StoreError,
    },
}

/// Largest request body: a webhook batch of [`webhook::MAX_REPORTS`] reports.
const WEBHOOK_BODY_LIMIT: usize = 1 << 20;
/// Largest unsubscribe POST body (RFC 8058's is 26 bytes).
const FORM_BODY_LIMIT: usize = 16 << 10;
/// How long `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

struct Shared {
    store: Store,
    signer: Signer,
    clock: Arc<dyn Clock>,
    events: mpsc::Sender<Event>,
    counters: Arc<Counters>,
    webhook: Option<webhook::Secret>,
    metrics: Metrics,
    senders: Senders,
}

type App = State<Arc<Shared>>;

/// Runs the tracking service on `listener` until `shutdown` completes, then
/// waits for requests in progress and writes every event accepted.
///
/// Tokens are verified with the same keys the send pipeline signs with
/// ([`Store::tracking_keys`]).
///
/// `metrics` counts tracking events by kind, and is served at `/metrics`
/// (with whatever else feeds it, such as the worker's send pipeline).
/// `senders` names each campaign's sender on the unsubscribe pages.
pub async fn serve(
    store: Store,
    settings: &Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    metrics: Metrics,
    senders: Senders,
) -> Result<(), TrackingError> {
    serve_with_clock(
        store,
        settings,
        listener,
        shutdown,
        Arc::new(SystemClock),
        metrics,
        senders,
    )
    .await
    .map(|_| ())
}

/// [`serve`] with the clock events are stamped with; returns what was done.
pub async fn serve_with_clock(
    store: Store,
    settings: &Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    senders: Senders,
) -> Result<Totals, TrackingError> {
    let signer = Signer::new(&store.tracking_keys(&settings.secrets, clock.now()).await?)?;
    let counters = Arc::new(Counters::default());
    let (events, rx) = mpsc::channel(writer::QUEUE);
    let writer = tokio::spawn(writer::run(store.clone(), rx, counters.clone()));
    let shared = Arc::new(Shared {
        store,
        signer,
        clock,
        events,
        counters: counters.clone(),
        webhook: settings
            .webhook_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(webhook::Secret::new),
        metrics: metrics.clone(),
        senders,
    });
    let extra = crate::http::metrics::router(metrics, shared.store.clone());
    let served = axum::serve(listener, router(shared).merge(extra))
        .with_graceful_shutdown(shutdown)
        .await;
    // The router and with it every sender is gone: the writer drains and ends.
    let written = match writer.await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Query {
            context: "writing tracking events",
            source: sqlx::Error::Protocol(format!("writer task ended: {e}")),
        }),
    };
    let totals = counters.totals();
    tracing::info!(
        accepted = totals.accepted,
        written = totals.written,
        transactions = totals.transactions,
        dropped = totals.dropped,
        orphaned = totals.orphaned,
        "tracking service stopped"
    );
    served?;
    if let Err(source) = written {
        return Err(TrackingError::Unflushed {
            lost: totals.lost,
            source,
        });
    }
    Ok(totals)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/o/{file}", get(open).head(open_head))
        .route("/c/{token}", get(click).head(click_head))
        .route(
            "/u/{token}",
            get(unsubscribe_page)
                .post(unsubscribe)
                .layer(DefaultBodyLimit::max(FORM_BODY_LIMIT)),
        )
        .route("/webhook", post(report))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(shared)
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

impl Shared {
    fn open_token(&self, file: &str) -> Option<Token> {
        self.signer
            .verify(file.strip_suffix(".gif")?, Purpose::Open)
    }

    /// A click token's destination as a header-safe absolute http(s) URL.
    fn click_target(&self, token: &str) -> Option<(Token, HeaderValue)> {
        let t = self.signer.verify(token, Purpose::Click)?;
        let (_, url) = t.link.as_ref()?;
        let parsed = url::Url::parse(url).ok()?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return None;
        }
        let location = HeaderValue::from_str(parsed.as_str()).ok()?;
        Some((t, location))
    }

    /// The campaign and address of the delivery an unsubscribe token names,
    /// while the database has them (a preview's token names no delivery).
    /// The pages do without when the database cannot say.
    async fn unsubscribe_context(&self, t: &Token) -> Option<(String, String)> {
        let delivery_id = i64::try_from(t.delivery_id).ok().filter(|id| *id > 0)?;
        let customer_id = i64::try_from(t.customer_id).ok()?;
        match self
            .store
            .unsubscribe_context(delivery_id, customer_id)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, delivery = delivery_id, "unsubscribe page without its sender");
                None
            }
        }
    }

    fn whom<'a>(&'a self, campaign: &'a str, email: &'a str) -> pages::Whom<'a> {
        let sender = self.senders.name(campaign);
        pages::Whom {
            sender,
            others: self.senders.others(sender),
            email,
        }
    }

    async fn record(&self, kind: Kind, t: Token, headers: &HeaderMap) {
        // Previews carry delivery 0: nothing to attribute an event to.
        let (Ok(delivery_id), Ok(customer_id)) =
            (i64::try_from(t.delivery_id), i64::try_from(t.customer_id))
        else {
            return;
        };
        if delivery_id == 0 {
            return;
        }
        let event = Event {
            kind,
            delivery_id,
            customer_id,
            at: self.clock.now(),
            machine: machine::by_user_agent(user_agent(headers)),
            link: t.link,
        };
        self.metrics.tracking_event(match kind {
            Kind::Open => "email_opened",
            Kind::Click => "email_clicked",
        });
        writer::enqueue(&self.events, &self.counters, event).await;
    }
}

async fn open(State(app): App, Path(file): Path<String>, headers: HeaderMap) -> Response {
    match app.open_token(&file) {
        Some(t) => {
            app.record(Kind::Open, t, &headers).await;
            pages::pixel(StatusCode::OK)
        }
        None => pages::pixel(StatusCode::NOT_FOUND),
    }
}

async fn open_head(State(app): App, Path(file): Path<String>) -> Response {
    match app.open_token(&file) {
        Some(_) => pages::pixel(StatusCode::OK),
        None => pages::pixel(StatusCode::NOT_FOUND),
    }
}

fn redirect(location: HeaderValue) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, pages::no_store()),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
    )
        .into_response()
}

async fn click(State(app): App, Path(token): Path<String>, headers: HeaderMap) -> Response {
    match app.click_target(&token) {
        Some((t, location)) => {
            app.record(Kind::Click, t, &headers).await;
            redirect(location)
        }
        None => pages::not_found(),
    }
}

async fn click_head(State(app): App, Path(token): Path<String>) -> Response {
    match app.click_target(&token) {
        Some((_, location)) => redirect(location),
        None => pages::not_found(),
    }
}

async fn unsubscribe_page(State(app): App, Path(token): Path<String>) -> Response {
    let Some(t) = app.signer.verify(&token, Purpose::Unsubscribe) else {
        return pages::not_found();
    };
    let context = app.unsubscribe_context(&t).await;
    let whom = context.as_ref().map(|(c, e)| app.whom(c, e));
    pages::confirm_unsubscribe(whom.as_ref())
}

/// The page's button and RFC 8058 one-click (`List-Unsubscribe=One-Click`, as
/// urlencoded or multipart form data): the token alone decides, the body only
/// says which it was. Durable before the 200; a repeat changes nothing.
async fn unsubscribe(
    State(app): App,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(t) = app.signer.verify(&token, Purpose::Unsubscribe) else {
        return pages::not_found();
    };
    let Ok(customer_id) = i64::try_from(t.customer_id) else {
        return pages::not_found();
    };
    // A preview's link (delivery 0) names a real customer, who never got it.
    let Some(delivery_id) = i64::try_from(t.delivery_id).ok().filter(|id| *id > 0) else {
        return pages::preview_unsubscribe();
    };
    let one_click = memchr::memmem::find(&body, b"List-Unsubscribe=One-Click").is_some()
        || memchr::memmem::find(&body, b"name=\"List-Unsubscribe\"").is_some();
    let mut data = Map::new();
    data.insert(
        "method".into(),
        Value::from(if one_click { "one_click" } else { "page" }),
    );
    if let Some(ua) = user_agent(&headers) {
        data.insert(
            "user_agent".into(),
            Value::from(ua.chars().take(200).collect::<String>()),
        );
    }
    let done = match app
        .store
        .unsubscribe(customer_id, Some(delivery_id), &data, app.clock.now())
        .await
    {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, customer = customer_id, "unsubscribe failed");
            return pages::try_again();
        }
    };
    if done == Unsubscribed::Now {
        app.metrics.tracking_event("unsubscribed");
    }
    // A mail provider's one-click POST shows its answer to nobody.
    let context = match (one_click, done) {
        (false, Unsubscribed::Now | Unsubscribed::Already) => app.unsubscribe_context(&t).await,
        _ => None,
    };
    let whom = context.as_ref().map(|(c, e)| app.whom(c, e));
    pages::unsubscribed(whom.as_ref())
}

fn json(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// Authenticates before reading the body, so strangers cannot make it read a megabyte.
async fn report(State(app): App, request: Request) -> Response {
    let Some(secret) = &app.webhook else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if !secret.admits(authorization) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            axum::Json(serde_json::json!({"error": "missing or wrong bearer secret"})),
        )
            .into_response();
    }
    let body = match axum::body::to_bytes(request.into_body(), WEBHOOK_BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"error": format!("the body is larger than {WEBHOOK_BODY_LIMIT} bytes")}),
            );
        }
    };
    let reports = match webhook::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": e.to_string()}),
            );
        }
    };
    match webhook::apply(&app.store, &reports, app.clock.now()).await {
        Ok(applied) => {
            for r in &reports {
                app.metrics.tracking_event(match r.kind {
                    webhook::ReportType::Hard | webhook::ReportType::Soft => "email_bounced",
                    webhook::ReportType::Complaint => "email_complained",
                });
            }
            json(
                StatusCode::OK,
                serde_json::to_value(applied).unwrap_or(Value::Null),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook reports failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "the database is unavailable; retry later"}),
            )
        }
    }
}

async fn ready(State(app): App) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, app.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database timed out\n").into_response(),
    }
}
