//! `/v1/keys`: the calling key (any scope), and key management (admin): the
//! same operations as `herald api-key`, over the same store.
//!
//! | route | scope | answer |
//! |---|---|---|
//! | `GET /v1/keys/current` | any | the calling key |
//! | `GET /v1/keys` | admin | every key, revoked ones too |
//! | `POST /v1/keys` `{"name", "scope"}` | admin | 201, the key with its secret, shown once; 409 when the name is in use |
//! | `DELETE /v1/keys/{name}` | admin | the revoked key; 404 when no key of that name is active |

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, AnyKey, Caller};
use super::errors::ApiError;
use super::json::ApiJson;
use super::{AppState, Router, limited};
use crate::api_key::{KeyName, Scope};
use crate::clock::format_rfc3339;
use crate::store::api_keys::{ApiKey, Created};

/// Largest body of `POST /v1/keys`.
const NEW_KEY_LIMIT: usize = 1024;

pub(super) fn routes() -> Router {
    Router::new()
        .route("/keys/current", get(current))
        .route("/keys", limited(get(list).post(create), NEW_KEY_LIMIT))
        .route("/keys/{name}", delete(revoke))
}

/// A key as the API shows it: never its secret or digest.
#[derive(Debug, Serialize)]
struct KeyView {
    name: String,
    scope: Scope,
    /// The key's public part: `hk_<prefix>_…`.
    prefix: String,
    created_at: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> KeyView {
        KeyView {
            name: k.name,
            scope: k.scope,
            prefix: k.prefix,
            created_at: format_rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(format_rfc3339),
            revoked_at: k.revoked_at.map(format_rfc3339),
        }
    }
}

async fn current(caller: Caller<AnyKey>) -> Json<KeyView> {
    Json(caller.key.into())
}

#[derive(Serialize)]
struct KeyList {
    keys: Vec<KeyView>,
}

async fn list(_: Caller<Admin>, State(app): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let keys = app.store.api_keys().await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    scope: Scope,
}

#[derive(Serialize)]
struct CreatedKey {
    #[serde(flatten)]
    view: KeyView,
    /// The whole key: shown in this answer only.
    key: String,
}

async fn create(
    caller: Caller<Admin>,
    State(app): State<AppState>,
    ApiJson(new): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let name = KeyName::parse(&new.name).map_err(|e| ApiError::Unprocessable {
        field: "name".into(),
        message: format!("name: {e}"),
    })?;
    match app
        .store
        .create_api_key(&name, new.scope, app.clock.now())
        .await?
    {
        Created::New(key, plain) => {
            tracing::info!(name = %key.name, scope = %key.scope, by = %caller.key.name, "API key created");
            Ok((
                StatusCode::CREATED,
                Json(CreatedKey {
                    view: key.into(),
                    key: plain.expose().to_string(),
                }),
            ))
        }
        Created::NameTaken => Err(ApiError::Conflict(format!(
            "an API key named {name} exists; revoke it first or choose another name"
        ))),
    }
}

async fn revoke(
    caller: Caller<Admin>,
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    match app.store.revoke_api_key(&name, app.clock.now()).await? {
        Some(key) => {
            tracing::info!(name = %key.name, by = %caller.key.name, "API key revoked");
            Ok(Json(key.into()))
        }
        None => Err(ApiError::NotFound(format!(
            "no active API key named {name:?}"
        ))),
    }
}
