//! The `webb-agent` binary: parses options, sets up logging, runs the agent.

use std::process::ExitCode;

use clap::Parser as _;
use webb_agent::args::Args;

/// Each flow is a few dozen small allocations (strings, label lists);
/// mimalloc makes them markedly cheaper than glibc's malloc on the ingest
/// path (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEBB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Start-up (BTF parsing above all) frees tens of MiB that mimalloc would
    // otherwise keep; give them back once.
    // SAFETY: mi_collect has no preconditions.
    let collect = || unsafe { libmimalloc_sys::mi_collect(true) };
    match webb_agent::run(args, collect).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webb-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
