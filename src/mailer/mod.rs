//! The only module that talks SMTP or writes the outbox.
//!
//! A [`Mailer`] sends finished messages (bytes) either to an SMTP relay over
//! pooled connections or, when no `smtp_url` is configured, into `outbox_dir`
//! as one `.eml` file per message, so the SQLite default runs with nothing
//! installed. The SMTP-wide rate from config is applied here; a campaign's own
//! ceiling is a second [`Limiter`] its caller waits on.
//!
//! Rate limits are per process: N workers sharing one relay send at up to N
//! times the configured rate.

pub mod envelope;
pub mod reply;
pub mod smtp;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lettre::Address;
use lettre::transport::smtp::extension::{ClientId, Extension};
use std::sync::atomic::{AtomicBool, Ordering};

pub use reply::{Reply, SendError};

use crate::config::Settings;
use crate::quantity::Rate;

/// A rate ceiling that callers wait on before each message.
pub struct Limiter(DefaultDirectRateLimiter);

impl Limiter {
    /// Smooth pacing at `rate`, with a burst of at most one second's worth.
    pub fn new(rate: Rate) -> Limiter {
        let period = rate.per.as_duration() / rate.count.max(1);
        let burst = NonZeroU32::new(rate.per_second().ceil().clamp(1.0, 1e6) as u32)
            .unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Limiter(RateLimiter::direct(quota))
    }

    pub async fn wait(&self) {
        self.0.until_ready().await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("smtp_url: {0}")]
    Url(String),
    #[error("cannot create the outbox {path}: {source}")]
    Outbox {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the SMTP connection pool: {0}")]
    Pool(String),
}

enum Transport {
    Smtp {
        pool: smtp::Pool,
        timeout: Duration,
        label: String,
    },
    Outbox(PathBuf),
}

/// One finished message and its envelope.
pub struct Outgoing<'a> {
    pub from: &'a Address,
    pub to: &'a Address,
    /// A file-name-safe id, unique per delivery: the outbox file's name.
    pub id: &'a str,
    pub message: &'a [u8],
}

pub struct Mailer {
    transport: Transport,
    limiter: Option<Limiter>,
    /// Whether the relay announced 8BITMIME on the last connection seen
    /// (assumed until a connection says otherwise; the outbox takes 8bit).
    eight_bit: AtomicBool,
}

impl Mailer {
    pub fn new(settings: &Settings) -> Result<Mailer, MailerError> {
        let transport = match &settings.smtp_url {
            Some(url) => {
                let url = smtp::SmtpUrl::parse(url).map_err(MailerError::Url)?;
                let label = format!("SMTP relay {}:{}", url.host, url.port);
                let timeout = Duration::from_secs(60);
                let hello = match &settings.smtp_helo {
                    Some(name) => ClientId::Domain(name.clone()),
                    None => ClientId::default(),
                };
                let connector = smtp::Connector {
                    url,
                    hello,
                    timeout,
                };
                let pool = smtp::Pool::builder(connector)
                    .max_size(settings.smtp_concurrency)
                    .runtime(deadpool::Runtime::Tokio1)
                    .create_timeout(Some(timeout))
                    .build()
                    .map_err(|e| MailerError::Pool(e.to_string()))?;
                Transport::Smtp {
                    pool,
                    timeout,
                    label,
                }
            }
            None => {
                let dir = settings.outbox_dir.clone();
                std::fs::create_dir_all(&dir).map_err(|source| MailerError::Outbox {
                    path: dir.clone(),
                    source,
                })?;
                Transport::Outbox(dir)
            }
        };
        Ok(Mailer {
            transport,
            limiter: settings.smtp_rate.map(Limiter::new),
            eight_bit: AtomicBool::new(true),
        })
    }

    /// Whether messages may go out with 8bit bodies: the relay announced
    /// 8BITMIME (RFC 6152) on the last connection seen. Without it, messages
    /// are built quoted-printable (and signed as sent).
    pub fn eight_bit(&self) -> bool {
        self.eight_bit.load(Ordering::Relaxed)
    }

    /// Connects to the relay (or takes a pooled connection) to learn what it
    /// announces, before any message is built. Errors are left to the first
    /// send, which meets them in its own way.
    pub async fn probe(&self) {
        if let Transport::Smtp { pool, .. } = &self.transport
            && let Ok(conn) = pool.get().await
        {
            self.note_features(&conn);
        }
    }

    fn note_features(&self, conn: &lettre::transport::smtp::client::AsyncSmtpConnection) {
        let eight_bit = conn.server_info().supports_feature(Extension::EightBitMime);
        if self.eight_bit.swap(eight_bit, Ordering::Relaxed) && !eight_bit {
            tracing::warn!(
                "the relay does not announce 8BITMIME: messages go out quoted-printable"
            );
        }
    }

    /// Where messages go, for logs and summaries.
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp { label, .. } => label.clone(),
            Transport::Outbox(dir) => format!("outbox {}", dir.display()),
        }
    }

    /// Sends one message, waiting for the SMTP-wide rate and a free connection.
    /// Returns the relay's reply text (or the file written).
    pub async fn send(&self, out: Outgoing<'_>) -> Result<String, SendError> {
        if let Some(limiter) = &self.limiter {
            limiter.wait().await;
        }
        match &self.transport {
            Transport::Smtp { pool, timeout, .. } => {
                let mut conn = pool.get().await.map_err(|e| match e {
                    deadpool::managed::PoolError::Backend(e) => e,
                    other => SendError::Transient(other.to_string()),
                })?;
                self.note_features(&conn);
                smtp::send(&mut conn, *timeout, out.from, out.to, out.message).await
            }
            Transport::Outbox(dir) => write_eml(dir, out.id, out.message).await,
        }
    }
}

/// Writes `DIR/ID.eml` atomically: a re-send of the same delivery replaces it.
async fn write_eml(dir: &Path, id: &str, message: &[u8]) -> Result<String, SendError> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || id.starts_with('.')
    {
        return Err(SendError::Local(format!("{id:?} is not a safe file name")));
    }
    let path = dir.join(format!("{id}.eml"));
    let tmp = dir.join(format!(".{id}.eml.tmp"));
    let local = |e: std::io::Error| SendError::Local(format!("writing {}: {e}", path.display()));
    tokio::fs::write(&tmp, message).await.map_err(local)?;
    tokio::fs::rename(&tmp, &path).await.map_err(local)?;
    Ok(format!("written to {}", path.display()))
}
