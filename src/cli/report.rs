//! `herald report CAMPAIGN --out FILE`: the campaign's HTML report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use herald::config::Settings;
use herald::report;

use super::{SourceArgs, load_stats, open_store};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Campaign name
    campaign: String,
    /// The HTML file to write
    #[arg(long, short, default_value = "report.html", value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    source: SourceArgs,
}

pub async fn run(args: ReportArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = open_store(settings).await?;
    let stats = load_stats(&store, &args.campaign, &args.source).await?;
    let series = report::campaign_series(&store, &stats).await?;
    store.close().await;
    let html = report::render_html(&stats, &series, herald::clock::now_millis());
    std::fs::write(&args.out, html)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote {} ({}: {} sent, {} opened, {} clicked, {} converted)",
        args.out.display(),
        args.campaign,
        stats.totals.sent,
        stats.totals.opened_human,
        stats.totals.clicked,
        stats.totals.converted
    );
    Ok(ExitCode::SUCCESS)
}
