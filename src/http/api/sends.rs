//! Transactional messages: one message of a `kind: transactional` campaign to
//! one customer, on request (a receipt, a password reset), over the store's
//! [`crate::store::sends`].
//!
//! | route | scope | answer |
//! |---|---|---|
//! | `POST /v1/send` `{"campaign", "to", "data"?}` + `Idempotency-Key` | ingest | 202, the message's id; the same key and request again: 202, the same id (`Idempotent-Replayed: true`) |
//! | `GET /v1/messages/{id}` | read, or the key that sent it | the message's status |
//!
//! The Idempotency-Key is required: a client that timed out cannot know
//! whether its call was queued, and retrying without a key could send twice.
//! A key is the caller's own (unique per API key) and kept for good.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

use super::auth::{AnyKey, Caller, Ingest};
use super::errors::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::openapi::{NotFound, Refusals, WithBody};
use super::{AppState, limited};
use crate::api_key::Scope;
use crate::clock::format_rfc3339;
use crate::customer::Email;
use crate::store::sends::{Accepted, Recipient, SendRequest, SendStatus};

/// Largest body of `POST /v1/send`: the template's data with room to spare.
const SEND_LIMIT: usize = 64 * 1024;
/// Longest Idempotency-Key.
const KEY_LIMIT: usize = 255;
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send).map(|r| limited(r, SEND_LIMIT)))
        .routes(routes!(message))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// The name of a campaign with `kind: transactional`; its first step is sent.
    #[schema(example = "receipt")]
    campaign: String,
    /// The customer: their email, or the id you know them by (a Segment `userId`).
    #[schema(example = "ann@example.com")]
    to: String,
    /// Handed to the templates as `data`.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"order": "A-1001", "total": 80}))]
    data: Map<String, Value>,
}

/// A transactional message.
#[derive(Debug, Serialize, ToSchema)]
struct MessageView {
    /// `msg_` and 24 hex digits.
    id: String,
    campaign: String,
    /// The recipient's address.
    to: String,
    /// queued, sending, sent, failed, bounced or skipped.
    #[schema(example = "sent")]
    status: String,
    /// Why it was skipped or failed (`suppressed`, the relay's reply …).
    reason: Option<String>,
    /// The `Message-ID` header, once the message was first handed to the relay.
    message_id: Option<String>,
    attempts: i32,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    sent_at: Option<String>,
}

impl From<SendStatus> for MessageView {
    fn from(s: SendStatus) -> MessageView {
        MessageView {
            id: s.id,
            campaign: s.campaign,
            to: s.email.to_string(),
            status: s.status.to_string(),
            reason: s.reason,
            message_id: s.message_id,
            attempts: s.attempts,
            created_at: format_rfc3339(s.created_at),
            sent_at: s.sent_at.map(format_rfc3339),
        }
    }
}

/// The call's Idempotency-Key header: printable ASCII, 1 to 255 characters.
fn idempotency_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    let field = || Some("Idempotency-Key".to_string());
    let value = headers.get(IDEMPOTENCY_KEY).ok_or_else(|| {
        ApiError::bad_request(
            field(),
            "the Idempotency-Key header is required: a unique value per message (a UUID), sent again unchanged when the call is retried",
        )
    })?;
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= KEY_LIMIT && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                field(),
                format!("the Idempotency-Key must be 1 to {KEY_LIMIT} printable ASCII characters"),
            )
        })?;
    Ok(key)
}

/// A digest of what the call asks for, to tell a retry from another request
/// reusing its key.
fn request_hash(body: &SendBody) -> String {
    let canonical = serde_json::json!({
        "campaign": body.campaign,
        "to": body.to,
        "data": body.data,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends one transactional message
///
/// Queues the first step of a `kind: transactional` campaign for one
/// customer, with `data` for its templates, and answers at once: the
/// message goes out within moments, to an unsubscribed customer too (never
/// to a suppressed, bounced or complaining address), without frequency cap
/// or send window. The `Idempotency-Key` header is required; the same key
/// with the same request answers the same message and sends nothing more,
/// however often and wherever it is retried. Scope: ingest.
#[utoipa::path(
    post,
    path = "/send",
    tag = "messages",
    request_body = SendBody,
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$", description = "A unique value per message (a UUID), the same on every retry of the call: 1 to 255 printable ASCII characters")),
    responses(
        (status = 202, description = "Queued (or queued before, for a retry)", body = MessageView),
        (status = 422, description = "No such transactional campaign, no such customer, or the key was used for another request", body = ErrorBody),
        WithBody,
        Refusals,
    ),
)]
async fn send(
    caller: Caller<Ingest>,
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let Some(step) = app.transactional.get(&body.campaign) else {
        return Err(ApiError::Unprocessable {
            field: "campaign".into(),
            message: format!(
                "no campaign with kind: transactional named {:?} is loaded (herald serve --campaigns DIR)",
                body.campaign
            ),
        });
    };
    let to = if body.to.contains('@') {
        Recipient::Email(Email::parse(&body.to).map_err(|e| ApiError::Unprocessable {
            field: "to".into(),
            message: format!("to: {e}"),
        })?)
    } else if body.to.trim().is_empty() || body.to.contains('\0') {
        return Err(ApiError::Unprocessable {
            field: "to".into(),
            message: "to: an email address or a customer's id is required (without NUL characters)"
                .into(),
        });
    } else {
        Recipient::ExternalId(body.to.clone())
    };
    if let Some(path) = crate::import::nul_path(&body.data) {
        return Err(ApiError::Unprocessable {
            field: format!("data.{path}"),
            message: format!(
                "data.{path} contains a NUL character (U+0000), which the database cannot store"
            ),
        });
    }
    let request_hash = request_hash(&body);
    let unknown = body.to.clone();
    let accepted = app
        .sends
        .submit(SendRequest {
            api_key_id: caller.key.id,
            idempotency_key: key.to_string(),
            request_hash,
            campaign: body.campaign,
            step: step.clone(),
            to,
            data: body.data,
            now: app.clock.now(),
        })
        .await?;
    let (id, replayed) = match accepted {
        Accepted::New(id) => (id, false),
        Accepted::Again(id) => (id, true),
        Accepted::KeyReused => {
            return Err(ApiError::Unprocessable {
                field: "Idempotency-Key".into(),
                message: "this Idempotency-Key was used for a different request; use a new key for a new message".into(),
            });
        }
        Accepted::UnknownRecipient => {
            return Err(ApiError::Unprocessable {
                field: "to".into(),
                message: format!(
                    "no customer has the email or id {unknown:?}; identify them first (POST /v1/identify)"
                ),
            });
        }
    };
    let view = app.store.send_status(&id).await?.ok_or_else(|| {
        ApiError::Unavailable(crate::store::StoreError::internal(
            "reading a message",
            "an accepted message was not found",
        ))
    })?;
    if !replayed {
        tracing::info!(id = %view.id, campaign = %view.campaign, "transactional message queued");
    }
    let mut response = (StatusCode::ACCEPTED, Json(MessageView::from(view))).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The message's id.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "describes the path to the API document")]
struct MessageParam {
    id: String,
}

/// A transactional message's status
///
/// Scope: read, or the key that sent it.
#[utoipa::path(
    get,
    path = "/messages/{id}",
    tag = "messages",
    params(MessageParam),
    responses((status = 200, description = "The message", body = MessageView), NotFound, Refusals),
)]
async fn message(
    caller: Caller<AnyKey>,
    State(app): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<MessageView>, ApiError> {
    let not_found = || ApiError::NotFound("no such message".into());
    let Path(id) = path.map_err(|_| not_found())?;
    let status = app.store.send_status(&id).await?.ok_or_else(not_found)?;
    // A key without read scope sees only its own messages; another's is
    // not found rather than forbidden, so ids cannot be probed.
    if !caller.key.scope.grants(Scope::Read) && status.api_key_id != caller.key.id {
        return Err(not_found());
    }
    Ok(Json(status.into()))
}
