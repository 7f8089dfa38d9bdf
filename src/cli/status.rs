//! `herald status CAMPAIGN`: where a campaign's customers stand in its sequence.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use herald::campaign;
use herald::clock::{Millis, format_rfc3339};
use herald::config::Settings;

use super::open_store;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Campaign name (or path to its file)
    campaign: String,
    /// Directory of campaign files
    #[arg(long, default_value = "campaigns", value_name = "DIR")]
    campaigns: PathBuf,
}

#[derive(Default)]
struct AtStep {
    queued: i64,
    sending: i64,
    sent: i64,
    due: Option<Millis>,
    next_step_due: Option<Millis>,
}

fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

pub async fn run(args: StatusArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let campaign = campaign::find(&args.campaign, &args.campaigns)?;
    let store = open_store(settings).await?;
    let rows = store.sequence_status(&campaign.name).await?;
    store.close().await;

    let mut steps: BTreeMap<usize, AtStep> = BTreeMap::new();
    let mut finished: BTreeMap<String, i64> = BTreeMap::new();
    let mut exits: BTreeMap<String, i64> = BTreeMap::new();
    let mut total = 0;
    for r in &rows {
        total += r.entries;
        if r.state != "active" {
            *finished.entry(r.state.clone()).or_default() += r.entries;
            if r.state == "exited" {
                let reason = r.reason.clone().unwrap_or_else(|| "unknown".into());
                *exits.entry(reason).or_default() += r.entries;
            }
            continue;
        }
        let index = r
            .step
            .as_deref()
            .and_then(|s| campaign.steps.iter().position(|x| x.id == s))
            .unwrap_or(usize::MAX);
        let at = steps.entry(index).or_default();
        match r.delivery.as_deref() {
            Some("queued") => {
                at.queued += r.entries;
                at.due = earliest(at.due, r.earliest_due);
            }
            Some("sending") => at.sending += r.entries,
            Some("sent") => {
                at.sent += r.entries;
                let wait = campaign
                    .steps
                    .get(index + 1)
                    .and_then(|s| s.wait)
                    .map(|w| w.as_millis())
                    .unwrap_or(0);
                at.next_step_due = earliest(at.next_step_due, r.earliest_sent.map(|t| t + wait));
            }
            _ => at.queued += r.entries,
        }
    }
    println!(
        "{}: {} steps, {total} entries",
        campaign.name,
        campaign.steps.len()
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
    for (i, step) in campaign.steps.iter().enumerate() {
        let at = steps.remove(&i).unwrap_or_default();
        let last = i + 1 == campaign.steps.len();
        let mut next = Vec::new();
        if let Some(t) = at.due {
            next.push(format!("sends due {}", format_rfc3339(t)));
        }
        if !last && let Some(t) = at.next_step_due {
            next.push(format!(
                "{} due from {}",
                campaign.steps[i + 1].id,
                format_rfc3339(t)
            ));
        }
        println!(
            "  {:<width$}  {:>9}  {:>9}  {:>9}  {}",
            step.id,
            at.queued,
            at.sending,
            at.sent,
            next.join("; ")
        );
    }
    for (_, at) in steps {
        if at.queued + at.sending + at.sent > 0 {
            println!(
                "  {:<width$}  {:>9}  {:>9}  {:>9}  (a step no longer in the campaign)",
                "?", at.queued, at.sending, at.sent
            );
        }
    }
    let n = |k: &str| finished.get(k).copied().unwrap_or(0);
    println!(
        "done: completed {}, reached the goal {}, exited {}",
        n("completed"),
        n("goal"),
        n("exited")
    );
    for (reason, count) in exits {
        println!("  exited ({reason}): {count}");
    }
    Ok(ExitCode::SUCCESS)
}
