//! The named states of Herald's records, one enum per question and one text
//! form each (the form the database stores and reports show).
//!
//! Rules:
//! - Code compares these enums, never their text: a status literal appears
//!   only here and in the SQL that stores it.
//! - Text from the database becomes an enum once, where the row leaves the
//!   store ([`FromStr`]); an unknown text is an error there, not a silent
//!   "other" further on.
//! - A customer's own status is [`crate::customer::CustomerStatus`].

use std::fmt;
use std::str::FromStr;

use crate::customer::CustomerStatus;

/// Text that is none of an enum's forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {text:?}")]
pub struct UnknownStatus {
    pub what: &'static str,
    pub text: String,
}

/// Declares a status enum with its text forms, `as_str`, `Display`, `FromStr`
/// and `ALL`.
macro_rules! named {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The text form: what the database stores and reports show.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                text_schema(&[$($text,)+])
            }
        }

        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(text: &str) -> Result<Self, UnknownStatus> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownStatus { what: $what, text: text.to_string() }),
                }
            }
        }
    };
}

/// The API document's schema of an enum's text forms: a string, one of
/// `texts`.
pub fn text_schema(texts: &[&str]) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(texts.iter().copied()))
        .into()
}

named! {
    /// Where one delivery (a step of an entry) stands: queued → sending
    /// (claimed under a lease) → sent | failed | bounced | skipped.
    DeliveryStatus, "delivery status" {
        Queued => "queued",
        /// Claimed by a send pass, which holds a lease on it.
        Sending => "sending",
        Sent => "sent",
        /// Failed for good (a local error, or out of attempts).
        Failed => "failed",
        /// Refused by the relay with a permanent reply.
        Bounced => "bounced",
        /// Not sent on purpose; the delivery's reason says why ([`SkipReason`]).
        Skipped => "skipped",
    }
}

impl DeliveryStatus {
    /// Still to be decided: queued, or held by a send pass.
    pub fn is_pending(self) -> bool {
        matches!(self, DeliveryStatus::Queued | DeliveryStatus::Sending)
    }
}

named! {
    /// Where a run stands: planning (its audience being entered) → sending →
    /// done; failed when it cannot go on.
    RunStatus, "run status" {
        /// Being planned; a run left here by a planner that died is planned
        /// again (safe: planning adds nothing twice).
        Planning => "planning",
        Sending => "sending",
        Done => "done",
        Failed => "failed",
    }
}

named! {
    /// Where a customer's entry into a campaign stands.
    EntryState, "entry state" {
        /// Going through the steps.
        Active => "active",
        /// Every step sent.
        Completed => "completed",
        /// Reached the campaign's goal.
        Goal => "goal",
        /// Left early; the entry's exit reason says why.
        Exited => "exited",
    }
}

named! {
    /// Why a claimed delivery was not sent (stored as the delivery's reason).
    SkipReason, "skip reason" {
        /// The customer unsubscribed.
        Unsubscribed => "unsubscribed",
        /// The customer's address bounced for good.
        Bounced => "bounced",
        /// The customer complained.
        Complained => "complained",
        /// The address is on the suppression list.
        Suppressed => "suppressed",
        /// The customer had enough campaign email within the cap's window.
        FrequencyCap => "frequency_cap",
        /// The step was removed from the campaign file after planning.
        StepRemoved => "step_removed",
    }
}

impl SkipReason {
    /// Why a customer in `status` is not mailed; `None` while subscribed.
    pub fn for_customer(status: CustomerStatus) -> Option<SkipReason> {
        match status {
            CustomerStatus::Subscribed => None,
            CustomerStatus::Unsubscribed => Some(SkipReason::Unsubscribed),
            CustomerStatus::Bounced => Some(SkipReason::Bounced),
            CustomerStatus::Complained => Some(SkipReason::Complained),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + fmt::Display + FromStr<Err = UnknownStatus> + PartialEq + fmt::Debug,
    {
        let mut seen = std::collections::HashSet::new();
        for s in all {
            let text = s.to_string();
            assert!(
                seen.insert(text.clone()),
                "{text} is the text of two values"
            );
            assert_eq!(text.parse::<T>().as_ref(), Ok(s));
        }
    }

    #[test]
    fn every_status_has_one_text_form_that_parses_back() {
        round_trips(DeliveryStatus::ALL);
        round_trips(RunStatus::ALL);
        round_trips(EntryState::ALL);
        round_trips(SkipReason::ALL);
    }

    #[test]
    fn unknown_text_is_an_error_naming_what_was_expected() {
        let e = "Sent".parse::<DeliveryStatus>().unwrap_err();
        assert_eq!(e.to_string(), r#"unknown delivery status "Sent""#);
        assert!("".parse::<RunStatus>().is_err());
    }

    #[test]
    fn a_customer_who_left_is_skipped_with_their_status_as_the_reason() {
        for status in CustomerStatus::ALL {
            let reason = SkipReason::for_customer(status);
            match status {
                CustomerStatus::Subscribed => assert_eq!(reason, None),
                other => assert_eq!(reason.map(SkipReason::as_str), Some(other.as_str())),
            }
        }
    }
}
