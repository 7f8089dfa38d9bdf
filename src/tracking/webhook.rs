//! Bounce and complaint reports from the relay or provider.
//!
//! The body of `POST /webhook` (served, and its bearer secret checked, by
//! `http::webhooks`) is a JSON report, or an array of up to [`MAX_REPORTS`]:
//!
//! ```json
//! {"message_id": "<herald.42.winback@shop.example>", "type": "hard", "detail": "550 5.1.1 no such user"}
//! {"email": "ann@example.com", "type": "complaint", "id": "evt-981"}
//! ```
//!
//! `hard` records `email_bounced`, sets a subscribed customer `bounced` and
//! suppresses the address; `soft` only records `email_bounced`; `complaint`
//! records `email_complained`, sets a subscribed customer `complained` and
//! suppresses. An optional `id` (the reporter's event id) makes a retried
//! report change nothing.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::clock::Millis;
use crate::customer::{CustomerStatus, Email};
use crate::store::tracking::Feedback;
use crate::store::{Store, StoreError};

/// Reports per request.
pub const MAX_REPORTS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportType {
    Hard,
    Soft,
    Complaint,
}

impl ReportType {
    /// The interaction a report records.
    pub fn interaction(self) -> &'static str {
        match self {
            ReportType::Hard | ReportType::Soft => "email_bounced",
            ReportType::Complaint => "email_complained",
        }
    }
}

/// One report as posted.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub email: Option<String>,
    pub message_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: ReportType,
    pub detail: Option<String>,
    pub id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Many(Vec<Report>),
    One(Report),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("invalid report: {0}")]
    Json(String),
    #[error("report {0}: give `email` or `message_id`")]
    NoRecipient(usize),
    #[error("report {index}: {message}")]
    BadEmail { index: usize, message: String },
    #[error("at most {} reports per request", MAX_REPORTS)]
    TooMany,
}

/// Parses a body: one report or an array of them.
pub fn parse(body: &[u8]) -> Result<Vec<Report>, ReportError> {
    let reports = match serde_json::from_slice::<Body>(body) {
        Ok(Body::Many(v)) => v,
        Ok(Body::One(r)) => vec![r],
        // serde's untagged error says nothing useful: ask for the single form's.
        Err(_) => match serde_json::from_slice::<Report>(body) {
            Ok(r) => vec![r],
            Err(e) => return Err(ReportError::Json(e.to_string())),
        },
    };
    if reports.len() > MAX_REPORTS {
        return Err(ReportError::TooMany);
    }
    for (i, r) in reports.iter().enumerate() {
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if blank(&r.email) && blank(&r.message_id) {
            return Err(ReportError::NoRecipient(i));
        }
        if let Some(e) = r.email.as_deref().filter(|e| !e.trim().is_empty()) {
            Email::parse(e).map_err(|err| ReportError::BadEmail {
                index: i,
                message: err.to_string(),
            })?;
        }
    }
    Ok(reports)
}

/// What a request's reports did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub recorded: u64,
    /// Reports whose `id` was seen before.
    pub duplicates: u64,
    /// Reports naming no known customer or message (hard bounces and
    /// complaints of a known address are still suppressed).
    pub unknown: u64,
}

/// Applies parsed reports, each in its own transaction.
pub async fn apply(store: &Store, reports: &[Report], now: Millis) -> Result<Applied, StoreError> {
    let mut applied = Applied::default();
    for r in reports {
        let kind = r.kind.interaction();
        let (status, suppression) = match r.kind {
            ReportType::Hard => (Some(CustomerStatus::Bounced), Some("hard_bounce")),
            ReportType::Soft => (None, None),
            ReportType::Complaint => (Some(CustomerStatus::Complained), Some("complaint")),
        };
        let email = r
            .email
            .as_deref()
            .and_then(|e| Email::parse(e).ok())
            .map(|e| e.as_str().to_string());
        let by_message = match r.message_id.as_deref().map(bare_message_id) {
            Some(id) if !id.is_empty() => store.delivery_by_message_id(id).await?,
            _ => None,
        };
        let target = match by_message {
            Some((d, email)) => Some((d.customer_id, email, Some(d))),
            None => match &email {
                Some(e) => store
                    .customer_by_email(e)
                    .await?
                    .map(|c| (c.id, c.email.as_str().to_string(), None)),
                None => None,
            },
        };
        let Some((customer_id, address, delivery)) = target else {
            // Not our customer, but the address is bad or complaining all the same.
            if let (Some(e), Some(reason)) = (&email, suppression) {
                store.suppress(e, reason, now).await?;
            }
            applied.unknown += 1;
            continue;
        };
        let mut data = Map::new();
        if r.kind != ReportType::Complaint {
            data.insert("type".into(), Value::from(r.kind_name()));
            data.insert("hard".into(), Value::Bool(r.kind == ReportType::Hard));
        }
        if let Some(detail) = &r.detail {
            data.insert("detail".into(), Value::from(truncate(detail, 1_000)));
        }
        data.insert("source".into(), Value::from("webhook"));
        let feedback = Feedback {
            customer_id,
            email: address,
            delivery,
            kind,
            data,
            status,
            suppression,
            external_id: r
                .id
                .as_deref()
                .map(|id| format!("webhook:{}", truncate(id, 200))),
        };
        if store.record_feedback(&feedback, now).await? {
            applied.recorded += 1;
        } else {
            applied.duplicates += 1;
        }
    }
    Ok(applied)
}

impl Report {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            ReportType::Hard => "hard",
            ReportType::Soft => "soft",
            ReportType::Complaint => "complaint",
        }
    }
}

/// `<id@host>` and `id@host` name the same message.
fn bare_message_id(id: &str) -> &str {
    let id = id.trim();
    id.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(id)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_or_many_and_names_problems() {
        let one = parse(br#"{"email":"A@Example.com","type":"hard","detail":"550"}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].kind, ReportType::Hard);
        let many = parse(
            br#"[{"message_id":"<x@y>","type":"soft"},{"email":"b@c.de","type":"complaint"}]"#,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(
            parse(br#"{"type":"hard"}"#).unwrap_err(),
            ReportError::NoRecipient(0)
        );
        assert!(matches!(
            parse(br#"{"email":"a@b.c","type":"bounce"}"#),
            Err(ReportError::Json(m)) if m.contains("unknown variant")
        ));
        assert!(matches!(
            parse(br#"{"email":"not an email","type":"hard"}"#),
            Err(ReportError::BadEmail { index: 0, .. })
        ));
        assert!(parse(b"nonsense").is_err());
        assert_eq!(bare_message_id(" <a@b> "), "a@b");
    }
}
