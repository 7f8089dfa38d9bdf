//! The `herald` command: hand over to the CLI, which parses arguments, starts
//! logging and calls the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

/// mimalloc instead of the system allocator: rendering and building a message
/// allocates many small strings, and glibc's malloc/free was ~17 % of the
/// sender's CPU in the send profile (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
