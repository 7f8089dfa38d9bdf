//! SMTP reply parsing: `Reply::parse` and its predicates, on replies read the
//! way the mailer reads them (lettre's parser, then the joined message lines)
//! and on a leading code with any text after it (how a stored reply comes back
//! to `bounce_class`).
#![no_main]

use std::str::FromStr;

use herald::mailer::Reply;
use herald::metrics::bounce_class;
use lettre::transport::smtp::response::Response;
use libfuzzer_sys::fuzz_target;

fn check(code: u16, text: &str) {
    let reply = Reply::parse(code, text);
    if let Some((class, _, _)) = reply.enhanced {
        // RFC 3463: the enhanced class agrees with the reply code.
        assert!(matches!(class, 2 | 4 | 5) && u16::from(class) == code / 100);
    }
    // Suppressing an address is only ever the answer to a permanent failure.
    if reply.is_hard_bounce() || reply.blames_sender() {
        assert!(reply.is_permanent(), "{reply:?}");
    }
    assert!(
        !(reply.is_hard_bounce() && reply.blames_sender()),
        "{reply:?}"
    );
    // The stored text parses to the same reply.
    assert_eq!(Reply::parse(code, &reply.text), reply);
    assert!(reply.to_string().starts_with(&code.to_string()));
    let class = bounce_class(&reply);
    assert!(!class.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    // As on the wire: `550-5.1.1 first\r\n550 5.1.1 last\r\n`.
    if let Ok(response) = Response::from_str(raw) {
        let code: u16 = response.code().to_string().parse().expect("three digits");
        let text = response.message().collect::<Vec<_>>().join(" ");
        check(code, &text);
    }
    // A code and any text: `550 5.1.1 user unknown`.
    let digits = raw.bytes().take_while(u8::is_ascii_digit).count().min(5);
    let code = raw[..digits].parse::<u16>().unwrap_or(0);
    check(code, raw[digits..].trim_start_matches(['-', ' ']));
});
