//! `herald worker`: schedules, queued jobs and sends, until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use herald::config::Settings;
use herald::pipeline::jobs;

use super::{check_sending, engine, load_campaigns, open_store, stop_on_signal};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Directory of campaign files
    #[arg(long, default_value = "campaigns", value_name = "DIR")]
    campaigns: PathBuf,
    /// Directory of templates
    #[arg(long, default_value = "templates", value_name = "DIR")]
    templates: PathBuf,
    /// This worker's name in the job tables (default: host name and process id)
    #[arg(long)]
    name: Option<String>,
    /// Queue a run of these campaigns at start (besides their schedules)
    #[arg(long = "now", value_name = "CAMPAIGN")]
    now: Vec<String>,
    /// Do not run the tracking service (opens, clicks, unsubscribes, webhook)
    /// on http_addr; run it elsewhere with `herald serve`
    #[arg(long)]
    no_http: bool,
}

pub async fn run(args: WorkerArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let campaigns = load_campaigns(&args.campaigns, &args.templates)?;
    for wanted in &args.now {
        if !campaigns.iter().any(|c| &c.name == wanted) {
            anyhow::bail!(
                "--now {wanted}: no such campaign in {}",
                args.campaigns.display()
            );
        }
    }
    check_sending(settings, &campaigns)?;
    let store = open_store(settings).await?;
    // The job tables first, before anything else holds a connection (see
    // `jobs::setup`).
    jobs::setup(&store).await?;
    let engine = engine(store.clone(), settings, &args.templates, &campaigns).await?;
    for wanted in &args.now {
        jobs::enqueue_plan(&store, wanted).await?;
    }
    let name = args.name.unwrap_or_else(default_name);
    tracing::info!(
        worker = %name,
        campaigns = campaigns.len(),
        scheduled = campaigns.iter().filter(|c| c.schedule.is_some()).count(),
        mail = %engine.describe_mail(),
        "worker started"
    );
    let stop = stop_on_signal("stopping: finishing messages in flight");
    let worker_done = tokio::sync::watch::Sender::new(false);
    let http = if args.no_http {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} for the tracking service (set http_addr, or --no-http)",
                    settings.http_addr
                )
            })?;
        tracing::info!(address = %listener.local_addr()?, public_url = %settings.public_url, "tracking service listening");
        // The tracking service stops once the job worker has stopped, whether
        // a signal stopped it (after the sends in flight) or an error did.
        let shutdown = herald::pipeline::stopped(worker_done.subscribe());
        let (store, settings) = (store.clone(), settings.clone());
        let metrics = engine.metrics().clone();
        let known = herald::http::Campaigns::new(&campaigns);
        Some(tokio::spawn(async move {
            herald::http::serve(store, &settings, listener, shutdown, metrics, known).await
        }))
    };
    let worked = jobs::run_worker(engine, campaigns, &name, stop).await;
    worker_done.send_replace(true);
    let served = match http {
        Some(http) => match http.await {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::anyhow!(
                "the tracking service ended abnormally: {e}"
            )),
        },
        None => Ok(()),
    };
    worked?;
    served?;
    store.close().await;
    tracing::info!(worker = %name, "worker stopped");
    Ok(ExitCode::SUCCESS)
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_string());
    format!("{host}-{}", std::process::id())
}
