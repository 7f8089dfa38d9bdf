//! The customers import, CSV: every row of any file is parsed or rejected with
//! a line number, and an accepted row holds only normalised values.
#![no_main]

use herald::import::{CustomerRows, Format};
use herald_fuzz::{Lines, check_customer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A header error refuses the whole file, which is an answer too.
    let Ok(rows) =
        CustomerRows::from_reader(std::io::Cursor::new(data.to_vec()), Format::Csv, "fuzz")
    else {
        return;
    };
    let mut lines = Lines::default();
    for (line, row) in rows {
        lines.next(line);
        match row {
            Ok(rec) => check_customer(&rec),
            Err(reason) => assert!(!reason.is_empty()),
        }
    }
});
