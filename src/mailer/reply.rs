//! What an SMTP failure means for a delivery.
//!
//! - 4xx replies and network failures before the message was handed over:
//!   transient, retry with backoff.
//! - A network failure while the message body or its final reply was in flight:
//!   the relay may or may not have taken it (RFC 1047). Herald's rule: retry,
//!   with the same Message-ID, and record that the outcome was unknown.
//! - 5xx: permanent. 5.1.x (bad mailbox or domain), or a bare 550 without an
//!   enhanced code, is a hard bounce: the address is suppressed. 5.7.x (policy,
//!   authentication) blames the sender, so the recipient is not suppressed.

use std::fmt;

/// An SMTP reply: basic code, optional enhanced status code (RFC 3463), text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<(u8, u16, u16)>,
    pub text: String,
}

impl Reply {
    /// Reads the enhanced status code from the start of the reply text, where
    /// servers put it (`5.1.1 <x@y>: Recipient address rejected`); lettre does
    /// not parse it.
    pub fn parse(code: u16, text: &str) -> Reply {
        let text = text.trim().to_string();
        let enhanced = text.split_whitespace().next().and_then(|first| {
            let mut parts = first.split('.');
            let class: u8 = parts.next()?.parse().ok()?;
            let subject: u16 = parts.next()?.parse().ok()?;
            let detail: u16 = parts.next()?.parse().ok()?;
            (parts.next().is_none() && matches!(class, 2 | 4 | 5) && u16::from(class) == code / 100)
                .then_some((class, subject, detail))
        });
        Reply {
            code,
            enhanced,
            text,
        }
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// A hard bounce: the mailbox or domain does not exist.
    pub fn is_hard_bounce(&self) -> bool {
        match self.enhanced {
            Some((5, 1, _)) => true,
            Some(_) => false,
            None => self.code == 550,
        }
    }

    /// The relay refuses the sender (policy, authentication, reputation).
    pub fn blames_sender(&self) -> bool {
        matches!(self.enhanced, Some((5, 7, _)))
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Try again later: a 4xx reply, or no connection.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The relay may have accepted the message; retried under Herald's rule.
    #[error("outcome unknown (connection lost while the message was in flight): {0}")]
    Unknown(String),
    /// A 5xx reply: the message will never be accepted.
    #[error("rejected: {0}")]
    Permanent(Reply),
    /// Something on this side: configuration, a message the relay cannot carry.
    #[error("cannot send: {0}")]
    Local(String),
}

impl SendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Transient(_) | SendError::Unknown(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_replies() {
        let r = Reply::parse(550, "5.1.1 <nobody@x.example>: Recipient address rejected");
        assert_eq!(r.enhanced, Some((5, 1, 1)));
        assert!(r.is_permanent() && r.is_hard_bounce() && !r.blames_sender());
        let bare = Reply::parse(550, "Mailbox unavailable");
        assert_eq!(bare.enhanced, None);
        assert!(bare.is_hard_bounce());
        // Servers may pad the text; the code is read after the white space.
        let policy = Reply::parse(550, " 5.7.1 Message rejected as spam");
        assert_eq!(policy.text, policy.text.trim());
        assert!(policy.is_permanent() && !policy.is_hard_bounce() && policy.blames_sender());
        let full = Reply::parse(552, "5.2.2 Mailbox full");
        assert!(!full.is_hard_bounce());
        let busy = Reply::parse(451, "4.3.0 Try again later");
        assert!(!busy.is_permanent());
        assert_eq!(Reply::parse(550, "5.1 nope").enhanced, None);
        assert_eq!(Reply::parse(550, "4.1.1 mismatch").enhanced, None);
    }
}
