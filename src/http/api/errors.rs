//! Every failure of the `/v1` API, answered as
//! `{"error": {"code": …, "message": …}}` (plus `"field"` when one value is
//! to blame) with its status. Codes are stable, snake_case, one per status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request could not be read as the route's type: not JSON, a
    /// missing or unknown field, a value of the wrong type. `field` is the
    /// path to the value (`batch[3].timestamp`) when one is to blame.
    #[error("{message}")]
    BadRequest {
        field: Option<String>,
        message: String,
    },
    /// 401: no key, a wrong key or a revoked one.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: a valid key without the scope the route needs.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// 410: what the path names was here and was removed on purpose (an
    /// erased customer, of whom only a one-way hash is held).
    #[error("{0}")]
    Gone(String),
    /// 405: the path exists, not with this method.
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    /// 409: the request conflicts with what is stored (a name in use).
    #[error("{0}")]
    Conflict(String),
    /// 409 where one value is to blame (another customer's `traits.email`).
    #[error("{message}")]
    ConflictOn { field: String, message: String },
    /// 413: the body is larger than the route accepts (after decompression).
    #[error("the request body is larger than this route accepts ({limit} bytes)")]
    PayloadTooLarge { limit: usize },
    /// 415: a body that is not `application/json`, or an encoding other than gzip.
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    /// 422: read, but a value breaks a rule (a name with spaces).
    #[error("{message}")]
    Unprocessable { field: String, message: String },
    /// 429: the key used up its `api_rate`.
    #[error("too many requests for this API key (api_rate {rate}); retry in {retry_after} s")]
    RateLimited { rate: String, retry_after: u64 },
    /// 503: the database failed; the cause is logged, not shown. Clients
    /// (Segment's libraries among them) retry on 5xx.
    #[error("the database is unavailable; retry later")]
    Unavailable(#[source] StoreError),
    /// 503: Herald is too busy or stopping; nothing of the request was
    /// stored, and it may be sent again.
    #[error("{0}")]
    Busy(String),
}

/// A call the writer did not store: the database failed (503, logged), or
/// Herald is too busy or stopping (503; nothing was stored, send it again).
impl From<crate::ingest::writer::IngestError> for ApiError {
    fn from(e: crate::ingest::writer::IngestError) -> ApiError {
        match e {
            crate::ingest::writer::IngestError::Store(e) => ApiError::Unavailable(e),
            other => ApiError::Busy(other.to_string()),
        }
    }
}

impl ApiError {
    pub fn bad_request(field: Option<String>, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            field,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::ConflictOn { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Gone(_) => "gone",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) | ApiError::ConflictOn { .. } => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unprocessable { .. } => "unprocessable",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) | ApiError::Busy(_) => "unavailable",
        }
    }
}

/// Every error answer's body, as the API document describes it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, one per status: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `conflict`, `gone`,
    /// `payload_too_large`, `unsupported_media_type`, `unprocessable`,
    /// `rate_limited`, `unavailable`.
    #[schema(value_type = String, example = "not_found")]
    pub code: &'static str,
    /// For a person to read.
    pub message: String,
    /// The path to the value to blame (`traits.email`, `batch[3]`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = String)]
    pub field: Option<String>,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Unavailable(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Unavailable(e) = &self {
            tracing::error!(error = %e, "API request failed");
        }
        let field = match &self {
            ApiError::BadRequest { field, .. } => field.clone(),
            ApiError::Unprocessable { field, .. } | ApiError::ConflictOn { field, .. } => {
                Some(field.clone())
            }
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                field,
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"herald\""),
                );
                headers.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"herald\""),
                );
            }
            ApiError::RateLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::Busy(_) | ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            ApiError::PayloadTooLarge { .. } => {
                // The rest of the body is not read: the connection cannot be reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
