//! Small inline SVG charts for the HTML report: a line chart over time and
//! horizontal bars. No JavaScript, no fonts or files from elsewhere: the
//! report stays one self-contained file. Every text is escaped here.

use std::fmt::Write as _;

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One series of a line chart.
pub struct Line<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: Vec<f64>,
}

/// A round step for about `ticks` gridlines up to `max` (1, 2 or 5 × 10ⁿ).
fn nice_step(max: f64, ticks: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / ticks;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    (nice * mag).max(1.0)
}

/// A compact number for axis labels: 950, 1.2k, 3.4M.
pub fn compact(n: f64) -> String {
    let a = n.abs();
    if a >= 1e6 {
        format!("{:.1}M", n / 1e6).replace(".0M", "M")
    } else if a >= 1e4 {
        format!("{:.0}k", n / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", n / 1e3).replace(".0k", "k")
    } else {
        format!("{n:.0}")
    }
}

/// A line chart of `lines` over the x positions labelled `labels` (all the
/// same length), `width`×`height` user units, scaling to its container.
pub fn line_chart(width: u32, height: u32, labels: &[String], lines: &[Line<'_>]) -> String {
    let (w, h) = (f64::from(width), f64::from(height));
    let (left, right, top, bottom) = (52.0, 16.0, 12.0, 34.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let n = labels.len();
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().copied())
        .fold(0.0, f64::max);
    let step = nice_step(max, 4.0);
    let top_value = (max / step).ceil().max(1.0) * step;
    let x = |i: usize| {
        if n <= 1 {
            left + pw / 2.0
        } else {
            left + pw * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| top + ph - ph * v / top_value;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    // Horizontal gridlines with their values.
    let mut v = 0.0;
    while v <= top_value + step / 2.0 {
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e6e8ef" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="axis">{}</text>"##,
            left + pw,
            left - 8.0,
            yy + 4.0,
            escape(&compact(v))
        );
        v += step;
    }
    // At most eight x labels, evenly spread.
    let every = n.div_ceil(8).max(1);
    for (i, label) in labels.iter().enumerate() {
        if i % every == 0 || i + 1 == n && n <= 8 {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="axis">{}</text>"#,
                x(i),
                top + ph + 22.0,
                escape(label)
            );
        }
    }
    for (k, line) in lines.iter().enumerate() {
        let pts: Vec<String> = line
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        if k == 0 && n > 1 {
            // A light area under the first series.
            let _ = write!(
                s,
                r#"<polygon points="{:.1},{:.1} {} {:.1},{:.1}" fill="{}" fill-opacity="0.08"/>"#,
                x(0),
                y(0.0),
                pts.join(" "),
                x(n - 1),
                y(0.0),
                escape(line.color)
            );
        }
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5" stroke-linejoin="round" stroke-linecap="round"><title>{}</title></polyline>"#,
            pts.join(" "),
            escape(line.color),
            escape(line.name)
        );
        if n <= 48 {
            for (i, v) in line.values.iter().enumerate() {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}: {}</title></circle>"#,
                    x(i),
                    y(*v),
                    escape(line.color),
                    escape(line.name),
                    v
                );
            }
        }
    }
    // The axis line.
    let _ = write!(
        s,
        r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#9aa1b5" stroke-width="1"/></svg>"##,
        left + pw,
        top + ph,
        top + ph
    );
    s
}

/// One horizontal bar.
pub struct Bar<'a> {
    pub label: &'a str,
    pub value: f64,
    /// The text shown after the bar (the value, a percentage, …).
    pub note: String,
    pub color: &'a str,
}

/// Horizontal bars scaled to `max` (the largest value when `max` is 0).
pub fn bars(width: u32, bars: &[Bar<'_>], max: f64) -> String {
    let row = 30.0;
    let w = f64::from(width);
    let (label_w, note_w) = (150.0, 150.0);
    let track = w - label_w - note_w - 16.0;
    let max = if max > 0.0 {
        max
    } else {
        bars.iter().map(|b| b.value).fold(0.0, f64::max)
    };
    let height = (row * bars.len() as f64).max(row);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="bars" viewBox="0 0 {width} {height:.0}" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    for (i, b) in bars.iter().enumerate() {
        let y = row * i as f64;
        let len = if max > 0.0 {
            (track * b.value / max).max(if b.value > 0.0 { 2.0 } else { 0.0 })
        } else {
            0.0
        };
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" class="label">{}</text><rect x="{:.1}" y="{:.1}" width="{track:.1}" height="18" rx="4" fill="#eef0f6"/><rect x="{:.1}" y="{:.1}" width="{len:.1}" height="18" rx="4" fill="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" class="note">{}</text>"##,
            label_w - 10.0,
            y + 19.0,
            escape(b.label),
            label_w,
            y + 6.0,
            label_w,
            y + 6.0,
            escape(b.color),
            escape(b.label),
            escape(&b.note),
            label_w + track + 10.0,
            y + 19.0,
            escape(&b.note)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(97.0, 4.0), 50.0);
        assert_eq!(nice_step(3.0, 4.0), 1.0);
        assert_eq!(nice_step(1200.0, 4.0), 500.0);
        assert_eq!(compact(1500.0), "1.5k");
        assert_eq!(compact(2_000_000.0), "2M");
    }

    #[test]
    fn charts_escape_labels() {
        let svg = line_chart(
            600,
            200,
            &["<b>".to_string()],
            &[Line {
                name: "a&b",
                color: "#123456",
                values: vec![3.0],
            }],
        );
        assert!(svg.contains("&lt;b&gt;") && svg.contains("a&amp;b"));
        assert!(!svg.contains("<b>"));
        let svg = bars(
            600,
            &[Bar {
                label: "<i>",
                value: 1.0,
                note: "1".into(),
                color: "#000",
            }],
            0.0,
        );
        assert!(svg.contains("&lt;i&gt;") && !svg.contains("<i>"));
    }
}
