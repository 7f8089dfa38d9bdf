//! One customer seen whole: the 360° view, interactions page by page, a
//! patch under the import's merge rule, the GDPR export and erasure.
//!
//! `herald customer` and the `/v1/customers` routes call these; they parse the
//! customer's id or email once ([`CustomerRef`]) and print or answer what comes
//! back.
//!
//! Erasure removes the customer row, every interaction, entry and delivery of
//! theirs (so figures of past campaigns no longer count them, consistently:
//! sends, opens and clicks alike), and their address from the suppression list,
//! which keeps only the address's erasure mark: a keyed one-way hash
//! ([`crate::customer::erasure_mark`]). Every customer write (`herald import`,
//! and whatever else writes through the store's upsert) compares the hash of
//! each address it writes with the marks and suppresses a returning address
//! again in the same transaction, so the claim and audience checks stay a plain
//! comparison of addresses.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::clock::{Millis, rfc3339};
use crate::customer::{CustomerRecord, CustomerRef, CustomerStatus, Email, parse_timezone};
use crate::import::{merge, nul_path, storable_customer, unchanged};
use crate::store::customers::StoredCustomer;
use crate::store::ingest::LinkedId;
use crate::store::profile::{
    EntryRow, Erased, InteractionFilter, InteractionRow, MessageRow, PageKey, SuppressionRow,
};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("no customer {0}")]
    NotFound(CustomerRef),
    #[error(
        "nothing is held on {0} but its erasure mark (it was erased before); \
         --forget-suppression removes the mark too"
    )]
    OnlyMark(Email),
    /// A patch value the customer row cannot take (the import's checks):
    /// `field` names it (`timezone`, `attributes.address.city`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("bad cursor {0:?}: pass the next_cursor of the previous page back unchanged")]
    BadCursor(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How much of a customer's history the view shows.
#[derive(Debug, Clone, Copy)]
pub struct ViewSize {
    /// The latest interactions of each kind.
    pub per_kind: i64,
    /// The latest messages.
    pub messages: i64,
}

impl Default for ViewSize {
    fn default() -> Self {
        ViewSize {
            per_kind: 5,
            messages: 10,
        }
    }
}

/// The 360° view of one customer.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CustomerView {
    pub customer: StoredCustomer,
    /// On the suppression list: no campaign mails them, whatever the status.
    pub suppressed: bool,
    pub suppressions: Vec<SuppressionRow>,
    /// The latest interactions of each kind, newest first.
    pub latest: Vec<InteractionRow>,
    /// The latest messages, newest first, with opens and clicks.
    pub messages: Vec<MessageRow>,
}

impl CustomerView {
    /// The view's interactions of one section, newest first.
    pub fn section(&self, section: Section) -> impl Iterator<Item = &InteractionRow> {
        self.latest
            .iter()
            .filter(move |i| Section::of(&i.kind) == section)
    }
}

/// How a support agent groups a customer's interactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Purchases,
    Tickets,
    /// Herald's own email events (sent, opened, clicked, bounced,
    /// complained): shown with the messages.
    Email,
    Unsubscribes,
    Other,
}

impl Section {
    pub fn of(kind: &str) -> Section {
        match kind {
            "purchase" | "order" | "order_completed" => Section::Purchases,
            "unsubscribed" => Section::Unsubscribes,
            k if k.starts_with("email_") => Section::Email,
            k if k.contains("ticket") => Section::Tickets,
            _ => Section::Other,
        }
    }
}

/// The customer's view: profile, suppression, latest interactions of each
/// kind, latest messages with opens and clicks.
pub async fn view(
    store: &Store,
    who: &CustomerRef,
    size: ViewSize,
    now: Millis,
) -> Result<CustomerView, ProfileError> {
    let customer = find(store, who).await?;
    let suppressions = store.suppressions_about(&customer.email, now).await?;
    let latest = store
        .latest_interactions(customer.id, size.per_kind)
        .await?;
    let messages = store.messages_of(customer.id, size.messages).await?;
    Ok(CustomerView {
        suppressed: !suppressions.is_empty(),
        customer,
        suppressions,
        latest,
        messages,
    })
}

async fn find(store: &Store, who: &CustomerRef) -> Result<StoredCustomer, ProfileError> {
    store
        .customer_by_ref(who)
        .await?
        .ok_or_else(|| ProfileError::NotFound(who.clone()))
}

/// One page of a customer's interactions, newest first.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct InteractionPage {
    pub interactions: Vec<InteractionRow>,
    /// Pass back as `cursor` for the next page; none after the last.
    pub next_cursor: Option<String>,
}

/// The largest page [`interactions`] returns.
pub const MAX_PAGE: i64 = 1000;

/// A page of the customer's interactions of `filter` after `cursor` (none for
/// the first page). Keyset pagination on `(occurred_at, id)`: each
/// interaction comes once however many are added while paging.
pub async fn interactions(
    store: &Store,
    who: &CustomerRef,
    filter: &InteractionFilter,
    cursor: Option<&str>,
    limit: i64,
) -> Result<InteractionPage, ProfileError> {
    let after = cursor.map(decode_cursor).transpose()?;
    let customer = find(store, who).await?;
    let limit = limit.clamp(1, MAX_PAGE);
    let mut rows = store
        .interactions_page(customer.id, filter, after, limit + 1)
        .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| {
            encode_cursor(PageKey {
                occurred_at: r.occurred_at,
                id: r.id,
            })
        })
    } else {
        None
    };
    Ok(InteractionPage {
        interactions: rows,
        next_cursor,
    })
}

/// `v1.OCCURRED_AT.ID`, base64url: opaque to callers, who only pass it back.
pub fn encode_cursor(key: PageKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1.{}.{}", key.occurred_at, key.id))
}

pub fn decode_cursor(text: &str) -> Result<PageKey, ProfileError> {
    let bad = || ProfileError::BadCursor(text.chars().take(100).collect());
    let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| bad())?;
    let plain = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = plain.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(at), Some(id), None) => Ok(PageKey {
            occurred_at: at.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        }),
        _ => Err(bad()),
    }
}

/// What a patch sets; absent fields keep what is stored. Checked as an
/// import row is: an IANA time zone, no U+0000 anywhere.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerPatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub timezone: Option<String>,
    pub status: Option<CustomerStatus>,
    /// Merged key by key into the stored attributes.
    pub attributes: Map<String, Value>,
}

/// A patch's result.
#[derive(Debug, Clone)]
pub struct Patched {
    pub customer: StoredCustomer,
    pub changed: bool,
    /// `subscribed` was asked for and refused: nothing moves a customer back
    /// to subscribed (the import's rule).
    pub resubscribe_refused: bool,
}

/// Applies a patch under the import's merge rule ([`crate::import::merge`]).
pub async fn patch(
    store: &Store,
    who: &CustomerRef,
    patch: CustomerPatch,
    now: Millis,
) -> Result<Patched, ProfileError> {
    let stored = find(store, who).await?;
    check_patch(&patch)?;
    let resubscribe_refused = patch.status == Some(CustomerStatus::Subscribed)
        && stored.status != CustomerStatus::Subscribed;
    let mut record = CustomerRecord::new(stored.email.clone());
    record.first_name = patch.first_name;
    record.last_name = patch.last_name;
    record.timezone = patch
        .timezone
        .as_deref()
        .map(parse_timezone)
        .transpose()
        .map_err(|e| invalid("timezone", e.to_string()))?;
    record.status = patch.status;
    record.attributes = patch.attributes;
    // check_patch named the field; this is the import's own check, kept as
    // the last word on what the row can take.
    let record = storable_customer(record).map_err(|m| invalid("customer", m))?;
    let write = merge(Some(&stored), record, now);
    if unchanged(&stored, &write) {
        return Ok(Patched {
            customer: stored,
            changed: false,
            resubscribe_refused,
        });
    }
    if !store.update_customer(stored.id, &write).await? {
        return Err(ProfileError::NotFound(who.clone()));
    }
    let customer = find(store, &CustomerRef::Id(stored.id)).await?;
    Ok(Patched {
        customer,
        changed: true,
        resubscribe_refused,
    })
}

fn invalid(field: &str, message: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The patch's values the database cannot store, each named by its field.
fn check_patch(patch: &CustomerPatch) -> Result<(), ProfileError> {
    const NUL: &str = "contains a NUL character (U+0000), which the database cannot store";
    for (field, value) in [
        ("first_name", &patch.first_name),
        ("last_name", &patch.last_name),
        ("timezone", &patch.timezone),
    ] {
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(invalid(field, NUL));
        }
    }
    if let Some(path) = nul_path(&patch.attributes) {
        return Err(invalid(&format!("attributes.{path}"), NUL));
    }
    Ok(())
}

/// Everything Herald holds on one person (GDPR art. 15 and 20).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Export {
    pub format: &'static str,
    #[serde(serialize_with = "rfc3339::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub exported_at: Millis,
    pub email: Email,
    /// None for an address held only on the suppression list.
    pub customer: Option<StoredCustomer>,
    pub suppressions: Vec<SuppressionRow>,
    pub entries: Vec<EntryRow>,
    /// Every message, newest first, with its opens and clicks.
    pub messages: Vec<MessageRow>,
    /// Every interaction, tracking events included, newest first.
    pub interactions: Vec<InteractionRow>,
    /// The ids the API linked to the person (Segment anonymous ids, earlier
    /// user ids).
    pub linked_ids: Vec<LinkedId>,
}

pub const EXPORT_FORMAT: &str = "herald.customer-export.v1";

pub async fn export(store: &Store, who: &CustomerRef, now: Millis) -> Result<Export, ProfileError> {
    let customer = store.customer_by_ref(who).await?;
    let email = match (&customer, who) {
        (Some(c), _) => c.email.clone(),
        (None, CustomerRef::Email(e)) => e.clone(),
        (None, CustomerRef::Id(_)) => return Err(ProfileError::NotFound(who.clone())),
    };
    let suppressions = store.suppressions_about(&email, now).await?;
    let Some(c) = &customer else {
        if suppressions.is_empty() {
            return Err(ProfileError::NotFound(who.clone()));
        }
        return Ok(Export {
            format: EXPORT_FORMAT,
            exported_at: now,
            email,
            customer: None,
            suppressions,
            entries: Vec::new(),
            messages: Vec::new(),
            interactions: Vec::new(),
            linked_ids: Vec::new(),
        });
    };
    let entries = store.entries_of(c.id).await?;
    let messages = store.messages_of(c.id, i64::MAX).await?;
    let interactions = store
        .interactions_page(c.id, &InteractionFilter::default(), None, i64::MAX)
        .await?;
    let linked_ids = store.identities_of(c.id).await?;
    Ok(Export {
        format: EXPORT_FORMAT,
        exported_at: now,
        email,
        customer,
        suppressions,
        entries,
        messages,
        interactions,
        linked_ids,
    })
}

/// Erases the customer (GDPR art. 17) in one transaction; see the module's
/// documentation for what is kept.
pub async fn erase(
    store: &Store,
    who: &CustomerRef,
    forget_suppression: bool,
    now: Millis,
) -> Result<Erased, ProfileError> {
    if let Some(erased) = store.erase_customer(who, forget_suppression, now).await? {
        return Ok(erased);
    }
    if let CustomerRef::Email(e) = who
        && !store.suppressions_about(e, now).await?.is_empty()
    {
        return Err(ProfileError::OnlyMark(e.clone()));
    }
    Err(ProfileError::NotFound(who.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_named() {
        let key = PageKey {
            occurred_at: 1_700_000_000_123,
            id: 42,
        };
        let c = encode_cursor(key);
        assert_eq!(decode_cursor(&c).unwrap(), key);
        for bad in [
            "",
            "x",
            "djEuMS4y.",
            &URL_SAFE_NO_PAD.encode("v2.1.2"),
            &URL_SAFE_NO_PAD.encode("v1.1"),
        ] {
            let e = decode_cursor(bad).unwrap_err();
            assert!(e.to_string().starts_with("bad cursor"), "{bad}: {e}");
        }
    }

    #[test]
    fn sections() {
        assert_eq!(Section::of("purchase"), Section::Purchases);
        assert_eq!(Section::of("support_ticket"), Section::Tickets);
        assert_eq!(Section::of("email_opened"), Section::Email);
        assert_eq!(Section::of("unsubscribed"), Section::Unsubscribes);
        assert_eq!(Section::of("page_view"), Section::Other);
    }
}
