//! `herald backup FILE [--force]`: a consistent copy of the SQLite database,
//! safe while a worker runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use herald::config::{Settings, redact};
use herald::store::backup::BackupError;
use herald::store::{Backend, Store};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The copy to write (an SQLite database file)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Replace FILE if it exists
    #[arg(long)]
    force: bool,
}

pub async fn run(args: BackupArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let url = &settings.database_url;
    if Backend::of_url(url) == Backend::Postgres {
        anyhow::bail!(
            "herald backup copies SQLite databases; this one is PostgreSQL. Back it up with pg_dump \
             (apalis's job tables are in the same database):\n  \
             pg_dump --format=custom --file={} '{}'\n\
             and restore into an empty database with pg_restore --no-owner --dbname=URL {} \
             (README: Backup and restore)",
            args.file.display(),
            redact(url),
            args.file.display()
        );
    }
    // No migration: a backup taken before an upgrade is of the schema as it was.
    let store = Store::connect_existing(url)
        .await
        .context("the database could not be opened")?;
    let result = store.backup(&args.file, args.force).await;
    store.close().await;
    let backup = match result {
        Err(BackupError::Exists(path)) => anyhow::bail!(
            "{} already exists; pass --force to replace it",
            path.display()
        ),
        other => other?,
    };
    println!(
        "wrote {} ({}, {} bytes): a consistent copy of {}",
        backup.path.display(),
        size(backup.bytes),
        backup.bytes,
        backup.source.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Bytes in the largest binary unit that keeps a figure of at least 1.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_naturally() {
        assert_eq!(super::size(512), "512 B");
        assert_eq!(super::size(2048), "2.0 KiB");
        assert_eq!(super::size(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
    }
}
