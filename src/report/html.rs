//! The HTML report: one file with inline CSS and inline SVG charts, readable
//! offline and safe to forward. Every text from data (step ids, URLs, skip
//! reasons, the campaign's description) goes through [`escape`].

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::charts::{self, Bar, Line, bar_groups, bars, escape, line_chart};
use super::{CampaignStats, ConversionSource, Series, StepStats};
use crate::clock::Millis;

const SENT: &str = "#4f6bed";
const HUMAN: &str = "#12a58a";
const MACHINE: &str = "#aab2c8";
const CLICK: &str = "#f29d38";
const CONVERT: &str = "#d6477b";
const ENTERED: &str = "#8a94b8";

/// `1234567` → `1,234,567`.
pub(crate) fn num(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `Some(0.1234)` → `12.3%`, `None` → `–`.
pub(crate) fn pct(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{:.1}%", r * 100.0),
        None => "–".to_string(),
    }
}

fn when(ms: Millis, fmt: &str) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format(fmt).to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Cuts a label to `max` characters with an ellipsis.
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;background:#f4f5fa;color:#1d2233;font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1120px;margin:0 auto;padding:0 24px 40px}
header.hero{background:linear-gradient(120deg,#3b4fd8,#6a3fc9 60%,#b03f9a);color:#fff;padding:36px 0 84px}
header.hero h1{margin:0 0 4px;font-size:32px;letter-spacing:-.5px}
header.hero .eyebrow{text-transform:uppercase;letter-spacing:2px;font-size:12px;opacity:.8}
header.hero p{margin:4px 0;opacity:.92}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:16px;margin-top:-56px}
.kpi{background:#fff;border-radius:14px;padding:18px 18px 14px;box-shadow:0 6px 24px rgba(29,34,51,.08);border-top:4px solid var(--c)}
.kpi .k{font-size:12px;text-transform:uppercase;letter-spacing:1px;color:#69708a}
.kpi .v{font-size:30px;font-weight:700;margin:2px 0;color:#1d2233}
.kpi .s{font-size:13px;color:#69708a}
.card{background:#fff;border-radius:14px;padding:22px 24px;margin-top:20px;box-shadow:0 6px 24px rgba(29,34,51,.06)}
.card h2{margin:0 0 4px;font-size:18px}
.card .sub{margin:0 0 14px;color:#69708a;font-size:13px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:20px}
.grid2>*{min-width:0}
.grid2 .card{margin-top:20px}
.legend{display:flex;gap:18px;flex-wrap:wrap;font-size:13px;color:#454c63;margin-bottom:6px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:6px;vertical-align:-1px}
table{width:100%;border-collapse:collapse;font-size:13px}
th,td{padding:7px 6px;text-align:right;border-bottom:1px solid #eceef4;white-space:nowrap}
th{color:#69708a;font-weight:600;font-size:11px;text-transform:uppercase;letter-spacing:.3px}
table.figures{font-size:12.5px}
th:first-child,td:first-child{text-align:left}
tr.total td{font-weight:700;border-top:2px solid #d9dce8}
td.url{text-align:left;white-space:normal;width:100%}
td.url code{display:-webkit-box;-webkit-box-orient:vertical;-webkit-line-clamp:2;overflow:hidden;overflow-wrap:anywhere;font-size:12px;line-height:18px;color:#34406b}
.bar{background:#eef0f6;border-radius:4px;height:10px;width:160px;display:inline-block}
.bar span{display:block;height:10px;border-radius:4px;background:#f29d38}
.muted{color:#69708a}
.scroll{overflow-x:auto}
footer{margin-top:28px;color:#8a90a6;font-size:12px;text-align:center}
@media (max-width:800px){.grid2{grid-template-columns:1fr}}
@media (max-width:600px){.wrap{padding:0 12px 28px}.card{padding:18px 16px}header.hero{padding:28px 0 76px}header.hero h1{font-size:26px}.barcell{display:none}}
"#;

/// The report of one campaign.
pub fn render_html(stats: &CampaignStats, series: &Series, generated_at: Millis) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let name = escape(&stats.campaign);
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{name} — campaign report</title><link rel="icon" href="data:,"><style>{CSS}{}</style></head><body>"#,
        charts::CSS
    );
    header(&mut h, stats, generated_at);
    h.push_str(r#"<main class="wrap">"#);
    kpis(&mut h, stats);
    activity(&mut h, series);
    h.push_str(r#"<div class="grid2">"#);
    funnel(&mut h, stats);
    conversions(&mut h, stats);
    h.push_str("</div>");
    links(&mut h, stats);
    table(&mut h, stats);
    skips(&mut h, stats);
    let _ = write!(
        h,
        r#"<footer>Generated by Herald on {} · figures from the campaign's deliveries and tracked events · times in UTC</footer></main></body></html>"#,
        escape(&when(generated_at, "%Y-%m-%d %H:%M UTC"))
    );
    h
}

fn header(h: &mut String, s: &CampaignStats, generated_at: Millis) {
    let period = match &s.period {
        Some(p) => format!(
            "{} – {}",
            when(p.from_ms, "%e %b %Y %H:%M"),
            when(p.to_ms, "%e %b %Y %H:%M UTC")
        ),
        None => "nothing sent yet".to_string(),
    };
    let _ = write!(
        h,
        r#"<header class="hero"><div class="wrap"><div class="eyebrow">Campaign report</div><h1>{}</h1>"#,
        escape(&s.campaign)
    );
    if let Some(d) = &s.description {
        let _ = write!(h, "<p>{}</p>", escape(d));
    }
    let _ = write!(
        h,
        "<p>{} · {} customers entered · report of {}</p></div></header>",
        escape(&period),
        num(s.customers),
        escape(&when(generated_at, "%e %b %Y"))
    );
}

fn kpi(h: &mut String, color: &str, key: &str, value: &str, sub: &str) {
    let _ = write!(
        h,
        r#"<div class="kpi" style="--c:{color}"><div class="k">{}</div><div class="v">{}</div><div class="s">{}</div></div>"#,
        escape(key),
        escape(value),
        escape(sub)
    );
}

fn kpis(h: &mut String, s: &CampaignStats) {
    let t = &s.totals;
    // `entered` of the totals counts entries; deliveries planned are the steps' sum.
    let planned: i64 = s.steps.iter().map(|x| x.entered).sum();
    h.push_str(r#"<section class="kpis">"#);
    kpi(
        h,
        SENT,
        "Sent",
        &num(t.sent),
        &format!("{} planned · {} pending", num(planned), num(t.pending)),
    );
    if s.tracked {
        kpi(
            h,
            HUMAN,
            "Opened",
            &pct(t.open_rate_human),
            &format!(
                "{} people · {} incl. machine opens",
                num(t.opened_human),
                pct(t.open_rate)
            ),
        );
        kpi(
            h,
            CLICK,
            "Clicked",
            &pct(t.click_rate),
            &format!(
                "{} people · {} of openers",
                num(t.clicked),
                pct(t.click_to_open_rate)
            ),
        );
    } else {
        let untracked = "the campaign has tracking: false";
        kpi(h, HUMAN, "Opened", "not tracked", untracked);
        kpi(h, CLICK, "Clicked", "not tracked", untracked);
    }
    let conv_sub = match &s.conversion {
        Some(c) => format!(
            "{} people · {} within {}",
            num(t.converted),
            c.event,
            c.window
        ),
        None => "no goal or conversion event".to_string(),
    };
    kpi(h, CONVERT, "Converted", &pct(t.conversion_rate), &conv_sub);
    kpi(
        h,
        "#e05d5d",
        "Bounced",
        &pct(t.bounce_rate),
        &format!("{} bounced · {} failed", num(t.bounced), num(t.failed)),
    );
    kpi(
        h,
        "#7a8199",
        "Unsubscribed",
        &num(t.unsubscribed),
        &format!(
            "{} of sent · {} complaints",
            pct(t.unsubscribe_rate),
            num(t.complained)
        ),
    );
    h.push_str("</section>");
}

fn activity(h: &mut String, series: &Series) {
    let hourly = series.bucket < 24 * 3_600_000;
    let _ = write!(
        h,
        r#"<section class="card"><h2>Activity over time</h2><p class="sub">{} sends, opens and clicks (UTC)</p>"#,
        if hourly { "Hourly" } else { "Daily" }
    );
    if series.buckets.is_empty() {
        h.push_str(r#"<p class="muted">No sends or tracked events yet.</p></section>"#);
        return;
    }
    let fmt = if hourly { "%d %b\n%H:00" } else { "%d %b" };
    let labels: Vec<String> = series.buckets.iter().map(|b| when(b.at, fmt)).collect();
    let col = |f: fn(&crate::store::stats::Bucket) -> i64| -> Vec<f64> {
        series.buckets.iter().map(|b| f(b) as f64).collect()
    };
    let lines = [
        Line {
            name: "Sent",
            color: SENT,
            values: col(|b| b.sent),
        },
        Line {
            name: "Opens (people)",
            color: HUMAN,
            values: col(|b| b.opens_human),
        },
        Line {
            name: "Opens (machine)",
            color: MACHINE,
            values: col(|b| b.opens_machine),
        },
        Line {
            name: "Clicks",
            color: CLICK,
            values: col(|b| b.clicks),
        },
    ];
    h.push_str(r#"<div class="legend">"#);
    for l in &lines {
        let _ = write!(
            h,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            l.color,
            escape(l.name)
        );
    }
    h.push_str("</div>");
    h.push_str(&line_chart(&labels, &lines));
    h.push_str("</section>");
}

fn funnel(h: &mut String, s: &CampaignStats) {
    h.push_str(r#"<section class="card"><h2>Funnel by step</h2><p class="sub">People at each stage; percentages of those sent</p>"#);
    let max = s.steps.iter().map(|x| x.entered).max().unwrap_or(0) as f64;
    if s.steps.is_empty() {
        h.push_str(r#"<p class="muted">No steps planned yet.</p>"#);
    }
    let groups: Vec<(String, Vec<Bar<'_>>)> = s
        .steps
        .iter()
        .map(|step| {
            let rows = [
                ("Entered", step.entered, ENTERED, None),
                ("Sent", step.sent, SENT, None),
                ("Opened", step.opened_human, HUMAN, step.open_rate_human),
                ("Clicked", step.clicked, CLICK, step.click_rate),
                ("Converted", step.converted, CONVERT, step.conversion_rate),
            ];
            let list = rows
                .into_iter()
                .map(|(label, v, color, r)| Bar {
                    label,
                    value: v as f64,
                    note: match r {
                        Some(r) => format!("{} · {}", num(v), pct(Some(r))),
                        None => num(v),
                    },
                    color,
                })
                .collect();
            (short(step.step.as_deref().unwrap_or(""), 60), list)
        })
        .collect();
    if !groups.is_empty() {
        let groups: Vec<(&str, &[Bar<'_>])> = groups
            .iter()
            .map(|(heading, list)| (heading.as_str(), list.as_slice()))
            .collect();
        h.push_str(&bar_groups(&groups, max));
    }
    h.push_str("</section>");
}

fn conversions(h: &mut String, s: &CampaignStats) {
    h.push_str(r#"<section class="card"><h2>Conversions</h2>"#);
    let Some(c) = &s.conversion else {
        h.push_str(r#"<p class="sub">No conversion event: give the campaign a <code>goal:</code> or run <code>herald report --conversion-event purchase</code>.</p></section>"#);
        return;
    };
    let _ = write!(
        h,
        r#"<p class="sub">People with <b>{}</b> within {} after a step's email ({})</p>"#,
        escape(&c.event),
        escape(&c.window),
        if c.source == ConversionSource::Goal {
            "the campaign's goal"
        } else {
            "chosen for this report"
        }
    );
    let labels: Vec<String> = s
        .steps
        .iter()
        .map(|x| short(x.step.as_deref().unwrap_or(""), 20))
        .collect();
    let list: Vec<Bar<'_>> = s
        .steps
        .iter()
        .zip(&labels)
        .map(|(x, l)| Bar {
            label: l,
            value: x.converted as f64,
            note: format!("{} · {}", num(x.converted), pct(x.conversion_rate)),
            color: CONVERT,
        })
        .collect();
    h.push_str(&bars(&list, 0.0));
    let t = &s.totals;
    let _ = write!(
        h,
        r#"<p class="sub" style="margin-top:14px">Campaign: <b>{}</b> people converted, {} of those sent.</p></section>"#,
        num(t.converted),
        pct(t.conversion_rate)
    );
}

fn links(h: &mut String, s: &CampaignStats) {
    h.push_str(
        r#"<section class="card"><h2>Top links</h2><p class="sub">Clicks per link, all steps</p>"#,
    );
    let links = &s.totals.links;
    if links.is_empty() {
        h.push_str(r#"<p class="muted">No clicks yet.</p></section>"#);
        return;
    }
    let max = links.iter().map(|l| l.clicks).max().unwrap_or(1).max(1);
    h.push_str(r#"<div class="scroll"><table><tr><th>#</th><th style="text-align:left">Link</th><th>Clicks</th><th>People</th><th class="barcell"></th></tr>"#);
    for (i, l) in links.iter().take(10).enumerate() {
        let width = 100.0 * l.clicks as f64 / max as f64;
        // At most two lines, cut with an ellipsis; the whole URL is the title.
        let url = escape(&l.url);
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td class="url"><code title="{url}">{url}</code></td><td>{}</td><td>{}</td><td class="barcell"><span class="bar"><span style="width:{width:.1}%"></span></span></td></tr>"#,
            i + 1,
            num(l.clicks),
            num(l.clicked)
        );
    }
    h.push_str("</table></div></section>");
}

fn table(h: &mut String, s: &CampaignStats) {
    h.push_str(r#"<section class="card"><h2>Figures by step</h2><p class="sub">Opened, clicked, unsubscribed and converted count people; opens and clicks count events</p><div class="scroll"><table class="figures"><tr><th>Step</th><th>Entered</th><th>Sent</th><th>Bounced</th><th>Failed</th><th>Skipped</th><th>Opened</th><th>Human</th><th>Opens</th><th>Clicked</th><th>CTR</th><th>Unsub.</th><th>Compl.</th><th>Converted</th><th>Conv. rate</th></tr>"#);
    let row = |h: &mut String, label: &str, x: &StepStats, class: &str| {
        let _ = write!(
            h,
            r#"<tr class="{class}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            escape(label),
            num(x.entered),
            num(x.sent),
            num(x.bounced),
            num(x.failed),
            num(x.skipped),
            num(x.opened),
            num(x.opened_human),
            num(x.opens),
            num(x.clicked),
            pct(x.click_rate),
            num(x.unsubscribed),
            num(x.complained),
            num(x.converted),
            pct(x.conversion_rate)
        );
    };
    for x in &s.steps {
        let label = x.step.as_deref().unwrap_or("");
        let label = if x.in_file {
            label.to_string()
        } else {
            format!("{label} (not in the campaign file)")
        };
        row(h, &label, x, "");
    }
    row(h, "Campaign", &s.totals, "total");
    h.push_str("</table></div></section>");
}

fn skips(h: &mut String, s: &CampaignStats) {
    if s.totals.skipped_by_reason.is_empty() {
        return;
    }
    h.push_str(r#"<section class="card"><h2>Not sent</h2><p class="sub">Deliveries skipped at send time, by reason</p><table><tr><th>Reason</th><th>Deliveries</th></tr>"#);
    let mut reasons: Vec<(&String, &i64)> = s.totals.skipped_by_reason.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (reason, n) in reasons {
        let label = if reason.is_empty() {
            "(no reason)"
        } else {
            reason
        };
        let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", escape(label), num(*n));
    }
    h.push_str("</table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_rates_read_well() {
        assert_eq!(num(0), "0");
        assert_eq!(num(1234567), "1,234,567");
        assert_eq!(num(-1000), "-1,000");
        assert_eq!(pct(Some(0.1234)), "12.3%");
        assert_eq!(pct(None), "–");
        assert_eq!(short("abcdef", 4), "abc…");
    }
}
