//! `/v1/customers`: one customer seen whole, their interactions page by page,
//! a patch under the import's merge rule, the GDPR export and erasure: the
//! same operations as `herald customer`, over [`crate::profile`].
//!
//! Every route names the customer by id (digits) or email address, as the
//! path's last segment, percent-encoded as URLs need (`%40` for `@`, `%2B` for
//! `+`, though a bare `+` in a path is a plus too). A segment that is neither,
//! or names no customer, is 404.
//!
//! | route | scope | answer |
//! |---|---|---|
//! | `GET /v1/customers/{id_or_email}` | read | the 360° view: profile, suppression, latest interactions of each kind, latest messages with opens and clicks |
//! | `GET /v1/customers/{id_or_email}/interactions?kind=&since=&cursor=&limit=` | read | a page of interactions, newest first, and the `next_cursor` to pass back |
//! | `PATCH /v1/customers/{id_or_email}` `{"first_name", "last_name", "timezone", "status", "attributes"}` | admin | the customer after the patch; `resubscribe_refused` when `subscribed` was asked for and refused |
//! | `GET /v1/customers/{id_or_email}/export` | admin | everything held on the person, as `herald customer export` writes it |
//! | `DELETE /v1/customers/{id_or_email}?forget_suppression=true` | admin | what was erased; 410 when only the erasure mark of an earlier erasure is held |
//!
//! Why these scopes: `ingest` keys are write keys that websites and apps
//! embed (as Segment's are), so they must neither read a profile nor change
//! one by name; a patch answers with the profile, so it needs `read` and a
//! write, which only `admin` has. The export holds everything, messages and
//! every interaction included, and erasure cannot be undone: both are an
//! operator's acts (GDPR requests), logged with the key that did them.

use axum::Json;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

use super::auth::{Admin, Caller, Read};
use super::errors::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::openapi::{Gone, NotFound, Refusals, WithBody};
use super::{AppState, EVENT_LIMIT, limited};
use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::customer::{CustomerRef, CustomerStatus};
use crate::profile::{
    self, CustomerPatch, CustomerView, Export, InteractionPage, MAX_PAGE, ProfileError, ViewSize,
};
use crate::store::customers::StoredCustomer;
use crate::store::profile::InteractionFilter;

/// Interactions on a page when the request does not say.
const DEFAULT_PAGE: i64 = 100;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(view, patch, erase).map(|r| limited(r, EVENT_LIMIT)))
        .routes(routes!(interactions))
        .routes(routes!(export))
}

/// The customer a path names, by id or email.
struct Who(CustomerRef);

impl FromRequestParts<AppState> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Who, ApiError> {
        // Not UTF-8 once percent-decoded: it names no customer either.
        let Path(text) = Path::<String>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::NotFound(format!("no such customer: {}", e.body_text())))?;
        text.parse().map(Who).map_err(|_| {
            ApiError::NotFound(format!(
                "no customer {text:?}: name a customer by their id (digits) or email address"
            ))
        })
    }
}

impl From<ProfileError> for ApiError {
    fn from(e: ProfileError) -> ApiError {
        match e {
            ProfileError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ProfileError::OnlyMark(email) => ApiError::Gone(format!(
                "{email} was erased: nothing is held on them but a one-way hash of the \
                 address on the suppression list; forget_suppression=true removes it"
            )),
            ProfileError::BadCursor(_) => {
                ApiError::bad_request(Some("cursor".into()), format!("cursor: {e}"))
            }
            ProfileError::Invalid { field, message } => ApiError::Unprocessable {
                message: format!("{field}: {message}"),
                field,
            },
            ProfileError::Store(e) => ApiError::Unavailable(e),
        }
    }
}

/// The customer's id (digits) or email address.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "describes the path to the API document; Who reads it"
)]
struct CustomerParam {
    /// The customer's id (digits) or email address, percent-encoded.
    #[param(example = "ada@example.com")]
    id_or_email: String,
}

/// The 360° view of one customer
///
/// Profile, attributes, status, suppression, the latest interactions of each
/// kind (five), the latest messages (ten) with their status, opens and
/// clicks. Scope: read.
#[utoipa::path(
    get,
    path = "/customers/{id_or_email}",
    tag = "customers",
    params(CustomerParam),
    responses(
        (status = 200, description = "The customer seen whole", body = CustomerView),
        NotFound,
        Refusals,
    ),
)]
async fn view(
    _: Caller<Read>,
    State(app): State<AppState>,
    Who(who): Who,
) -> Result<Json<CustomerView>, ApiError> {
    let view = profile::view(&app.store, &who, ViewSize::default(), app.clock.now()).await?;
    Ok(Json(view))
}

/// What a patch may set. Absent (or null) fields keep what is stored;
/// attributes are merged key by key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    /// An IANA time zone name (`Europe/Berlin`).
    #[serde(default)]
    #[schema(example = "Europe/Berlin")]
    timezone: Option<String>,
    /// `subscribed` is refused for a customer who is not (the import's rule:
    /// unsubscribes, bounces and complaints are final); the answer says so.
    #[serde(default)]
    status: Option<CustomerStatus>,
    /// Merged into the stored attributes key by key.
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

/// A patch's answer.
#[derive(Debug, Serialize, ToSchema)]
struct PatchAnswer {
    customer: StoredCustomer,
    /// Whether anything was written (a patch that changes nothing keeps
    /// `updated_at`).
    changed: bool,
    /// `subscribed` was asked for and refused: the status stays as it was.
    resubscribe_refused: bool,
    /// Why something asked for was not done.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = String)]
    note: Option<String>,
}

/// Sets profile fields and merges attributes
///
/// Under the import's rule: absent fields keep what is stored, attributes
/// merge key by key, and no patch moves a customer back to `subscribed`
/// (the answer says when it refused). Scope: admin.
#[utoipa::path(
    patch,
    path = "/customers/{id_or_email}",
    tag = "customers",
    params(CustomerParam),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The customer after the patch", body = PatchAnswer),
        (status = 422, description = "A value the profile cannot take (an unknown time zone, a NUL character); `field` names it", body = ErrorBody),
        NotFound,
        WithBody,
        Refusals,
    ),
)]
async fn patch(
    caller: Caller<Admin>,
    State(app): State<AppState>,
    Who(who): Who,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Json<PatchAnswer>, ApiError> {
    let asked = CustomerPatch {
        first_name: body.first_name,
        last_name: body.last_name,
        timezone: body.timezone,
        status: body.status,
        attributes: body.attributes.unwrap_or_default(),
    };
    let patched = profile::patch(&app.store, &who, asked, app.clock.now()).await?;
    if patched.changed {
        tracing::info!(customer = patched.customer.id, by = %caller.key.name, "customer patched");
    }
    let note = patched.resubscribe_refused.then(|| {
        format!(
            "status stays {}: nothing moves a customer back to subscribed",
            patched.customer.status
        )
    });
    Ok(Json(PatchAnswer {
        customer: patched.customer,
        changed: patched.changed,
        resubscribe_refused: patched.resubscribe_refused,
        note,
    }))
}

/// Which interactions, and where the page starts. An empty `kind` or
/// `cursor` is the same as none.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "describes the query to the API document; page_query reads it"
)]
struct PageParams {
    /// Only interactions of this kind (`purchase`, `email_opened`, …).
    kind: Option<String>,
    /// Only interactions at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// The `next_cursor` of the previous page, unchanged.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
    /// Interactions on the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// What a page request asks for.
struct PageQuery {
    filter: InteractionFilter,
    cursor: Option<String>,
    limit: i64,
}

/// The query string as [`PageParams`] describes it, each bad value a 400
/// naming its parameter.
fn page_query(raw: Option<&str>) -> Result<PageQuery, ApiError> {
    let mut query = PageQuery {
        filter: InteractionFilter::default(),
        cursor: None,
        limit: DEFAULT_PAGE,
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let bad = |message: String| ApiError::bad_request(Some(name.to_string()), message);
        if seen.iter().any(|s| *s == name) {
            return Err(bad(format!("{name}: given twice")));
        }
        seen.push(name.to_string());
        // An empty kind or cursor is none (forms send `?kind=&cursor=`); an
        // empty time or number is not one.
        if value.is_empty() && matches!(&*name, "kind" | "cursor") {
            continue;
        }
        match &*name {
            "kind" => {
                if value.contains('\0') {
                    return Err(bad("kind: contains a NUL character (U+0000)".into()));
                }
                query.filter.kind = Some(value.into_owned());
            }
            "since" => {
                let since = parse_rfc3339(&value).ok_or_else(|| {
                    bad(format!(
                        "since: {value:?} is not an RFC 3339 time such as 2026-11-02T10:00:00Z"
                    ))
                })?;
                query.filter.since = Some(since);
            }
            "cursor" => query.cursor = Some(value.into_owned()),
            "limit" => {
                query.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "limit: {value:?} is not a whole number from 1 to {MAX_PAGE}"
                        ))
                    })?;
            }
            _ => {
                return Err(bad(format!(
                    "{name}: unknown parameter; expected kind, since, cursor or limit"
                )));
            }
        }
    }
    Ok(query)
}

/// The customer's interactions, newest first, a page at a time
///
/// Pass each page's `next_cursor` back as `cursor` (with the same `kind` and
/// `since`) for the next; the last page has none. Each interaction comes
/// once however many are added while paging. Scope: read.
#[utoipa::path(
    get,
    path = "/customers/{id_or_email}/interactions",
    tag = "customers",
    params(CustomerParam, PageParams),
    responses(
        (status = 200, description = "A page of interactions", body = InteractionPage),
        (status = 400, description = "A query parameter that cannot be read (a forged cursor, a limit out of range); `field` names it", body = ErrorBody),
        NotFound,
        Refusals,
    ),
)]
async fn interactions(
    _: Caller<Read>,
    State(app): State<AppState>,
    Who(who): Who,
    RawQuery(raw): RawQuery,
) -> Result<Json<InteractionPage>, ApiError> {
    let q = page_query(raw.as_deref())?;
    let page =
        profile::interactions(&app.store, &who, &q.filter, q.cursor.as_deref(), q.limit).await?;
    Ok(Json(page))
}

/// Everything Herald holds on the person, as one JSON document
///
/// GDPR access and portability: the profile, the suppression entries about
/// the address, campaign entries, every message and every interaction; for
/// an address erased before, only its erasure mark. Scope: admin.
#[utoipa::path(
    get,
    path = "/customers/{id_or_email}/export",
    tag = "customers",
    params(CustomerParam),
    responses(
        (status = 200, description = "Everything held on the person", body = Export),
        NotFound,
        Refusals,
    ),
)]
async fn export(
    caller: Caller<Admin>,
    State(app): State<AppState>,
    Who(who): Who,
) -> Result<Json<Export>, ApiError> {
    let export = profile::export(&app.store, &who, app.clock.now()).await?;
    tracing::info!(customer = ?export.customer.as_ref().map(|c| c.id), by = %caller.key.name, "customer exported");
    Ok(Json(export))
}

/// `forget_suppression`: whether to remove the erasure mark too.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "describes the query to the API document; erase reads it"
)]
struct EraseParams {
    /// Remove the address's one-way hash from the suppression list too, so a
    /// later import or identify of the address may be mailed (default false).
    forget_suppression: Option<bool>,
}

/// What an erasure removed, and what it kept.
#[derive(Debug, Serialize, ToSchema)]
struct ErasedAnswer {
    /// The customer removed; none when only suppression entries were.
    customer_id: Option<i64>,
    interactions: u64,
    /// Messages (deliveries) removed.
    messages: u64,
    /// Campaign entries removed.
    entries: u64,
    /// Suppression rows removed: the address itself, and the erasure mark
    /// when it was forgotten.
    suppressions: u64,
    /// Whether a one-way hash of the address stays on the suppression list,
    /// so that a later import or identify cannot mail them again.
    mark_kept: bool,
    #[schema(format = DateTime)]
    erased_at: String,
}

fn forget_suppression(raw: Option<&str>) -> Result<bool, ApiError> {
    let mut forget = None;
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let bad = |message: String| ApiError::bad_request(Some(name.to_string()), message);
        if name != "forget_suppression" {
            return Err(bad(format!(
                "{name}: unknown parameter; expected forget_suppression"
            )));
        }
        if forget.is_some() {
            return Err(bad(format!("{name}: given twice")));
        }
        forget = Some(match &*value {
            "true" => true,
            "false" => false,
            _ => return Err(bad(format!("{name}: {value:?} is neither true nor false"))),
        });
    }
    Ok(forget.unwrap_or(false))
}

/// Erases the customer (GDPR erasure)
///
/// Their profile, interactions, campaign entries and messages go in one
/// transaction. Only a one-way hash of the address stays on the suppression
/// list, so a later import or identify never mails them;
/// `forget_suppression=true` removes that too. Cannot be undone. Scope:
/// admin.
#[utoipa::path(
    delete,
    path = "/customers/{id_or_email}",
    tag = "customers",
    params(CustomerParam, EraseParams),
    responses(
        (status = 200, description = "What was erased", body = ErasedAnswer),
        (status = 400, description = "forget_suppression is neither true nor false, or an unknown parameter", body = ErrorBody),
        NotFound,
        Gone,
        Refusals,
    ),
)]
async fn erase(
    caller: Caller<Admin>,
    State(app): State<AppState>,
    Who(who): Who,
    RawQuery(raw): RawQuery,
) -> Result<Json<ErasedAnswer>, ApiError> {
    let forget = forget_suppression(raw.as_deref())?;
    let now = app.clock.now();
    let e = profile::erase(&app.store, &who, forget, now).await?;
    tracing::info!(customer = ?e.customer_id, forget_suppression = forget, by = %caller.key.name, "customer erased");
    Ok(Json(ErasedAnswer {
        customer_id: e.customer_id,
        interactions: e.interactions,
        messages: e.deliveries,
        entries: e.entries,
        suppressions: e.suppressions,
        mark_kept: e.mark_kept,
        erased_at: format_rfc3339(now),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(raw: &str) -> Option<String> {
        match page_query(Some(raw)) {
            Err(ApiError::BadRequest { field, .. }) => field,
            Err(other) => panic!("{other:?}"),
            Ok(_) => None,
        }
    }

    #[test]
    fn page_queries_name_the_bad_parameter() {
        let q = page_query(Some(
            "kind=purchase&since=2026-11-02T10:00:00Z&limit=5&cursor=abc",
        ))
        .unwrap();
        assert_eq!(q.filter.kind.as_deref(), Some("purchase"));
        assert_eq!(q.filter.since, parse_rfc3339("2026-11-02T10:00:00Z"));
        assert_eq!((q.limit, q.cursor.as_deref()), (5, Some("abc")));
        assert_eq!(page_query(None).unwrap().limit, DEFAULT_PAGE);
        let empty = page_query(Some("kind=&cursor=")).unwrap();
        assert_eq!(
            (empty.filter, empty.cursor),
            (InteractionFilter::default(), None)
        );
        for (raw, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("since=yesterday", "since"),
            ("since=", "since"),
            ("limit=", "limit"),
            ("kind=a%00b", "kind"),
            ("kind=a&kind=b", "kind"),
            ("curser=x", "curser"),
        ] {
            assert_eq!(field_of(raw).as_deref(), Some(field), "{raw}");
        }
    }

    #[test]
    fn forget_suppression_is_true_or_false() {
        assert!(!forget_suppression(None).unwrap());
        assert!(forget_suppression(Some("forget_suppression=true")).unwrap());
        assert!(!forget_suppression(Some("forget_suppression=false")).unwrap());
        for raw in [
            "forget_suppression=yes",
            "forget=true",
            "forget_suppression=true&forget_suppression=true",
        ] {
            assert!(forget_suppression(Some(raw)).is_err(), "{raw}");
        }
    }
}
