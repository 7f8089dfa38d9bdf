//! The interactions import (JSON Lines): every line of any file is parsed or
//! rejected with its line number, and an accepted row is well-formed.
#![no_main]

use herald::import::InteractionRows;
use herald_fuzz::{Lines, check_interaction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = Lines::default();
    for (line, row) in InteractionRows::from_reader(std::io::Cursor::new(data.to_vec())) {
        lines.next(line);
        match row {
            Ok(rec) => check_interaction(&rec),
            Err(reason) => assert!(!reason.is_empty()),
        }
    }
});
