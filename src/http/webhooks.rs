//! `POST /webhook`: bounce and complaint reports from the relay or a mail
//! provider, authenticated with the `webhook_secret` as a bearer token before
//! the body is read. The payload and what it changes are
//! [`crate::tracking::webhook`]'s; every report is written, each in its own
//! transaction, before the answer. Provider-specific webhooks (each checking
//! its provider's signature) will be files of a `webhooks/` folder here.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::tracking::webhook;

/// Largest request body: a batch of [`webhook::MAX_REPORTS`] reports.
const BODY_LIMIT: usize = 1 << 20;

type App = State<AppState>;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/webhook", post(report))
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
    let body = match axum::body::to_bytes(request.into_body(), BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"error": format!("the body is larger than {BODY_LIMIT} bytes")}),
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
                app.metrics.tracking_event(r.kind.interaction());
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

/// The configured secret, kept as a digest so that comparing takes the same
/// time whatever the length or content of the offered one.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    pub fn new(secret: &str) -> Secret {
        Secret(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether an `Authorization` header value is `Bearer <secret>`.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let offered = authorization
            .and_then(|v| {
                let (scheme, rest) = v.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
            })
            .unwrap_or(b"");
        let digest: [u8; 32] = Sha256::digest(offered.trim_ascii()).into();
        let diff = digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0 && !offered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_secret() {
        let s = Secret::new("hook-secret-0123456789");
        assert!(s.admits(Some(b"Bearer hook-secret-0123456789")));
        assert!(s.admits(Some(b"bearer hook-secret-0123456789")));
        assert!(!s.admits(Some(b"Bearer hook-secret-012345678")));
        assert!(!s.admits(Some(b"Basic aG9vazpzZWNyZXQ=")));
        assert!(!s.admits(Some(b"Bearer ")));
        assert!(!s.admits(None));
    }
}
