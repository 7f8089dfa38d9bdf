//! `herald serve`: the tracking service alone, until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use herald::config::Settings;
use herald::tracking;

use super::open_store;
use super::run::stop_on_signal;

#[derive(Args, Debug)]
pub struct ServeArgs {}

pub async fn run(_args: ServeArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
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
    let totals = tracking::serve_with_clock(
        store.clone(),
        settings,
        listener,
        herald::pipeline::stopped(stop_on_signal(
            "stopping: answering requests in progress, then writing every event accepted",
        )),
        clock,
        herald::report::metrics::Metrics::new(),
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
