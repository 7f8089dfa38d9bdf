//! `herald run CAMPAIGN [--dry-run]` and `herald demo`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use herald::campaign::{self, Campaign, CampaignKind};
use herald::config::Settings;
use herald::pipeline::{self, Engine, RunReport};
use herald::seed;
use herald::store::deliveries::Trigger;

use super::progress::Progress;
use super::{check_sending, engine, load_campaigns, open_store, refuse_journeys, stop_on_signal};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Campaign name (or path to its file)
    campaign: String,
    /// Plan and render for the whole audience, but send nothing and keep nothing
    #[arg(long)]
    dry_run: bool,
    /// Directory of campaign files
    #[arg(long, default_value = "campaigns", value_name = "DIR")]
    campaigns: PathBuf,
    /// Directory of templates
    #[arg(long, default_value = "templates", value_name = "DIR")]
    templates: PathBuf,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How many demo customers to seed
    #[arg(long, default_value_t = 5000)]
    customers: u64,
    /// Directory of campaign files
    #[arg(long, default_value = "campaigns", value_name = "DIR")]
    campaigns: PathBuf,
    /// Directory of templates
    #[arg(long, default_value = "templates", value_name = "DIR")]
    templates: PathBuf,
}

pub async fn run(args: RunArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let campaign = campaign::find(&args.campaign, &args.campaigns)?;
    refuse_journeys(std::slice::from_ref(&campaign))?;
    if let Some(why) = sent_on_demand(&campaign)
        && !args.dry_run
    {
        anyhow::bail!(
            "campaign \"{}\" is {why}: `herald run` would send its first step to its whole audience at once (herald run --dry-run shows who is in the audience)",
            campaign.name,
        );
    }
    if !args.dry_run {
        check_sending(settings, std::slice::from_ref(&campaign))?;
    }
    let store = open_store(settings).await?;
    let engine = engine(
        store.clone(),
        settings,
        &args.templates,
        std::slice::from_ref(&campaign),
    )
    .await?;
    if args.dry_run {
        let report = pipeline::dry_run(&engine, &campaign).await?;
        println!(
            "{} (dry run, nothing sent or stored): audience {}, would send {}, would skip {}{}, template errors {}",
            campaign.name,
            report.audience,
            report.rendered,
            report.skipped.iter().map(|(_, n)| n).sum::<u64>(),
            reasons(report.skipped.iter().map(|(r, n)| (r.as_str(), *n as i64))),
            report.failed
        );
        for (email, error) in &report.errors {
            println!("  {email}: {error}");
        }
        store.close().await;
        return Ok(if report.failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let reports = pipeline::run_campaign(
        &engine,
        &campaign,
        Trigger::Manual,
        None,
        true,
        stop_on_signal("stopping: finishing messages in flight"),
    )
    .await?;
    store.close().await;
    if reports.is_empty() {
        println!("{}: no steps, nothing to do", campaign.name);
    }
    let to = destination(settings, &engine);
    for r in &reports {
        print_report(&campaign.name, r, &to);
    }
    let failed: i64 = reports.iter().map(|r| r.counts.failed).sum();
    if failed > 0 {
        eprintln!(
            "{}: {failed} message{} failed for good; `herald status {}` shows why",
            campaign.name,
            if failed == 1 { "" } else { "s" },
            campaign.name
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn reasons<'a>(list: impl Iterator<Item = (&'a str, i64)>) -> String {
    let parts: Vec<String> = list.map(|(r, n)| format!("{r} {n}")).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// Where messages go, for the summaries: the relay as the mailer names it, or
/// the outbox as the directory it is (`outbox/`).
fn destination(settings: &Settings, engine: &Engine) -> String {
    if settings.smtp_url.is_some() {
        return engine.describe_mail();
    }
    let dir = settings.outbox_dir.display().to_string();
    if dir.ends_with('/') {
        dir
    } else {
        format!("{dir}/")
    }
}

fn print_report(name: &str, r: &RunReport, destination: &str) {
    let c = &r.counts;
    println!(
        "{name}: run {}{} planned {}, sent {}, skipped {}{}, failed {}, bounced {}{} → {}",
        r.run_id,
        if r.resumed {
            " (resumed: it had been stopped before it finished)"
        } else {
            ""
        },
        r.planned,
        c.sent,
        c.skipped_total(),
        reasons(c.skipped.iter().map(|(r, n)| (r.as_str(), *n))),
        c.failed,
        c.bounced,
        if r.pending {
            format!(
                ", {} queued for later (a retry or the campaign's send window; `herald worker` sends them)",
                c.queued + c.sending
            )
        } else {
            String::new()
        },
        destination
    );
}

pub async fn demo(args: DemoArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let campaigns = load_campaigns(&args.campaigns, &args.templates)?;
    check_sending(settings, &campaigns)?;
    let store = open_store(settings).await?;
    println!(
        "Herald demo on {}",
        herald::config::redact(&settings.database_url)
    );
    let mut progress = Progress::new("seeding demo customers", Some(args.customers), false);
    let totals = seed::run(&store, 1, args.customers, seed::default_anchor(), |done| {
        progress.update(done, done)
    })
    .await
    .context("seeding demo customers")?;
    progress.finish();
    println!(
        "seeded {} new customers with {} interactions ({} were already there)",
        totals.customers,
        totals.interactions,
        args.customers - totals.customers
    );
    let engine = engine(store.clone(), settings, &args.templates, &campaigns).await?;
    let stop = stop_on_signal("stopping: finishing messages in flight");
    // The outbox never asks for a retry, so what is left after a pass waits for
    // a send window (up to hours): the demo reports it rather than waiting.
    let wait = settings.smtp_url.is_some();
    let to = destination(settings, &engine);
    for campaign in &campaigns {
        if let Some(why) = sent_on_demand(campaign) {
            println!("{}: not run ({why})", campaign.name);
            continue;
        }
        let reports =
            pipeline::run_campaign(&engine, campaign, Trigger::Manual, None, wait, stop.clone())
                .await?;
        if reports.is_empty() {
            println!("{}: no steps", campaign.name);
        }
        for r in &reports {
            print_report(&campaign.name, r, &to);
        }
    }
    let counts = store.table_counts().await?;
    store.close().await;
    println!(
        "the database now holds {} customers and {} interactions",
        counts.customers, counts.interactions
    );
    if wait {
        println!("messages: sent through {to}");
    } else {
        println!("messages: written to {to} (open any .eml in a mail client, or `herald preview`)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a campaign is sent one customer at a time and never as a run of its
/// whole audience (`herald run`, `herald demo`): `None` for one that is.
fn sent_on_demand(campaign: &Campaign) -> Option<String> {
    if campaign.kind == CampaignKind::Transactional {
        return Some(
            "transactional: it is sent on request (POST /v1/send) or by its trigger".to_string(),
        );
    }
    match (&campaign.trigger, &campaign.schedule) {
        (Some(t), None) => Some(format!(
            "triggered by events ({}): the worker enters each customer when the event arrives",
            t.event
        )),
        _ => None,
    }
}
