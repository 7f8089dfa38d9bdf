//! `herald advance [CAMPAIGN...]`: move due customers to their next step now,
//! as the worker does on its tick (the queued messages are sent by the worker,
//! or by `herald run`, which finishes unfinished runs first).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use herald::campaign::Campaign;
use herald::config::Settings;
use herald::pipeline::sequence;

use super::{engine, load_campaigns, open_store};

#[derive(Args, Debug)]
pub struct AdvanceArgs {
    /// Campaigns to advance (default: every campaign)
    campaigns_to_advance: Vec<String>,
    /// Directory of campaign files
    #[arg(long, default_value = "campaigns", value_name = "DIR")]
    campaigns: PathBuf,
    /// Directory of templates
    #[arg(long, default_value = "templates", value_name = "DIR")]
    templates: PathBuf,
}

pub async fn run(args: AdvanceArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let all = load_campaigns(&args.campaigns, &args.templates)?;
    for wanted in &args.campaigns_to_advance {
        if !all.iter().any(|c| &c.name == wanted) {
            anyhow::bail!("no campaign {wanted} in {}", args.campaigns.display());
        }
    }
    let chosen: Vec<&Campaign> = all
        .iter()
        .filter(|c| {
            args.campaigns_to_advance.is_empty() || args.campaigns_to_advance.contains(&c.name)
        })
        .collect();
    let store = open_store(settings).await?;
    let engine = engine(store.clone(), settings, &args.templates, &all).await?;
    for c in chosen {
        let started = std::time::Instant::now();
        let done = sequence::advance(&engine, c, engine.now()).await?;
        let m = done.moved;
        println!(
            "{}: queued {}, reached the goal {}, left by condition {}, completed {}, ended {}{} ({:.2} s)",
            c.name,
            m.queued,
            m.goal,
            m.exited,
            done.completed,
            done.ended,
            done.run_id
                .map(|r| format!("; run {r} holds the queued messages"))
                .unwrap_or_default(),
            started.elapsed().as_secs_f64()
        );
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
