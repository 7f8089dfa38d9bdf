//! `herald preview CAMPAIGN [--step ID] [--customer EMAIL] [--out DIR]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use herald::campaign;
use herald::clock::SystemClock;
use herald::config::Settings;
use herald::pipeline::{self, Engine};

use super::open_store;

#[derive(Args, Debug)]
pub struct PreviewArgs {
    /// Campaign name (or path to its file)
    campaign: String,
    /// Step id (default: the first step)
    #[arg(long, value_name = "ID")]
    step: Option<String>,
    /// Render for this customer (default: a random member of the audience)
    #[arg(long, value_name = "EMAIL")]
    customer: Option<String>,
    /// Directory for CAMPAIGN-STEP.eml, .html and .txt
    #[arg(long, default_value = "preview", value_name = "DIR")]
    out: PathBuf,
    /// Directory of campaign files
    #[arg(long, default_value = "campaigns", value_name = "DIR")]
    campaigns: PathBuf,
    /// Directory of templates
    #[arg(long, default_value = "templates", value_name = "DIR")]
    templates: PathBuf,
}

/// Writes one customer's message for one step and prints where.
pub async fn run(args: PreviewArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let campaign = campaign::find(&args.campaign, &args.campaigns)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let store = open_store(settings).await?;
    let engine = Engine::new(
        store.clone(),
        pipeline::render_only(settings, &args.out),
        &args.templates,
        std::slice::from_ref(&campaign),
        Arc::new(SystemClock),
    )
    .await?;
    let result = pipeline::preview(
        &engine,
        &campaign,
        args.step.as_deref(),
        args.customer.as_deref(),
    )
    .await;
    store.close().await;
    let p = result?;
    let base = format!("{}-{}", campaign.name, p.step);
    let files = [
        (format!("{base}.eml"), p.eml.as_slice()),
        (format!("{base}.html"), p.html.as_bytes()),
        (format!("{base}.txt"), p.text.as_bytes()),
    ];
    println!("{}/{} for {}", campaign.name, p.step, p.email);
    println!("  subject: {}", p.subject);
    for (name, bytes) in files {
        let path = args.out.join(name);
        write(&path, bytes)?;
        println!("  {}", path.display());
    }
    if let Some(reason) = p.would_skip {
        println!("note: a real send would skip this customer ({reason})");
    }
    if settings.postal_address.is_none() {
        println!(
            "note: postal_address is not set (HERALD_POSTAL_ADDRESS); footers show the template's fallback"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
