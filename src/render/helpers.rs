//! The helpers templates may use, and no others: default, upper, lower, capitalize,
//! truncate, format_date, format_number, format_currency (plus Handlebars' own
//! if/unless/each/with/lookup and the comparisons eq, ne, gt, gte, lt, lte, and,
//! or, not, len).
//!
//! Each helper computes a value; Handlebars then escapes it for the HTML part, so
//! helper output is never a way around escaping. A missing variable passed to a
//! helper is an error naming it, except in `default`, which exists to allow gaps.

use chrono::{DateTime, Utc};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, PathAndJson, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use serde_json::Value;

type Compute = fn(&Helper<'_>) -> Result<Value, RenderError>;

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

pub fn register(r: &mut Handlebars<'static>) {
    let helpers: [(&str, Compute); 8] = [
        ("default", default),
        ("upper", |h| Ok(Value::from(text(h, 0)?.to_uppercase()))),
        ("lower", |h| Ok(Value::from(text(h, 0)?.to_lowercase()))),
        ("capitalize", capitalize),
        ("truncate", truncate),
        ("format_date", format_date),
        ("format_number", format_number),
        ("format_currency", format_currency),
    ];
    for (name, f) in helpers {
        r.register_helper(name, Box::new(Pure(f)));
    }
}

fn invalid(helper: &str, message: impl Into<String>) -> RenderError {
    RenderErrorReason::Other(format!("{helper}: {}", message.into())).into()
}

/// Parameter `i`, which must be present and not missing from the data.
fn param<'a>(h: &'a Helper<'_>, i: usize) -> Result<&'a PathAndJson<'a>, RenderError> {
    let p = h
        .param(i)
        .ok_or_else(|| invalid(h.name(), format!("expects parameter {}", i + 1)))?;
    if p.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into());
    }
    Ok(p)
}

/// Parameter `i` as text: strings as they are, numbers and booleans printed, null empty.
fn text(h: &Helper<'_>, i: usize) -> Result<String, RenderError> {
    Ok(match param(h, i)?.value() {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn number(h: &Helper<'_>, i: usize) -> Result<f64, RenderError> {
    let v = param(h, i)?.value();
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid(h.name(), format!("expects a number, got {v}")))
}

fn optional_u64(h: &Helper<'_>, i: usize, fallback: u64) -> Result<u64, RenderError> {
    match h.param(i) {
        None => Ok(fallback),
        Some(p) => p.value().as_u64().ok_or_else(|| {
            invalid(
                h.name(),
                format!("parameter {} must be a whole number", i + 1),
            )
        }),
    }
}

fn hash_text<'a>(h: &'a Helper<'_>, key: &str) -> Option<&'a str> {
    h.hash_get(key).and_then(|v| v.value().as_str())
}

fn default(h: &Helper<'_>) -> Result<Value, RenderError> {
    let fallback = h
        .param(1)
        .ok_or_else(|| invalid("default", "expects a value and a fallback"))?
        .value()
        .clone();
    Ok(match h.param(0) {
        Some(p) if !p.is_value_missing() => match p.value() {
            Value::Null => fallback,
            Value::String(s) if s.trim().is_empty() => fallback,
            v => v.clone(),
        },
        _ => fallback,
    })
}

fn capitalize(h: &Helper<'_>) -> Result<Value, RenderError> {
    let s = text(h, 0)?;
    let mut chars = s.chars();
    Ok(Value::from(match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
        None => String::new(),
    }))
}

fn truncate(h: &Helper<'_>) -> Result<Value, RenderError> {
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
fn format_date(h: &Helper<'_>) -> Result<Value, RenderError> {
    let v = param(h, 0)?.value();
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
    let format = match h.param(1) {
        Some(p) => p.value().as_str().unwrap_or("%Y-%m-%d").to_string(),
        None => "%Y-%m-%d".to_string(),
    };
    let zone = h.param(2).and_then(|p| p.value().as_str()).unwrap_or("UTC");
    let tz: chrono_tz::Tz = zone
        .parse()
        .map_err(|_| invalid("format_date", format!("unknown time zone {zone:?}")))?;
    let items: Vec<chrono::format::Item<'_>> =
        chrono::format::StrftimeItems::new(&format).collect();
    if items
        .iter()
        .any(|i| matches!(i, chrono::format::Item::Error))
    {
        return Err(invalid("format_date", format!("bad format {format:?}")));
    }
    Ok(Value::from(
        at.with_timezone(&tz)
            .format_with_items(items.into_iter())
            .to_string(),
    ))
}

/// Groups digits: 1234567.891 with 2 decimals → "1,234,567.89".
fn grouped(x: f64, decimals: usize, thousands: &str, point: &str) -> String {
    let fixed = format!("{:.*}", decimals, x.abs());
    let (int, frac) = fixed.split_once('.').unwrap_or((&fixed, ""));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
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

/// `{{format_number x 2}}`, with `thousands=` and `decimal=` to change separators.
fn format_number(h: &Helper<'_>) -> Result<Value, RenderError> {
    let x = number(h, 0)?;
    let decimals = optional_u64(h, 1, 0)?.min(10) as usize;
    Ok(Value::from(grouped(
        x,
        decimals,
        hash_text(h, "thousands").unwrap_or(","),
        hash_text(h, "decimal").unwrap_or("."),
    )))
}

/// `{{format_currency amount "EUR"}}` → "€1,234.50"; JPY has no decimals.
fn format_currency(h: &Helper<'_>) -> Result<Value, RenderError> {
    let x = number(h, 0)?;
    let code = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .unwrap_or("EUR")
        .to_ascii_uppercase();
    let (symbol, decimals) = match code.as_str() {
        "EUR" => ("€".to_string(), 2),
        "USD" => ("$".to_string(), 2),
        "GBP" => ("£".to_string(), 2),
        "JPY" => ("¥".to_string(), 0),
        "CHF" => ("CHF ".to_string(), 2),
        other => (format!("{other} "), 2),
    };
    let body = grouped(
        x,
        decimals,
        hash_text(h, "thousands").unwrap_or(","),
        hash_text(h, "decimal").unwrap_or("."),
    );
    Ok(Value::from(match body.strip_prefix('-') {
        Some(rest) => format!("-{symbol}{rest}"),
        None => format!("{symbol}{body}"),
    }))
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
    }
}
