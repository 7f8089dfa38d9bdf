//! Segment's HTTP Tracking API, as it arrives: one call (`identify`, `track`,
//! `page`, `screen`, `group`, `alias`) read into an [`Event`], or the reason
//! it cannot be one, naming the field.
//!
//! The rules, from Segment's spec and what its client libraries send:
//! * every call names someone: `userId`, `anonymousId`, or both (a string, or
//!   a number, which is kept as its decimal text; `null` or left out for
//!   none, never empty); `alias` needs `userId` and `previousId`;
//! * `timestamp` is when it happened on the client. When the call also says
//!   when it was sent (`sentAt`, on the call or on its batch), the client's
//!   clock is corrected against the receive time:
//!   `timestamp = received + (timestamp - sentAt)`. Without `timestamp`, the
//!   event happened when it was received;
//! * `messageId` is the event's id: a retried call adds nothing. A call
//!   without one is stored once per time it is sent;
//! * fields the spec has and Herald does not use (`integrations`, `version`,
//!   `channel`, `writeKey`, `_metadata`, …) are accepted and ignored, as
//!   Segment does, so that a client library's extra fields never fail a call;
//!   `context` is read for `context.timezone` only;
//! * identify traits: `email`, `firstName`/`first_name`, `lastName`/
//!   `last_name`, `timezone` and `status` become the customer's fields (under
//!   `herald import`'s rules); every other trait is an attribute;
//! * track → kind `event`; page → `page_view`, screen → `screen_view` (with
//!   `name` and `category` beside the properties); group → `group`, with
//!   `group_id` and `traits`.
//!
//! Strings holding NUL are refused (PostgreSQL cannot store them), as in
//! `herald import`.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::clock::{Millis, parse_rfc3339};
use crate::customer::{CustomerStatus, Email, parse_timezone};
use crate::import::nul_path;
use crate::json::JsonFault;

/// Longest `userId`, `anonymousId`, `previousId`, `groupId` or `messageId`.
pub const MAX_ID: usize = 255;
/// Longest event name (an interaction's kind), as `herald import` allows.
pub const MAX_KIND: usize = 100;

/// The six calls of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Identify => "identify",
            CallType::Track => "track",
            CallType::Page => "page",
            CallType::Screen => "screen",
            CallType::Group => "group",
            CallType::Alias => "alias",
        }
    }
}

/// An id as Segment's libraries send it: text, or a number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Id(String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(serde_json::Number),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Text(s)) => Ok(Id(s)),
            Ok(Raw::Number(n)) => Ok(Id(n.to_string())),
            Err(_) => Err(serde::de::Error::custom("expected a string or a number")),
        }
    }
}

/// One call's fields, as sent. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Call {
    #[serde(rename = "type")]
    call_type: Option<CallType>,
    user_id: Option<Id>,
    anonymous_id: Option<Id>,
    message_id: Option<Id>,
    timestamp: Option<String>,
    sent_at: Option<String>,
    context: Option<Map<String, Value>>,
    traits: Option<Map<String, Value>>,
    properties: Option<Map<String, Value>>,
    event: Option<String>,
    name: Option<String>,
    category: Option<String>,
    group_id: Option<Id>,
    previous_id: Option<Id>,
}

/// A batch's own fields (`POST /v1/batch`); its items are read one by one,
/// so that a bad item is named and the others are kept.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch<'a> {
    #[serde(borrow)]
    pub batch: Vec<&'a RawValue>,
    #[serde(default)]
    pub sent_at: Option<String>,
}

/// What a call does, once read.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `identify`: the person's traits.
    Identify(Traits),
    /// `track`, `page`, `screen`, `group`: an interaction of `kind`.
    Record {
        kind: String,
        data: Map<String, Value>,
    },
    /// `alias`: `previous_id` (an anonymous id or an earlier user id) is the
    /// event's `user_id` from now on.
    Alias { previous_id: String },
}

/// Identify traits, sorted into the customer's fields and attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traits {
    pub email: Option<Email>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub timezone: Option<String>,
    pub status: Option<CustomerStatus>,
    pub attributes: Map<String, Value>,
}

/// One call, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// The call's `messageId`.
    pub message_id: Option<String>,
    /// When it happened, corrected by `sentAt`.
    pub at: Millis,
    pub action: Action,
}

/// Why a call was refused: the field at fault (its path within the call,
/// such as `traits.email`) and the kind of fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub fault: Fault,
    pub field: Option<String>,
    pub message: String,
}

/// The kinds of refusal, each answered with its own HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not a call of the spec: not JSON, a wrong type, a required field missing.
    Malformed,
    /// Read, but a value breaks a rule: an invalid email, an unknown zone.
    Invalid,
    /// Larger than one event may be.
    TooLarge,
    /// Contradicts what is stored: the email of another user.
    Conflict,
}

impl Refusal {
    pub fn malformed(field: Option<&str>, message: impl Into<String>) -> Refusal {
        Refusal {
            fault: Fault::Malformed,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            fault: Fault::Invalid,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Refusal {
        Refusal {
            fault: Fault::Conflict,
            field: None,
            message: message.into(),
        }
    }

    /// The refusal with its field under `prefix` (`batch[3]`).
    pub fn within(mut self, prefix: &str) -> Refusal {
        self.field = Some(match self.field {
            Some(f) => format!("{prefix}.{f}"),
            None => prefix.to_string(),
        });
        self
    }
}

/// Reads one call from `json`. `expected` is the route's type (`None` for a
/// batch item, which names its own); `received` is when it arrived, and
/// `batch_sent_at` the batch's `sentAt`.
pub fn read(
    json: &[u8],
    expected: Option<CallType>,
    received: Millis,
    batch_sent_at: Option<&str>,
) -> Result<Event, Refusal> {
    if json.len() > crate::ingest::EVENT_LIMIT {
        return Err(Refusal {
            fault: Fault::TooLarge,
            field: None,
            message: format!(
                "the event is larger than {} bytes, Segment's limit for one call",
                crate::ingest::EVENT_LIMIT
            ),
        });
    }
    let call: Call = crate::json::read(json).map_err(|fault| match fault {
        JsonFault::Syntax(e) => Refusal::malformed(None, format!("not valid JSON: {e}")),
        JsonFault::Shape { field, message } => Refusal {
            fault: Fault::Malformed,
            field,
            message,
        },
    })?;
    check(call, expected, received, batch_sent_at)
}

fn check(
    call: Call,
    expected: Option<CallType>,
    received: Millis,
    batch_sent_at: Option<&str>,
) -> Result<Event, Refusal> {
    let call_type = match (expected, call.call_type) {
        (Some(route), Some(given)) if route != given => {
            return Err(Refusal::malformed(
                Some("type"),
                format!("type {:?} sent to /v1/{}", given.as_str(), route.as_str()),
            ));
        }
        (Some(route), _) => route,
        (None, Some(given)) => given,
        (None, None) => {
            return Err(Refusal::malformed(
                Some("type"),
                "missing field `type`: one of identify, track, page, screen, group, alias",
            ));
        }
    };
    let user_id = id(call.user_id, "userId")?;
    let anonymous_id = id(call.anonymous_id, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Refusal::malformed(
            Some("userId"),
            "a call needs userId or anonymousId (or both)",
        ));
    }
    let message_id = id(call.message_id, "messageId")?;
    let at = corrected_time(
        call.timestamp.as_deref(),
        call.sent_at.as_deref().or(batch_sent_at),
        received,
    )?;
    let action = match call_type {
        CallType::Identify => Action::Identify(traits(
            call.traits.unwrap_or_default(),
            call.context.as_ref(),
        )?),
        CallType::Track => {
            let event = call
                .event
                .filter(|e| !e.trim().is_empty())
                .ok_or_else(|| Refusal::malformed(Some("event"), "a track call needs `event`"))?;
            if event.len() > MAX_KIND {
                return Err(Refusal::invalid(
                    "event",
                    format!("event is longer than {MAX_KIND} bytes"),
                ));
            }
            if event.contains('\0') {
                return Err(Refusal::invalid(
                    "event",
                    "event contains a NUL character (U+0000), which the database cannot store",
                ));
            }
            Action::Record {
                kind: event,
                data: call.properties.unwrap_or_default(),
            }
        }
        CallType::Page | CallType::Screen => {
            let mut data = call.properties.unwrap_or_default();
            if let Some(name) = call.name {
                data.entry("name").or_insert(Value::String(name));
            }
            if let Some(category) = call.category {
                data.entry("category").or_insert(Value::String(category));
            }
            let kind = match call_type {
                CallType::Page => "page_view",
                _ => "screen_view",
            };
            Action::Record {
                kind: kind.to_string(),
                data,
            }
        }
        CallType::Group => {
            let group = id(call.group_id, "groupId")?.ok_or_else(|| {
                Refusal::malformed(Some("groupId"), "a group call needs `groupId`")
            })?;
            let mut data = Map::new();
            data.insert("group_id".into(), Value::String(group));
            data.insert(
                "traits".into(),
                Value::Object(call.traits.unwrap_or_default()),
            );
            Action::Record {
                kind: "group".to_string(),
                data,
            }
        }
        CallType::Alias => {
            let previous_id = id(call.previous_id, "previousId")?.ok_or_else(|| {
                Refusal::malformed(Some("previousId"), "an alias call needs `previousId`")
            })?;
            if user_id.is_none() {
                return Err(Refusal::malformed(
                    Some("userId"),
                    "an alias call needs `userId`",
                ));
            }
            Action::Alias { previous_id }
        }
    };
    if let Action::Record { data, .. } = &action
        && let Some(path) = nul_path(data)
    {
        return Err(nul("properties", &path));
    }
    Ok(Event {
        user_id,
        anonymous_id,
        message_id,
        at,
        action,
    })
}

/// A present id: not empty, at most [`MAX_ID`] bytes, without NUL.
fn id(value: Option<Id>, field: &str) -> Result<Option<String>, Refusal> {
    let Some(Id(text)) = value else {
        return Ok(None);
    };
    if text.is_empty() {
        return Err(Refusal::invalid(
            field,
            format!("{field} is empty: leave it out, or send null, when there is none"),
        ));
    }
    if text.len() > MAX_ID {
        return Err(Refusal::invalid(
            field,
            format!("{field} is longer than {MAX_ID} bytes"),
        ));
    }
    if text.contains('\0') {
        return Err(Refusal::invalid(
            field,
            format!("{field} contains a NUL character (U+0000)"),
        ));
    }
    Ok(Some(text))
}

/// When the event happened: the client's `timestamp`, moved by the
/// difference between the client's clock (`sent_at`) and the receive time.
pub fn corrected_time(
    timestamp: Option<&str>,
    sent_at: Option<&str>,
    received: Millis,
) -> Result<Millis, Refusal> {
    let parse = |text: &str, field: &str| {
        parse_rfc3339(text).ok_or_else(|| {
            Refusal::invalid(
                field,
                format!(
                    "{field} {text:?} is not an ISO 8601 time with a zone, such as 2026-12-06T09:00:00.000Z"
                ),
            )
        })
    };
    let Some(timestamp) = timestamp else {
        return Ok(received);
    };
    let timestamp = parse(timestamp, "timestamp")?;
    Ok(match sent_at {
        Some(sent) => {
            let sent = parse(sent, "sentAt")?;
            received.saturating_add(timestamp.saturating_sub(sent))
        }
        None => timestamp,
    })
}

/// The customer fields among `raw`, and the rest as attributes.
fn traits(
    mut raw: Map<String, Value>,
    context: Option<&Map<String, Value>>,
) -> Result<Traits, Refusal> {
    let mut t = Traits::default();
    if let Some(email) = raw.get("email").and_then(Value::as_str)
        && email.trim().is_empty()
    {
        return Err(Refusal::invalid(
            "traits.email",
            "traits.email is empty: leave it out, or send null, when there is none",
        ));
    }
    if let Some(email) = take_text(&mut raw, &["email"])? {
        t.email = Some(
            Email::parse(&email).map_err(|e| Refusal::invalid("traits.email", e.to_string()))?,
        );
    }
    t.first_name = take_text(&mut raw, &["firstName", "first_name"])?;
    t.last_name = take_text(&mut raw, &["lastName", "last_name"])?;
    if let Some(zone) = take_text(&mut raw, &["timezone"])? {
        t.timezone = Some(
            parse_timezone(&zone)
                .map_err(|e| Refusal::invalid("traits.timezone", e.to_string()))?,
        );
    } else if let Some(Value::String(zone)) = context.and_then(|c| c.get("timezone")) {
        // Sent by the library on its own: a zone it got wrong is not the
        // caller's fault, and is left out.
        t.timezone = parse_timezone(zone).ok();
    }
    if let Some(status) = take_text(&mut raw, &["status"])? {
        t.status = Some(status.parse().map_err(|e: crate::customer::FieldError| {
            Refusal::invalid("traits.status", e.to_string())
        })?);
    }
    for (field, value) in [
        ("traits.firstName", &t.first_name),
        ("traits.lastName", &t.last_name),
    ] {
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(Refusal::invalid(
                field,
                format!("{field} contains a NUL character (U+0000)"),
            ));
        }
    }
    if let Some(path) = nul_path(&raw) {
        return Err(nul("traits", &path));
    }
    t.attributes = raw;
    Ok(t)
}

/// The first of the trait `names` that holds text, removed from `raw` with
/// the others (blank text counts as none); anything but text or null is
/// refused.
fn take_text(raw: &mut Map<String, Value>, names: &[&str]) -> Result<Option<String>, Refusal> {
    let mut found = None;
    for name in names {
        match raw.remove(*name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                if found.is_none() {
                    found = Some(s);
                }
            }
            Some(_) => {
                return Err(Refusal::malformed(
                    Some(&format!("traits.{name}")),
                    format!("traits.{name} must be a string"),
                ));
            }
        }
    }
    Ok(found.filter(|s| !s.trim().is_empty()))
}

fn nul(within: &str, path: &str) -> Refusal {
    let field = format!("{within}.{path}");
    Refusal::invalid(
        &field,
        format!("{field} contains a NUL character (U+0000), which the database cannot store"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RECEIVED: Millis = 1_765_000_000_000;

    fn read_one(v: Value, route: Option<CallType>) -> Result<Event, Refusal> {
        read(v.to_string().as_bytes(), route, RECEIVED, None)
    }

    #[test]
    fn sent_at_corrects_the_client_clock() {
        // The client's clock is 10 minutes fast; the event happened 5 s before sending.
        let t = corrected_time(
            Some("2025-12-06T05:56:35Z"),
            Some("2025-12-06T05:56:40Z"),
            parse_rfc3339("2025-12-06T05:46:40Z").unwrap(),
        )
        .unwrap();
        assert_eq!(t, parse_rfc3339("2025-12-06T05:46:35Z").unwrap());
        assert_eq!(
            corrected_time(None, Some("2025-12-06T05:56:40Z"), 7).unwrap(),
            7
        );
        assert_eq!(
            corrected_time(Some("2025-12-06T05:56:35.250+01:00"), None, 7).unwrap(),
            parse_rfc3339("2025-12-06T04:56:35.250Z").unwrap()
        );
        let bad = corrected_time(Some("yesterday"), None, 7).unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("timestamp"));
        let bad =
            corrected_time(Some("2025-12-06T05:56:35Z"), Some("2025-12-06 05:56"), 7).unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("sentAt"));
    }

    #[test]
    fn identify_sorts_traits() {
        let e = read_one(
            json!({"userId": 42, "traits": {"email": "Ann@Example.COM", "firstName": "Ann",
                   "plan": "pro", "status": "unsubscribed"},
                   "context": {"timezone": "Europe/Berlin", "library": {"name": "x"}},
                   "integrations": {}, "writeKey": "k"}),
            Some(CallType::Identify),
        )
        .unwrap();
        assert_eq!(e.user_id.as_deref(), Some("42"));
        assert_eq!(e.at, RECEIVED);
        let Action::Identify(t) = e.action else {
            panic!()
        };
        assert_eq!(t.email.unwrap().as_str(), "Ann@example.com");
        assert_eq!(t.first_name.as_deref(), Some("Ann"));
        assert_eq!(t.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(t.status, Some(CustomerStatus::Unsubscribed));
        assert_eq!(Value::Object(t.attributes), json!({"plan": "pro"}));
    }

    #[test]
    fn calls_map_to_kinds() {
        let kind = |v: Value| match read_one(v, None).unwrap().action {
            Action::Record { kind, data } => (kind, Value::Object(data)),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(
                json!({"type": "track", "anonymousId": "a", "event": "Order Completed",
                        "properties": {"total": 3}})
            ),
            ("Order Completed".into(), json!({"total": 3}))
        );
        assert_eq!(
            kind(
                json!({"type": "page", "userId": "u", "name": "Home", "properties": {"url": "/"}})
            ),
            ("page_view".into(), json!({"url": "/", "name": "Home"}))
        );
        assert_eq!(
            kind(json!({"type": "screen", "userId": "u", "name": "Cart"})).0,
            "screen_view"
        );
        assert_eq!(
            kind(json!({"type": "group", "userId": "u", "groupId": 7, "traits": {"n": 1}})),
            ("group".into(), json!({"group_id": "7", "traits": {"n": 1}}))
        );
        let alias = read_one(
            json!({"type": "alias", "userId": "u", "previousId": "a"}),
            None,
        )
        .unwrap();
        assert_eq!(
            alias.action,
            Action::Alias {
                previous_id: "a".into()
            }
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let field = |v: Value, route| {
            let r = read_one(v, route).unwrap_err();
            (r.fault, r.field.unwrap_or_default())
        };
        use Fault::*;
        assert_eq!(
            field(json!({"event": "x"}), Some(CallType::Track)),
            (Malformed, "userId".into())
        );
        assert_eq!(
            field(json!({"userId": "u"}), Some(CallType::Track)),
            (Malformed, "event".into())
        );
        assert_eq!(
            field(json!({"userId": "u"}), None),
            (Malformed, "type".into())
        );
        assert_eq!(
            field(json!({"type": "hop", "userId": "u"}), None),
            (Malformed, "type".into())
        );
        assert_eq!(
            field(
                json!({"type": "track", "userId": "u", "event": "e"}),
                Some(CallType::Page)
            ),
            (Malformed, "type".into())
        );
        assert_eq!(
            field(
                json!({"userId": "u", "event": "e", "properties": [1]}),
                Some(CallType::Track)
            ),
            (Malformed, "properties".into())
        );
        assert_eq!(
            field(
                json!({"userId": {"a": 1}, "event": "e"}),
                Some(CallType::Track)
            ),
            (Malformed, "userId".into())
        );
        assert_eq!(
            field(
                json!({"userId": "u", "traits": {"email": "nope"}}),
                Some(CallType::Identify)
            ),
            (Invalid, "traits.email".into())
        );
        assert_eq!(
            field(
                json!({"userId": "u", "traits": {"timezone": "Mars/Base"}}),
                Some(CallType::Identify)
            ),
            (Invalid, "traits.timezone".into())
        );
        assert_eq!(
            field(
                json!({"userId": "u", "event": "e", "properties": {"a": {"b": "x\u{0}"}}}),
                Some(CallType::Track)
            ),
            (Invalid, "properties.a.b".into())
        );
        assert_eq!(
            field(
                json!({"userId": "u", "event": "e", "timestamp": "soon"}),
                Some(CallType::Track)
            ),
            (Invalid, "timestamp".into())
        );
        assert_eq!(
            field(
                json!({"type": "alias", "previousId": "a", "anonymousId": "b"}),
                None
            ),
            (Malformed, "userId".into())
        );
        assert_eq!(
            field(
                json!({"userId": "", "anonymousId": "a", "event": "e"}),
                Some(CallType::Track)
            ),
            (Invalid, "userId".into())
        );
        assert_eq!(
            field(
                json!({"userId": "u", "event": "a\u{0}b"}),
                Some(CallType::Track)
            ),
            (Invalid, "event".into())
        );
        // Found by the fuzz target: a syntax error inside an ignored key "".
        let r = read(
            br#"{"": {"a": "b" "c"}, "userId": "u"}"#,
            Some(CallType::Track),
            RECEIVED,
            None,
        )
        .unwrap_err();
        assert_eq!((r.fault, r.field), (Malformed, None));
        assert!(r.message.starts_with("not valid JSON"), "{}", r.message);
        let r = read(
            br#"{"": 3, "userId": "u"}"#,
            Some(CallType::Track),
            RECEIVED,
            None,
        )
        .unwrap_err();
        assert_eq!(r.field.as_deref(), Some("event"));
        let big = "x".repeat(crate::ingest::EVENT_LIMIT);
        assert_eq!(
            field(
                json!({"userId": "u", "event": "e", "properties": {"p": big}}),
                Some(CallType::Track)
            )
            .0,
            TooLarge
        );
    }
}
