//! `switchboard`: the WebSocket server, client and load generator in one binary.

use anyhow::Context;

/// mimalloc: size-classed small allocations without per-object headers and less
/// fragmentation from the short-lived handshake allocations, which lowers memory per idle
/// connection (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

mod bench;
mod connect;
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
    /// Connect to a WebSocket server: type messages, see what arrives; --trace draws the
    /// session (handshake, frames, closing) as a sequence diagram.
    Connect(connect::ConnectArgs),
    /// Load generator: echo, broadcast and connect scenarios with latency histograms.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::serve(*args).context("switchboard serve"),
        Command::Connect(args) => std::process::exit(connect::run(args)?),
        Command::Bench(args) => std::process::exit(bench::run(args)?),
    }
}

/// A TLS client configuration that accepts any certificate (`--insecure`).
pub(crate) fn insecure_tls() -> std::sync::Arc<rustls::ClientConfig> {
    switchboard_tokio::tls::insecure_client_config().unwrap_or_else(|e| {
        eprintln!("switchboard: cannot build a TLS configuration: {e}");
        std::process::exit(1)
    })
}
