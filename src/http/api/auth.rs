//! Who is calling: the API key from `Authorization`, checked against the
//! stored digest, its scope, and its rate.
//!
//! A key is accepted as HTTP Basic with the key as user name and an empty
//! password (how Segment's libraries send their write key) and as
//! `Authorization: Bearer KEY`. In order, a request is refused with 401 (no
//! key, a wrong key, a revoked key), 403 (a key without the route's scope) or
//! 429 (the key used up `api_rate`); each before the body is read, and none
//! writes anything. An accepted key's `last_used_at` is written at most once a
//! minute per process, beside the request.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::super::AppState;
use super::errors::ApiError;
use crate::api_key::{Offered, Scope};
use crate::clock::Millis;
use crate::quantity::Rate;
use crate::store::Store;
use crate::store::api_keys::ApiKey;

/// How often a key's `last_used_at` is written at most.
const TOUCH_EVERY: Millis = 60_000;

/// The API's per-process access state: the per-key rate limiter and when
/// each key's use was last written.
pub struct Access {
    limiter: DefaultKeyedRateLimiter<i64>,
    rate: Rate,
    touched: Mutex<HashMap<i64, Millis>>,
}

impl Access {
    /// `rate` requests per key, in bursts of up to `rate.count`.
    pub fn new(rate: Rate) -> Access {
        let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
        let period = rate.per.as_duration() / count.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(count))
            .allow_burst(count);
        Access {
            limiter: RateLimiter::keyed(quota),
            rate,
            touched: Mutex::default(),
        }
    }

    fn check_rate(&self, key: i64) -> Result<(), ApiError> {
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                rate: self.rate.to_string(),
                retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// Writes `last_used_at` unless this process did within [`TOUCH_EVERY`];
    /// the request does not wait for it.
    fn touch(&self, store: &Store, key: i64, now: Millis) {
        {
            let Ok(mut touched) = self.touched.lock() else {
                return;
            };
            if touched.get(&key).is_some_and(|t| now - t < TOUCH_EVERY) {
                return;
            }
            touched.insert(key, now);
        }
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(key, now).await {
                tracing::warn!(error = %e, "could not note an API key's use");
            }
        });
    }
}

/// What a route needs of the caller's key.
pub trait Needs: Send + Sync {
    /// `None`: any valid key.
    const SCOPE: Option<Scope>;
}

/// Any valid key.
pub struct AnyKey;
/// A key that may send events and profile updates.
#[allow(dead_code, reason = "for the Segment routes (issue 18, item 3)")]
pub struct Ingest;
/// A key that may read customers.
pub struct Read;
/// A key that may do everything, including managing keys.
pub struct Admin;

impl Needs for AnyKey {
    const SCOPE: Option<Scope> = None;
}
impl Needs for Ingest {
    const SCOPE: Option<Scope> = Some(Scope::Ingest);
}
impl Needs for Read {
    const SCOPE: Option<Scope> = Some(Scope::Read);
}
impl Needs for Admin {
    const SCOPE: Option<Scope> = Some(Scope::Admin);
}

/// The authenticated caller of a route that needs `N`. As an extractor it
/// comes before the body, so a refused request has its body left unread.
pub struct Caller<N: Needs> {
    pub key: ApiKey,
    needs: PhantomData<N>,
}

impl<N: Needs> FromRequestParts<AppState> for Caller<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let key = authenticate(&app.store, &parts.headers).await?;
        tracing::Span::current().record("key", key.name.as_str());
        if let Some(needed) = N::SCOPE
            && !key.scope.grants(needed)
        {
            return Err(ApiError::Forbidden(format!(
                "API key {} has scope {}; this route needs {needed}",
                key.name, key.scope
            )));
        }
        app.access.check_rate(key.id)?;
        app.access.touch(&app.store, key.id, app.clock.now());
        Ok(Caller {
            key,
            needs: PhantomData,
        })
    }
}

const MISSING: &str = "an API key is required: send it as the HTTP Basic user name with an empty password, or as Authorization: Bearer KEY";
const SCHEME: &str = "the Authorization header must be Basic (the API key as user name, empty password) or Bearer KEY";
const PASSWORD: &str = "send the API key as the HTTP Basic user name with an empty password";
const WRONG: &str = "the API key is not valid";
const REVOKED: &str = "the API key was revoked";

/// The key the headers offer, as sent.
fn offered_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(MISSING))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized(SCHEME))?
        .trim();
    let (scheme, credentials) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthorized(SCHEME))?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(credentials.to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::Unauthorized(SCHEME));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(ApiError::Unauthorized(SCHEME))?;
    match decoded.split_once(':') {
        Some((user, "")) => Ok(user.to_string()),
        Some(_) => Err(ApiError::Unauthorized(PASSWORD)),
        None => Err(ApiError::Unauthorized(SCHEME)),
    }
}

/// The stored key the request offers, or 401.
async fn authenticate(store: &Store, headers: &HeaderMap) -> Result<ApiKey, ApiError> {
    let offered = offered_key(headers)?;
    if offered.is_empty() {
        return Err(ApiError::Unauthorized(MISSING));
    }
    // A key not in the shape of one is wrong without asking the database.
    let offered = Offered::parse(&offered).ok_or(ApiError::Unauthorized(WRONG))?;
    let stored = store
        .api_key_by_prefix(offered.prefix)
        .await?
        .filter(|s| s.digest.matches(&offered.digest))
        .ok_or(ApiError::Unauthorized(WRONG))?;
    if stored.key.revoked_at.is_some() {
        return Err(ApiError::Unauthorized(REVOKED));
    }
    Ok(stored.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn keys_come_as_basic_user_or_bearer() {
        assert_eq!(offered_key(&with("Bearer hk_x")).unwrap(), "hk_x");
        assert_eq!(offered_key(&with("bearer  hk_x ")).unwrap(), "hk_x");
        assert_eq!(offered_key(&with(&basic("hk_x:"))).unwrap(), "hk_x");
        assert_eq!(offered_key(&with(&basic(":"))).unwrap(), "");
        let refused = |h: HeaderMap| match offered_key(&h) {
            Err(ApiError::Unauthorized(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(HeaderMap::new()), MISSING);
        assert_eq!(refused(with(&basic("hk_x:secret"))), PASSWORD);
        assert_eq!(refused(with(&basic("hk_x"))), SCHEME);
        assert_eq!(refused(with("Basic !!!")), SCHEME);
        assert_eq!(refused(with("Digest hk_x")), SCHEME);
        assert_eq!(refused(with("hk_x")), SCHEME);
    }
}
