//! The JSON API under `/v1`: JSON in and out, API keys with scopes
//! ([`auth`]), errors as `{"error": {"code", "message", "field"?}}`
//! ([`errors`]), bodies read by [`json::ApiJson`] under each route's size
//! limit.
//!
//! Around every route, outermost first:
//! 1. a request id: the client's `x-request-id`, or a new UUID; answered in
//!    `x-request-id` and carried by the request's log span (`request_id`,
//!    with `method`, `path` and the calling `key`), which ends with one
//!    `answered` line (status, milliseconds);
//! 2. `Content-Encoding`: none, `identity` or `gzip`, else 415;
//! 3. gzip bodies decompressed as they are read, so size limits apply to
//!    the decompressed JSON (a small bomb is still 413).
//!
//! Route families, each in its own file: [`keys`] (`/v1/keys`),
//! [`customers`] (`/v1/customers`), [`segment`] (Segment's Tracking API:
//! `/v1/identify`, `/v1/track`, …, `/v1/batch`), [`sends`] (`/v1/send`,
//! `/v1/messages/{id}`: transactional messages), [`openapi`] (`/v1/openapi.json`, the
//! API's OpenAPI 3.1 document). A family's `routes()` is an
//! `OpenApiRouter` built with `routes!(handler, …)` from handlers that carry
//! a `#[utoipa::path]`: the one attribute makes both the route and its part
//! of the document. Merge it in [`openapi_router`].

mod auth;
mod customers;
mod errors;
mod json;
mod keys;
mod openapi;
mod segment;
mod sends;

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::extract::{DefaultBodyLimit, OriginalUri, Request};
use axum::http::{HeaderName, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument as _;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) use auth::Access;
pub use errors::ApiError;

use super::AppState;

type Router = axum::Router<AppState>;

pub use crate::ingest::{BATCH_LIMIT, EVENT_LIMIT};
/// Limit of a route that sets none.
const DEFAULT_BODY_LIMIT: usize = 16 * 1024;

/// The route's body limit, for [`json::ApiJson`]'s 413 message.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// `route` reading bodies of at most `limit` bytes (decompressed).
fn limited(route: MethodRouter<AppState>, limit: usize) -> MethodRouter<AppState> {
    route
        .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(limit))
        .layer::<_, std::convert::Infallible>(axum::Extension(BodyLimit(limit)))
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route family, and the API document they make together.
fn openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(keys::routes())
        .merge(customers::routes())
        .merge(segment::routes())
        .merge(sends::routes())
        .routes(routes!(openapi::document))
}

/// Every `/v1` route, to be nested under `/v1`.
pub(super) fn routes() -> Router {
    let (router, doc) = openapi_router().split_for_parts();
    let served =
        serde_json::to_vec(&openapi::finish(doc)).expect("the API document is plain JSON values");
    router
        .layer(Extension(openapi::Served(Arc::new(served))))
        .fallback(|| async { ApiError::NotFound("no such API route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not take that method")
        })
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::from_fn(only_gzip))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(middleware::from_fn(log_request))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The request in a span with its id, and one line when it is answered.
async fn log_request(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Nested under /v1, the request's own URI has lost its prefix.
    let path = match request.extensions().get::<OriginalUri>() {
        Some(original) => original.path().to_string(),
        None => request.uri().path().to_string(),
    };
    let span = tracing::info_span!(
        "api",
        request_id = %id,
        method = %request.method(),
        path = %path,
        key = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "answered"
        );
    });
    response
}

/// Bodies come plain or gzipped; anything else is refused in the API's own
/// error format (the decompression layer's own refusal has no body).
async fn only_gzip(request: Request, next: Next) -> Response {
    let mut encodings = request.headers().get_all(header::CONTENT_ENCODING).iter();
    let plain_or_gzip = match (encodings.next(), encodings.next()) {
        (None, _) => true,
        (Some(e), None) => matches!(e.as_bytes(), b"gzip" | b"identity"),
        (Some(_), Some(_)) => false,
    };
    if !plain_or_gzip {
        return ApiError::UnsupportedMediaType("Content-Encoding must be gzip, or none")
            .into_response();
    }
    next.run(request).await
}
