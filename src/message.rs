//! A rendered email → a standards-correct lettre `Message`: multipart/alternative
//! (text, then HTML), RFC 2047 subjects and names, a unique Message-ID, Date,
//! optional Reply-To, RFC 8058 one-click unsubscribe headers, optional DKIM.

use lettre::Message;
use lettre::message::header::ContentTransferEncoding;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};

use crate::render::Rendered;

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("invalid address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("DKIM key {path}: {reason}")]
    DkimKey { path: String, reason: String },
}

/// Parses `Name <addr>` or a bare address.
pub fn mailbox(text: &str) -> Result<Mailbox, MessageError> {
    text.parse::<Mailbox>().map_err(|e| MessageError::Address {
        address: text.to_string(),
        reason: e.to_string(),
    })
}

/// Everything about a message except its content.
pub struct Envelope<'a> {
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    pub to: Mailbox,
    /// Without angle brackets, e.g. `d42.k3j5@acme.example`.
    pub message_id: String,
    pub unsubscribe_url: &'a str,
    pub unsubscribe_mailto: Option<&'a str>,
    /// The `List-Id` value ([`list_id`]).
    pub list_id: &'a str,
    /// The `Feedback-ID` value ([`feedback_id`]).
    pub feedback_id: &'a str,
    /// The relay takes 8bit bodies (8BITMIME); without, every part that is
    /// not ASCII goes quoted-printable.
    pub eight_bit: bool,
}

/// `List-Id` (RFC 2919) of a campaign: its description as the phrase, and
/// `<CAMPAIGN.sender-domain>`, one list per campaign. Mailbox providers group
/// and filter bulk mail by it.
pub fn list_id(campaign: &str, description: Option<&str>, from: &Mailbox) -> String {
    let id = format!("<{}.{}>", campaign, from.email.domain());
    match description.map(header_phrase).filter(|d| !d.is_empty()) {
        Some(d) => format!("\"{d}\" {id}"),
        None => id,
    }
}

/// `Feedback-ID` for Gmail's feedback loop: `CAMPAIGN:STEP:TAG:SENDER`, the
/// sender being the From domain (Gmail asks for an identifier that stays the
/// same for one sender); the fields lose anything but letters, digits, `-`,
/// `_` and `.`.
pub fn feedback_id(campaign: &str, step: &str, tag: &str, from: &Mailbox) -> String {
    let field = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect()
    };
    format!(
        "{}:{}:{}:{}",
        field(campaign),
        field(step),
        field(tag),
        field(from.email.domain())
    )
}

/// Text safe inside a quoted header phrase: printable ASCII without quotes or
/// backslashes, one line.
fn header_phrase(text: &str) -> String {
    let kept: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                ' '
            }
        })
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A Message-ID on the sender's domain around `unique`: random digits drawn
/// once per delivery (and kept across its retries), so that ids never repeat
/// across installs, databases or previews, and reveal no counter.
pub fn message_id(unique: &str, salt: &str, from: &Mailbox) -> String {
    let (prefix, suffix) = message_id_parts(salt, from);
    format!("{prefix}{unique}{suffix}")
}

/// The parts of [`message_id`] around the unique part, for the store to fill in.
pub fn message_id_parts(salt: &str, from: &Mailbox) -> (String, String) {
    (
        "herald.".to_string(),
        format!(".{salt}@{}", from.email.domain()),
    )
}

/// Headers whose values Herald composes itself: ASCII on one line.
macro_rules! text_header {
    ($type:ident, $name:literal) => {
        #[derive(Clone)]
        struct $type(String);

        impl Header for $type {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }
            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($type(s.to_string()))
            }
            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.clone())
            }
        }
    };
}

text_header!(ListUnsubscribe, "List-Unsubscribe");
text_header!(ListId, "List-Id");
text_header!(FeedbackId, "Feedback-ID");

#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_string())
    }
}

/// The recipient's display name from the customer's names, safe for a header:
/// a line break or other control character in the data becomes a space (runs
/// of white space collapse to one), so data can never add a header line;
/// lettre encodes what is not ASCII (RFC 2047). `None` without a first name,
/// or when nothing is left.
pub fn display_name(first: Option<&str>, last: Option<&str>) -> Option<String> {
    let mut name = String::new();
    for part in [first?].into_iter().chain(last) {
        for word in part
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|w| !w.is_empty())
        {
            if !name.is_empty() {
                name.push(' ');
            }
            name.push_str(word);
        }
    }
    (!name.is_empty()).then_some(name)
}

/// Builds the message. `rendered.html` is final (tracking already applied).
pub fn build(rendered: &Rendered, env: &Envelope<'_>) -> Result<Message, MessageError> {
    let mut list_unsubscribe = format!("<{}>", env.unsubscribe_url);
    if let Some(mailto) = env.unsubscribe_mailto {
        list_unsubscribe.push_str(&format!(", <{mailto}>"));
    }
    // The envelope is the From and To addresses we already hold: left to
    // itself, lettre would format those headers and parse them back to find it.
    let envelope =
        lettre::address::Envelope::new(Some(env.from.email.clone()), vec![env.to.email.clone()])
            .map_err(|e| MessageError::Build(e.to_string()))?;
    let mut builder = Message::builder()
        .envelope(envelope)
        .from(env.from.clone())
        .to(env.to.clone())
        .subject(rendered.subject.clone())
        .message_id(Some(format!("<{}>", env.message_id)))
        .date_now()
        .header(ListUnsubscribe(list_unsubscribe))
        .header(ListUnsubscribePost)
        .header(ListId(env.list_id.to_string()))
        .header(FeedbackId(env.feedback_id.to_string()));
    if let Some(r) = env.reply_to {
        builder = builder.reply_to(r.clone());
    }
    builder
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::plain(body(&rendered.text, env.eight_bit)))
                .singlepart(SinglePart::html(body(&rendered.html, env.eight_bit))),
        )
        .map_err(|e| MessageError::Build(e.to_string()))
}

/// 8bit where every line fits RFC 5322's 998 octets and the relay takes it
/// (or the text is ASCII): no encoding cost and a readable source; lettre's
/// own chooser would quoted-print anything with a line over 76 characters.
/// Quoted-printable otherwise.
///
/// Borrowed: the 8bit body is a CRLF copy anyway, so only the quoted-printable
/// fallback needs its own copy of the text.
fn body(content: &str, eight_bit_ok: bool) -> Body {
    let eight_bit = if eight_bit_ok || content.is_ascii() {
        eight_bit(content)
    } else {
        None
    };
    match eight_bit {
        Some(crlf) => Body::dangerous_pre_encoded(crlf, ContentTransferEncoding::EightBit),
        None => match Body::new_with_encoding(
            content.to_string(),
            ContentTransferEncoding::QuotedPrintable,
        ) {
            Ok(body) => body,
            Err(content) => Body::new(content),
        },
    }
}

/// The text with CRLF line endings, if it is valid as an 8bit body.
fn eight_bit(text: &str) -> Option<Vec<u8>> {
    let text = text.strip_suffix('\n').unwrap_or(text).as_bytes();
    // NUL anywhere, or a CR that does not end a line, rules 8bit out; memchr
    // scans for both at once instead of testing every byte.
    for at in memchr::memchr2_iter(b'\r', 0, text) {
        if text[at] == 0 || text.get(at + 1).is_some_and(|b| *b != b'\n') {
            return None;
        }
    }
    let mut out = Vec::with_capacity(text.len() + text.len() / 32 + 2);
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len()));
    for end in ends {
        let line = &text[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > 998 {
            return None;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        start = end + 1;
    }
    Some(out)
}

/// The headers a DKIM signature covers (RFC 6376 §5.4; RFC 8058 requires the
/// two List-Unsubscribe headers). Each is over-signed: listed in `h=` once
/// more than the message has it, so a second Subject or From, or a
/// Content-Type added by a relay or an attacker, breaks the signature.
const SIGNED_HEADERS: [&str; 13] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Feedback-ID",
];

/// DKIM signing (relaxed/relaxed, rsa-sha256) of messages as they are sent,
/// with the key loaded once. mail-auth signs the formatted bytes: lettre's own
/// signer cannot over-sign, nor cover the top-level Content-Type it writes
/// while formatting.
pub struct Dkim {
    signer: DkimSigner<RsaKey<Sha256>, Done>,
}

impl Dkim {
    /// `key_pem`: an RSA private key, PKCS#8 (`BEGIN PRIVATE KEY`, what
    /// `openssl genrsa` writes) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub fn new(
        selector: &str,
        domain: &str,
        key_pem: &str,
        key_path: &str,
    ) -> Result<Dkim, MessageError> {
        use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
        use rsa::pkcs8::DecodePrivateKey as _;
        let bad = |reason: String| MessageError::DkimKey {
            path: key_path.to_string(),
            reason,
        };
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(key_pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(key_pem))
            .map_err(|_| {
                bad("not an RSA private key in PEM (expected BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY, e.g. from `openssl genrsa -out dkim.pem 2048`)".into())
            })?;
        let der = key
            .to_pkcs1_der()
            .map_err(|e| bad(format!("cannot use the key: {e}")))?;
        let key = RsaKey::<Sha256>::from_pkcs1_der(der.as_bytes())
            .map_err(|e| bad(format!("cannot use the key: {e}")))?;
        // Each name twice: mail-auth signs every instance of the first entry
        // and lists the second as absent, which is over-signing.
        let headers = SIGNED_HEADERS.iter().flat_map(|h| [*h, *h]);
        let signer = DkimSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(headers)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        Ok(Dkim { signer })
    }

    /// The message with its DKIM-Signature header prepended.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, MessageError> {
        let signature = self
            .signer
            .sign(message)
            .map_err(|e| MessageError::Build(format!("DKIM signing failed: {e}")))?;
        let header = signature.to_header();
        let mut out = Vec::with_capacity(header.len() + message.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(message);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn display_names_cannot_break_a_header_line() {
        use super::display_name;
        assert_eq!(
            display_name(Some("Eve\r\nBcc: x@evil.example"), Some("Doe\n")).as_deref(),
            Some("Eve Bcc: x@evil.example Doe")
        );
        assert_eq!(display_name(Some(" Ann\t"), None).as_deref(), Some("Ann"));
        assert_eq!(display_name(Some("\r\n"), None), None);
        assert_eq!(display_name(None, Some("Doe")), None);
        assert_eq!(
            display_name(Some("Zoë"), Some("Ünal")).as_deref(),
            Some("Zoë Ünal")
        );
    }

    use super::*;

    #[test]
    fn builds_headers_and_parts() {
        let from = mailbox("Acme Shöp <hello@acme.example>").unwrap();
        let rendered = Rendered {
            subject: "Grüße, Ann — 15 % off".into(),
            html: "<p>Hallo</p>".into(),
            text: "Hallo\n".into(),
        };
        let env = Envelope {
            from: &from,
            reply_to: None,
            to: mailbox("Ann Lee <ann@example.com>").unwrap(),
            message_id: message_id("42", "x1", &from),
            unsubscribe_url: "https://t.example/u/abc",
            unsubscribe_mailto: Some("mailto:unsub@acme.example"),
            list_id: "<x1.acme.example>",
            feedback_id: "x1:s:marketing:acme.example",
            eight_bit: true,
        };
        let message = build(&rendered, &env).unwrap();
        assert_eq!(
            message.envelope(),
            &lettre::address::Envelope::try_from(message.headers()).unwrap(),
            "the envelope is the one lettre would derive from the headers"
        );
        let eml = String::from_utf8(message.formatted()).unwrap();
        assert!(
            eml.contains("Message-ID: <herald.42.x1@acme.example>"),
            "{eml}"
        );
        assert!(
            eml.contains(
                "List-Unsubscribe: <https://t.example/u/abc>, <mailto:unsub@acme.example>"
            )
        );
        assert!(eml.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        assert!(
            eml.contains("Subject: =?utf-8?"),
            "subject must be RFC 2047 encoded: {eml}"
        );
        assert!(eml.contains("multipart/alternative"));
        assert!(eml.find("text/plain").unwrap() < eml.find("text/html").unwrap());
        assert!(eml.contains("Content-Transfer-Encoding: 8bit"), "{eml}");
        assert!(eml.contains("Hallo\r\n"));
        assert!(mailbox("not an address").is_err());
        assert_eq!(eight_bit("a\nb\r\n").unwrap(), b"a\r\nb\r\n");
        assert!(eight_bit(&"x".repeat(999)).is_none());
        assert!(eight_bit("bare\rcr").is_none());
    }
}
