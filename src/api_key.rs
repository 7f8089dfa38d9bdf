//! API keys of the `/v1` HTTP API as domain values: the scopes a key can
//! have, its name, and the key itself — `hk_<prefix>_<secret>`, where the
//! prefix (12 hex digits) is public and finds the key's row, and the secret
//! (64 hex digits, 32 random bytes) is never stored: only the SHA-256 digest of
//! the whole key is. Keys are random, so a fast hash is enough (no password
//! hashing); digests are compared in constant time.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What a key may do.
///
/// `admin` includes `read` and `ingest`; `ingest` and `read` are independent:
/// a write key embedded in a website or an app (as Segment's write keys are)
/// must not read customer data, and a reporting tool that reads must not write.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Sends events and profile updates (Segment's write key).
    Ingest,
    /// Reads customers and their data.
    Read,
    /// Everything, including managing keys.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Whether a key of this scope may do what needs `needed`.
    pub fn grants(self, needed: Scope) -> bool {
        self == needed || self == Scope::Admin
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown scope {0:?}: expected ingest, read or admin")]
    Scope(String),
    #[error(
        "invalid key name {0:?}: 1 to 64 letters, digits, '.', '-' or '_', starting with a letter or digit"
    )]
    Name(String),
}

impl FromStr for Scope {
    type Err = KeyError;
    fn from_str(text: &str) -> Result<Scope, KeyError> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| KeyError::Scope(text.to_string()))
    }
}

/// A key's name, as operators refer to it (`herald api-key revoke NAME`): 1 to
/// 64 ASCII letters, digits, `.`, `-`, `_`, starting with a letter or digit,
/// so it prints safely in a table, a log line and a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(text: &str) -> Result<KeyName, KeyError> {
        let ok = (1..=64).contains(&text.len())
            && text.starts_with(|c: char| c.is_ascii_alphanumeric())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if ok {
            Ok(KeyName(text.to_string()))
        } else {
            Err(KeyError::Name(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hex digits of a key's public prefix.
pub const PREFIX_LEN: usize = 12;
/// Hex digits of a key's secret part (32 bytes).
pub const SECRET_LEN: usize = 64;

/// The SHA-256 digest of a whole key: what is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    fn of(key: &str) -> KeyDigest {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A stored digest; `None` when the text is not 64 hex digits.
    pub fn from_hex(text: &str) -> Option<KeyDigest> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(KeyDigest(out))
    }

    /// Equality that takes the same time wherever the digests differ.
    pub fn matches(&self, other: &KeyDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(…)")
    }
}

/// A whole key, shown once when created. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainKey(String);

impl PlainKey {
    /// The key made of a prefix and a secret, both lower-case hex of the
    /// right lengths (the store draws them from the operating system).
    pub fn new(prefix: &str, secret: &str) -> Option<PlainKey> {
        let key = PlainKey(format!("hk_{prefix}_{secret}"));
        let shaped = Offered::parse(&key.0).is_some();
        shaped.then_some(key)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(&self.0)
    }
}

impl fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainKey(…)")
    }
}

/// A key a client offered that has the shape of one: its prefix, to find the
/// row, and its digest, to compare with the stored one.
#[derive(Debug, Clone, Copy)]
pub struct Offered<'a> {
    pub prefix: &'a str,
    pub digest: KeyDigest,
}

impl<'a> Offered<'a> {
    /// `None` for anything that is not `hk_` + 12 + `_` + 64 lower-case hex
    /// digits: such a key is wrong without asking the database.
    pub fn parse(key: &'a str) -> Option<Offered<'a>> {
        let rest = key.strip_prefix("hk_")?;
        let (prefix, secret) = rest.split_once('_')?;
        let hex = |s: &str, len| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        (hex(prefix, PREFIX_LEN) && hex(secret, SECRET_LEN)).then(|| Offered {
            prefix,
            digest: KeyDigest::of(key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "0123456789ab";
    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn admin_includes_read_and_ingest_which_are_independent() {
        assert!(Scope::Admin.grants(Scope::Read));
        assert!(Scope::Admin.grants(Scope::Ingest));
        assert!(Scope::Read.grants(Scope::Read));
        assert!(!Scope::Read.grants(Scope::Ingest));
        assert!(!Scope::Ingest.grants(Scope::Read));
        assert!(!Scope::Read.grants(Scope::Admin));
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
        }
        assert!("Admin".parse::<Scope>().is_err());
    }

    #[test]
    fn names_are_safe_to_print() {
        for ok in ["shop", "web-2", "a", "Shop_Prod.eu"] {
            assert!(KeyName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a b", "ü", "a/b", &"x".repeat(65)] {
            assert!(KeyName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_parse_only_in_their_own_shape_and_digests_compare() {
        let key = PlainKey::new(PREFIX, SECRET).unwrap();
        assert_eq!(key.expose(), format!("hk_{PREFIX}_{SECRET}"));
        let offered = Offered::parse(key.expose()).unwrap();
        assert_eq!(offered.prefix, PREFIX);
        assert!(offered.digest.matches(&key.digest()));
        let stored = KeyDigest::from_hex(&key.digest().to_hex()).unwrap();
        assert!(stored.matches(&offered.digest));
        let other = Offered::parse(&format!("hk_{PREFIX}_{}", &SECRET.replace('0', "1")))
            .unwrap()
            .digest;
        assert!(!other.matches(&stored));
        for bad in [
            "",
            "hk_",
            &format!("hk_{PREFIX}{SECRET}"),
            &format!("HK_{PREFIX}_{SECRET}"),
            &format!("hk_{PREFIX}_{}", SECRET.to_uppercase()),
            &format!("hk_{PREFIX}_{SECRET}0"),
            &format!("hk_{}_{SECRET}", &PREFIX[1..]),
        ] {
            assert!(Offered::parse(bad).is_none(), "{bad}");
        }
        assert!(PlainKey::new("xyz", SECRET).is_none());
        assert!(KeyDigest::from_hex("zz").is_none());
        assert_eq!(format!("{key:?}"), "PlainKey(…)");
    }
}
