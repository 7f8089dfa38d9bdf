//! The `herald` command: hand over to the CLI, which parses arguments, starts
//! logging and calls the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
