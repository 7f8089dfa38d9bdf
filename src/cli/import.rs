//! `herald import customers|interactions FILE`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use herald::config::Settings;
use herald::import::{self, CustomerRows, Format, InteractionRows, Summary};

use super::progress::{FileObserver, Progress};
use super::{EXIT_ROWS_REJECTED, open_store};

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Upsert customers by email from CSV (header row) or JSON Lines
    Customers {
        file: PathBuf,
        /// File format; by default from the extension (.csv, .jsonl, .ndjson)
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
    },
    /// Add interactions from JSON Lines: email or external_id, kind, occurred_at, data, id
    ///
    /// New interactions that occurred within the last 72 hours enter their
    /// customers into the campaigns with a matching `trigger:`.
    Interactions {
        file: PathBuf,
        /// Directory of campaign files, for their triggers
        #[arg(long, default_value = "campaigns", value_name = "DIR")]
        campaigns: PathBuf,
        /// Store the interactions without entering anyone into a triggered
        /// campaign (a backfill)
        #[arg(long)]
        no_trigger: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    Csv,
    Jsonl,
}

pub async fn run(cmd: ImportCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = open_store(settings).await?;
    let (path, summary, elapsed) = match cmd {
        ImportCommand::Customers { file, format } => {
            let format = match format {
                Some(FormatArg::Csv) => Format::Csv,
                Some(FormatArg::Jsonl) => Format::JsonLines,
                None => Format::from_path(&file).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: cannot tell the format from the extension; use --format csv or --format jsonl",
                        file.display()
                    )
                })?,
            };
            let rows = CustomerRows::open(&file, format)?;
            let mut observer = observer("importing customers", &file);
            let summary = import::import_customers(&store, rows, &mut observer).await?;
            observer.progress.finish();
            (file, summary, observer.progress.elapsed())
        }
        ImportCommand::Interactions {
            file,
            campaigns,
            no_trigger,
        } => {
            let rows = InteractionRows::open(&file)?;
            let rules = if no_trigger {
                Vec::new()
            } else {
                herald::pipeline::trigger_rules(&super::runnable(&super::readable_campaigns(
                    &campaigns,
                    "no campaign is triggered",
                )))
            };
            let mut observer = observer("importing interactions", &file);
            let summary = import::import_interactions(&store, rows, &rules, &mut observer).await?;
            observer.progress.finish();
            (file, summary, observer.progress.elapsed())
        }
    };
    store.close().await;
    print_summary(&path, &summary, elapsed.as_secs_f64());
    Ok(if summary.rejected > 0 {
        ExitCode::from(EXIT_ROWS_REJECTED)
    } else {
        ExitCode::SUCCESS
    })
}

fn observer(label: &str, file: &Path) -> FileObserver {
    FileObserver {
        progress: Progress::for_file(label, file),
        path: file.display().to_string(),
    }
}

fn print_summary(path: &Path, s: &Summary, seconds: f64) {
    println!(
        "{}: {} rows read in {seconds:.1} s: {} new, {} updated, {} unchanged, {} rejected",
        path.display(),
        s.rows,
        s.inserted,
        s.updated,
        s.unchanged,
        s.rejected
    );
    if s.entered > 0 {
        println!(
            "{}: {} entered into triggered campaigns",
            path.display(),
            s.entered
        );
    }
}
