//! `herald serve`: the tracking service alone, until SIGTERM or Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use herald::config::Settings;
use herald::http;

use super::{open_store, stop_on_signal};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Directory of campaign files: the unsubscribe page names each campaign's
    /// sender from its `from:` (without them, the campaign's name), and events
    /// sent to the API enter customers into the campaigns with a `trigger:`
    #[arg(long, default_value = "campaigns", value_name = "DIR")]
    campaigns: PathBuf,
}

pub async fn run(args: ServeArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let campaigns = campaigns(&args.campaigns);
    let store = open_store(settings).await?;
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.http_addr))?;
    let addr = listener.local_addr()?;
    // One line on stdout, so scripts (and tests binding port 0) learn the address.
    println!(
        "herald serve: listening on http://{addr} (links point at {})",
        settings.public_url
    );
    let clock: std::sync::Arc<dyn herald::clock::Clock> =
        std::sync::Arc::new(herald::clock::SystemClock);
    let totals = http::serve_with_clock(
        store.clone(),
        settings,
        listener,
        herald::pipeline::stopped(stop_on_signal(
            "stopping: answering requests in progress, then writing every event accepted",
        )),
        clock,
        herald::metrics::Metrics::new(),
        campaigns,
    )
    .await;
    store.close().await;
    let totals = totals?;
    println!(
        "herald serve: stopped; {} events accepted, {} written in {} transactions, {} dropped",
        totals.accepted, totals.written, totals.transactions, totals.dropped
    );
    Ok(ExitCode::SUCCESS)
}

/// What the service takes from the campaigns in `dir`. The service answers
/// links whatever the files say: a missing directory or a file with problems
/// is a warning, and the pages name the campaigns it could not read by their
/// names.
fn campaigns(dir: &Path) -> http::Campaigns {
    let campaigns = super::readable_campaigns(
        dir,
        "unsubscribe pages name campaigns, not senders, and no campaign is triggered",
    );
    // Every campaign's sender; triggers and sends only of those the worker runs.
    http::Campaigns {
        senders: herald::tracking::Senders::new(&campaigns),
        ..http::Campaigns::new(&super::runnable(&campaigns))
    }
}
