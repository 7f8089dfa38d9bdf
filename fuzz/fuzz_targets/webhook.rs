//! The bounce/complaint webhook's payload (`POST /webhook`): any body is refused
//! with a reason or gives reports that each name a recipient.
#![no_main]

use herald::customer::Email;
use herald::tracking::webhook::{self, MAX_REPORTS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match webhook::parse(data) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(reports) => {
            assert!(!reports.is_empty() || data.trim_ascii().starts_with(b"["));
            assert!(reports.len() <= MAX_REPORTS);
            for r in &reports {
                let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
                assert!(given(&r.email) || given(&r.message_id), "{r:?}");
                if let Some(e) = r.email.as_deref().filter(|e| !e.trim().is_empty()) {
                    let email = Email::parse(e).expect("accepted email parses");
                    herald_fuzz::check_email(&email);
                }
            }
        }
    }
});
