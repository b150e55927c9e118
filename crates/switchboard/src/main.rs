//! `switchboard`: the WebSocket server, client and load generator in one binary.

/// mimalloc: size-classed small allocations without per-object headers and less
/// fragmentation from the short-lived handshake allocations, which lowers memory per idle
/// connection (measured in benchmarks/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{CommandFactory, Parser, Subcommand};

mod bench;
mod connect;
mod duration;
mod proxy_options;
mod serve;
mod token;

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
    /// Make a token for /ws and /chat signed with the server's HMAC secret (HS256): a
    /// connection token, or with --channel a subscription token. Prints it.
    Token(token::TokenArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(msg) = from_environment(&e) {
                eprintln!("error: {msg}");
                std::process::exit(2);
            }
            e.exit()
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve::serve(*args).map(|()| 0),
        Command::Connect(args) => connect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Token(args) => token::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One line, the causes after colons; no backtrace.
            eprintln!("error: {e:#}");
            let usage = e.downcast_ref::<serve::UsageError>().is_some();
            std::process::exit(if usage { 2 } else { 1 });
        }
    }
}

/// A value clap refused that came from a `SWITCHBOARD_*` variable rather than the command
/// line: the message names the variable (clap's own names only the flag).
fn from_environment(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let ContextValue::String(arg) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let ContextValue::String(value) = e.get(ContextKind::InvalidValue)? else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let cmd = Cli::command();
    let var = cmd
        .get_subcommands()
        .flat_map(|s| s.get_arguments())
        .find(|a| a.get_long() == Some(long))?
        .get_env()?
        .to_str()?
        .to_string();
    let set = std::env::var(&var).ok()?;
    let flag = format!("--{long}");
    let on_command_line = std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if on_command_line || !set.split(',').any(|v| v == value.as_str()) {
        return None;
    }
    let why = match (std::error::Error::source(e), e.get(ContextKind::ValidValue)) {
        (Some(s), _) => format!(": {s}"),
        (None, Some(ContextValue::Strings(valid))) => {
            format!(": expected one of {}", valid.join(", "))
        }
        _ => String::new(),
    };
    Some(format!(
        "invalid value {value:?} in the environment variable {var} (what --{long} takes){why}"
    ))
}

/// A TLS client configuration that accepts any certificate (`--insecure`).
pub(crate) fn insecure_tls() -> std::sync::Arc<rustls::ClientConfig> {
    switchboard_tokio::tls::insecure_client_config().unwrap_or_else(|e| {
        eprintln!("switchboard: cannot build a TLS configuration: {e}");
        std::process::exit(1)
    })
}
