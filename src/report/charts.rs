//! The report's charts: a line chart over time and horizontal bars, in
//! plain HTML and inline SVG. No JavaScript, no fonts or files from
//! elsewhere: the report stays one self-contained file. Every text is escaped
//! here.
//!
//! They are fluid: the line chart's SVG draws only lines and areas,
//! stretched to whatever width it gets (strokes keep their width), while
//! every label is HTML text at a fixed CSS size placed by percentages, so a
//! phone shows the labels as large as a desktop does (scaling one SVG with
//! its text shrank them to 4 px on a 390 px screen). Bars are HTML grids.

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

/// The charts' CSS, part of the report's style sheet. Labels keep their size
/// at any width; on a phone every other time label is left out.
pub const CSS: &str = r#"
.lc{position:relative;height:300px;padding:10px 24px 44px 48px}
.lc-plot{position:relative;height:100%}
.lc-plot svg{position:absolute;left:0;top:0;width:100%;height:100%;overflow:visible}
.lc .yl,.lc .xl{position:absolute;font-size:12px;line-height:1.25;color:#69708a;white-space:nowrap}
.lc .yl{right:100%;margin-right:8px;transform:translateY(-50%)}
.lc .xl{top:100%;margin-top:8px;transform:translateX(-50%);text-align:center}
.bars{display:grid;grid-template-columns:fit-content(40%) minmax(48px,1fr) auto;gap:6px 10px;align-items:center;margin:4px 0 8px}
.bars .bl{font-size:13px;text-align:right;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bars .bt{height:18px;border-radius:4px;background:#eef0f6;overflow:hidden}
.bars .bt span{display:block;height:100%;border-radius:4px}
.bars .bn{font-size:12px;color:#69708a;white-space:nowrap}
.bars .bh{grid-column:1/-1;font-weight:600;margin-top:6px}
@media (max-width:600px){.lc{height:240px;padding-left:40px;padding-right:20px}.lc .xl.alt{display:none}}
"#;

/// Plot coordinates: the SVG's user space is 1000 × 1000, stretched to the
/// plot's box (`preserveAspectRatio="none"`); labels use the same positions
/// as percentages.
const SPAN: f64 = 1000.0;

/// A line chart of `lines` over the x positions labelled `labels` (all the
/// same length; a `\n` in a label breaks it in two lines).
pub fn line_chart(labels: &[String], lines: &[Line<'_>]) -> String {
    let n = labels.len();
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().copied())
        .fold(0.0, f64::max);
    let step = nice_step(max, 4.0);
    let top_value = (max / step).ceil().max(1.0) * step;
    let x = |i: usize| {
        if n <= 1 {
            SPAN / 2.0
        } else {
            SPAN * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| SPAN - SPAN * v / top_value;
    // Strokes and dots keep their size however the plot is stretched.
    const FIXED: &str = r#"vector-effect="non-scaling-stroke""#;

    let mut svg = String::new();
    let mut text = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {SPAN} {SPAN}" preserveAspectRatio="none" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    // Horizontal gridlines with their values.
    let mut v = 0.0;
    while v <= top_value + step / 2.0 {
        let yy = y(v);
        let _ = write!(
            svg,
            r##"<line x1="0" x2="{SPAN}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e6e8ef" stroke-width="1" {FIXED}/>"##
        );
        let _ = write!(
            text,
            r#"<span class="yl" style="top:{:.2}%">{}</span>"#,
            yy / SPAN * 100.0,
            escape(&compact(v))
        );
        v += step;
    }
    // At most eight time labels, evenly spread; every other one is "alt",
    // left out on a phone.
    let every = n.div_ceil(8).max(1);
    for (k, (i, label)) in labels
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .enumerate()
    {
        let lines: Vec<String> = label.split('\n').map(escape).collect();
        let _ = write!(
            text,
            r#"<span class="xl{}" style="left:{:.2}%">{}</span>"#,
            if k % 2 == 1 { " alt" } else { "" },
            x(i) / SPAN * 100.0,
            lines.join("<br>")
        );
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
        let color = escape(line.color);
        if k == 0 && n > 1 {
            // A light area under the first series.
            let _ = write!(
                svg,
                r#"<polygon points="{:.1},{:.1} {} {:.1},{:.1}" fill="{color}" fill-opacity="0.08"/>"#,
                x(0),
                y(0.0),
                pts.join(" "),
                x(n - 1),
                y(0.0),
            );
        }
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5" stroke-linejoin="round" stroke-linecap="round" {FIXED}><title>{}</title></polyline>"#,
            pts.join(" "),
            escape(line.name)
        );
        if n <= 48 {
            // A dot: a path of no length with round caps, round however
            // the plot is stretched (a circle would not be).
            for (i, v) in line.values.iter().enumerate() {
                let _ = write!(
                    svg,
                    r#"<path d="M{:.1},{:.1}h0" stroke="{color}" stroke-width="6" stroke-linecap="round" {FIXED}><title>{}: {}</title></path>"#,
                    x(i),
                    y(*v),
                    escape(line.name),
                    v
                );
            }
        }
    }
    // The axis line.
    let _ = write!(
        svg,
        r##"<line x1="0" x2="{SPAN}" y1="{SPAN}" y2="{SPAN}" stroke="#9aa1b5" stroke-width="1" {FIXED}/></svg>"##
    );
    format!(r#"<div class="lc"><div class="lc-plot">{svg}{text}</div></div>"#)
}

/// One horizontal bar.
pub struct Bar<'a> {
    pub label: &'a str,
    pub value: f64,
    /// The text shown after the bar (the value, a percentage, …).
    pub note: String,
    pub color: &'a str,
}

/// Horizontal bars scaled to `max` (the largest value when `max` is 0): a
/// grid of label, track and note, the labels' column as wide as the longest
/// (at most 40 %, then cut with an ellipsis).
pub fn bars(list: &[Bar<'_>], max: f64) -> String {
    bar_groups(&[("", list)], max)
}

/// Groups of bars under their headings (an empty heading shows none) in one
/// grid, so every group's tracks start and end at the same place and a
/// length means the same in all of them.
pub fn bar_groups(groups: &[(&str, &[Bar<'_>])], max: f64) -> String {
    let max = if max > 0.0 {
        max
    } else {
        groups
            .iter()
            .flat_map(|(_, list)| list.iter().map(|b| b.value))
            .fold(0.0, f64::max)
    };
    let mut s = String::from(r#"<div class="bars">"#);
    for (heading, list) in groups {
        if !heading.is_empty() {
            let _ = write!(s, r#"<div class="bh">{}</div>"#, escape(heading));
        }
        for b in *list {
            let share = if max > 0.0 && b.value > 0.0 {
                (100.0 * b.value / max).clamp(1.0, 100.0)
            } else {
                0.0
            };
            let label = escape(b.label);
            let note = escape(&b.note);
            let _ = write!(
                s,
                r#"<span class="bl" title="{label}">{label}</span><span class="bt" title="{label}: {note}"><span style="width:{share:.1}%;background:{}"></span></span><span class="bn">{note}</span>"#,
                escape(b.color)
            );
        }
    }
    s.push_str("</div>");
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
        let chart = line_chart(
            &["<b>\n1".to_string()],
            &[Line {
                name: "a&b",
                color: "#123456",
                values: vec![3.0],
            }],
        );
        assert!(chart.contains("&lt;b&gt;<br>1") && chart.contains("a&amp;b"));
        assert!(!chart.contains("<b>"));
        let chart = bars(
            &[Bar {
                label: "<i>",
                value: 1.0,
                note: "1 & 2".into(),
                color: "#000",
            }],
            0.0,
        );
        assert!(chart.contains("&lt;i&gt;") && !chart.contains("<i>"));
        assert!(chart.contains("1 &amp; 2"));
    }

    #[test]
    fn labels_are_placed_by_percent_and_thinned_on_phones() {
        let labels: Vec<String> = (0..24).map(|h| format!("{h:02}:00")).collect();
        let chart = line_chart(
            &labels,
            &[Line {
                name: "Sent",
                color: "#4f6bed",
                values: (0..24).map(f64::from).collect(),
            }],
        );
        // 24 points: every third labelled (8 labels), every other of those "alt".
        assert_eq!(chart.matches(r#"class="xl""#).count(), 4);
        assert_eq!(chart.matches(r#"class="xl alt""#).count(), 4);
        assert!(chart.contains(r#"style="left:0.00%">00:00<"#));
        assert!(chart.contains(r#"style="left:91.30%">21:00<"#));
        // Values 0..23: gridlines at 0, 10, 20, 30, the top one at the top.
        assert!(chart.contains(r#"<span class="yl" style="top:33.33%">20</span>"#));
        assert!(chart.contains(r#"<span class="yl" style="top:0.00%">30</span>"#));
        assert!(chart.contains(r#"<span class="yl" style="top:100.00%">0</span>"#));
        let widths = bars(
            &[
                Bar {
                    label: "a",
                    value: 50.0,
                    note: String::new(),
                    color: "#000",
                },
                Bar {
                    label: "b",
                    value: 0.0,
                    note: String::new(),
                    color: "#000",
                },
            ],
            200.0,
        );
        assert!(widths.contains("width:25.0%") && widths.contains("width:0.0%"));
    }
}
