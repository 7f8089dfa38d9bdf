//! Command-line interface: one small function per subcommand. The only place that
//! prints for humans; business logic lives in the library. What several
//! subcommands share (opening the store, loading campaigns, the engine, the
//! stop signal, the stats source) is here.

mod advance;
mod api_key;
mod audience;
mod backup;
mod campaigns;
mod customer;
mod import;
mod preview;
mod progress;
mod report;
mod run;
mod seed;
mod serve;
mod stats;
mod status;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{
    ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, parser::ValueSource,
};
use herald::campaign::{self, Campaign, Checks};
use herald::clock::SystemClock;
use herald::config::{Layer, LogFormat, SETTINGS, Settings, Source};
use herald::pipeline::Engine;
use herald::quantity::Span;
use herald::report::{CampaignStats, ConversionRule, StatsOptions, campaign_stats};
use herald::store::Store;
use tokio::sync::watch;

/// Herald: marketing-campaign automation — segments, templates, SMTP delivery, tracking.
#[derive(Parser, Debug)]
#[command(name = "herald", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    settings: SettingArgs,
    #[command(subcommand)]
    command: Command,
}

/// Every setting as a flag with its `HERALD_*` environment variable, under a
/// heading of their own in every subcommand's help.
#[derive(Args, Debug)]
#[command(
    next_help_heading = "Settings (each also HERALD_NAME or a herald.toml key; `herald config` shows them)"
)]
struct SettingArgs {
    /// Config file (TOML); default ./herald.toml when it exists
    #[arg(long, env = "HERALD_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database: sqlite://FILE (default sqlite://herald.db) or postgres://…
    #[arg(
        long,
        env = "HERALD_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// SMTP relay URL; unset = write .eml files to the outbox
    #[arg(long, env = "HERALD_SMTP_URL", global = true, hide_env_values = true)]
    smtp_url: Option<String>,
    /// SMTP-wide rate ceiling, e.g. 50/s
    #[arg(long, env = "HERALD_SMTP_RATE", global = true)]
    smtp_rate: Option<String>,
    /// Messages in flight to the relay at once (default 16)
    #[arg(long, env = "HERALD_SMTP_CONCURRENCY", global = true)]
    smtp_concurrency: Option<String>,
    /// Tries per message before a temporary failure is final (default 5)
    #[arg(long, env = "HERALD_MAX_ATTEMPTS", global = true)]
    max_attempts: Option<String>,
    /// Wait before the first retry, doubling each time (default 30s)
    #[arg(long, env = "HERALD_RETRY_BACKOFF", global = true)]
    retry_backoff: Option<String>,
    /// How long a claimed message belongs to its worker (default 2m)
    #[arg(long, env = "HERALD_SEND_LEASE", global = true)]
    send_lease: Option<String>,
    /// Directory for .eml files when no SMTP URL is set (default outbox)
    #[arg(long, env = "HERALD_OUTBOX_DIR", global = true)]
    outbox_dir: Option<String>,
    /// Public base URL of the tracking endpoint
    #[arg(long, env = "HERALD_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    /// HMAC keys, comma-separated: the first signs, all verify
    #[arg(long, env = "HERALD_SECRET", global = true, hide_env_values = true)]
    secret: Option<String>,
    /// Tracking service listen address (default 127.0.0.1:8080)
    #[arg(long, env = "HERALD_HTTP_ADDR", global = true)]
    http_addr: Option<String>,
    /// Requests per API key to the /v1 API, e.g. 1000/s (default); more get 429
    #[arg(long, env = "HERALD_API_RATE", global = true)]
    api_rate: Option<String>,
    /// At most N campaign emails per customer per window, e.g. 3/7d
    #[arg(long, env = "HERALD_FREQUENCY_CAP", global = true)]
    frequency_cap: Option<String>,
    /// Postal address for message footers
    #[arg(long, env = "HERALD_POSTAL_ADDRESS", global = true)]
    postal_address: Option<String>,
    /// Address for mail-based unsubscribes, added to List-Unsubscribe
    #[arg(long, env = "HERALD_UNSUBSCRIBE_MAILTO", global = true)]
    unsubscribe_mailto: Option<String>,
    /// The mail type in each message's Feedback-ID (default marketing)
    #[arg(long, env = "HERALD_FEEDBACK_TAG", global = true)]
    feedback_tag: Option<String>,
    /// Bearer secret for the bounce/complaint webhook
    #[arg(
        long,
        env = "HERALD_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    webhook_secret: Option<String>,
    /// Hosts and networks Herald may send its own HTTP requests to, comma-separated
    #[arg(long, env = "HERALD_OUTBOUND_ALLOW", global = true)]
    outbound_allow: Option<String>,
    /// DKIM selector
    #[arg(long, env = "HERALD_DKIM_SELECTOR", global = true)]
    dkim_selector: Option<String>,
    /// DKIM signing domain
    #[arg(long, env = "HERALD_DKIM_DOMAIN", global = true)]
    dkim_domain: Option<String>,
    /// Path to the DKIM private key (PEM)
    #[arg(long, env = "HERALD_DKIM_KEY", global = true)]
    dkim_key: Option<String>,
    /// Send over SMTP even with a local or non-https public_url or no
    /// postal_address (for a test relay)
    #[arg(long, env = "HERALD_ALLOW_UNSAFE", global = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    allow_unsafe: Option<String>,
    /// Name Herald gives itself in SMTP EHLO (default: this host's name)
    #[arg(long, env = "HERALD_SMTP_HELO", global = true, value_name = "NAME")]
    smtp_helo: Option<String>,
    /// Envelope sender (MAIL FROM) where bounces go (default: each campaign's From)
    #[arg(
        long,
        env = "HERALD_BOUNCE_ADDRESS",
        global = true,
        value_name = "ADDRESS"
    )]
    bounce_address: Option<String>,
    /// Log lines as text (coloured on a terminal) or json, one object per line
    #[arg(
        long,
        env = "HERALD_LOG_FORMAT",
        global = true,
        value_name = "text|json"
    )]
    log_format: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the effective settings and where each came from (secrets masked)
    Config,
    /// Create or update the database schema
    Migrate,
    /// Write a consistent copy of the SQLite database to FILE, safe while a
    /// worker runs (PostgreSQL: use pg_dump)
    Backup(backup::BackupArgs),
    /// Import customers (CSV or JSON Lines) or interactions (JSON Lines)
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Generate deterministic synthetic customers and interactions
    Seed(seed::SeedArgs),
    /// Herald's main job on the configured database (SQLite by default): seed demo
    /// customers, run every campaign once (into the outbox unless smtp_url is set)
    Demo(run::DemoArgs),
    /// Run one campaign now: plan its audience and send the first step
    Run(run::RunArgs),
    /// Run schedules, queued runs and retries continuously (Ctrl-C or SIGTERM
    /// drains in-flight sends and stops)
    Worker(worker::WorkerArgs),
    /// Move customers whose next step is due to it now (the worker does this
    /// every 15 seconds): goals, `when:` conditions, completions
    Advance(advance::AdvanceArgs),
    /// Where a campaign's customers stand: per step queued, sending and waiting
    /// for the next step, when the next sends are due, and how entries ended
    Status(status::StatusArgs),
    /// Run the tracking service alone (opens, clicks, unsubscribes, bounce
    /// webhook, the /v1 API) on http_addr; Ctrl-C or SIGTERM writes every event accepted and stops
    Serve(serve::ServeArgs),
    /// Check campaign files, and render every step for a sample of customers when
    /// the database has any: every problem, exit 1 when any
    Validate(campaigns::ValidateArgs),
    /// Render one step for one customer into .eml, .html and .txt files
    Preview(preview::PreviewArgs),
    /// Count (and list, sample or explain) a campaign's audience
    Audience(audience::AudienceArgs),
    /// Print the JSON Schema of campaign files
    Schema,
    /// A campaign's figures per step: sends, bounces, opens, clicks, conversions
    Stats(stats::StatsArgs),
    /// Write a campaign's report as one self-contained HTML file with charts
    Report(report::ReportArgs),
    /// Keys of the /v1 HTTP API: create (printed once), list, revoke
    #[command(subcommand)]
    ApiKey(api_key::ApiKeyCommand),
    /// One customer: show them on one screen, export everything held on them
    /// as JSON, or erase them (GDPR)
    #[command(subcommand)]
    Customer(customer::CustomerCommand),
}

/// Exit code when some input rows were rejected but the rest was applied.
pub const EXIT_ROWS_REJECTED: u8 = 3;

pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let settings = match load_settings(&cli.settings, &matches) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to standard output through `write`, buffered; a reader that
/// stops early (`| head`) is not an error: the rest is not written.
fn to_stdout(
    write: impl FnOnce(&mut std::io::BufWriter<std::io::StdoutLock<'static>>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Logs go to stderr: in colour only on a terminal (and never with
/// `NO_COLOR`), or as one JSON object per line (`log_format = "json"`) for a
/// log collector.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("herald=info,warn"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && !no_color)
            .init(),
    }
}

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config => {
            print_config(&settings);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = open_store(&settings).await?;
            herald::pipeline::jobs::setup(&store).await?;
            println!("schema is up to date ({})", store.backend().name());
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup(args) => backup::run(args, &settings).await,
        Command::Import(cmd) => import::run(cmd, &settings).await,
        Command::Seed(args) => seed::run(args, &settings).await,
        Command::Demo(args) => run::demo(args, &settings).await,
        Command::Run(args) => run::run(args, &settings).await,
        Command::Worker(args) => worker::run(args, &settings).await,
        Command::Status(args) => status::run(args, &settings).await,
        Command::Advance(args) => advance::run(args, &settings).await,
        Command::Serve(args) => serve::run(args, &settings).await,
        Command::Validate(args) => campaigns::validate(args, &settings).await,
        Command::Preview(args) => preview::run(args, &settings).await,
        Command::Audience(args) => audience::run(args, &settings).await,
        Command::Schema => Ok(campaigns::schema()),
        Command::Stats(args) => stats::run(args, &settings).await,
        Command::Report(args) => report::run(args, &settings).await,
        Command::ApiKey(cmd) => api_key::run(cmd, &settings).await,
        Command::Customer(cmd) => customer::run(cmd, &settings).await,
    }
}

/// Flags and environment variables as a layer, each tagged with its source.
fn load_settings(args: &SettingArgs, matches: &ArgMatches) -> anyhow::Result<Settings> {
    let mut layer = Layer::new();
    for spec in SETTINGS {
        let value = match spec.name {
            "database_url" => &args.database_url,
            "smtp_url" => &args.smtp_url,
            "smtp_rate" => &args.smtp_rate,
            "smtp_concurrency" => &args.smtp_concurrency,
            "max_attempts" => &args.max_attempts,
            "retry_backoff" => &args.retry_backoff,
            "send_lease" => &args.send_lease,
            "outbox_dir" => &args.outbox_dir,
            "public_url" => &args.public_url,
            "secret" => &args.secret,
            "http_addr" => &args.http_addr,
            "api_rate" => &args.api_rate,
            "frequency_cap" => &args.frequency_cap,
            "postal_address" => &args.postal_address,
            "unsubscribe_mailto" => &args.unsubscribe_mailto,
            "feedback_tag" => &args.feedback_tag,
            "webhook_secret" => &args.webhook_secret,
            "outbound_allow" => &args.outbound_allow,
            "dkim_selector" => &args.dkim_selector,
            "dkim_domain" => &args.dkim_domain,
            "dkim_key" => &args.dkim_key,
            "allow_unsafe" => &args.allow_unsafe,
            "log_format" => &args.log_format,
            "smtp_helo" => &args.smtp_helo,
            "bounce_address" => &args.bounce_address,
            other => anyhow::bail!("setting {other} has no flag (bug)"),
        };
        if let Some(v) = value {
            let source = match value_source(matches, spec.name) {
                Some(ValueSource::EnvVariable) => Source::Env,
                _ => Source::Flag,
            };
            layer.insert(spec.name, (v.clone(), source));
        }
    }
    Ok(Settings::load(layer, args.config.as_deref())?)
}

/// Where clap found a global argument, looking into the subcommand too.
fn value_source(matches: &ArgMatches, id: &str) -> Option<ValueSource> {
    matches.value_source(id).or_else(|| {
        matches
            .subcommand()
            .and_then(|(_, sub)| value_source(sub, id))
    })
}

fn print_config(settings: &Settings) {
    let rows = settings.describe();
    let width = rows.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
    for (name, value, source) in rows {
        println!("{name:<width$}  {value}  ({source})");
    }
}

/// Opens the database and applies migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(&settings.database_url)
        .await
        .with_context(|| "the database could not be prepared".to_string())
}

/// A watch that turns true on Ctrl-C or SIGTERM: senders finish what is in
/// flight and give back what they had not started.
fn stop_on_signal(what: &'static str) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        tracing::warn!("{what}");
        let _ = tx.send(true);
    });
    rx
}

/// The send engine on the system clock, for every campaign given.
async fn engine(
    store: Store,
    settings: &Settings,
    templates: &Path,
    campaigns: &[Campaign],
) -> anyhow::Result<Engine> {
    Ok(Engine::new(
        store,
        settings.clone(),
        templates,
        campaigns,
        Arc::new(SystemClock),
    )
    .await?)
}

/// Refuses settings that would send broken mail over SMTP, before any work;
/// logs what only costs deliverability.
fn check_sending(settings: &Settings, campaigns: &[Campaign]) -> anyhow::Result<()> {
    let domains = campaigns.iter().map(|c| c.from.email.domain());
    for warning in settings.check_for_sending(domains)? {
        tracing::warn!("{warning}");
    }
    Ok(())
}

/// The journey keys `c` uses that this version validates but does not run
/// (`trigger:` and `kind: transactional` run).
fn not_run_yet(c: &Campaign) -> Vec<&'static str> {
    let mut keys = c.journey_keys();
    keys.retain(|k| !matches!(*k, "trigger" | "kind: transactional"));
    keys
}

/// The campaigns of `dir` that can be read, for a command that stores data and
/// only looks at campaigns on the side (`serve`, `import`): a missing
/// directory or a file with problems is a warning (`without` says what is
/// then not done), never a reason to refuse the data.
fn readable_campaigns(dir: &Path, without: &str) -> Vec<Campaign> {
    if !dir.is_dir() {
        tracing::warn!(
            "no campaign directory {}: {without} (--campaigns DIR)",
            dir.display()
        );
        return Vec::new();
    }
    let catalog = campaign::load(&[dir.to_path_buf()], &Checks::default());
    for p in &catalog.problems {
        tracing::warn!("{p}");
    }
    catalog.campaigns.into_iter().map(|(_, c)| c).collect()
}

/// The campaigns of `campaigns` that this version runs, leaving out (with a
/// warning) those using journey keys it does not run yet: the worker refuses
/// them, so entering customers into them (a trigger, a transactional send)
/// would leave the messages waiting.
fn runnable(campaigns: &[Campaign]) -> Vec<Campaign> {
    campaigns
        .iter()
        .filter(|c| {
            let keys = not_run_yet(c);
            if !keys.is_empty() {
                tracing::warn!(
                    campaign = %c.name,
                    keys = %keys.join(", "),
                    "neither triggered nor sent on request: this version does not run these keys yet"
                );
            }
            keys.is_empty()
        })
        .cloned()
        .collect()
}

/// Refuses campaigns that use real-time journey keys this version does not
/// run yet. Files may already describe them (`herald validate` checks them),
/// but running such a campaign as a straight sequence would send what its
/// author did not mean: every step after a branch, a `wait_for:` step without
/// waiting for anything. Refused before anything is opened.
fn refuse_journeys(campaigns: &[Campaign]) -> anyhow::Result<()> {
    let mut refused = Vec::new();
    for c in campaigns {
        let keys = not_run_yet(c);
        if !keys.is_empty() {
            eprintln!(
                "campaign \"{}\" uses {}: this version of herald validates real-time journeys but does not run them yet",
                c.name,
                keys.join(", ")
            );
            refused.push(c.name.as_str());
        }
    }
    if !refused.is_empty() {
        anyhow::bail!(
            "not running {}: move the file out of the campaigns directory to run the others",
            refused.join(", ")
        );
    }
    Ok(())
}

/// Every campaign in `dir`, checked against `templates`; any problem prints
/// and fails the command (the worker, demo and advance need all of them valid).
fn load_campaigns(dir: &Path, templates: &Path) -> anyhow::Result<Vec<Campaign>> {
    let catalog = campaign::load(
        &[dir.to_path_buf()],
        &Checks {
            templates: Some(templates),
        },
    );
    if !catalog.problems.is_empty() {
        for p in &catalog.problems {
            eprintln!("{p}");
        }
        anyhow::bail!("the campaign files have problems; `herald validate` lists them");
    }
    let campaigns: Vec<Campaign> = catalog.campaigns.into_iter().map(|(_, c)| c).collect();
    refuse_journeys(&campaigns)?;
    Ok(campaigns)
}

/// Where campaign files are, and what counts as a conversion.
#[derive(Args, Debug)]
struct SourceArgs {
    /// Directory of campaign files (for step order, description and goal)
    #[arg(long, default_value = "campaigns", value_name = "DIR")]
    campaigns: PathBuf,
    /// Interaction kind that counts as a conversion, e.g. purchase (default:
    /// the event of the campaign's goal)
    #[arg(long, value_name = "KIND")]
    conversion_event: Option<String>,
    /// How long after an email a conversion still counts, e.g. 7d or 48h
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    conversion_window: String,
}

impl SourceArgs {
    fn window(&self) -> anyhow::Result<Span> {
        self.conversion_window.parse::<Span>().with_context(|| {
            format!(
                "--conversion-window {:?}: expected a duration such as 7d, 48h or 30m",
                self.conversion_window
            )
        })
    }
}

/// A campaign's figures, with its file when there is one.
async fn load_stats(
    store: &Store,
    name: &str,
    source: &SourceArgs,
) -> anyhow::Result<CampaignStats> {
    let window = source.window()?;
    let file = match campaign::find(name, &source.campaigns) {
        Ok(c) => Some(c),
        Err(problems) => {
            let sent = store.campaigns_with_deliveries().await?;
            if !sent.iter().any(|s| s == name) {
                let files =
                    campaign::load(std::slice::from_ref(&source.campaigns), &Default::default());
                let names = files.campaigns.iter().map(|(_, c)| c.name.as_str());
                let hint = campaign::closest(name, names.chain(sent.iter().map(String::as_str)))
                    .map(|c| format!("; did you mean \"{c}\"?"))
                    .unwrap_or_default();
                anyhow::bail!(
                    "no campaign \"{name}\": no file in {} and nothing sent{hint}",
                    source.campaigns.display()
                );
            }
            // Sent but its file is gone or broken: the figures still count.
            let first = problems
                .0
                .first()
                .map(|p| p.to_string())
                .unwrap_or_default();
            eprintln!(
                "warning: {name}: campaign file not used ({first}); steps in the order planned, no goal"
            );
            None
        }
    };
    let conversion =
        ConversionRule::choose(file.as_ref(), source.conversion_event.as_deref(), window);
    let opts = StatsOptions {
        campaign: file.as_ref(),
        conversion,
        now: herald::clock::now_millis(),
    };
    Ok(campaign_stats(store, name, &opts).await?)
}
