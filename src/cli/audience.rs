//! `herald audience CAMPAIGN`: who a campaign would reach right now.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use herald::campaign;
use herald::config::Settings;
use herald::segment::Param;

use super::open_store;

#[derive(Args, Debug)]
pub struct AudienceArgs {
    /// Campaign name (or path to its file)
    campaign: String,
    /// Also show N members chosen at random
    #[arg(long, value_name = "N")]
    sample: Option<usize>,
    /// Print every member's email, one a line, and nothing else
    #[arg(long, conflicts_with_all = ["sample", "explain"])]
    list: bool,
    /// Print the SQL, its parameters and the database's query plan
    #[arg(long)]
    explain: bool,
    /// Directory of campaign files
    #[arg(long, default_value = "campaigns", value_name = "DIR")]
    campaigns: PathBuf,
    /// Evaluate as of this time (RFC 3339) instead of now
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

pub async fn run(args: AudienceArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let campaign = campaign::find(&args.campaign, &args.campaigns)?;
    let now = match &args.at {
        Some(t) => herald::clock::parse_rfc3339(t)
            .with_context(|| format!("--at {t:?}: expected an RFC 3339 time"))?,
        None => herald::clock::now_millis(),
    };
    let store = open_store(settings).await?;
    let audience = campaign.audience_sql(store.backend(), now);

    if args.list {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let written = store
            .audience_for_each(&audience, |_, email| writeln!(out, "{email}"))
            .await?
            .and_then(|()| out.flush());
        store.close().await;
        match written {
            // A reader that stops early (`| head`) is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
        return Ok(ExitCode::SUCCESS);
    }

    if args.explain {
        println!(
            "-- {} audience on {}",
            campaign.name,
            store.backend().name()
        );
        println!("{}", herald::store::audience::count_sql(&audience));
        println!("-- parameters");
        for (i, p) in audience.params.iter().enumerate() {
            let value = match p {
                Param::Text(s) => format!("{s:?}"),
                Param::Int(n) => n.to_string(),
                Param::Float(f) => f.to_string(),
            };
            println!("${} = {value}", i + 1);
        }
        println!("-- plan");
        for line in store.audience_plan(&audience).await? {
            println!("{line}");
        }
    }

    let count = store.audience_count(&audience).await?;
    println!("{count} customers in the audience of {}", campaign.name);
    if let Some(n) = args.sample {
        for m in store.audience_sample(&audience, n).await? {
            let name = [m.first_name, m.last_name]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            println!("  {}  {name}", m.email);
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
