//! Segment's HTTP Tracking API, so that a client library instrumented for
//! Segment sends to Herald by changing its host: every route needs an
//! `ingest` (or `admin`) key, sent as Segment's libraries send their write
//! key (HTTP Basic user name).
//!
//! | route | body limit | answer |
//! |---|---|---|
//! | `POST /v1/identify`, `/track`, `/page`, `/screen`, `/group`, `/alias` | 32 KB | 200 `{"success": true}` once stored; 400/422/409 naming the field, nothing stored |
//! | `POST /v1/batch` | 500 KB | 200 `{"success": true, "accepted": N, "rejected": [{"index", "code", "field", "message"}]}`: the good items stored, each bad one named by its index |
//!
//! A batch whose envelope cannot be read (not JSON, no `batch` array) is a
//! 400 and stores nothing. An answer of 200 means what it accepted is
//! committed; a 503 (the database failed, or the queue is full) means
//! nothing of the request is sure and it should be sent again, which adds
//! nothing twice. How calls become customers and interactions:
//! [`crate::ingest`].

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

use super::auth::{Caller, Ingest};
use super::errors::{ApiError, ErrorBody};
use super::json::{ApiBody, parse};
use super::openapi::{Refusals, WithBody};
use super::{AppState, limited};
use crate::ingest::spec::{self, Batch, CallType, Fault, MAX_ID, MAX_KIND, Refusal};
use crate::ingest::{BATCH_LIMIT, EVENT_LIMIT};
use crate::metrics::ApiCallOutcome;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    let one = |r| limited(r, EVENT_LIMIT);
    OpenApiRouter::new()
        .routes(routes!(identify).map(one))
        .routes(routes!(track).map(one))
        .routes(routes!(page).map(one))
        .routes(routes!(screen).map(one))
        .routes(routes!(group).map(one))
        .routes(routes!(alias).map(one))
        .routes(routes!(batch).map(|r| limited(r, BATCH_LIMIT)))
}

/// A call stored.
#[derive(Debug, Serialize, ToSchema)]
struct Success {
    /// Always true: the call is committed.
    success: bool,
}

/// One bad item of a batch, and why.
#[derive(Debug, Serialize, ToSchema)]
struct Rejected {
    /// Its position in `batch`, from 0.
    index: usize,
    /// As an error's code: `bad_request`, `unprocessable`, `conflict`, `payload_too_large`.
    #[schema(value_type = String, example = "unprocessable")]
    code: &'static str,
    /// The value to blame, under the item (`batch[3].traits.email`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = String)]
    field: Option<String>,
    message: String,
}

/// A batch stored: its good items committed, its bad ones named.
#[derive(Debug, Serialize, ToSchema)]
struct BatchAnswer {
    /// Always true: the batch was read and its good items are committed.
    success: bool,
    /// How many items were stored (a retried item counts: it is stored).
    accepted: usize,
    /// The items not stored, by index.
    rejected: Vec<Rejected>,
}

macro_rules! call_route {
    ($name:ident, $call:expr, $body:ty, $summary:literal, $doc:literal) => {
        #[doc = $summary]
        #[doc = ""]
        #[doc = $doc]
        #[doc = ""]
        #[doc = "Scope: ingest. `200` once the call is committed; a retry of the same `messageId` adds nothing."]
        #[utoipa::path(
            post,
            path = concat!("/", stringify!($name)),
            tag = "segment",
            request_body(content = $body, content_type = "application/json"),
            responses(
                (status = 200, description = "Stored", body = Success),
                (status = 409, description = "The call contradicts what is stored (another user's email, two customers); nothing stored", body = ErrorBody),
                (status = 422, description = "A value breaks a rule (an invalid email or zone, a timestamp without a zone, a NUL character); `field` names it; nothing stored", body = ErrorBody),
                WithBody,
                Refusals,
            ),
        )]
        async fn $name(
            _: Caller<Ingest>,
            State(app): State<AppState>,
            ApiBody(body): ApiBody,
        ) -> Result<Json<Success>, ApiError> {
            single($call, &app, &body).await
        }
    };
}

call_route!(
    identify,
    CallType::Identify,
    IdentifyCall,
    "Who a person is: creates or updates the customer",
    "`userId` is the customer's external id; `traits.email`, `firstName`, `lastName`, `timezone` and `status` its fields; other traits its attributes (merged key by key; never back to subscribed). Without an email, the traits wait on an anonymous profile."
);
call_route!(
    track,
    CallType::Track,
    TrackCall,
    "Something a person did: an interaction of kind `event`",
    "`properties` become the interaction's data."
);
call_route!(
    page,
    CallType::Page,
    PageCall,
    "A page view: a `page_view` interaction",
    "`name` and `category` are added to the properties."
);
call_route!(
    screen,
    CallType::Screen,
    ScreenCall,
    "A screen of an app: a `screen_view` interaction",
    "`name` and `category` are added to the properties."
);
call_route!(
    group,
    CallType::Group,
    GroupCall,
    "A person's group (a company, an account): a `group` interaction",
    "Its data holds `group_id` and the group's `traits`."
);
call_route!(
    alias,
    CallType::Alias,
    AliasCall,
    "Links an earlier id to a user",
    "`previousId` (an anonymous id, or an earlier user id) is `userId` from now on; what was held on it becomes the user's. Two customers are not merged (409)."
);

async fn single(
    call_type: CallType,
    app: &AppState,
    body: &[u8],
) -> Result<Json<Success>, ApiError> {
    let event = match spec::read(body, Some(call_type), app.clock.now(), None) {
        Ok(event) => event,
        Err(refusal) => {
            app.metrics.api_calls(ApiCallOutcome::Refused, 1);
            return Err(refused(refusal));
        }
    };
    let outcomes = match app.ingest.submit(vec![event]).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            app.metrics.api_calls(ApiCallOutcome::Unstored, 1);
            return Err(e.into());
        }
    };
    match outcomes.into_iter().next() {
        Some(Err(refusal)) => {
            app.metrics.api_calls(ApiCallOutcome::Refused, 1);
            Err(refused(refusal))
        }
        _ => {
            app.metrics.api_calls(ApiCallOutcome::Stored, 1);
            Ok(Json(Success { success: true }))
        }
    }
}

/// Up to 500 KB of calls, each with its `type`
///
/// Scope: ingest. The good items are stored and the bad ones named by index
/// in `rejected` (each item is checked as its own route checks it);
/// `sentAt` of the batch corrects every item's `timestamp`.
#[utoipa::path(
    post,
    path = "/batch",
    tag = "segment",
    request_body(content = BatchCall, content_type = "application/json"),
    responses(
        (status = 200, description = "The good items stored, the bad ones named", body = BatchAnswer),
        WithBody,
        Refusals,
    ),
)]
async fn batch(
    _: Caller<Ingest>,
    State(app): State<AppState>,
    ApiBody(body): ApiBody,
) -> Result<Json<BatchAnswer>, ApiError> {
    let envelope: Batch<'_> = parse(&body)?;
    let received = app.clock.now();
    let mut rejected = Vec::new();
    let mut events = Vec::with_capacity(envelope.batch.len());
    let mut indexes = Vec::with_capacity(envelope.batch.len());
    for (index, item) in envelope.batch.iter().enumerate() {
        match spec::read(
            item.get().as_bytes(),
            None,
            received,
            envelope.sent_at.as_deref(),
        ) {
            Ok(event) => {
                events.push(event);
                indexes.push(index);
            }
            Err(refusal) => rejected.push(rejection(index, refusal)),
        }
    }
    let submitted = events.len() as u64;
    let outcomes = match app.ingest.submit(events).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            app.metrics.api_calls(ApiCallOutcome::Unstored, submitted);
            app.metrics
                .api_calls(ApiCallOutcome::Refused, rejected.len() as u64);
            return Err(e.into());
        }
    };
    let mut accepted = 0;
    for (index, outcome) in indexes.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => accepted += 1,
            Err(refusal) => rejected.push(rejection(index, refusal)),
        }
    }
    rejected.sort_by_key(|r| r.index);
    app.metrics
        .api_calls(ApiCallOutcome::Stored, accepted as u64);
    app.metrics
        .api_calls(ApiCallOutcome::Refused, rejected.len() as u64);
    Ok(Json(BatchAnswer {
        success: true,
        accepted,
        rejected,
    }))
}

fn rejection(index: usize, refusal: Refusal) -> Rejected {
    let prefix = format!("batch[{index}]");
    let code = refused(refusal.clone()).code();
    let refusal = refusal.within(&prefix);
    Rejected {
        index,
        code,
        message: format!("{prefix}: {}", refusal.message),
        field: refusal.field,
    }
}

/// A refused call as the API's error.
fn refused(r: Refusal) -> ApiError {
    match r.fault {
        Fault::Malformed => ApiError::BadRequest {
            field: r.field,
            message: r.message,
        },
        Fault::Invalid => ApiError::Unprocessable {
            field: r.field.unwrap_or_default(),
            message: r.message,
        },
        Fault::TooLarge => ApiError::PayloadTooLarge { limit: EVENT_LIMIT },
        Fault::Conflict => match r.field {
            Some(field) => ApiError::ConflictOn {
                field,
                message: r.message,
            },
            None => ApiError::Conflict(r.message),
        },
    }
}

// -- the request bodies, for the API document ---------------------------------
//
// Written as JSON Schema: Segment's calls need "userId or anonymousId", which
// the derive cannot say. The properties the spec has and Herald ignores
// (`integrations`, `writeKey`, …) are left out, free as every other extra field.

/// One id as Segment's libraries send it: text or a number (never empty);
/// `null` for "none" where the call may go without it.
fn id_schema(description: &str, nullable: bool) -> Value {
    let types = if nullable {
        json!(["string", "number", "null"])
    } else {
        json!(["string", "number"])
    };
    json!({"type": types, "minLength": 1, "maxLength": MAX_ID, "description": description})
}

/// A field that may be left out or sent as `null`.
fn optional(kind: &str) -> Value {
    json!({"type": [kind, "null"]})
}

/// The body of one call of `call_type`.
fn call_schema(call_type: CallType) -> RefOr<Schema> {
    let alias = call_type == CallType::Alias;
    let time = |description: &str| json!({"type": ["string", "null"], "format": "date-time", "description": description});
    let mut properties = json!({
        "userId": id_schema("The user's id in your system: the customer's external id", !alias),
        "anonymousId": id_schema("A device's or browser's id, before the user is known", true),
        "messageId": id_schema("The call's id: a call sent again with it adds nothing", true),
        "timestamp": time("When it happened (the client's clock); corrected by sentAt"),
        "sentAt": time("When the client sent it, by its clock"),
        "context": {"type": ["object", "null"], "description": "Read for `context.timezone` only"},
        "type": {"type": ["string", "null"], "enum": [call_type.as_str(), null]},
    });
    let mut required = vec![];
    let specific = match call_type {
        CallType::Identify => json!({"traits": {"type": ["object", "null"], "properties": {
            "email": {"type": ["string", "null"], "format": "email"},
            "firstName": optional("string"), "first_name": optional("string"),
            "lastName": optional("string"), "last_name": optional("string"),
            "timezone": {"type": ["string", "null"], "description": "An IANA zone, such as Europe/Berlin"},
            "status": {"type": ["string", "null"],
                       "enum": ["subscribed", "unsubscribed", "bounced", "complained", null]},
        }}}),
        CallType::Track => {
            required.push("event");
            json!({"event": {"type": "string", "minLength": 1, "maxLength": MAX_KIND, "pattern": "\\S",
                             "description": "The interaction's kind"},
                   "properties": optional("object")})
        }
        CallType::Page | CallType::Screen => json!({
            "name": optional("string"), "category": optional("string"),
            "properties": optional("object")}),
        CallType::Group => {
            required.push("groupId");
            json!({"groupId": id_schema("The group's id", false), "traits": optional("object")})
        }
        CallType::Alias => {
            required.extend(["userId", "previousId"]);
            json!({"previousId": id_schema("The earlier id: an anonymous id or a user id", false)})
        }
    };
    if let (Some(all), Some(more)) = (properties.as_object_mut(), specific.as_object()) {
        all.extend(more.clone());
    }
    let object: Schema = serde_json::from_value(json!({
        "type": "object", "properties": properties, "required": required,
    }))
    .unwrap_or_else(|_| ObjectBuilder::new().into());
    // "userId or anonymousId", each present and not null.
    let who = |field: &str| {
        let present = ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::String, Type::Number]))
            .min_length(Some(1));
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .required(field)
            .property(field, present)
    };
    AllOfBuilder::new()
        .item(object)
        .item(
            AnyOfBuilder::new()
                .item(who("userId"))
                .item(who("anonymousId")),
        )
        .into()
}

macro_rules! call_body {
    ($name:ident, $call:expr) => {
        struct $name;
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                call_schema($call)
            }
        }
        impl ToSchema for $name {}
    };
}

call_body!(IdentifyCall, CallType::Identify);
call_body!(TrackCall, CallType::Track);
call_body!(PageCall, CallType::Page);
call_body!(ScreenCall, CallType::Screen);
call_body!(GroupCall, CallType::Group);
call_body!(AliasCall, CallType::Alias);

/// The body of `POST /v1/batch`: its items are any JSON, each checked on its
/// own (a bad item is named in the answer, not refused with the batch).
struct BatchCall;

impl PartialSchema for BatchCall {
    fn schema() -> RefOr<Schema> {
        serde_json::from_value(json!({
            "type": "object",
            "required": ["batch"],
            "properties": {
                "batch": {"type": "array", "items": {"description":
                    "A call of one of the six types (the bodies of /v1/identify, /v1/track, …) with its `type`"}},
                "sentAt": {"type": ["string", "null"], "description":
                    "When the client sent the batch, by its clock (ISO 8601): corrects every item's timestamp"},
            },
        }))
        .unwrap_or_else(|_| ObjectBuilder::new().into())
    }
}

impl ToSchema for BatchCall {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_bodies_say_who_is_required() {
        let text = serde_json::to_string(&TrackCall::schema()).unwrap();
        assert!(
            text.contains(r#"{"anyOf":[{"required":["userId"],"properties":{"userId":{"type":["string","number"],"minLength":1}}}"#),
            "{text}"
        );
        assert!(text.contains("\"required\":[\"event\"]"), "{text}");
        assert!(text.contains("\"minLength\":1"), "{text}");
        let batch = serde_json::to_string(&BatchCall::schema()).unwrap();
        assert!(batch.contains("\"required\":[\"batch\"]"), "{batch}");
    }
}
