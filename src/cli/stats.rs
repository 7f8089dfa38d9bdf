//! `herald stats [CAMPAIGN] [--json]`: a campaign's figures per step.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Args;
use herald::config::Settings;
use herald::report::{CampaignStats, StepStats};

use super::{SourceArgs, load_stats, open_store};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Campaign name; default: every campaign that has deliveries
    campaign: Option<String>,
    /// Print JSON (an object for one campaign, an array otherwise)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    source: SourceArgs,
}

pub async fn run(args: StatsArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    args.source.window()?;
    let store = open_store(settings).await?;
    let names = match &args.campaign {
        Some(name) => vec![name.clone()],
        None => store.campaigns_with_deliveries().await?,
    };
    let mut all = Vec::with_capacity(names.len());
    for name in &names {
        all.push(load_stats(&store, name, &args.source).await?);
    }
    store.close().await;
    let mut text = String::new();
    if args.json {
        text = match (&args.campaign, all.as_slice()) {
            (Some(_), [one]) => serde_json::to_string_pretty(one)?,
            _ => serde_json::to_string_pretty(&all)?,
        };
        text.push('\n');
    } else if all.is_empty() {
        text.push_str("no campaign has deliveries yet\n");
    }
    for (i, s) in all.iter().enumerate().filter(|_| !args.json) {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&human(s));
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(ExitCode::SUCCESS)
}

fn pct(r: Option<f64>) -> String {
    r.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// Text from data with control characters (terminal escapes) made visible.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The figures as aligned text.
fn human(s: &CampaignStats) -> String {
    let mut out = String::new();
    let period = match &s.period {
        Some(p) => format!("{} .. {}", p.from, p.to),
        None => "nothing sent yet".into(),
    };
    out.push_str(&format!(
        "{}  ({period}; {} entries, {} customers)\n",
        clean(&s.campaign),
        s.entered,
        s.customers
    ));
    match &s.conversion {
        Some(c) => out.push_str(&format!(
            "conversion: {} within {} of an email ({})\n",
            c.event, c.window, c.source
        )),
        None => out.push_str("conversion: none (no goal; see --conversion-event)\n"),
    }
    if !s.tracked {
        out.push_str("opens and clicks: not tracked (the campaign has tracking: false)\n");
    }
    let head = [
        "step",
        "entered",
        "sent",
        "bounced",
        "failed",
        "skipped",
        "opened",
        "human",
        "opens",
        "clicked",
        "ctr",
        "unsub",
        "complaints",
        "converted",
        "conv",
    ];
    let row = |label: &str, x: &StepStats| -> Vec<String> {
        vec![
            clean(label),
            x.entered.to_string(),
            x.sent.to_string(),
            x.bounced.to_string(),
            x.failed.to_string(),
            x.skipped.to_string(),
            x.opened.to_string(),
            x.opened_human.to_string(),
            x.opens.to_string(),
            x.clicked.to_string(),
            pct(x.click_rate),
            x.unsubscribed.to_string(),
            x.complained.to_string(),
            x.converted.to_string(),
            pct(x.conversion_rate),
        ]
    };
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| h.to_string()).collect()];
    for x in &s.steps {
        rows.push(row(x.step.as_deref().unwrap_or(""), x));
    }
    rows.push(row("total", &s.totals));
    let widths: Vec<usize> = (0..head.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if !s.totals.skipped_by_reason.is_empty() {
        let reasons: Vec<String> = s
            .totals
            .skipped_by_reason
            .iter()
            .map(|(r, n)| {
                format!(
                    "{} {n}",
                    if r.is_empty() {
                        "(none)".into()
                    } else {
                        clean(r)
                    }
                )
            })
            .collect();
        out.push_str(&format!("skipped by reason: {}\n", reasons.join(", ")));
    }
    if !s.totals.links.is_empty() {
        out.push_str("top links (clicks, people):\n");
        for l in s.totals.links.iter().take(5) {
            out.push_str(&format!(
                "  {:>6} {:>6}  {}\n",
                l.clicks,
                l.clicked,
                clean(&l.url)
            ));
        }
    }
    out
}
