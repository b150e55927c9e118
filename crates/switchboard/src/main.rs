//! `switchboard`: the WebSocket server, client and load generator in one binary.

use anyhow::Context;

/// mimalloc: size-classed small allocations without per-object headers and less
/// fragmentation from the short-lived handshake allocations, which lowers memory per idle
/// connection (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

mod serve;

/// Switchboard: a WebSocket server, client and load generator.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the real-time server: chat page at /, chat rooms at /chat, pub/sub at /ws,
    /// POST /api/publish, echo at /echo, /healthz and /metrics.
    Serve(Box<serve::ServeArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::serve(*args).context("switchboard serve"),
    }
}
