//! `herald api-key create|list|revoke`: keys of the `/v1` HTTP API.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use herald::api_key::{KeyName, Scope};
use herald::clock::{Clock as _, SystemClock, format_rfc3339};
use herald::config::Settings;
use herald::store::Store;
use herald::store::api_keys::{ApiKey, Created};

use super::open_store;

#[derive(Subcommand, Debug)]
pub enum ApiKeyCommand {
    /// Create a key and print it once (only its hash is kept)
    Create {
        /// What the key is for, e.g. shop-web (letters, digits, . - _)
        name: String,
        /// ingest: send events and profiles (a Segment write key); read: read
        /// customers; admin: everything, including keys
        #[arg(long, value_enum)]
        scope: ScopeArg,
    },
    /// List keys, revoked ones too (never their secrets)
    List,
    /// Revoke the active key NAME: it is refused from the next request on
    Revoke { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    Ingest,
    Read,
    Admin,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Ingest => Scope::Ingest,
            ScopeArg::Read => Scope::Read,
            ScopeArg::Admin => Scope::Admin,
        }
    }
}

pub async fn run(cmd: ApiKeyCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    // A bad name is refused before the database is opened.
    let create = match &cmd {
        ApiKeyCommand::Create { name, scope } => Some((KeyName::parse(name)?, Scope::from(*scope))),
        _ => None,
    };
    let store = open_store(settings).await?;
    let result = match (cmd, create) {
        (_, Some((name, scope))) => create_key(&store, &name, scope).await,
        (ApiKeyCommand::Revoke { name }, _) => revoke_key(&store, &name).await,
        _ => store
            .api_keys()
            .await
            .context("the keys could not be listed")
            .map(|keys| print_keys(&keys)),
    };
    store.close().await;
    result.map(|()| ExitCode::SUCCESS)
}

async fn create_key(store: &Store, name: &KeyName, scope: Scope) -> anyhow::Result<()> {
    let created = store
        .create_api_key(name, scope, SystemClock.now())
        .await
        .context("the key could not be created")?;
    match created {
        Created::New(key, plain) => {
            // The key alone on stdout, for `KEY=$(herald api-key create …)`.
            println!("{}", plain.expose());
            eprintln!(
                "created API key {} (scope {}). Store it now: it cannot be shown again (Herald keeps only its hash).",
                key.name, key.scope
            );
            Ok(())
        }
        Created::NameTaken => {
            anyhow::bail!("an API key named {name} exists; revoke it first or choose another name")
        }
    }
}

async fn revoke_key(store: &Store, name: &str) -> anyhow::Result<()> {
    let revoked = store
        .revoke_api_key(name, SystemClock.now())
        .await
        .context("the key could not be revoked")?;
    let key = revoked.with_context(|| format!("no active API key named {name:?}"))?;
    println!("revoked API key {} (hk_{}_…)", key.name, key.prefix);
    Ok(())
}

fn print_keys(keys: &[ApiKey]) {
    if keys.is_empty() {
        println!(
            "no API keys; create one with herald api-key create NAME --scope ingest|read|admin"
        );
        return;
    }
    let width = keys.iter().map(|k| k.name.len()).max().unwrap_or(0).max(4);
    println!(
        "{:<width$}  {:<6}  {:<19}  {:<24}  {:<24}  revoked",
        "name", "scope", "key", "created", "last used"
    );
    let time = |t: Option<i64>| t.map(format_rfc3339).unwrap_or_else(|| "-".into());
    for k in keys {
        println!(
            "{:<width$}  {:<6}  hk_{}_…  {:<24}  {:<24}  {}",
            k.name,
            k.scope.as_str(),
            k.prefix,
            format_rfc3339(k.created_at),
            time(k.last_used_at),
            time(k.revoked_at),
        );
    }
}
