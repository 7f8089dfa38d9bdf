//! Standard Webhooks signing (<https://www.standardwebhooks.com/>), through the
//! specification's reference library: the receiver verifies with the same code.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256
//! with the endpoint's secret (`whsec_` and base64, as the specification
//! serialises it), sent as `v1,{base64}` in `webhook-signature`.

use standardwebhooks::Webhook;

/// The three headers of one signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `webhook-id`: the same for every attempt of one message, so a receiver
    /// can drop a retry it already handled.
    pub id: String,
    /// `webhook-timestamp`: Unix seconds of this attempt.
    pub timestamp: i64,
    /// `webhook-signature`.
    pub signature: String,
}

impl SignedHeaders {
    /// (name, value) pairs, ready for a request.
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            (standardwebhooks::HEADER_WEBHOOK_ID, self.id.clone()),
            (
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                self.timestamp.to_string(),
            ),
            (
                standardwebhooks::HEADER_WEBHOOK_SIGNATURE,
                self.signature.clone(),
            ),
        ]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// The secret is not `whsec_` followed by base64 (the secret itself is
    /// never part of the message).
    #[error(
        "the signing secret of {endpoint} is not a Standard Webhooks secret (whsec_ followed by base64)"
    )]
    BadSecret { endpoint: String },
    #[error("the body to sign is not UTF-8 text")]
    NotText,
}

/// Signs requests to one endpoint.
pub struct Signer {
    webhook: Webhook,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// `secret` as the specification serialises it; `endpoint` names it in errors.
    pub fn new(secret: &str, endpoint: &str) -> Result<Signer, SignError> {
        let bad = || SignError::BadSecret {
            endpoint: endpoint.to_string(),
        };
        if !secret.starts_with("whsec_") || secret.len() <= "whsec_".len() {
            return Err(bad());
        }
        Webhook::new(secret)
            .map(|webhook| Signer { webhook })
            .map_err(|_| bad())
    }

    /// Signs `body` as message `id` sent at `timestamp` (Unix seconds).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> Result<SignedHeaders, SignError> {
        let signature = self
            .webhook
            .sign(id, timestamp, body)
            .map_err(|_| SignError::NotText)?;
        Ok(SignedHeaders {
            id: id.to_string(),
            timestamp,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's verification section.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn signs_the_specifications_example() {
        let signer = Signer::new(SECRET, "test").unwrap();
        let signed = signer
            .sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap();
        assert_eq!(
            signed.signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(signed.id, "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(signed.timestamp, 1614265330);
    }

    #[test]
    fn a_receiver_verifies_what_was_signed_and_nothing_else() {
        let signer = Signer::new(SECRET, "test").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let body = br#"{"type":"email.sent","data":{"customer":"ada@example.com"}}"#;
        let signed = signer.sign("msg_1", now, body).unwrap();
        let mut headers = axum::http::HeaderMap::new();
        for (name, value) in signed.pairs() {
            headers.insert(name, value.parse().unwrap());
        }
        let receiver = Webhook::new(SECRET).unwrap();
        assert!(receiver.verify(body, &headers).is_ok());
        assert!(
            receiver
                .verify(br#"{"type":"email.sent"}"#, &headers)
                .is_err()
        );
        let other = Webhook::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert!(other.verify(body, &headers).is_err());
    }

    #[test]
    fn a_bad_secret_is_named_by_its_endpoint_not_shown() {
        for secret in [
            "",
            "whsec_",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
        ] {
            let err = Signer::new(secret, "crm").unwrap_err();
            assert_eq!(
                err,
                SignError::BadSecret {
                    endpoint: "crm".into()
                }
            );
            let text = err.to_string();
            assert!(text.contains("crm"), "{text}");
            assert!(secret.len() < 8 || !text.contains(secret), "{text}");
        }
    }
}
