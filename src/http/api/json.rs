//! [`ApiJson`]: a JSON request body read under the route's size limit, after
//! gzip decompression, with errors that name the field to blame.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::BodyLimit;
use super::errors::ApiError;
use crate::json::JsonFault;

/// A request body of JSON type `T`.
///
/// * not `Content-Type: application/json` → 415;
/// * larger than the route's limit (decompressed; [`super::limited`]) → 413;
/// * not JSON, or not a `T` → 400 with `field`, the path to the value at
///   fault (`traits.email`, `batch[3]`), named in the message too.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let ApiBody(bytes) = ApiBody::from_request(request, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// A JSON request body as bytes, checked as [`ApiJson`] checks it (type,
/// size, encoding) but not yet read: for routes that read it piece by piece
/// (a Segment batch, whose bad items are named and the others kept).
#[derive(Debug, Clone, Default)]
pub struct ApiBody(pub Bytes);

impl<S> FromRequest<S> for ApiBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let limit = request.extensions().get::<BodyLimit>().map(|l| l.0);
        Bytes::from_request(request, state)
            .await
            .map(ApiBody)
            .map_err(|rejection| match (rejection.status(), limit) {
                (StatusCode::PAYLOAD_TOO_LARGE, Some(limit)) => ApiError::PayloadTooLarge { limit },
                (StatusCode::PAYLOAD_TOO_LARGE, None) => ApiError::PayloadTooLarge {
                    limit: super::DEFAULT_BODY_LIMIT,
                },
                // A body that ends early or is not valid gzip.
                _ => ApiError::bad_request(
                    None,
                    format!(
                        "the request body could not be read: {}",
                        rejection.body_text()
                    ),
                ),
            })
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// `bytes` as a `T`, or a 400 naming the field at fault ([`crate::json`]).
pub fn parse<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    crate::json::read(bytes).map_err(|fault| match fault {
        JsonFault::Syntax(e) => {
            ApiError::bad_request(None, format!("the body is not valid JSON: {e}"))
        }
        JsonFault::Shape { field, message } => ApiError::bad_request(field, message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
        count: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Batch {
        batch: Vec<Item>,
    }

    fn field_of(body: &str) -> (Option<String>, String) {
        match parse::<Batch>(body.as_bytes()) {
            Err(ApiError::BadRequest { field, message }) => (field, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let (f, m) =
            field_of(r#"{"batch": [{"name": "a", "count": 1}, {"name": "b", "count": "x"}]}"#);
        assert_eq!(f.as_deref(), Some("batch[1].count"));
        assert!(m.starts_with("batch[1].count: invalid type"), "{m}");
        let (f, _) = field_of(r#"{"batch": [{"count": 1}]}"#);
        assert_eq!(f.as_deref(), Some("batch[0].name"));
        let (f, _) = field_of(r#"{"batch": [{"name": "a", "count": 1, "extra": 2}]}"#);
        assert_eq!(f.as_deref(), Some("batch[0].extra"));
        let (f, _) = field_of(r#"{}"#);
        assert_eq!(f.as_deref(), Some("batch"));
        let (f, m) = field_of(r#"{"batch": ["#);
        assert_eq!(f, None);
        assert!(m.starts_with("the body is not valid JSON"), "{m}");
        let (f, m) = field_of(r#"{"batch": []} x"#);
        assert_eq!(f, None);
        assert!(m.contains("trailing characters"), "{m}");
        assert!(parse::<Batch>(br#"{"batch": []}"#).is_ok());
    }
}
