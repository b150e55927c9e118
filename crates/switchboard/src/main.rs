//! `switchboard`: the WebSocket server, client and load generator in one binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

/// mimalloc: size-classed small allocations without per-object headers and less
/// fragmentation from the short-lived handshake allocations, which lowers memory per idle
/// connection (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

/// Switchboard: a WebSocket server, client and load generator.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: WebSocket echo at /echo (unknown paths get 404).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SWITCHBOARD_LISTEN")]
    listen: SocketAddr,
    /// Largest message accepted, in bytes (larger ones are closed with 1009).
    #[arg(long, default_value_t = 16 << 20, env = "SWITCHBOARD_MAX_MESSAGE_SIZE")]
    max_message_size: usize,
    /// Serve wss:// with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key", env = "SWITCHBOARD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert", env = "SWITCHBOARD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// permessage-deflate: negotiate compression with clients that offer it.
    #[arg(long, default_value = "on", value_parser = ["on", "off"], env = "SWITCHBOARD_DEFLATE")]
    deflate: String,
    /// Keep compression context across messages (better ratio; costs ~300 KiB of zlib state
    /// per connection that sends compressed messages). Off: each message is compressed on its
    /// own with per-thread shared zlib streams, so idle connections hold no zlib memory.
    #[arg(long, env = "SWITCHBOARD_DEFLATE_CONTEXT_TAKEOVER")]
    deflate_context_takeover: bool,
    /// Largest LZ77 window for compression, 8-15 (2^N bytes; smaller saves memory).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u8).range(8..=15), env = "SWITCHBOARD_DEFLATE_WINDOW_BITS")]
    deflate_window_bits: u8,
    /// Messages smaller than this many bytes are sent uncompressed. Default: 256 without
    /// context takeover (smaller JSON messages do not shrink on their own), 32 with it
    /// (docs/deflate.md has the measurements).
    #[arg(long, env = "SWITCHBOARD_DEFLATE_THRESHOLD")]
    deflate_threshold: Option<usize>,
    /// Worker threads (default: one per CPU core).
    #[arg(long, env = "SWITCHBOARD_WORKERS")]
    workers: Option<usize>,
    /// Log as JSON lines instead of text (filter with RUST_LOG, default "info").
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    let ws = switchboard_proto::Config::default()
        .max_message_size(args.max_message_size)
        .max_frame_size(args.max_message_size)
        .max_write_buffer(args.max_message_size.saturating_mul(2).max(1 << 20))
        .deflate((args.deflate == "on").then(|| {
            let no_context = !args.deflate_context_takeover;
            switchboard_proto::extension::DeflateConfig::default()
                .server_no_context_takeover(no_context)
                .client_no_context_takeover(no_context)
                .server_max_window_bits(args.deflate_window_bits)
                .client_max_window_bits(args.deflate_window_bits)
                .threshold(
                    args.deflate_threshold
                        .unwrap_or(if no_context { 256 } else { 32 }),
                )
        }));
    let mut config = switchboard_server::ServerConfig::default().ws(ws);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let acceptor = switchboard_tokio::tls::acceptor_from_pem(cert, key)
            .context("loading --tls-cert/--tls-key")?;
        config = config.tls(acceptor);
    }
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {} (is another server using that port? choose another with --listen)", args.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!("listening on {addr}: echo at {scheme}://{addr}/echo");
        switchboard_server::run(listener, config, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
