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
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

use super::auth::{Admin, AnyKey, Caller};
use super::errors::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::openapi::{NotFound, Refusals, WithBody};
use super::{AppState, limited};
use crate::api_key::{KeyName, Scope};
use crate::clock::format_rfc3339;
use crate::store::api_keys::{ApiKey, Created};

/// Largest body of `POST /v1/keys`.
const NEW_KEY_LIMIT: usize = 1024;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(current))
        .routes(routes!(list, create).map(|r| limited(r, NEW_KEY_LIMIT)))
        .routes(routes!(revoke))
}

/// A key as the API shows it: never its secret or digest.
#[derive(Debug, Serialize, ToSchema)]
struct KeyView {
    name: String,
    scope: Scope,
    /// The key's public part: `hk_<prefix>_…`.
    prefix: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
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

/// The calling key
///
/// Any scope.
#[utoipa::path(
    get,
    path = "/keys/current",
    tag = "keys",
    responses((status = 200, description = "The calling key", body = KeyView), Refusals),
)]
async fn current(caller: Caller<AnyKey>) -> Json<KeyView> {
    Json(caller.key.into())
}

#[derive(Serialize, ToSchema)]
struct KeyList {
    keys: Vec<KeyView>,
}

/// Every key, revoked ones too
///
/// Scope: admin.
#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    responses((status = 200, description = "Every key", body = KeyList), Refusals),
)]
async fn list(_: Caller<Admin>, State(app): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let keys = app.store.api_keys().await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    /// 1 to 64 letters, digits, `.`, `-` or `_`, starting with a letter or digit.
    #[schema(example = "shop-web", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    name: String,
    scope: Scope,
}

#[derive(Serialize, ToSchema)]
struct CreatedKey {
    #[serde(flatten)]
    view: KeyView,
    /// The whole key: shown in this answer only.
    key: String,
}

/// Creates a key
///
/// Its secret is in this answer only. Scope: admin.
#[utoipa::path(
    post,
    path = "/keys",
    tag = "keys",
    request_body = NewKey,
    responses(
        (status = 201, description = "The new key, with its secret (shown once)", body = CreatedKey),
        (status = 409, description = "An active key has that name", body = ErrorBody),
        (status = 422, description = "Not a valid key name", body = ErrorBody),
        WithBody,
        Refusals,
    ),
)]
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

/// The key's name.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "describes the path to the API document")]
struct KeyParam {
    name: String,
}

/// Revokes a key
///
/// It is refused from now on. Scope: admin.
#[utoipa::path(
    delete,
    path = "/keys/{name}",
    tag = "keys",
    params(KeyParam),
    responses((status = 200, description = "The revoked key", body = KeyView), NotFound, Refusals),
)]
async fn revoke(
    caller: Caller<Admin>,
    State(app): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<KeyView>, ApiError> {
    // A name that is not UTF-8 once percent-decoded names no key.
    let Path(name) =
        path.map_err(|e| ApiError::NotFound(format!("no such API key: {}", e.body_text())))?;
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
