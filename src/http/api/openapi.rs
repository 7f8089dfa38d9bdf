//! The API's OpenAPI 3.1 document, served at `GET /v1/openapi.json` (no key
//! needed), generated from the code: each handler's `#[utoipa::path]`
//! attribute says its method, path, parameters, body and every answer, and
//! `routes!` builds the router and the document from the same attributes
//! (see [`super::routes`]), so a route cannot be served undocumented or
//! documented unserved; the tests below and `tests/openapi.rs` check it.
//!
//! Here: the document's frame ([`ApiDoc`]: title, security schemes, tags),
//! the answers many routes share ([`Refusals`], [`WithBody`], [`NotFound`],
//! [`Gone`]), and the route that serves the document.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::errors::ErrorBody;

/// The document's frame; the routes add their paths to it.
///
/// A new route family adds nothing here but its tag in `tags(...)` below: its
/// file has a `routes()` returning an `OpenApiRouter` built with `routes!`, as
/// [`super::customers`] and [`super::segment`] do, merged in
/// `super::openapi_router`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald API",
        description = "Herald's JSON API. Every route but this document needs an API key \
            (`herald api-key create NAME --scope ingest|read|admin`), sent as HTTP Basic \
            with the key as user name and an empty password (how Segment's libraries send \
            their write key), or as `Authorization: Bearer KEY`. `admin` keys may do \
            everything; `ingest` and `read` keys only what their name says. Errors answer \
            `{\"error\": {\"code\", \"message\", \"field\"?}}`. Request bodies may be gzipped \
            (`Content-Encoding: gzip`); size limits apply to the decompressed JSON.",
    ),
    modifiers(&Schemes),
    security(("basic" = []), ("bearer" = [])),
    tags(
        (name = "keys", description = "The calling key, and API key management (admin)"),
        (name = "customers", description = "Customers by id or email: the 360° view, interactions, patch, GDPR export and erasure"),
        (name = "segment", description = "Segment's HTTP Tracking API: identify, track, page, screen, group, alias and batch, as Segment's client libraries send them"),
        (name = "messages", description = "Transactional messages: one message of a `kind: transactional` campaign on request, exactly once per Idempotency-Key, and its status"),
        (name = "meta", description = "This document"),
    ),
    components(schemas(ErrorBody)),
)]
pub struct ApiDoc;

/// The two ways to send a key.
struct Schemes;

impl Modify for Schemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The API key as user name, the password empty (Segment's libraries)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Authorization: Bearer KEY"))
                    .build(),
            ),
        );
    }
}

/// What any route that needs a key may answer besides its own.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "describes answers to the API document")]
pub enum Refusals {
    /// No key, a wrong key, or a revoked one; nothing was done.
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "Basic and Bearer challenges")))]
    Unauthorized(ErrorBody),
    /// The key lacks the route's scope (the route says which); nothing was done.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// A body that is not `Content-Type: application/json`, or a
    /// `Content-Encoding` other than gzip.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// The key used up its rate (`api_rate`).
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    RateLimited(ErrorBody),
    /// The database is unavailable; retry later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// What a route that reads a JSON body may answer besides [`Refusals`].
#[derive(IntoResponses)]
#[allow(dead_code, reason = "describes answers to the API document")]
pub enum WithBody {
    /// The body is not JSON or not of the route's shape (a missing, unknown or
    /// mistyped field: `field` names it).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The body, decompressed, is larger than the route accepts.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
}

/// The path names nothing (held).
#[derive(IntoResponses)]
#[response(status = 404)]
#[allow(dead_code, reason = "describes answers to the API document")]
pub struct NotFound(ErrorBody);

/// An erased customer: only a one-way hash of the address is held.
#[derive(IntoResponses)]
#[response(status = 410)]
#[allow(dead_code, reason = "describes answers to the API document")]
pub struct Gone(ErrorBody);

/// Where the API is nested, and so where the document's paths start.
pub const PREFIX: &str = "/v1";

/// The document as served: `doc` with every path under [`PREFIX`].
pub fn finish(mut doc: Document) -> Document {
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item): (String, PathItem)| (format!("{PREFIX}{path}"), item))
        .collect();
    doc
}

/// The document, serialised once when the routes are built.
#[derive(Clone)]
pub struct Served(pub Arc<Vec<u8>>);

/// This document
///
/// The API's routes, parameters, bodies and every answer. No key needed.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
        (status = 415, description = "A `Content-Encoding` other than gzip", body = ErrorBody),
    ),
)]
pub async fn document(Extension(served): Extension<Served>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        served.0.as_ref().clone(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// `{"/v1/keys": {"get", "post"}, …}` of the document.
    fn documented(json: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
        json["paths"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(path, item)| {
                let methods = item
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| {
                        [
                            "get", "put", "post", "delete", "patch", "head", "options", "trace",
                        ]
                        .contains(&k.as_str())
                    })
                    .cloned()
                    .collect();
                (path.clone(), methods)
            })
            .collect()
    }

    /// The router's own paths, read from its `Debug` form (axum has no other
    /// way to list them): its route table, `Node { paths: {RouteId(0):
    /// "/keys", …} }`.
    fn served(router: &axum::Router<super::super::AppState>) -> BTreeSet<String> {
        let text = format!("{router:?}");
        let start = text
            .find("Node { paths: {")
            .expect("axum's Router Debug form shows its route table");
        let mut rest = &text[start + "Node { paths: {".len()..];
        let mut paths = BTreeSet::new();
        while let Some(entry) = rest.trim_start_matches([',', ' ']).strip_prefix("RouteId(") {
            let (_, after) = entry.split_once("): \"").expect("RouteId(n): \"path\"");
            let (path, after) = after.split_once('"').expect("a quoted path");
            paths.insert(path.to_string());
            rest = after;
        }
        paths
    }

    #[test]
    fn every_route_is_documented_and_every_documented_path_is_routed() {
        let (router, doc) = super::super::openapi_router().split_for_parts();
        let doc = finish(doc);
        let in_doc: BTreeSet<String> = documented(&serde_json::to_value(&doc).unwrap())
            .keys()
            .map(|p| p.strip_prefix(PREFIX).unwrap().to_string())
            .collect();
        let routed = served(&router);
        assert!(routed.contains("/customers/{id_or_email}"), "{routed:?}");
        assert_eq!(
            routed, in_doc,
            "routes and the API document differ: register routes with routes!(handler) \
             on an OpenApiRouter, with a #[utoipa::path] on the handler"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_key_schemes() {
        let (_, doc) = super::super::openapi_router().split_for_parts();
        let json = serde_json::to_value(finish(doc)).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        let schemes = &json["components"]["securitySchemes"];
        assert_eq!(schemes["basic"]["scheme"], "basic");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        // Every operation but the document itself needs a key and says
        // what a refused key gets.
        for (path, methods) in documented(&json) {
            for method in methods {
                let op = &json["paths"][&path][&method];
                let responses = op["responses"].as_object().unwrap();
                if path.ends_with("/openapi.json") {
                    assert_eq!(op["security"], serde_json::json!([{}]), "{path}");
                    continue;
                }
                for status in ["401", "403", "415", "429", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
        }
    }
}
