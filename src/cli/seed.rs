//! `herald seed` and `herald demo`

use std::process::ExitCode;

use clap::Args;
use herald::clock::parse_rfc3339;
use herald::config::Settings;
use herald::seed;

use super::open_store;
use super::progress::Progress;

#[derive(Args, Debug)]
pub struct SeedArgs {
    /// How many customers to generate
    #[arg(long)]
    customers: u64,
    /// Seed of the generator: the same seed gives the same data
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The seeded "now" (RFC 3339 or YYYY-MM-DD); timestamps lie in the two years
    /// before it. Default: today, 00:00 UTC
    #[arg(long)]
    anchor: Option<String>,
}

pub async fn run(args: SeedArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let anchor = match &args.anchor {
        Some(text) => parse_anchor(text)?,
        None => seed::default_anchor(),
    };
    let store = open_store(settings).await?;
    let mut progress = Progress::new("seeding customers", Some(args.customers), false);
    let totals = seed::run(&store, args.seed, args.customers, anchor, |done| {
        progress.update(done, done)
    })
    .await?;
    progress.finish();
    store.close().await;
    println!(
        "seeded {} customers and {} interactions in {:.1} s (seed {}, {} already present)",
        totals.customers,
        totals.interactions,
        progress.elapsed().as_secs_f64(),
        args.seed,
        args.customers - totals.customers
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_anchor(text: &str) -> anyhow::Result<i64> {
    parse_rfc3339(text)
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_millis())
        })
        .ok_or_else(|| anyhow::anyhow!("--anchor {text:?}: expected RFC 3339 or YYYY-MM-DD"))
}
