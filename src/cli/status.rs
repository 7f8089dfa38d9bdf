//! `herald status CAMPAIGN`: where a campaign's customers stand in its sequence.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use herald::campaign;
use herald::clock::format_rfc3339;
use herald::config::Settings;
use herald::report;

use super::open_store;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Campaign name (or path to its file)
    campaign: String,
    /// Directory of campaign files
    #[arg(long, default_value = "campaigns", value_name = "DIR")]
    campaigns: PathBuf,
}

pub async fn run(args: StatusArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let campaign = campaign::find(&args.campaign, &args.campaigns)?;
    let store = open_store(settings).await?;
    let status = report::sequence_status(&store, &campaign).await?;
    store.close().await;

    println!(
        "{}: {} steps, {} entries",
        campaign.name,
        campaign.steps.len(),
        status.entries
    );
    let width = campaign
        .steps
        .iter()
        .map(|s| s.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "  {:<width$}  {:>9}  {:>9}  {:>9}  next",
        "step", "queued", "sending", "waiting"
    );
    for (i, at) in status.steps.iter().enumerate() {
        let mut next = Vec::new();
        if let Some(t) = at.sends_due {
            next.push(format!("sends due {}", format_rfc3339(t)));
        }
        if let Some(t) = at.next_step_due {
            next.push(format!(
                "{} due from {}",
                status.steps[i + 1].step,
                format_rfc3339(t)
            ));
        }
        println!(
            "  {:<width$}  {:>9}  {:>9}  {:>9}  {}",
            at.step,
            at.queued,
            at.sending,
            at.waiting,
            next.join("; ")
        );
    }
    let gone = &status.unknown_step;
    if gone.queued + gone.sending + gone.waiting > 0 {
        println!(
            "  {:<width$}  {:>9}  {:>9}  {:>9}  (a step no longer in the campaign)",
            "?", gone.queued, gone.sending, gone.waiting
        );
    }
    println!(
        "done: completed {}, reached the goal {}, exited {}",
        status.completed, status.reached_goal, status.exited
    );
    for (reason, count) in &status.exits {
        println!("  exited ({reason}): {count}");
    }
    Ok(ExitCode::SUCCESS)
}
