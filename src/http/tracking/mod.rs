//! Tracking links: the open pixel, the click redirect and the unsubscribe
//! page with its RFC 8058 one-click.
//!
//! | route | answer |
//! |---|---|
//! | `GET /o/{token}.gif` | 1x1 GIF; records `email_opened` through the batched writer |
//! | `GET /c/{token}` | 302 to the URL signed into the token; records `email_clicked` |
//! | `GET /u/{token}` | a confirmation page with a button, naming the sender and the address; changes nothing |
//! | `POST /u/{token}` | the button and RFC 8058 one-click: unsubscribes, committed before the 200 |
//!
//! Tokens are verified before anything else: a forged, truncated, tampered or
//! wrong-purpose token gets 404 and writes nothing (the pixel's 404 still
//! carries the GIF). A genuine pixel request always gets its GIF, whatever
//! the database does. HEAD requests are answered like GET but record nothing.

mod pages;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value};

use super::AppState;
use crate::metrics::TrackingKind;
use crate::store::tracking::Unsubscribed;
use crate::token::{Purpose, Token};
use crate::tracking::machine;
use crate::tracking::writer::{Event, Kind};

/// Largest unsubscribe POST body (RFC 8058's is 26 bytes).
const FORM_BODY_LIMIT: usize = 16 << 10;

type App = State<AppState>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/o/{file}", get(open).head(open_head))
        .route("/c/{token}", get(click).head(click_head))
        .route(
            "/u/{token}",
            get(unsubscribe_page)
                .post(unsubscribe)
                .layer(DefaultBodyLimit::max(FORM_BODY_LIMIT)),
        )
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

impl AppState {
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
            Kind::Open => TrackingKind::Opened,
            Kind::Click => TrackingKind::Clicked,
        });
        self.events.record(event).await;
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
        app.metrics.tracking_event(TrackingKind::Unsubscribed);
    }
    // A mail provider's one-click POST shows its answer to nobody.
    let context = match (one_click, done) {
        (false, Unsubscribed::Now | Unsubscribed::Already) => app.unsubscribe_context(&t).await,
        _ => None,
    };
    let whom = context.as_ref().map(|(c, e)| app.whom(c, e));
    pages::unsubscribed(whom.as_ref())
}
