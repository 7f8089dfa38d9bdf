//! Customers and interactions as plain domain values, validated once at the edge.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::clock::Millis;

/// A normalised email address: trimmed, domain in lower case, local part as given.
///
/// An `Email` that exists has passed [`Email::parse`] (when it was stored, for
/// one read back from the database).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// Why a value could not become a customer field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("invalid email {0:?}")]
    Email(String),
    #[error("invalid status {0:?}: expected subscribed, unsubscribed, bounced or complained")]
    Status(String),
    #[error("unknown time zone {0:?}: expected an IANA name such as Europe/Berlin")]
    Timezone(String),
    #[error("{0:?} is neither a customer id (digits) nor an email address")]
    CustomerRef(String),
}

impl Email {
    pub fn parse(raw: &str) -> Result<Email, FieldError> {
        let bad = || FieldError::Email(raw.to_string());
        let text = raw.trim();
        let (local, domain) = text.rsplit_once('@').ok_or_else(bad)?;
        // Checked as stored, so that a stored address parses again: lower case
        // can change a domain's letters (`İ` → `i` + U+0307) and its length.
        let domain = domain.to_lowercase();
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"<>()[]\\,;:@\"".contains(c));
        let domain_ok = domain.len() <= 253
            && domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return Err(bad());
        }
        Ok(Email(format!("{local}@{domain}")))
    }

    /// An address the store wrote through [`Email::parse`], read back
    /// without checking it again. Only the store calls this; everything else
    /// builds an `Email` with `parse`.
    pub fn from_store(stored: String) -> Email {
        Email(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Email {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl utoipa::PartialSchema for Email {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Email,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Email {}

/// The suppression-list entry that stands for an erased address: a keyed
/// one-way hash (HMAC-SHA-256 under the database's own `erasure` key) of the
/// normalised address, `erased:` and 64 hex digits. It contains no `@`, so it
/// never equals a stored address; the store compares it with the hash of every
/// address it writes, so an erased address that comes back is suppressed again.
pub fn erasure_mark(key: &str, email: &Email) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(email.as_str().as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut mark = String::with_capacity(7 + 64);
    mark.push_str("erased:");
    for b in digest {
        mark.push_str(&format!("{b:02x}"));
    }
    mark
}

/// A customer named on the command line or in a URL: their id (all digits) or
/// their email address. Parsed once, at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CustomerRef {
    Id(i64),
    Email(Email),
}

impl FromStr for CustomerRef {
    type Err = FieldError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t
                .parse()
                .map(CustomerRef::Id)
                .map_err(|_| FieldError::CustomerRef(text.to_string()));
        }
        Email::parse(t)
            .map(CustomerRef::Email)
            .map_err(|_| FieldError::CustomerRef(text.to_string()))
    }
}

impl fmt::Display for CustomerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomerRef::Id(id) => write!(f, "id {id}"),
            CustomerRef::Email(e) => write!(f, "{e}"),
        }
    }
}

/// Whether Herald may email a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustomerStatus {
    Subscribed,
    Unsubscribed,
    Bounced,
    Complained,
}

impl CustomerStatus {
    pub const ALL: [CustomerStatus; 4] = [
        CustomerStatus::Subscribed,
        CustomerStatus::Unsubscribed,
        CustomerStatus::Bounced,
        CustomerStatus::Complained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CustomerStatus::Subscribed => "subscribed",
            CustomerStatus::Unsubscribed => "unsubscribed",
            CustomerStatus::Bounced => "bounced",
            CustomerStatus::Complained => "complained",
        }
    }
}

impl serde::Serialize for CustomerStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Exactly one of the text forms (the API's; files are read with [`FromStr`],
/// which forgives case and spaces).
impl<'de> serde::Deserialize<'de> for CustomerStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        CustomerStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| serde::de::Error::custom(FieldError::Status(text)))
    }
}

impl utoipa::PartialSchema for CustomerStatus {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(CustomerStatus::ALL.map(CustomerStatus::as_str)))
            .into()
    }
}

impl utoipa::ToSchema for CustomerStatus {}

impl fmt::Display for CustomerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CustomerStatus {
    type Err = FieldError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CustomerStatus::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| FieldError::Status(text.to_string()))
    }
}

/// An IANA time zone name that chrono-tz knows.
pub fn parse_timezone(text: &str) -> Result<String, FieldError> {
    let name = text.trim();
    chrono_tz::Tz::from_str(name)
        .map(|tz| tz.name().to_string())
        .map_err(|_| FieldError::Timezone(text.to_string()))
}

/// A customer as it arrives from an import or the seeder.
///
/// `None` means "not given": an upsert keeps what is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRecord {
    pub email: Email,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub status: Option<CustomerStatus>,
    pub timezone: Option<String>,
    pub created_at: Option<Millis>,
    pub attributes: Map<String, Value>,
}

impl CustomerRecord {
    pub fn new(email: Email) -> Self {
        CustomerRecord {
            email,
            external_id: None,
            first_name: None,
            last_name: None,
            status: None,
            timezone: None,
            created_at: None,
            attributes: Map::new(),
        }
    }
}

/// Who an imported interaction belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CustomerKey {
    Email(Email),
    ExternalId(String),
}

impl fmt::Display for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomerKey::Email(e) => write!(f, "email {e}"),
            CustomerKey::ExternalId(id) => write!(f, "external_id {id:?}"),
        }
    }
}

/// An interaction as it arrives from an import.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractionRecord {
    pub customer: CustomerKey,
    pub kind: String,
    pub occurred_at: Millis,
    /// The source system's id for this event; re-importing it changes nothing.
    pub external_id: Option<String>,
    pub data: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_email() {
        let e = Email::parse("  Jane.Doe@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Jane.Doe@example.com");
        assert_eq!(e.domain(), "example.com");
        assert_eq!(
            Email::parse("ünïcode@bücher.de").unwrap().as_str(),
            "ünïcode@bücher.de"
        );
    }

    #[test]
    fn a_normalised_email_parses_to_itself() {
        // Found by the import fuzz targets' check: the domain was checked before
        // lower-casing, so `İ` (→ `i` + U+0307, not a letter) and labels that
        // grow past 63 bytes were stored as addresses that never parsed again.
        for raw in [
            "ann@İstanbul.example",
            &format!("a@{}.example", "Ⱥ".repeat(31)),
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} accepted");
        }
        let e = Email::parse("Ann@ÄPFEL.Example").unwrap();
        assert_eq!(e.as_str(), "Ann@äpfel.example");
        assert_eq!(Email::parse(e.as_str()), Ok(e));
    }

    #[test]
    fn rejects_bad_email() {
        for bad in [
            "",
            "plain",
            "@x.com",
            "a@",
            "a@b",
            "a b@x.com",
            "a@x..com",
            "a@-x.com",
            ".a@x.com",
            "a@x.com,b@y.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn customer_refs_are_ids_or_emails() {
        assert_eq!("42".parse::<CustomerRef>(), Ok(CustomerRef::Id(42)));
        assert_eq!(
            " Ann@X.COM ".parse::<CustomerRef>(),
            Ok(CustomerRef::Email(Email::parse("Ann@x.com").unwrap()))
        );
        for bad in ["", "ann", "99999999999999999999999", "-3"] {
            let e = bad.parse::<CustomerRef>().unwrap_err();
            assert!(e.to_string().contains("neither a customer id"), "{e}");
        }
    }

    #[test]
    fn erasure_marks_are_keyed_and_stable() {
        let a = Email::parse("ann@x.com").unwrap();
        let m = erasure_mark("k1", &a);
        assert!(m.starts_with("erased:") && m.len() == 7 + 64, "{m}");
        assert!(!m.contains('@'));
        assert_eq!(m, erasure_mark("k1", &Email::parse(" ann@X.com").unwrap()));
        assert_ne!(m, erasure_mark("k2", &a));
        assert_ne!(m, erasure_mark("k1", &Email::parse("Ann@x.com").unwrap()));
    }

    #[test]
    fn statuses_and_zones() {
        assert_eq!(
            "Unsubscribed".parse::<CustomerStatus>().unwrap(),
            CustomerStatus::Unsubscribed
        );
        assert!("gone".parse::<CustomerStatus>().is_err());
        assert_eq!(parse_timezone("Europe/Berlin").unwrap(), "Europe/Berlin");
        assert!(parse_timezone("Mars/Olympus").is_err());
    }
}
