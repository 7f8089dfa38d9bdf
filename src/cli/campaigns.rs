//! `herald validate` and `herald schema`

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use herald::campaign::{self, Campaign, Checks};
use herald::clock::{Clock, SystemClock};
use herald::config::Settings;
use herald::pipeline::{self, Engine, SampleOf};
use herald::store::{Backend, Store};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Campaign files or directories (default: campaigns/)
    paths: Vec<PathBuf>,
    /// Where step templates live: each step needs DIR/TEMPLATE.html.hbs
    #[arg(long, default_value = "templates", value_name = "DIR")]
    templates: PathBuf,
    /// Customers per campaign to render every step for, when the database has any
    #[arg(long, default_value_t = 100, value_name = "N")]
    sample: usize,
}

/// Prints every problem of every file, then every template error found by
/// rendering each step for a sample of customers; exit 1 when there is any.
pub async fn validate(args: ValidateArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("campaigns")]
    } else {
        args.paths.clone()
    };
    let catalog = campaign::load(
        &paths,
        &Checks {
            templates: Some(&args.templates),
        },
    );
    for p in &catalog.problems {
        println!("{p}");
    }
    let mut problems = catalog.problems.len();
    if problems == 0 && catalog.campaigns.is_empty() {
        println!("no campaign files found in {}", show(&paths));
        return Ok(ExitCode::FAILURE);
    }
    let campaigns: Vec<Campaign> = catalog.campaigns.into_iter().map(|(_, c)| c).collect();
    // Templates and subjects compile without a database.
    let compiled = args.templates.is_dir() && !campaigns.is_empty();
    if compiled {
        if let Err(e) = pipeline::templates_for(&args.templates, &campaigns) {
            println!("{e}");
            problems += 1;
        } else {
            problems += render_for_customers(&args, settings, &campaigns).await?;
        }
    }
    if problems == 0 {
        println!("{} campaigns OK", campaigns.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{problems} problem{} found",
            if problems == 1 { "" } else { "s" }
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Renders every step of every campaign for a sample of its audience (any
/// customers when the audience is empty) and prints each distinct template
/// error; returns how many. Without a reachable database, or with no customers
/// in it, says so and renders nothing. Writes nothing to the database.
async fn render_for_customers(
    args: &ValidateArgs,
    settings: &Settings,
    campaigns: &[Campaign],
) -> anyhow::Result<usize> {
    let url = &settings.database_url;
    let shown = herald::config::redact(url);
    let skip = |why: String| {
        eprintln!("note: {why}; templates compiled but not rendered for customers");
        Ok(0)
    };
    if let Some(file) = sqlite_file(url) {
        // Connecting would create the file.
        if !file.exists() {
            return skip(format!("no database at {shown}"));
        }
    }
    let store = match Store::connect(url).await {
        Ok(s) => s,
        Err(e) => return skip(format!("database not reachable ({e})")),
    };
    let customers = store.table_counts().await.map(|c| c.customers).unwrap_or(0);
    if customers == 0 {
        store.close().await;
        return skip(format!("no customers in {shown}"));
    }
    let mut render_settings = pipeline::render_only(settings, &std::env::temp_dir());
    if render_settings.secrets.is_empty() {
        // Rendered links are thrown away: a fixed key saves writing a generated one.
        render_settings.secrets = vec!["herald-validate-only-key".to_string()];
    }
    let clock = Arc::new(SystemClock);
    let engine = Engine::new(
        store.clone(),
        render_settings,
        &args.templates,
        campaigns,
        clock.clone(),
    )
    .await?;
    let mut failures = 0;
    for c in campaigns {
        let (ids, of) = pipeline::check_sample(&store, c, clock.now(), args.sample).await?;
        let check = pipeline::check_templates(&engine, c, &ids).await?;
        for f in &check.failures {
            let more = match f.customers {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            };
            println!(
                "{} (campaign {}, step {}, customer {}{more})",
                f.error, c.name, f.step, f.email
            );
        }
        failures += check.failures.len();
        let whom = match of {
            SampleOf::Audience => "of the audience",
            SampleOf::AllCustomers => "(the audience is empty now: any customers)",
        };
        println!(
            "{}: {} step{} rendered for {} customer{} {whom}{}",
            c.name,
            c.steps.len(),
            plural(c.steps.len()),
            ids.len(),
            plural(ids.len()),
            if check.failures.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} template error{}",
                    check.failures.len(),
                    plural(check.failures.len())
                )
            }
        );
    }
    store.close().await;
    Ok(failures)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The file of an SQLite URL (`sqlite://herald.db`, `sqlite:x.db?mode=rwc`).
fn sqlite_file(url: &str) -> Option<&Path> {
    if Backend::of_url(url) != Backend::Sqlite {
        return None;
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let file = rest.split('?').next().unwrap_or(rest);
    (!file.is_empty() && file != ":memory:").then(|| Path::new(file))
}

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints the JSON Schema of campaign files.
pub fn schema() -> ExitCode {
    print!("{}", campaign::schema::json_schema_text());
    ExitCode::SUCCESS
}
