//! Tracking tokens: `Signer::verify` on any text for every purpose, and a
//! sign → verify round trip of a token built from the same bytes.
#![no_main]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use herald::token::{MAX_URL_LEN, Purpose, Signer, Token};
use libfuzzer_sys::fuzz_target;

const PURPOSES: [Purpose; 3] = [Purpose::Open, Purpose::Click, Purpose::Unsubscribe];

/// The keys the seed corpus was signed with: the first signs, the second is an
/// older key still accepted (key rotation).
static SIGNER: LazyLock<Signer> = LazyLock::new(|| {
    Signer::new(&[
        "fuzz-key-0123456789abcdef".into(),
        "old-fuzz-key-0123456789".into(),
    ])
    .expect("valid keys")
});

/// A token as Herald issues them: only clicks carry a link.
#[derive(Debug, Arbitrary)]
struct Issued {
    purpose: u8,
    delivery_id: u64,
    customer_id: u64,
    index: u32,
    url: String,
}

impl Issued {
    fn token(self) -> Token {
        let purpose = PURPOSES[usize::from(self.purpose) % PURPOSES.len()];
        Token {
            purpose,
            delivery_id: self.delivery_id,
            customer_id: self.customer_id,
            link: (purpose == Purpose::Click).then_some((self.index, self.url)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let signer = &*SIGNER;

    // Any text: only a genuine token of the asked purpose verifies, and what it
    // says is signed again into a token that verifies to the same.
    let text = String::from_utf8_lossy(data);
    for purpose in PURPOSES {
        if let Some(t) = signer.verify(&text, purpose) {
            assert_eq!(t.purpose, purpose);
            assert_eq!(t.link.is_some(), purpose == Purpose::Click);
            assert_eq!(signer.verify(&signer.sign(&t), purpose), Some(t));
        }
    }

    // Round trip: what Herald signs verifies to exactly that, for its purpose
    // only; `sign_into` appends the same text `sign` returns. Links longer than
    // MAX_URL_LEN are never signed (the link rewriter leaves them untracked).
    if let Ok(issued) = Issued::arbitrary(&mut Unstructured::new(data)) {
        let token = issued.token();
        let text = signer.sign(&token);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "not URL-safe: {text}"
        );
        if token
            .link
            .as_ref()
            .is_none_or(|(_, url)| url.len() <= MAX_URL_LEN)
        {
            for purpose in PURPOSES {
                let expected = (purpose == token.purpose).then(|| token.clone());
                assert_eq!(
                    signer.verify(&text, purpose),
                    expected,
                    "verify as {purpose:?}"
                );
            }
        }
        let mut out = String::from("https://t.example/c/");
        let link = token.link.as_ref().map(|(i, url)| (*i, url.as_str()));
        signer.sign_into(
            token.purpose,
            token.delivery_id,
            token.customer_id,
            link,
            &mut out,
        );
        assert_eq!(
            out.strip_prefix("https://t.example/c/"),
            Some(text.as_str())
        );
    }
});
