//! Settings: command-line flag > `HERALD_*` environment variable > `herald.toml` > default.
//!
//! The CLI collects flags and environment variables into a [`Layer`]; this module
//! merges it with the file, types every value once and remembers where each came
//! from so `herald config` can say so. Secrets are never printed in clear.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::quantity::{FrequencyCap, Rate, Span};

/// One setting Herald understands.
#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    /// snake_case name: the toml key; the flag is its kebab-case form and the
    /// environment variable `HERALD_` + its upper-case form.
    pub name: &'static str,
    pub secret: bool,
    pub help: &'static str,
    pub default: Option<&'static str>,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://herald.db";

/// Every setting, in the order `herald config` prints them.
/// Settings a config file may give as a list of strings (joined by commas).
const LISTS: &[&str] = &["secret", "outbound_allow"];

pub const SETTINGS: &[SettingSpec] = &[
    spec(
        "database_url",
        false,
        "database: sqlite://FILE (default herald.db, created on first use) or postgres://…",
        Some(DEFAULT_DATABASE_URL),
    ),
    spec(
        "smtp_url",
        true,
        "SMTP relay: smtp://[user:pass@]host[:port][?tls=required|opportunistic|none] or smtps://…; unset = write .eml files to outbox_dir",
        None,
    ),
    spec(
        "smtp_rate",
        false,
        "SMTP-wide send rate ceiling, e.g. 50/s (per worker process)",
        None,
    ),
    spec(
        "smtp_concurrency",
        false,
        "messages in flight to the SMTP relay at once (per worker process)",
        Some("16"),
    ),
    spec(
        "max_attempts",
        false,
        "tries per message before a temporary SMTP failure becomes final",
        Some("5"),
    ),
    spec(
        "retry_backoff",
        false,
        "wait before the first retry; doubles each time (with jitter), at most 1h",
        Some("30s"),
    ),
    spec(
        "send_lease",
        false,
        "how long a claimed message belongs to its worker; a crashed worker's claims are retried after it",
        Some("2m"),
    ),
    spec(
        "outbox_dir",
        false,
        "where .eml files go when no smtp_url is set",
        Some("outbox"),
    ),
    spec(
        "public_url",
        false,
        "public base URL of the tracking endpoint, used in links",
        Some("http://localhost:8080"),
    ),
    spec(
        "secret",
        true,
        "comma-separated HMAC keys for tracking tokens; the first signs, all verify",
        None,
    ),
    spec(
        "http_addr",
        false,
        "listen address of the tracking HTTP service",
        Some("127.0.0.1:8080"),
    ),
    spec(
        "api_rate",
        false,
        "requests per API key to the /v1 API, e.g. 1000/s (per process); more are answered 429",
        Some("1000/s"),
    ),
    spec(
        "frequency_cap",
        false,
        "at most N campaign emails per customer per window, e.g. 3/7d",
        None,
    ),
    spec(
        "postal_address",
        false,
        "sender's postal address for message footers (CAN-SPAM)",
        None,
    ),
    spec(
        "unsubscribe_mailto",
        false,
        "address for mail-based unsubscribes, added to List-Unsubscribe (e.g. unsubscribe@acme.example)",
        None,
    ),
    spec(
        "feedback_tag",
        false,
        "the mail type in each message's Feedback-ID (CAMPAIGN:STEP:TAG:SENDER-DOMAIN), for Gmail's feedback loop",
        Some("marketing"),
    ),
    spec(
        "webhook_secret",
        true,
        "bearer secret required on the bounce/complaint webhook",
        None,
    ),
    spec(
        "outbound_allow",
        false,
        "hosts and networks Herald may send its own HTTP requests to (webhook steps, event forwarding), comma-separated: hooks.example.com, *.crm.example, 10.1.0.0/16; private and loopback addresses only when listed; empty = none",
        None,
    ),
    spec(
        "dkim_selector",
        false,
        "DKIM selector; with dkim_domain and dkim_key enables signing",
        None,
    ),
    spec("dkim_domain", false, "DKIM signing domain (d=)", None),
    spec(
        "dkim_key",
        false,
        "path to the DKIM private key (PEM, RSA or Ed25519)",
        None,
    ),
    spec(
        "allow_unsafe",
        false,
        "send over SMTP even with a loopback or non-https public_url or no postal_address (for a test relay)",
        Some("false"),
    ),
    spec(
        "smtp_helo",
        false,
        "the name Herald gives itself in SMTP EHLO (a name that resolves to the sending IP helps deliverability)",
        None,
    ),
    spec(
        "bounce_address",
        false,
        "envelope sender (MAIL FROM, Return-Path) where bounces go; unset = each campaign's From address",
        None,
    ),
    spec(
        "log_format",
        false,
        "log lines on stderr: text (coloured only on a terminal, never with NO_COLOR) or json (one object per line)",
        Some("text"),
    ),
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

const fn spec(
    name: &'static str,
    secret: bool,
    help: &'static str,
    default: Option<&'static str>,
) -> SettingSpec {
    SettingSpec {
        name,
        secret,
        help,
        default,
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env => f.write_str("environment"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// Where a value came from, as the user wrote it: `HERALD_SECRET`, `--secret`,
/// the file, or the default.
fn origin(name: &str, from: &Source) -> String {
    match from {
        Source::Env => format!("HERALD_{}", name.to_ascii_uppercase()),
        Source::Flag => format!("--{}", name.replace('_', "-")),
        other => other.to_string(),
    }
}

/// Raw values by setting name, each with its source.
pub type Layer = BTreeMap<&'static str, (String, Source)>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{path}: unknown setting {key:?}; known settings: {known}")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("setting {name} (from {}): {message}", origin(name, from))]
    Invalid {
        name: &'static str,
        from: Source,
        message: String,
    },
}

/// The effective, typed settings.
#[derive(Clone)]
pub struct Settings {
    pub database_url: String,
    pub smtp_url: Option<String>,
    pub smtp_rate: Option<Rate>,
    pub smtp_concurrency: usize,
    pub max_attempts: u32,
    pub retry_backoff: Span,
    pub send_lease: Span,
    pub outbox_dir: PathBuf,
    pub public_url: String,
    pub secrets: Vec<String>,
    pub http_addr: SocketAddr,
    /// Requests per API key to the `/v1` API, per process.
    pub api_rate: Rate,
    pub frequency_cap: Option<FrequencyCap>,
    pub postal_address: Option<String>,
    pub unsubscribe_mailto: Option<String>,
    pub feedback_tag: String,
    pub webhook_secret: Option<String>,
    /// Where Herald's own HTTP requests may go ([`crate::outbound::allow`]).
    pub outbound_allow: crate::outbound::allow::AllowList,
    pub dkim_selector: Option<String>,
    pub dkim_domain: Option<String>,
    pub dkim_key: Option<PathBuf>,
    /// Skip [`Settings::check_for_sending`]'s refusals (a test relay).
    pub allow_unsafe: bool,
    pub log_format: LogFormat,
    /// The EHLO name; `None` = lettre's default (the host name).
    pub smtp_helo: Option<String>,
    /// The envelope sender; `None` = each campaign's From address.
    pub bounce_address: Option<lettre::Address>,
    raw: Layer,
}

impl fmt::Debug for Settings {
    // Hand-written so that a stray `{:?}` can never log a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Settings");
        for (name, value, _) in self.describe() {
            d.field(name, &value);
        }
        d.finish()
    }
}

impl Settings {
    /// Merges flags/environment (`overrides`) over the config file over defaults.
    ///
    /// `config_path` is the `--config` value; without it `./herald.toml` is read
    /// when it exists.
    pub fn load(overrides: Layer, config_path: Option<&Path>) -> Result<Settings, ConfigError> {
        let file_layer = match config_path {
            Some(path) => read_file(path)?,
            None => {
                let default = Path::new("herald.toml");
                if default.exists() {
                    read_file(default)?
                } else {
                    Layer::new()
                }
            }
        };
        Settings::merge(overrides, file_layer)
    }

    /// Defaults only, with the database URL given: for tests and embedding.
    pub fn for_database(database_url: &str) -> Settings {
        let mut overrides = Layer::new();
        overrides.insert("database_url", (database_url.to_string(), Source::Flag));
        // Defaults always parse; a failure here is a bug in SETTINGS.
        Settings::merge(overrides, Layer::new())
            .unwrap_or_else(|e| panic!("built-in defaults are invalid: {e}"))
    }

    fn merge(overrides: Layer, file_layer: Layer) -> Result<Settings, ConfigError> {
        let mut raw = Layer::new();
        for spec in SETTINGS {
            let value = overrides
                .get(spec.name)
                .or_else(|| file_layer.get(spec.name))
                .cloned()
                .or_else(|| spec.default.map(|d| (d.to_string(), Source::Default)));
            if let Some(v) = value {
                raw.insert(spec.name, v);
            }
        }
        Settings::from_raw(raw)
    }

    fn from_raw(raw: Layer) -> Result<Settings, ConfigError> {
        let get = |name: &'static str| -> Option<(&str, &Source)> {
            raw.get(name)
                .map(|(v, s)| (v.as_str(), s))
                .filter(|(v, _)| !v.trim().is_empty())
        };
        let invalid = |name: &'static str, source: &Source, message: String| ConfigError::Invalid {
            name,
            from: source.clone(),
            message,
        };
        let text = |name| get(name).map(|(v, _)| v.trim().to_string());

        let database_url = text("database_url").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        if let Some((v, s)) = get("database_url")
            && !(v.starts_with("sqlite:")
                || v.starts_with("postgres://")
                || v.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                s,
                "expected sqlite://FILE or postgres://…".into(),
            ));
        }
        let smtp_url = text("smtp_url");
        if let Some((v, s)) = get("smtp_url")
            && !(v.starts_with("smtp://") || v.starts_with("smtps://"))
        {
            return Err(invalid(
                "smtp_url",
                s,
                "expected smtp://… or smtps://…".into(),
            ));
        }
        let smtp_rate = match get("smtp_rate") {
            Some((v, s)) => Some(
                v.parse::<Rate>()
                    .map_err(|e| invalid("smtp_rate", s, e.to_string()))?,
            ),
            None => None,
        };
        let api_rate = match get("api_rate") {
            Some((v, s)) => match v.parse::<Rate>() {
                Ok(r) if r.count > 0 => r,
                Ok(_) => return Err(invalid("api_rate", s, "the rate must be above 0".into())),
                Err(e) => return Err(invalid("api_rate", s, e.to_string())),
            },
            None => Rate {
                count: 1000,
                per: Span::from_secs(1),
            },
        };
        let smtp_concurrency = match get("smtp_concurrency") {
            Some((v, s)) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "smtp_concurrency",
                        s,
                        format!("{v:?} is not a whole number from 1 to 1024"),
                    ));
                }
            },
            None => 16,
        };
        let max_attempts = match get("max_attempts") {
            Some((v, s)) => match v.trim().parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "max_attempts",
                        s,
                        format!("{v:?} is not a whole number from 1 to 100"),
                    ));
                }
            },
            None => 5,
        };
        let retry_backoff = match get("retry_backoff") {
            Some((v, s)) => v
                .parse::<Span>()
                .map_err(|e| invalid("retry_backoff", s, e.to_string()))?,
            None => Span::from_secs(30),
        };
        let send_lease = match get("send_lease") {
            Some((v, s)) => v
                .parse::<Span>()
                .map_err(|e| invalid("send_lease", s, e.to_string()))?,
            None => Span::from_secs(120),
        };
        let frequency_cap = match get("frequency_cap") {
            Some((v, s)) => Some(
                v.parse::<FrequencyCap>()
                    .map_err(|e| invalid("frequency_cap", s, e.to_string()))?,
            ),
            None => None,
        };
        let http_addr = match get("http_addr") {
            Some((v, s)) => v.trim().parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "http_addr",
                    s,
                    format!("{v:?} is not an address such as 127.0.0.1:8080"),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let public_url = text("public_url").unwrap_or_else(|| "http://localhost:8080".into());
        if let Some((v, s)) = get("public_url")
            && !(v.starts_with("http://") || v.starts_with("https://"))
        {
            return Err(invalid(
                "public_url",
                s,
                "expected an http:// or https:// URL".into(),
            ));
        }
        if let Some((v, s)) = get("secret")
            && v.split(',')
                .map(str::trim)
                .any(|k| !k.is_empty() && k.len() < 16)
        {
            return Err(invalid(
                "secret",
                s,
                "every key must be at least 16 characters (generate one with `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        let allow_unsafe = match get("allow_unsafe") {
            Some((v, s)) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(invalid(
                        "allow_unsafe",
                        s,
                        format!("{v:?} is not true or false"),
                    ));
                }
            },
            None => false,
        };
        let log_format = match get("log_format") {
            Some((v, s)) => match v.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(invalid(
                        "log_format",
                        s,
                        format!("{v:?} is not text or json"),
                    ));
                }
            },
            None => LogFormat::Text,
        };
        let smtp_helo = match get("smtp_helo") {
            Some((v, s)) => {
                let name = v.trim();
                let ok = name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
                if !ok {
                    return Err(invalid(
                        "smtp_helo",
                        s,
                        format!("{name:?} is not a host name such as mail.acme.example"),
                    ));
                }
                Some(name.to_string())
            }
            None => None,
        };
        let bounce_address = match get("bounce_address") {
            Some((v, s)) => Some(v.trim().parse::<lettre::Address>().map_err(|e| {
                invalid("bounce_address", s, format!("{v:?} is not an address: {e}"))
            })?),
            None => None,
        };
        let outbound_allow = match get("outbound_allow") {
            Some((v, s)) => {
                let entries: Vec<&str> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .collect();
                crate::outbound::allow::AllowList::parse(&entries)
                    .map_err(|e| invalid("outbound_allow", s, e.to_string()))?
            }
            None => Default::default(),
        };
        let secrets = text("secret")
            .map(|v| {
                v.split(',')
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Settings {
            database_url,
            smtp_url,
            smtp_rate,
            smtp_concurrency,
            max_attempts,
            retry_backoff,
            send_lease,
            outbox_dir: PathBuf::from(text("outbox_dir").unwrap_or_else(|| "outbox".into())),
            public_url: public_url.trim_end_matches('/').to_string(),
            secrets,
            http_addr,
            api_rate,
            frequency_cap,
            postal_address: text("postal_address"),
            unsubscribe_mailto: text("unsubscribe_mailto")
                .map(|a| a.trim_start_matches("mailto:").to_string()),
            feedback_tag: text("feedback_tag").unwrap_or_else(|| "marketing".into()),
            webhook_secret: text("webhook_secret"),
            outbound_allow,
            dkim_selector: text("dkim_selector"),
            dkim_domain: text("dkim_domain"),
            dkim_key: text("dkim_key").map(PathBuf::from),
            allow_unsafe,
            log_format,
            smtp_helo,
            bounce_address,
            raw,
        })
    }

    /// What sending over SMTP needs beyond valid values, checked before any
    /// work: links that recipients (and one-click unsubscribe) can reach, and a
    /// postal address for the footer. Refused unless `allow_unsafe`; returns
    /// warnings for what only costs deliverability (DKIM), given the campaigns'
    /// From domains. Nothing is checked when messages go to the outbox.
    pub fn check_for_sending<'a>(
        &self,
        from_domains: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();
        if self.smtp_url.is_none() {
            return Ok(warnings);
        }
        let refuse = |name: &'static str, message: String| {
            let from = self
                .raw
                .get(name)
                .map(|(_, s)| s.clone())
                .unwrap_or(Source::Default);
            ConfigError::Invalid {
                name,
                from,
                message: format!(
                    "{message}; set it, or allow_unsafe = true (--allow-unsafe, HERALD_ALLOW_UNSAFE=true) for a test relay"
                ),
            }
        };
        if !self.allow_unsafe {
            if let Some(problem) = unreachable_url(&self.public_url) {
                return Err(refuse(
                    "public_url",
                    format!(
                        "{} {problem}: tracked links and one-click unsubscribe would not work for recipients",
                        self.public_url
                    ),
                ));
            }
            if self.postal_address.is_none() {
                return Err(refuse(
                    "postal_address",
                    "sending over SMTP needs the sender's postal address for the footer (CAN-SPAM, GDPR imprint)".into(),
                ));
            }
        }
        match &self.dkim_domain {
            None => warnings.push(
                "DKIM is not configured (dkim_selector, dkim_domain, dkim_key): Gmail and Yahoo reject or junk unsigned bulk mail".to_string(),
            ),
            Some(d) => {
                let d = d.to_ascii_lowercase();
                let mut seen = std::collections::BTreeSet::new();
                for from in from_domains {
                    let from = from.to_ascii_lowercase();
                    let aligned = from == d || from.ends_with(&format!(".{d}"));
                    if !aligned && seen.insert(from.clone()) {
                        warnings.push(format!(
                            "DKIM domain {d} does not align with the From domain {from}: DMARC fails unless SPF aligns"
                        ));
                    }
                }
            }
        }
        Ok(warnings)
    }

    /// Every setting as (name, printable value, source), secrets masked.
    pub fn describe(&self) -> Vec<(&'static str, String, Source)> {
        SETTINGS
            .iter()
            .map(|spec| match self.raw.get(spec.name) {
                Some((value, source)) => {
                    let shown = if spec.secret || spec.name == "database_url" {
                        mask(spec.name, value)
                    } else {
                        value.clone()
                    };
                    (spec.name, shown, source.clone())
                }
                None => (spec.name, "(unset)".to_string(), Source::Default),
            })
            .collect()
    }
}

/// Why recipients could not reach `url`, if they could not: a loopback or
/// unspecified host, or plain http.
fn unreachable_url(url: &str) -> Option<&'static str> {
    let parsed = url::Url::parse(url).ok()?;
    let local = match parsed.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
        None => true,
    };
    if local {
        Some("points at this machine")
    } else if parsed.scheme() != "https" {
        Some("is not https")
    } else {
        None
    }
}

/// Hides secrets: whole values for keys, only the password inside URLs.
fn mask(name: &str, value: &str) -> String {
    if value.contains("://") {
        return redact(value);
    }
    if name == "secret" {
        let n = value.split(',').filter(|k| !k.trim().is_empty()).count();
        return format!("**** ({n} key{})", if n == 1 { "" } else { "s" });
    }
    "****".to_string()
}

/// A URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:****@{host}")
            }
            _ => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn read_file(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })?;
    let mut layer = Layer::new();
    for (key, value) in table {
        let spec =
            SETTINGS
                .iter()
                .find(|s| s.name == key)
                .ok_or_else(|| ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    known: SETTINGS
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Array(items) if LISTS.contains(&spec.name) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ConfigError::Toml {
                    path: path.to_path_buf(),
                    message: format!("{key}: expected a string or a list of strings"),
                })?
                .join(","),
            other => {
                return Err(ConfigError::Toml {
                    path: path.to_path_buf(),
                    message: format!("{key}: expected a string, found {}", other.type_str()),
                });
            }
        };
        layer.insert(spec.name, (text, Source::File(path.to_path_buf())));
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(name: &'static str, v: &str) -> Layer {
        let mut l = Layer::new();
        l.insert(name, (v.to_string(), Source::Flag));
        l
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:****@h:5432/db"
        );
        assert_eq!(redact("sqlite://herald.db"), "sqlite://herald.db");
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "smtp_rate = \"10/s\"\nsmtp_concurrency = 4\nsecret = [\"key-a-0123456789ab\", \"key-b-0123456789ab\"]\n",
        )
        .unwrap();
        let s = Settings::load(flag("smtp_rate", "50/s"), Some(&path)).unwrap();
        assert_eq!(s.smtp_rate.unwrap().count, 50);
        assert_eq!(s.smtp_concurrency, 4);
        assert_eq!(s.secrets, vec!["key-a-0123456789ab", "key-b-0123456789ab"]);
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        let d = s.describe();
        let find = |n: &str| d.iter().find(|(k, _, _)| *k == n).unwrap().clone();
        assert_eq!(find("smtp_rate").2, Source::Flag);
        assert_eq!(find("smtp_concurrency").2, Source::File(path.clone()));
        assert_eq!(find("secret").1, "**** (2 keys)");
        assert_eq!(find("outbox_dir").2, Source::Default);
    }

    #[test]
    fn outbound_allow_is_a_list_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "outbound_allow = [\"hooks.example.com\", \"127.0.0.1\"]\n",
        )
        .unwrap();
        let s = Settings::load(Layer::new(), Some(&path)).unwrap();
        let url = |u: &str| url::Url::parse(u).unwrap();
        assert!(
            s.outbound_allow
                .check_url(&url("https://hooks.example.com/in"))
                .is_ok()
        );
        assert!(
            s.outbound_allow
                .check_url(&url("http://127.0.0.1:9/"))
                .is_ok()
        );
        assert!(
            s.outbound_allow
                .check_url(&url("http://10.0.0.1/"))
                .is_err()
        );
        let none = Settings::load(Layer::new(), None).unwrap();
        assert!(
            none.outbound_allow
                .check_url(&url("https://hooks.example.com/"))
                .is_err()
        );
        let e = Settings::load(
            flag("outbound_allow", "hooks.example.com, https://x.example/in"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("outbound_allow"), "{e}");
        assert!(e.contains("\"https://x.example/in\""), "{e}");
        assert!(e.contains("not a URL"), "{e}");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "smtp_rat = \"10/s\"\n").unwrap();
        let e = Settings::load(Layer::new(), Some(&path))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown setting \"smtp_rat\""), "{e}");
        let e = Settings::load(
            flag("frequency_cap", "3 per week"),
            Some(Path::new("/nonexistent/x.toml")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot read config file"), "{e}");
        let e = Settings::load(flag("smtp_concurrency", "0"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("smtp_concurrency"), "{e}");
    }

    #[test]
    fn masks_secrets() {
        assert_eq!(
            mask("smtp_url", "smtp://bob:hunter2@mx:587"),
            "smtp://bob:****@mx:587"
        );
        assert_eq!(
            mask("database_url", "postgres://u:p@h/db"),
            "postgres://u:****@h/db"
        );
        assert_eq!(mask("webhook_secret", "hunter2"), "****");
        let s = Settings::load(flag("smtp_url", "smtp://bob:hunter2@mx:587"), None).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
