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
use axum::routing::post;
use serde::Serialize;

use super::auth::{Caller, Ingest};
use super::errors::ApiError;
use super::json::{ApiBody, parse};
use super::{AppState, Router, limited};
use crate::ingest::spec::{self, Batch, CallType, Fault, Refusal};
use crate::ingest::writer::IngestError;
use crate::ingest::{BATCH_LIMIT, EVENT_LIMIT};
use crate::metrics::ApiCallOutcome;

pub(super) fn routes() -> Router {
    let one = |call_type: CallType| {
        limited(
            post(move |caller, state, body| single(call_type, caller, state, body)),
            EVENT_LIMIT,
        )
    };
    Router::new()
        .route("/identify", one(CallType::Identify))
        .route("/track", one(CallType::Track))
        .route("/page", one(CallType::Page))
        .route("/screen", one(CallType::Screen))
        .route("/group", one(CallType::Group))
        .route("/alias", one(CallType::Alias))
        .route("/batch", limited(post(batch), BATCH_LIMIT))
}

#[derive(Debug, Serialize)]
struct Success {
    success: bool,
}

/// One bad item of a batch.
#[derive(Debug, Serialize)]
struct Rejected {
    index: usize,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    message: String,
}

#[derive(Debug, Serialize)]
struct BatchAnswer {
    success: bool,
    accepted: usize,
    rejected: Vec<Rejected>,
}

async fn single(
    call_type: CallType,
    _: Caller<Ingest>,
    State(app): State<AppState>,
    ApiBody(body): ApiBody,
) -> Result<Json<Success>, ApiError> {
    let event = match spec::read(&body, Some(call_type), app.clock.now(), None) {
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
            return Err(unstored(e));
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
            return Err(unstored(e));
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
        Fault::Conflict => ApiError::Conflict(r.message),
    }
}

fn unstored(e: IngestError) -> ApiError {
    match e {
        IngestError::Store(e) => ApiError::Unavailable(e),
        other => ApiError::Busy(other.to_string()),
    }
}
