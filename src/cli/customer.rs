//! `herald customer show|export|erase CUSTOMER`: one customer seen whole, their
//! data as one JSON document, and erasure.

use std::io::{IsTerminal as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr as _;

use anyhow::Context as _;
use clap::Subcommand;
use herald::clock::{Millis, now_millis};
use herald::config::Settings;
use herald::customer::CustomerRef;
use herald::profile::{self, CustomerView, Section, ViewSize};
use serde_json::{Map, Value};

use super::{open_store, to_stdout};

#[derive(Subcommand, Debug)]
pub enum CustomerCommand {
    /// One screen on a customer: who, attributes, recent purchases, tickets
    /// and other interactions, messages sent, opened and clicked, unsubscribes
    Show {
        /// The customer's id or email address
        #[arg(value_parser = parse_ref, value_name = "EMAIL|ID")]
        customer: CustomerRef,
        /// Interactions shown of each kind
        #[arg(long, default_value_t = 5, value_name = "N")]
        per_kind: i64,
        /// Messages shown
        #[arg(long, default_value_t = 10, value_name = "N")]
        messages: i64,
        /// Times in UTC (default: the customer's time zone when known)
        #[arg(long)]
        utc: bool,
    },
    /// Everything Herald holds on the customer as one JSON document (GDPR
    /// access and portability)
    Export {
        /// The customer's id or email address
        #[arg(value_parser = parse_ref, value_name = "EMAIL|ID")]
        customer: CustomerRef,
        /// Write to FILE instead of standard output
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Erase the customer, their interactions and messages in one transaction
    /// (GDPR erasure); only a one-way hash of the address stays on the
    /// suppression list, so no later import mails them again
    Erase {
        /// The customer's id or email address
        #[arg(value_parser = parse_ref, value_name = "EMAIL|ID")]
        customer: CustomerRef,
        /// Remove the address's hash from the suppression list too: a later
        /// import of the address may be mailed
        #[arg(long)]
        forget_suppression: bool,
        /// Do not ask (required when standard input is not a terminal)
        #[arg(long, short)]
        yes: bool,
    },
}

fn parse_ref(text: &str) -> Result<CustomerRef, String> {
    CustomerRef::from_str(text).map_err(|e| e.to_string())
}

pub async fn run(cmd: CustomerCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match cmd {
        CustomerCommand::Show {
            customer,
            per_kind,
            messages,
            utc,
        } => {
            let store = open_store(settings).await?;
            let size = ViewSize { per_kind, messages };
            let view = profile::view(&store, &customer, size, now_millis()).await;
            store.close().await;
            let view = view?;
            to_stdout(|out| print_view(out, &view, utc))?;
            Ok(ExitCode::SUCCESS)
        }
        CustomerCommand::Export { customer, output } => {
            let store = open_store(settings).await?;
            let export = profile::export(&store, &customer, now_millis()).await;
            store.close().await;
            let mut text = serde_json::to_string_pretty(&export?)?;
            text.push('\n');
            match output {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => to_stdout(|out| out.write_all(text.as_bytes()))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        CustomerCommand::Erase {
            customer,
            forget_suppression,
            yes,
        } => {
            if !yes {
                if !std::io::stdin().is_terminal() {
                    eprintln!(
                        "error: erasing cannot be undone: pass --yes when standard input is not a terminal"
                    );
                    return Ok(ExitCode::from(2));
                }
                eprint!(
                    "Erase everything Herald holds on {customer}? This cannot be undone. [y/N] "
                );
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
                    eprintln!("nothing erased");
                    return Ok(ExitCode::FAILURE);
                }
            }
            let store = open_store(settings).await?;
            let erased = profile::erase(&store, &customer, forget_suppression, now_millis()).await;
            store.close().await;
            let e = erased?;
            let who = e
                .email
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_else(|| customer.to_string());
            match e.customer_id {
                Some(id) => println!(
                    "erased {who} (customer {id}): {} interactions, {} messages, {} campaign entries, {} suppression entries",
                    e.interactions, e.deliveries, e.entries, e.suppressions
                ),
                None => println!(
                    "no customer {who}; removed {} suppression entries",
                    e.suppressions
                ),
            }
            if e.mark_kept {
                println!(
                    "kept: a one-way hash of the address on the suppression list, so a later import is never mailed (--forget-suppression removes it)"
                );
            } else {
                println!("nothing kept: a later import of the address may be mailed");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Times in one zone, said once in the header.
struct Times(Option<chrono_tz::Tz>);

impl Times {
    fn show(&self, t: Millis) -> String {
        let Some(utc) = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t) else {
            return t.to_string();
        };
        match self.0 {
            Some(tz) => utc.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string(),
            None => utc.format("%Y-%m-%d %H:%M").to_string(),
        }
    }
}

fn print_view(out: &mut impl Write, v: &CustomerView, utc: bool) -> std::io::Result<()> {
    let c = &v.customer;
    let zone = c
        .timezone
        .as_deref()
        .filter(|_| !utc)
        .and_then(|z| z.parse::<chrono_tz::Tz>().ok());
    let times = Times(zone);
    let name = [c.first_name.as_deref(), c.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() {
        writeln!(out, "{}", c.email)?;
    } else {
        writeln!(out, "{name} <{}>", c.email)?;
    }
    let mut ids = format!("customer {}", c.id);
    if let Some(x) = &c.external_id {
        ids.push_str(&format!(" · external id {x}"));
    }
    writeln!(
        out,
        "  {ids} · since {} · updated {}",
        times.show(c.created_at),
        times.show(c.updated_at)
    )?;
    let suppression = if v.suppressions.is_empty() {
        "not suppressed".to_string()
    } else {
        let why: Vec<String> = v
            .suppressions
            .iter()
            .map(|s| {
                let what = if s.hashed {
                    "hash of the address"
                } else {
                    "address"
                };
                format!("{what}: {} since {}", s.reason, times.show(s.created_at))
            })
            .collect();
        format!("SUPPRESSED ({})", why.join(", "))
    };
    writeln!(out, "  status     {} · {suppression}", c.status)?;
    match zone {
        Some(z) => writeln!(out, "  time zone  {z} (times shown in it)")?,
        None => writeln!(
            out,
            "  time zone  {} (times shown in UTC)",
            c.timezone.as_deref().unwrap_or("unknown")
        )?,
    }

    writeln!(out)?;
    writeln!(out, "Attributes")?;
    if c.attributes.is_empty() {
        writeln!(out, "  none")?;
    }
    let width = c.attributes.keys().map(|k| k.len()).max().unwrap_or(0);
    for (k, val) in &c.attributes {
        writeln!(out, "  {k:<width$}  {}", clip(&value_text(val), 90))?;
    }

    for (title, section) in [
        ("Recent purchases", Section::Purchases),
        ("Support tickets", Section::Tickets),
        ("Other interactions", Section::Other),
    ] {
        writeln!(out)?;
        writeln!(out, "{title}")?;
        let rows: Vec<_> = v.section(section).collect();
        if rows.is_empty() {
            writeln!(out, "  none")?;
        }
        let width = rows.iter().map(|i| i.kind.len()).max().unwrap_or(0);
        for i in rows {
            let kind = if section == Section::Other {
                format!("{:<width$}  ", i.kind)
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {}  {kind}{}",
                times.show(i.occurred_at),
                clip(&data_text(&i.data), 80)
            )?;
        }
    }

    writeln!(out)?;
    writeln!(out, "Messages (latest {})", v.messages.len())?;
    if v.messages.is_empty() {
        writeln!(out, "  none")?;
    }
    let width = v
        .messages
        .iter()
        .map(|m| m.campaign.len() + m.step.len() + 1)
        .max()
        .unwrap_or(0);
    for m in &v.messages {
        let at = times.show(m.sent_at.unwrap_or(m.created_at));
        let mut status = m.status.to_string();
        if let Some(r) = &m.reason {
            status.push_str(&format!(" ({r})"));
        }
        let opened = match m.first_opened_at {
            Some(t) => format!("opened {}× first {}", m.opens, times.show(t)),
            None => "not opened".to_string(),
        };
        let clicked = match m.first_clicked_at {
            Some(t) => format!("clicked {}× first {}", m.clicks, times.show(t)),
            None => "no clicks".to_string(),
        };
        writeln!(
            out,
            "  {at}  {:<width$}  {status:<9}  {opened} · {clicked}",
            format!("{}/{}", m.campaign, m.step)
        )?;
    }

    writeln!(out)?;
    writeln!(out, "Unsubscribes and complaints")?;
    let gone: Vec<_> = v
        .latest
        .iter()
        .filter(|i| Section::of(&i.kind) == Section::Unsubscribes || i.kind == "email_complained")
        .collect();
    if gone.is_empty() {
        writeln!(out, "  none")?;
    }
    for i in gone {
        let from = match (&i.campaign, &i.step) {
            (Some(c), Some(s)) => format!(" from {c}/{s}"),
            _ => String::new(),
        };
        writeln!(out, "  {}  {}{from}", times.show(i.occurred_at), i.kind)?;
    }
    Ok(())
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn data_text(data: &Map<String, Value>) -> String {
    data.iter()
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}
