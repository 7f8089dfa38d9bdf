//! The campaign loader: `campaign::parse` on any text, then what the worker does
//! with a campaign that parsed (audience and step conditions compiled to SQL for
//! both backends, the send window's next opening).
#![no_main]

use herald::campaign;
use herald::dialect::Backend;
use herald::segment::{self, Context, Predicate};
use libfuzzer_sys::fuzz_target;

/// 2026-11-25T09:30:00Z, a Wednesday: a fixed "now" keeps runs reproducible.
const NOW: i64 = 1_795_599_000_000;

fuzz_target!(|data: &[u8]| {
    // The loader reads files with `read_to_string`, so non-UTF-8 never reaches
    // the parser; lossy decoding keeps those inputs useful instead of wasted.
    let text = String::from_utf8_lossy(data);
    match campaign::parse("fuzz.yaml", &text) {
        Err(problems) => {
            // `herald validate` must always say why a file was refused.
            assert!(!problems.is_empty(), "rejected without a problem");
            for p in &problems {
                assert!(!p.message.is_empty());
                if let Some((line, column)) = p.position {
                    assert!(line >= 1 && column >= 1, "positions are 1-based: {p}");
                }
                let _ = p.to_string();
            }
        }
        Ok(c) => {
            assert!(campaign::valid_name(&c.name), "accepted name {:?}", c.name);
            assert!(!c.steps.is_empty(), "a campaign without steps");
            for backend in [Backend::Sqlite, Backend::Postgres] {
                let _ = c.audience_sql(backend, NOW);
                let cx = Context::new(backend, NOW, &c.name);
                for cond in c
                    .steps
                    .iter()
                    .filter_map(|s| s.when.as_ref())
                    .chain(&c.goal)
                {
                    let _ = segment::compile(
                        Predicate::Entry {
                            condition: cond,
                            entry: "e",
                        },
                        &cx,
                    );
                }
            }
            if let Some(w) = &c.send_window {
                for at in [NOW, 0, NOW + 123_456_789] {
                    let open = w.next_open(at, c.timezone);
                    assert!(open >= at, "the window opens before {at}: {open}");
                }
            }
        }
    }
});
