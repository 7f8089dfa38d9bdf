//! `herald validate` and `herald schema`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use herald::campaign::{self, Checks};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Campaign files or directories (default: campaigns/)
    paths: Vec<PathBuf>,
    /// Where step templates live: each step needs DIR/TEMPLATE.html.hbs
    #[arg(long, default_value = "templates", value_name = "DIR")]
    templates: PathBuf,
}

/// Prints every problem of every file; exit 1 when there is any.
pub fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("campaigns")]
    } else {
        args.paths
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
    if catalog.problems.is_empty() {
        if catalog.campaigns.is_empty() {
            println!("no campaign files found in {}", show(&paths));
            return Ok(ExitCode::FAILURE);
        }
        println!("{} campaigns OK", catalog.campaigns.len());
        Ok(ExitCode::SUCCESS)
    } else {
        let n = catalog.problems.len();
        eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
        Ok(ExitCode::FAILURE)
    }
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
