//! SMTP over pooled connections with TCP_NODELAY.
//!
//! lettre's own pool leaves Nagle's algorithm on, which caps a connection at
//! ~23 messages/s on loopback (every SMTP round trip waits for a delayed ACK).
//! Herald opens the socket itself, sets TCP_NODELAY and hands it to lettre's
//! connection; deadpool keeps the connections, and its size bounds concurrency.

use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

use super::envelope::EnvelopeAddress;
use super::reply::{Reply, SendError};

/// How to secure the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (`smtps://`).
    Implicit,
    /// STARTTLS, and fail if the server does not offer it.
    Required,
    /// STARTTLS when offered (the default for `smtp://`).
    Opportunistic,
    /// Plain text (`?tls=none`), e.g. a relay on loopback.
    None,
}

/// A parsed `smtp_url`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl SmtpUrl {
    /// `smtp://[user:pass@]host[:port][?tls=required|opportunistic|none]` (port 587
    /// when STARTTLS is required, else 25) or `smtps://…` (port 465).
    pub fn parse(text: &str) -> Result<SmtpUrl, String> {
        let url = url::Url::parse(text).map_err(|e| format!("invalid SMTP URL: {e}"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the SMTP URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.to_string());
        let security = match (url.scheme(), tls.as_deref()) {
            ("smtps", None | Some("implicit")) => Security::Implicit,
            ("smtp", Some("required")) => Security::Required,
            ("smtp", None | Some("opportunistic")) => Security::Opportunistic,
            ("smtp", Some("none")) => Security::None,
            (scheme @ ("smtp" | "smtps"), Some(other)) => {
                return Err(format!(
                    "{scheme}:// does not take tls={other}; use required, opportunistic or none with smtp://"
                ));
            }
            (scheme, _) => {
                return Err(format!(
                    "unsupported scheme {scheme:?}: use smtp:// or smtps://"
                ));
            }
        };
        let port = url.port().unwrap_or(match security {
            Security::Implicit => 465,
            Security::Required => 587,
            _ => 25,
        });
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| "the SMTP URL's credentials are not valid UTF-8".to_string())
        };
        let credentials = if url.username().is_empty() {
            None
        } else {
            Some((
                decode(url.username())?,
                decode(url.password().unwrap_or(""))?,
            ))
        };
        Ok(SmtpUrl {
            host,
            port,
            security,
            credentials,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Opens and recycles SMTP connections for deadpool.
pub struct Connector {
    pub url: SmtpUrl,
    pub hello: ClientId,
    pub timeout: Duration,
}

/// A pooled SMTP connection.
pub type Pool = deadpool::managed::Pool<Connector>;

impl deadpool::managed::Manager for Connector {
    type Type = AsyncSmtpConnection;
    type Error = SendError;

    async fn create(&self) -> Result<AsyncSmtpConnection, SendError> {
        let transient = |what: &str, e: &dyn std::fmt::Display| {
            SendError::Transient(format!("{what} {}:{}: {e}", self.url.host, self.url.port))
        };
        let tls = || {
            TlsParameters::new(self.url.host.clone())
                .map_err(|e| SendError::Local(format!("TLS setup for {}: {e}", self.url.host)))
        };
        let mut conn = match self.url.security {
            Security::Implicit => within(
                self.timeout,
                AsyncSmtpConnection::connect_tokio1(
                    (self.url.host.as_str(), self.url.port),
                    Some(self.timeout),
                    &self.hello,
                    Some(tls()?),
                    None,
                ),
            )
            .await?
            .map_err(|e| transient("cannot connect to", &e))?,
            _ => {
                let stream = within(
                    self.timeout,
                    tokio::net::TcpStream::connect((self.url.host.as_str(), self.url.port)),
                )
                .await?
                .map_err(|e| transient("cannot connect to", &e))?;
                stream
                    .set_nodelay(true)
                    .map_err(|e| transient("cannot configure the socket to", &e))?;
                within(
                    self.timeout,
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello),
                )
                .await?
                .map_err(|e| transient("no SMTP greeting from", &e))?
            }
        };
        let offers_starttls = conn.server_info().supports_feature(Extension::StartTls);
        match self.url.security {
            Security::Required if !offers_starttls => {
                return Err(SendError::Local(format!(
                    "{} does not offer STARTTLS, which tls=required demands",
                    self.url.host
                )));
            }
            Security::Required | Security::Opportunistic if offers_starttls => {
                within(self.timeout, conn.starttls(tls()?, &self.hello))
                    .await?
                    .map_err(|e| transient("STARTTLS failed with", &e))?;
            }
            _ => {}
        }
        if let Some((user, pass)) = &self.url.credentials {
            let creds = Credentials::new(user.clone(), pass.clone());
            within(
                self.timeout,
                conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds),
            )
            .await?
            .map_err(|e| match e.status() {
                Some(code) if e.is_permanent() => SendError::Local(format!(
                    "authentication as {user} refused by {}: {code} {}",
                    self.url.host,
                    source_text(&e)
                )),
                _ => transient("authentication failed with", &e),
            })?;
        }
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut AsyncSmtpConnection,
        metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<SendError> {
        if conn.has_broken() {
            return Err(deadpool::managed::RecycleError::message(
                "connection broken",
            ));
        }
        // Relays drop idle connections; probe one that sat for a while rather
        // than fail the next message on it.
        if metrics.last_used() > Duration::from_secs(10) && !conn.test_connected().await {
            return Err(deadpool::managed::RecycleError::message(
                "connection went idle",
            ));
        }
        Ok(())
    }
}

async fn within<F: Future>(limit: Duration, f: F) -> Result<F::Output, SendError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| SendError::Transient(format!("SMTP timed out after {} s", limit.as_secs())))
}

/// The server's reply text inside a lettre error.
fn source_text(e: &lettre::transport::smtp::Error) -> String {
    use std::error::Error as _;
    e.source().map(|s| s.to_string()).unwrap_or_default()
}

/// Maps a lettre error: a reply keeps its code; anything else is transient.
fn classify(e: lettre::transport::smtp::Error) -> SendError {
    match e.status() {
        Some(code) => {
            let reply = Reply::parse(code_number(&code), &source_text(&e));
            if reply.is_permanent() {
                SendError::Permanent(reply)
            } else {
                SendError::Transient(reply.to_string())
            }
        }
        None => SendError::Transient(e.to_string()),
    }
}

fn code_number(code: &lettre::transport::smtp::response::Code) -> u16 {
    code.to_string().parse().unwrap_or(0)
}

/// Sends one message on `conn`: MAIL, RCPT, DATA, body. A connection that saw
/// any failure is aborted so the pool never reuses it mid-transaction.
pub async fn send(
    conn: &mut AsyncSmtpConnection,
    timeout: Duration,
    from: &Address,
    to: &Address,
    message: &[u8],
) -> Result<String, SendError> {
    // An address this relay cannot take fails before any command: the
    // connection stays good for the next message.
    let utf8 = conn.server_info().supports_feature(Extension::SmtpUtfEight);
    let envelope = |a: &Address| {
        EnvelopeAddress::new(a)
            .and_then(|e| e.for_relay(utf8))
            .map_err(|e| SendError::Local(e.to_string()))
    };
    let (from, to) = (envelope(from)?, envelope(to)?);
    let result = transaction(conn, timeout, from, to, message).await;
    if result.is_err() {
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.abort()).await;
    }
    result
}

async fn transaction(
    conn: &mut AsyncSmtpConnection,
    timeout: Duration,
    from: Address,
    to: Address,
    message: &[u8],
) -> Result<String, SendError> {
    let mut params = Vec::new();
    if !from.user().is_ascii() || !to.user().is_ascii() {
        params.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            // Built 8bit before this connection showed the relay lacks
            // 8BITMIME (the mailer has noted it): built again, it goes
            // quoted-printable.
            return Err(SendError::Transient(
                "the relay does not announce 8BITMIME: sent again quoted-printable".into(),
            ));
        }
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    within(timeout, conn.command(Mail::new(Some(from), params)))
        .await?
        .map_err(classify)?;
    within(timeout, conn.command(Rcpt::new(to, Vec::new())))
        .await?
        .map_err(classify)?;
    within(timeout, conn.command(Data))
        .await?
        .map_err(classify)?;
    // From here the relay may have the message: a lost connection is "unknown".
    let reply = match tokio::time::timeout(timeout, conn.message(message)).await {
        Err(_) => {
            return Err(SendError::Unknown(format!(
                "no reply to the message within {} s",
                timeout.as_secs()
            )));
        }
        Ok(Err(e)) => match e.status() {
            Some(_) => return Err(classify(e)),
            None => return Err(SendError::Unknown(e.to_string())),
        },
        Ok(Ok(reply)) => reply,
    };
    Ok(reply.message().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = SmtpUrl::parse("smtp://mailer:p%40ss@relay.example:2525?tls=required").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.security),
            ("relay.example", 2525, Security::Required)
        );
        assert_eq!(u.credentials, Some(("mailer".into(), "p@ss".into())));
        assert!(!format!("{u:?}").contains("p@ss"));
        assert_eq!(SmtpUrl::parse("smtps://relay.example").unwrap().port, 465);
        assert_eq!(
            SmtpUrl::parse("smtp://127.0.0.1?tls=none")
                .unwrap()
                .security,
            Security::None
        );
        assert_eq!(SmtpUrl::parse("smtp://relay.example").unwrap().port, 25);
        assert!(SmtpUrl::parse("http://relay.example").is_err());
        assert!(SmtpUrl::parse("smtps://relay.example?tls=none").is_err());
    }
}
