//! Tracking tokens: compact, URL-safe, HMAC-signed.
//!
//! A token names what a link does (open, click, unsubscribe) and for whom. The
//! purpose is part of the signed bytes, so an open token never works as an
//! unsubscribe. Keys rotate: the first key signs, every key verifies. A click
//! token carries the destination URL inside the signature, so the redirector can
//! only send people to links Herald itself put into a message.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of HMAC-SHA256 kept in a token: 128 bits.
const MAC_LEN: usize = 16;
const DOMAIN: &[u8] = b"herald-token-v1";
/// The longest token text [`Signer::verify`] reads: it bounds the work an
/// unauthenticated request can cause.
pub const MAX_TOKEN_LEN: usize = 4096;
/// The longest link URL a click token can carry and still verify: what is left
/// of [`MAX_TOKEN_LEN`] (base64: 3 bytes per 4 characters) after the purpose,
/// the largest varints (two ids, a link index) and the MAC. Longer links are
/// not tracked.
pub const MAX_URL_LEN: usize = MAX_TOKEN_LEN / 4 * 3 - (1 + 10 + 10 + 5 + MAC_LEN);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Open,
    Click,
    Unsubscribe,
}

impl Purpose {
    fn byte(self) -> u8 {
        match self {
            Purpose::Open => b'o',
            Purpose::Click => b'c',
            Purpose::Unsubscribe => b'u',
        }
    }
    fn from_byte(b: u8) -> Option<Purpose> {
        Some(match b {
            b'o' => Purpose::Open,
            b'c' => Purpose::Click,
            b'u' => Purpose::Unsubscribe,
            _ => return None,
        })
    }
}

/// What a verified token says. A `Token` that came out of [`Signer::verify`] is genuine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub purpose: Purpose,
    /// The delivery the message belonged to; 0 for previews.
    pub delivery_id: u64,
    pub customer_id: u64,
    /// For clicks: the link's position in the message and its destination.
    pub link: Option<(u32, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no secret is configured: set HERALD_SECRET (or `secret` in herald.toml) to sign tracking links"
    )]
    NoSecret,
    #[error("a secret must be at least 16 characters long")]
    ShortSecret,
}

/// Signs with the first key, verifies with any.
///
/// Each key is held as an HMAC state already keyed and fed the domain prefix:
/// a token costs a clone of that state instead of hashing the key pads again
/// (two of the four or five SHA-256 blocks a short token takes).
#[derive(Clone)]
pub struct Signer {
    keys: Vec<Hmac<Sha256>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

impl Signer {
    pub fn new(keys: &[String]) -> Result<Signer, TokenError> {
        if keys.is_empty() {
            return Err(TokenError::NoSecret);
        }
        if keys.iter().any(|k| k.len() < 16) {
            return Err(TokenError::ShortSecret);
        }
        let keyed = |k: &String| {
            // HMAC accepts keys of any length, so this cannot fail.
            let mut mac = match Hmac::<Sha256>::new_from_slice(k.as_bytes()) {
                Ok(m) => m,
                Err(_) => unreachable!("HMAC takes keys of any length"),
            };
            mac.update(DOMAIN);
            mac
        };
        Ok(Signer {
            keys: keys.iter().map(keyed).collect(),
        })
    }

    fn mac(key: &Hmac<Sha256>, payload: &[u8]) -> [u8; 32] {
        let mut mac = key.clone();
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    pub fn sign(&self, token: &Token) -> String {
        let mut out = String::new();
        self.sign_into(
            token.purpose,
            token.delivery_id,
            token.customer_id,
            token.link.as_ref().map(|(i, url)| (*i, url.as_str())),
            &mut out,
        );
        out
    }

    /// [`Signer::sign`] for a token given by its parts, appended to `out`:
    /// no `Token` (and no copy of the link) to build first. A link longer than
    /// [`MAX_URL_LEN`] makes a token that does not verify.
    pub fn sign_into(
        &self,
        purpose: Purpose,
        delivery_id: u64,
        customer_id: u64,
        link: Option<(u32, &str)>,
        out: &mut String,
    ) {
        let url_len = link.map_or(0, |(_, url)| url.len());
        let mut payload = Vec::with_capacity(32 + url_len + MAC_LEN);
        payload.push(purpose.byte());
        put_varint(&mut payload, delivery_id);
        put_varint(&mut payload, customer_id);
        if let Some((index, url)) = link {
            put_varint(&mut payload, u64::from(index));
            payload.extend_from_slice(url.as_bytes());
        }
        let mac = Signer::mac(&self.keys[0], &payload);
        payload.extend_from_slice(&mac[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode_string(&payload, out);
    }

    /// The token's contents if it is genuine and of the expected purpose.
    pub fn verify(&self, text: &str, purpose: Purpose) -> Option<Token> {
        if text.len() > MAX_TOKEN_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        if raw.len() < MAC_LEN + 3 {
            return None;
        }
        let (payload, tag) = raw.split_at(raw.len() - MAC_LEN);
        let genuine = self.keys.iter().any(|k| {
            let mac = Signer::mac(k, payload);
            constant_time_eq(&mac[..MAC_LEN], tag)
        });
        if !genuine || Purpose::from_byte(payload[0])? != purpose {
            return None;
        }
        let mut rest = &payload[1..];
        let delivery_id = take_varint(&mut rest)?;
        let customer_id = take_varint(&mut rest)?;
        let link = match purpose {
            Purpose::Click => {
                let index = u32::try_from(take_varint(&mut rest)?).ok()?;
                Some((index, String::from_utf8(rest.to_vec()).ok()?))
            }
            _ if rest.is_empty() => None,
            _ => return None,
        };
        Some(Token {
            purpose,
            delivery_id,
            customer_id,
            link,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(keys: &[&str]) -> Signer {
        Signer::new(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn round_trip_and_rotation() {
        let old = signer(&["old-key-0123456789"]);
        let rotated = signer(&["new-key-0123456789", "old-key-0123456789"]);
        let t = Token {
            purpose: Purpose::Click,
            delivery_id: 123_456,
            customer_id: 42,
            link: Some((3, "https://shop.example/sale?x=1".into())),
        };
        let text = old.sign(&t);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(rotated.verify(&text, Purpose::Click), Some(t.clone()));
        let new_text = rotated.sign(&t);
        assert_eq!(
            old.verify(&new_text, Purpose::Click),
            None,
            "old key alone cannot verify new tokens"
        );
        let open = Token {
            purpose: Purpose::Open,
            delivery_id: 7,
            customer_id: 9,
            link: None,
        };
        let o = rotated.sign(&open);
        assert!(o.len() < 32, "open tokens are compact: {o}");
        assert_eq!(rotated.verify(&o, Purpose::Open), Some(open));
    }

    #[test]
    fn the_longest_trackable_link_verifies() {
        // Found by the `token` fuzz target: a click token for a ~3 KB URL was
        // signed, but verify refused it as too long (a dead link in the email).
        let s = signer(&["key-0123456789abcdef"]);
        let click = |url_len: usize| Token {
            purpose: Purpose::Click,
            delivery_id: u64::MAX,
            customer_id: u64::MAX,
            link: Some((
                u32::MAX,
                format!("https://x.example/{}", "a".repeat(url_len - 18)),
            )),
        };
        let longest = click(MAX_URL_LEN);
        assert_eq!(s.verify(&s.sign(&longest), Purpose::Click), Some(longest));
        // The bound is tight: one byte more and the token is over MAX_TOKEN_LEN.
        assert_eq!(
            s.verify(&s.sign(&click(MAX_URL_LEN + 1)), Purpose::Click),
            None
        );
    }

    #[test]
    fn rejects_forgery_tampering_and_wrong_purpose() {
        let s = signer(&["key-0123456789abcdef"]);
        let open = s.sign(&Token {
            purpose: Purpose::Open,
            delivery_id: 7,
            customer_id: 9,
            link: None,
        });
        assert_eq!(s.verify(&open, Purpose::Unsubscribe), None);
        assert_eq!(s.verify(&open[..open.len() - 2], Purpose::Open), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&open).unwrap();
        bytes[1] ^= 1;
        assert_eq!(
            s.verify(&URL_SAFE_NO_PAD.encode(bytes), Purpose::Open),
            None
        );
        assert_eq!(s.verify("not a token!", Purpose::Open), None);
        assert_eq!(s.verify("", Purpose::Open), None);
        let other = signer(&["another-key-0123456789"]);
        assert_eq!(
            s.verify(
                &other.sign(&Token {
                    purpose: Purpose::Open,
                    delivery_id: 7,
                    customer_id: 9,
                    link: None
                }),
                Purpose::Open
            ),
            None
        );
        assert!(Signer::new(&[]).is_err());
        assert!(Signer::new(&["short".into()]).is_err());
    }
}
