//! Checks shared by the fuzz targets: what any row an import accepts must satisfy.

use herald::customer::{CustomerKey, CustomerRecord, Email, InteractionRecord, parse_timezone};
use herald::import::{CustomerRows, Format};

/// An `Email` that exists is normalised: parsing it again gives it back. The
/// store keeps the text and the interaction import parses it again to match
/// customers, so a normalised address that no longer parses loses its events.
pub fn check_email(email: &Email) {
    assert_eq!(
        Email::parse(email.as_str()).as_ref(),
        Ok(email),
        "normalised email does not parse back to itself"
    );
}

/// Every row a customers import accepts.
pub fn check_customer(rec: &CustomerRecord) {
    check_email(&rec.email);
    if let Some(tz) = &rec.timezone {
        // Stored as the canonical name, which parses back to itself.
        assert_eq!(parse_timezone(tz).as_ref(), Ok(tz), "time zone");
    }
    for name in [&rec.external_id, &rec.first_name, &rec.last_name]
        .into_iter()
        .flatten()
    {
        // Cells are trimmed and blanks are "not given".
        assert!(!name.is_empty() && name.trim() == name, "field {name:?}");
    }
}

/// Every row an interactions import accepts.
pub fn check_interaction(rec: &InteractionRecord) {
    match &rec.customer {
        CustomerKey::Email(e) => check_email(e),
        CustomerKey::ExternalId(id) => assert!(!id.is_empty()),
    }
    assert!(
        !rec.kind.is_empty() && rec.kind.len() <= 100,
        "kind {:?}",
        rec.kind
    );
}

/// Line numbers of a row stream never go back.
#[derive(Default)]
pub struct Lines(u64);

impl Lines {
    pub fn next(&mut self, line: u64) {
        assert!(line >= self.0, "line {line} after line {}", self.0);
        self.0 = line;
    }
}

/// A customers file of any content in `format`: every row is parsed or
/// rejected with a reason, in line order, and an accepted row holds only
/// normalised values. A header error refuses the whole file, which is an
/// answer too.
pub fn check_customer_file(data: &[u8], format: Format) {
    let Ok(rows) = CustomerRows::from_reader(std::io::Cursor::new(data.to_vec()), format, "fuzz")
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
}
