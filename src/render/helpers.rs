//! The helpers templates may use, and no others: default, upper, lower, capitalize,
//! truncate, format_date, format_number, format_currency, html_text (plus Handlebars' own
//! if/unless/each/with/lookup and the comparisons eq, ne, gt, gte, lt, lte, and,
//! or, not, len).
//!
//! Each helper computes a value; Handlebars then escapes it for the HTML part, so
//! helper output is never a way around escaping. A missing variable passed to a
//! helper is an error naming it, except in `default`, which exists to allow gaps.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use serde_json::Value;

pub(crate) type Compute = fn(&dyn Args) -> Result<Value, RenderError>;

/// One parameter as a helper sees it: its value (`Null` when missing) and,
/// for a path, the path as written.
pub(crate) struct Param<'a> {
    pub value: &'a Value,
    pub missing: bool,
    pub path: Option<&'a str>,
}

/// A helper call's parameters, from Handlebars or from the fast renderer
/// (`fast/`): the helpers are written once against this.
pub(crate) trait Args {
    fn name(&self) -> &str;
    fn param(&self, i: usize) -> Option<Param<'_>>;
    fn hash_get(&self, key: &str) -> Option<&Value>;
}

impl Args for Helper<'_> {
    fn name(&self) -> &str {
        Helper::name(self)
    }
    fn param(&self, i: usize) -> Option<Param<'_>> {
        Helper::param(self, i).map(|p| Param {
            value: p.value(),
            missing: p.is_value_missing(),
            path: p.relative_path().map(String::as_str),
        })
    }
    fn hash_get(&self, key: &str) -> Option<&Value> {
        Helper::hash_get(self, key).map(|p| p.value())
    }
}

struct Pure(Compute);

impl HelperDef for Pure {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        (self.0)(h).map(ScopedJson::Derived)
    }
}

/// Herald's own helpers, by name.
pub(crate) const HELPERS: [(&str, Compute); 9] = [
    ("default", default),
    ("html_text", html_text),
    ("upper", |h| Ok(Value::from(text(h, 0)?.to_uppercase()))),
    ("lower", |h| Ok(Value::from(text(h, 0)?.to_lowercase()))),
    ("capitalize", capitalize),
    ("truncate", truncate),
    ("format_date", format_date),
    ("format_number", format_number),
    ("format_currency", format_currency),
];

/// Herald's helper `name`, if there is one.
pub(crate) fn compute(name: &str) -> Option<Compute> {
    HELPERS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

pub fn register(r: &mut Handlebars<'static>) {
    for (name, f) in HELPERS {
        r.register_helper(name, Box::new(Pure(f)));
    }
}

fn invalid(helper: &str, message: impl Into<String>) -> RenderError {
    RenderErrorReason::Other(format!("{helper}: {}", message.into())).into()
}

/// Parameter `i`, which must be present and not missing from the data.
fn param<'a>(h: &'a dyn Args, i: usize) -> Result<Param<'a>, RenderError> {
    let p = h
        .param(i)
        .ok_or_else(|| invalid(h.name(), format!("expects parameter {}", i + 1)))?;
    if p.missing {
        return Err(RenderErrorReason::MissingVariable(p.path.map(str::to_string)).into());
    }
    Ok(p)
}

/// Parameter `i` as text: strings as they are, numbers and booleans printed, null empty.
fn text(h: &dyn Args, i: usize) -> Result<String, RenderError> {
    Ok(match param(h, i)?.value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn number(h: &dyn Args, i: usize) -> Result<f64, RenderError> {
    let v = param(h, i)?.value;
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid(h.name(), format!("expects a number, got {v}")))
}

fn optional_u64(h: &dyn Args, i: usize, fallback: u64) -> Result<u64, RenderError> {
    match h.param(i) {
        None => Ok(fallback),
        Some(p) => p.value.as_u64().ok_or_else(|| {
            invalid(
                h.name(),
                format!("parameter {} must be a whole number", i + 1),
            )
        }),
    }
}

fn hash_text<'a>(h: &'a dyn Args, key: &str) -> Option<&'a str> {
    h.hash_get(key).and_then(|v| v.as_str())
}

fn default(h: &dyn Args) -> Result<Value, RenderError> {
    let fallback = h
        .param(1)
        .ok_or_else(|| invalid("default", "expects a value and a fallback"))?
        .value
        .clone();
    Ok(match h.param(0) {
        Some(p) if !p.missing => match p.value {
            Value::Null => fallback,
            Value::String(s) if s.trim().is_empty() => fallback,
            v => v.clone(),
        },
        _ => fallback,
    })
}

/// `{{{html_text x}}}`: the text of HTML `x`, tags stripped and entities
/// decoded. The text part derived from an HTML template uses it where the HTML
/// template writes `{{{x}}}`.
fn html_text(h: &dyn Args) -> Result<Value, RenderError> {
    let html = text(h, 0)?;
    let text = super::text::from_html(&html);
    Ok(Value::from(text.trim_end()))
}

fn capitalize(h: &dyn Args) -> Result<Value, RenderError> {
    let s = text(h, 0)?;
    let mut chars = s.chars();
    Ok(Value::from(match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
        None => String::new(),
    }))
}

fn truncate(h: &dyn Args) -> Result<Value, RenderError> {
    let s = text(h, 0)?;
    let max = optional_u64(h, 1, 80)? as usize;
    let suffix = hash_text(h, "suffix").unwrap_or("…");
    if s.chars().count() <= max {
        return Ok(Value::from(s));
    }
    let keep = max.saturating_sub(suffix.chars().count());
    let mut out: String = s.chars().take(keep).collect();
    out.truncate(out.trim_end().len());
    out.push_str(suffix);
    Ok(Value::from(out))
}

/// `{{format_date customer.created_at "%d %B %Y" "Europe/Berlin"}}`: a timestamp
/// (RFC 3339 text or epoch milliseconds) in a strftime format and a time zone.
fn format_date(h: &dyn Args) -> Result<Value, RenderError> {
    let v = param(h, 0)?.value;
    let at: DateTime<Utc> = match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
            })
            .map_err(|_| invalid("format_date", format!("{s:?} is not a date")))?,
        Value::Number(n) => n
            .as_i64()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| invalid("format_date", format!("{n} is not a timestamp")))?,
        other => return Err(invalid("format_date", format!("{other} is not a date"))),
    };
    let format = h
        .param(1)
        .and_then(|p| p.value.as_str())
        .unwrap_or("%Y-%m-%d");
    let zone = h.param(2).and_then(|p| p.value.as_str()).unwrap_or("UTC");
    DATE_FORMATS.with_borrow_mut(|formats| {
        let (items, tz) = formats.get(format, zone)?;
        let mut out = String::with_capacity(32);
        write!(
            out,
            "{}",
            at.with_timezone(tz).format_with_items(items.iter())
        )
        .map_err(|_| invalid("format_date", format!("cannot format with {format:?}")))?;
        Ok(Value::from(out))
    })
}

/// Parsed `format_date` formats and time zones. A template uses a handful, and
/// parsing one costs more than formatting the date: each is parsed once per
/// thread. Bounded: past [`DateFormats::MAX`] entries it starts again.
#[derive(Default)]
struct DateFormats {
    entries: Vec<DateFormat>,
}

struct DateFormat {
    format: String,
    zone: String,
    items: Vec<chrono::format::Item<'static>>,
    tz: chrono_tz::Tz,
}

impl DateFormats {
    const MAX: usize = 64;

    fn get(
        &mut self,
        format: &str,
        zone: &str,
    ) -> Result<(&[chrono::format::Item<'static>], &chrono_tz::Tz), RenderError> {
        let found = self
            .entries
            .iter()
            .position(|e| e.format == format && e.zone == zone);
        let at = match found {
            Some(at) => at,
            None => {
                let tz: chrono_tz::Tz = zone
                    .parse()
                    .map_err(|_| invalid("format_date", format!("unknown time zone {zone:?}")))?;
                let items = chrono::format::StrftimeItems::new(format)
                    .parse_to_owned()
                    .map_err(|_| invalid("format_date", format!("bad format {format:?}")))?;
                if self.entries.len() == Self::MAX {
                    self.entries.clear();
                }
                self.entries.push(DateFormat {
                    format: format.to_string(),
                    zone: zone.to_string(),
                    items,
                    tz,
                });
                self.entries.len() - 1
            }
        };
        let e = &self.entries[at];
        Ok((&e.items, &e.tz))
    }
}

thread_local! {
    static DATE_FORMATS: std::cell::RefCell<DateFormats> = std::cell::RefCell::default();
}

/// `x` rounded to `decimals` places, as the integer `round(|x| × 10^decimals)`,
/// when that is exact without decimal expansion: `x` is the double nearest to
/// n / 10^decimals and n < 2^50, so `x` is within half an ulp of n / 10^decimals,
/// far closer than the 0.5 / 10^decimals a rounding tie needs, and `{:.N}` prints
/// exactly n's digits. Amounts such as 1234.5, 12 or 19.99 take this path; others
/// (and NaN, infinities) go through the standard formatter.
fn fast_fixed(x: f64, decimals: usize) -> Option<u64> {
    const POW10: [f64; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
    let scale = *POW10.get(decimals)?;
    let abs = x.abs();
    let n = (abs * scale).round();
    (n < (1u64 << 50) as f64 && n / scale == abs).then_some(n as u64)
}

/// Appends `digits` (ASCII) with `thousands` between groups of three.
fn push_grouped(out: &mut String, digits: &str, thousands: &str) {
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(thousands);
        }
        out.push(c);
    }
}

/// Groups digits: 1234567.891 with 2 decimals → "1,234,567.89"; `symbol` goes
/// between the sign and the digits ("-€5.50").
fn grouped(x: f64, decimals: usize, thousands: &str, point: &str, symbol: &str) -> String {
    let mut out = String::with_capacity(symbol.len() + 32);
    if let Some(n) = fast_fixed(x, decimals) {
        if x < 0.0 && n != 0 {
            out.push('-');
        }
        out.push_str(symbol);
        let mut buf = [b'0'; 24];
        let mut at = buf.len();
        let mut v = n;
        while v > 0 {
            at -= 1;
            buf[at] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        // At least one integer digit before the decimals (zeros from `buf`).
        let at = at.min(buf.len() - decimals - 1);
        let digits = std::str::from_utf8(&buf[at..]).unwrap_or("0");
        let (int, frac) = digits.split_at(digits.len() - decimals);
        push_grouped(&mut out, int, thousands);
        if !frac.is_empty() {
            out.push_str(point);
            out.push_str(frac);
        }
        return out;
    }
    let fixed = format!("{:.*}", decimals, x.abs());
    let (int, frac) = fixed.split_once('.').unwrap_or((&fixed, ""));
    let negative = x < 0.0 && fixed.chars().any(|c| c.is_ascii_digit() && c != '0');
    if negative {
        out.push('-');
    }
    out.push_str(symbol);
    push_grouped(&mut out, int, thousands);
    if !frac.is_empty() {
        out.push_str(point);
        out.push_str(frac);
    }
    out
}

/// `{{format_number x 2}}`, with `thousands=` and `decimal=` to change separators.
fn format_number(h: &dyn Args) -> Result<Value, RenderError> {
    let x = number(h, 0)?;
    let decimals = optional_u64(h, 1, 0)?.min(10) as usize;
    Ok(Value::from(grouped(
        x,
        decimals,
        hash_text(h, "thousands").unwrap_or(","),
        hash_text(h, "decimal").unwrap_or("."),
        "",
    )))
}

/// `{{format_currency amount "EUR"}}` → "€1,234.50"; JPY has no decimals.
fn format_currency(h: &dyn Args) -> Result<Value, RenderError> {
    let x = number(h, 0)?;
    let code = h.param(1).and_then(|p| p.value.as_str()).unwrap_or("EUR");
    let is = |c: &str| code.eq_ignore_ascii_case(c);
    let other;
    let (symbol, decimals) = if is("EUR") {
        ("€", 2)
    } else if is("USD") {
        ("$", 2)
    } else if is("GBP") {
        ("£", 2)
    } else if is("JPY") {
        ("¥", 0)
    } else {
        // CHF and any other code: the code itself, upper case, then a space.
        other = format!("{} ", code.to_ascii_uppercase());
        (other.as_str(), 2)
    };
    Ok(Value::from(grouped(
        x,
        decimals,
        hash_text(h, "thousands").unwrap_or(","),
        hash_text(h, "decimal").unwrap_or("."),
        symbol,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, data: Value) -> Result<String, String> {
        let mut r = Handlebars::new();
        r.set_strict_mode(true);
        register(&mut r);
        r.render_template(t, &data).map_err(|e| e.to_string())
    }

    #[test]
    fn helpers_compute_values() {
        let d = json!({"n": "ada lovelace", "x": 1234567.891, "t": "2026-03-29T00:30:00Z", "e": "", "neg": -5.5});
        assert_eq!(
            render("{{default missing \"there\"}}", d.clone()).unwrap(),
            "there"
        );
        assert_eq!(
            render("{{default e \"there\"}}", d.clone()).unwrap(),
            "there"
        );
        assert_eq!(
            render("{{default n \"there\"}}", d.clone()).unwrap(),
            "ada lovelace"
        );
        assert_eq!(
            render("{{upper n}} {{capitalize n}}", d.clone()).unwrap(),
            "ADA LOVELACE Ada lovelace"
        );
        assert_eq!(render("{{truncate n 6}}", d.clone()).unwrap(), "ada l…");
        assert_eq!(
            render("{{format_number x 2}}", d.clone()).unwrap(),
            "1,234,567.89"
        );
        assert_eq!(
            render(
                "{{format_number x 1 thousands=\".\" decimal=\",\"}}",
                d.clone()
            )
            .unwrap(),
            "1.234.567,9"
        );
        assert_eq!(
            render("{{format_currency neg \"USD\"}}", d.clone()).unwrap(),
            "-$5.50"
        );
        assert_eq!(
            render("{{format_currency x \"JPY\"}}", d.clone()).unwrap(),
            "¥1,234,568"
        );
        // 00:30 UTC on the night Berlin moves to summer time (at 01:00 UTC) is still 01:30 CET.
        assert_eq!(
            render(
                "{{format_date t \"%d.%m.%Y %H:%M\" \"Europe/Berlin\"}}",
                d.clone()
            )
            .unwrap(),
            "29.03.2026 01:30"
        );
        assert_eq!(
            render("{{#if (gt x 10)}}big{{/if}}", d.clone()).unwrap(),
            "big"
        );
        assert_eq!(render("{{upper (default missing \"x\")}}", d).unwrap(), "X");
    }

    /// The grouping as first written, on the standard formatter alone: the
    /// oracle for the fast path.
    fn grouped_reference(x: f64, decimals: usize, thousands: &str, point: &str) -> String {
        let fixed = format!("{:.*}", decimals, x.abs());
        let (int, frac) = fixed.split_once('.').unwrap_or((&fixed, ""));
        let mut out = String::new();
        for (i, c) in int.chars().enumerate() {
            if i > 0 && (int.len() - i).is_multiple_of(3) {
                out.push_str(thousands);
            }
            out.push(c);
        }
        if !frac.is_empty() {
            out.push_str(point);
            out.push_str(frac);
        }
        let negative = x < 0.0 && fixed.chars().any(|c| c.is_ascii_digit() && c != '0');
        if negative { format!("-{out}") } else { out }
    }

    #[test]
    fn grouping_matches_the_standard_formatter() {
        let edge = [
            0.0,
            -0.0,
            0.5,
            1.5,
            2.5,
            -0.004,
            -0.005,
            0.125,
            1.005,
            2.675,
            19.99,
            1234.5,
            1e15,
            1e16,
            123456789.125,
            9007199254740993.0,
            1e300,
            -1e-300,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1125899906842624.5,
            112589990684262.45,
        ];
        for x in edge {
            for d in 0..=10 {
                assert_eq!(
                    grouped(x, d, ",", ".", ""),
                    grouped_reference(x, d, ",", "."),
                    "{x} {d}"
                );
            }
        }
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        let cents = (-10_000_000_000i64..10_000_000_000, 0usize..=10)
            .prop_map(|(c, d)| (c as f64 / 100.0, d));
        let any = (proptest::num::f64::ANY, 0usize..=10);
        let moderate = (-1e7f64..1e7, 0usize..=10);
        for strategy in [cents.boxed(), any.boxed(), moderate.boxed()] {
            runner
                .run(&strategy, |(x, d)| {
                    prop_assert_eq!(
                        grouped(x, d, ".", ",", ""),
                        grouped_reference(x, d, ".", ",")
                    );
                    Ok(())
                })
                .unwrap();
        }
    }

    #[test]
    fn helpers_refuse_missing_and_bad_input() {
        let e = render("{{upper customer.plan}}", json!({"customer": {}})).unwrap_err();
        assert!(e.contains("customer.plan"), "{e}");
        assert!(
            render("{{format_date \"soon\"}}", json!({}))
                .unwrap_err()
                .contains("not a date")
        );
        assert!(
            render(
                "{{format_date \"2026-01-01\" \"%Y\" \"Mars/Base\"}}",
                json!({})
            )
            .unwrap_err()
            .contains("unknown time zone")
        );
        assert!(
            render("{{format_date \"2026-01-01\" \"%Y %Q\"}}", json!({}))
                .unwrap_err()
                .contains("bad format \"%Y %Q\"")
        );
    }

    #[test]
    fn format_date_formats_are_cached_per_format_and_zone() {
        // The same format in two zones, then again: each call its own answer.
        let t = json!({"t": "2026-03-29T00:30:00Z"});
        for _ in 0..2 {
            assert_eq!(
                render("{{format_date t \"%H:%M\" \"Europe/Berlin\"}}", t.clone()).unwrap(),
                "01:30"
            );
            assert_eq!(
                render(
                    "{{format_date t \"%H:%M\" \"America/New_York\"}}",
                    t.clone()
                )
                .unwrap(),
                "20:30"
            );
            assert_eq!(
                render("{{format_date t \"%d %b\"}}", t.clone()).unwrap(),
                "29 Mar"
            );
        }
    }
}
