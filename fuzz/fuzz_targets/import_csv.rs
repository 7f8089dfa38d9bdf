//! The customers import, CSV: every row of any file is parsed or rejected with
//! a line number, and an accepted row holds only normalised values.
#![no_main]

use herald::import::Format;
use herald_fuzz::check_customer_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check_customer_file(data, Format::Csv));
