//! `switchboard serve`: flags, environment and config file, merged into a
//! [`switchboard_server::ServerConfig`].
//!
//! Precedence, highest first: command-line flags, `SWITCHBOARD_*` environment variables,
//! the TOML file given with `--config`, the built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::duration::FileDuration;
use switchboard_proto::extension::DeflateConfig;
use switchboard_server::{
    ServerConfig, SlowConsumerPolicy, DEFLATE_THRESHOLD, DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER,
};

/// Options of `switchboard serve`. Every option can also be set with the environment
/// variable shown, or in the TOML file given with --config under the same name with
/// underscores (`max_connections = 5000`). Flags win over the environment, the environment
/// over the file, the file over the defaults, which are the library's
/// (`ServerConfig::default()`; `--help` shows them).
#[derive(Debug, clap::Args)]
#[command(after_long_help = CONFIG_HELP, mut_args(with_library_default))]
pub(crate) struct ServeArgs {
    /// TOML config file (see --help for its keys).
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on: host:port, localhost:8080, :8080 (the default host,
    /// 127.0.0.1), 0.0.0.0:8080 (every interface) [default: 127.0.0.1:8080].
    #[arg(long, env = "SWITCHBOARD_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Worker threads, at least 1 [default: one per CPU core].
    #[arg(long, env = "SWITCHBOARD_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,

    /// Largest message on /chat and /ws, in bytes; larger ones are closed with 1009.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// Largest message on /echo, in bytes (the Autobahn 9.x cases need 16 MiB).
    #[arg(long, env = "SWITCHBOARD_ECHO_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    echo_max_message_size: Option<usize>,
    /// Open connections at most; past it handshakes get 503.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Open connections per client IP; past it, 503.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    max_connections_per_ip: Option<u32>,
    /// Topics one /ws connection may subscribe to.
    #[arg(long, env = "SWITCHBOARD_MAX_SUBSCRIPTIONS", value_name = "N")]
    max_subscriptions: Option<usize>,
    /// Largest chat message, in characters.
    #[arg(long, env = "SWITCHBOARD_MAX_CHAT_TEXT", value_name = "CHARS")]
    max_chat_text: Option<usize>,

    /// Ping a connection after this long without hearing from it (30s, 500ms; a bare number
    /// is seconds); 0: never.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL", value_name = "DURATION", value_parser = crate::duration::parse)]
    ping_interval: Option<Duration>,
    /// Close (1011 "ping timeout") a connection whose pong has not come after this long.
    #[arg(long, env = "SWITCHBOARD_PONG_TIMEOUT", value_name = "DURATION", value_parser = crate::duration::parse)]
    pong_timeout: Option<Duration>,
    /// Close (1001 "idle timeout") a connection after this long without a message either
    /// way; 0: never.
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", value_name = "DURATION", value_parser = crate::duration::parse)]
    idle_timeout: Option<Duration>,
    /// On SIGINT/SIGTERM, wait this long for close handshakes.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = crate::duration::parse)]
    shutdown_timeout: Option<Duration>,

    /// Also allow WebSockets from this browser origin (repeatable; `*` allows any). The
    /// server's own origin and http(s)://localhost:*, 127.0.0.1:*, [::1]:* are allowed
    /// by default; requests without Origin (non-browser clients) always are.
    /// The same name everywhere: `SWITCHBOARD_ALLOW_ORIGIN` (comma-separated) and
    /// `allow_origin = [...]` in the file.
    #[arg(
        long = "allow-origin",
        env = "SWITCHBOARD_ALLOW_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    allow_origin: Vec<String>,

    /// Bytes queued for one subscriber before the slow-consumer policy applies.
    #[arg(long, env = "SWITCHBOARD_OUTBOX_MAX_BYTES", value_name = "BYTES")]
    outbox_max_bytes: Option<usize>,
    /// The kernel's send buffer per connection, in bytes (SO_SNDBUF; 0 leaves it to the
    /// kernel, which grows it up to 4 MiB for a peer that does not read).
    #[arg(long, env = "SWITCHBOARD_SOCKET_SEND_BUFFER", value_name = "BYTES")]
    socket_send_buffer: Option<usize>,
    /// Messages queued for one subscriber before the slow-consumer policy applies.
    #[arg(long, env = "SWITCHBOARD_OUTBOX_MAX_MESSAGES", value_name = "N")]
    outbox_max_messages: Option<usize>,
    /// What happens to a subscriber past its outbox bound: `disconnect` (close with 1008)
    /// or `drop-oldest` (drop its oldest queued messages and count them).
    #[arg(long, env = "SWITCHBOARD_SLOW_CONSUMER", value_parser = ["disconnect", "drop-oldest"], value_name = "POLICY")]
    slow_consumer: Option<String>,
    /// Chat messages each room keeps for newcomers.
    #[arg(long, env = "SWITCHBOARD_HISTORY", value_name = "N")]
    history: Option<usize>,

    /// The key POST /api/publish requires (`Authorization: Bearer KEY`). Without one the API
    /// answers 403. Prefer the environment variable or the file over the flag (flags show
    /// in `ps`).
    #[arg(
        long,
        env = "SWITCHBOARD_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,

    /// permessage-deflate: negotiate compression with clients that offer it.
    #[arg(long, value_parser = ["on", "off"], env = "SWITCHBOARD_DEFLATE")]
    deflate: Option<String>,
    /// Keep compression context across messages (better ratio; costs ~300 KiB of zlib state
    /// per connection that sends compressed messages). Off: each message is compressed on its
    /// own with per-thread shared zlib streams, so idle connections hold no zlib memory.
    #[arg(long, env = "SWITCHBOARD_DEFLATE_CONTEXT_TAKEOVER", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    deflate_context_takeover: Option<bool>,
    /// Largest LZ77 window for compression, 8-15 (2^N bytes; smaller saves memory).
    #[arg(long, value_parser = clap::value_parser!(u8).range(8..=15), env = "SWITCHBOARD_DEFLATE_WINDOW_BITS")]
    deflate_window_bits: Option<u8>,
    /// Messages smaller than this many bytes are sent uncompressed (smaller JSON messages do
    /// not shrink on their own without context takeover; docs/deflate.md has the
    /// measurements).
    #[arg(long, env = "SWITCHBOARD_DEFLATE_THRESHOLD")]
    deflate_threshold: Option<usize>,

    /// Serve wss:// and https:// with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Log as JSON lines instead of text (filter with RUST_LOG, default "info").
    #[arg(long, env = "SWITCHBOARD_LOG_JSON", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    log_json: Option<bool>,
    /// Drive sockets through io_uring (Linux 6.0+) rather than epoll: one system call per
    /// scheduler round for every socket's reads and writes, about 10 % less server CPU per
    /// message than epoll (docs/benchmarks.md). `false` forces epoll; `true` fails if
    /// io_uring cannot be used [default: io_uring where it works here, else epoll, said
    /// in the log at start].
    #[arg(long, env = "SWITCHBOARD_IO_URING", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    io_uring: Option<bool>,
    /// Let the heap use transparent huge pages (2 MiB) where the kernel offers them
    /// (`madvise` mode). Off by default: the allocator would ask for them, and 2 MiB pages
    /// touched by a few connections each make an idle connection cost about 1.1 KB
    /// instead of about 660 B (docs/benchmarks.md) [default: false].
    #[arg(long, env = "SWITCHBOARD_HUGE_PAGES", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    huge_pages: Option<bool>,
}

const CONFIG_HELP: &str = "\
Config file (--config FILE), TOML, every key optional:

  listen = \"0.0.0.0:8080\"     # or \":8080\", \"localhost:8080\"
  workers = 2
  api_key = \"change-me\"
  allow_origin = [\"https://app.example.com\"]
  max_message_size = 65536
  max_connections = 100000
  max_connections_per_ip = 1000
  ping_interval = \"30s\"       # durations: \"500ms\", \"2m\", \"1h\"; 0 disables
  slow_consumer = \"disconnect\" # or \"drop-oldest\"
  # ... and every other option, named as its flag with underscores.

Precedence: flags > SWITCHBOARD_* environment variables > config file > defaults.
Logs: RUST_LOG=debug shows one span per connection (id, peer) with its lifecycle.";

/// The config file: the same options as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<FileListen>,
    workers: Option<u16>,
    max_message_size: Option<usize>,
    echo_max_message_size: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<u32>,
    max_subscriptions: Option<usize>,
    max_chat_text: Option<usize>,
    ping_interval: Option<FileDuration>,
    pong_timeout: Option<FileDuration>,
    idle_timeout: Option<FileDuration>,
    shutdown_timeout: Option<FileDuration>,
    allow_origin: Option<Vec<String>>,
    outbox_max_bytes: Option<usize>,
    socket_send_buffer: Option<usize>,
    outbox_max_messages: Option<usize>,
    slow_consumer: Option<String>,
    history: Option<usize>,
    api_key: Option<String>,
    deflate: Option<String>,
    deflate_context_takeover: Option<bool>,
    deflate_window_bits: Option<u8>,
    deflate_threshold: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    log_json: Option<bool>,
    io_uring: Option<bool>,
    huge_pages: Option<bool>,
}

/// `listen` in the file: the same forms as the flag.
#[derive(Debug, Clone, Copy)]
struct FileListen(SocketAddr);

impl<'de> Deserialize<'de> for FileListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_listen(&s)
            .map(FileListen)
            .map_err(serde::de::Error::custom)
    }
}

/// `--listen`: `host:port`, `localhost:port`, `:port` (127.0.0.1), `[::1]:port`.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "{s:?} is not an address to listen on: write host:port, for example 127.0.0.1:8080, \
             localhost:8080, :8080 (127.0.0.1) or 0.0.0.0:8080 (every interface)"
        )
    };
    if let Some(port) = t.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("cannot resolve {host:?} in --listen {s:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(bad)
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    // Old spellings get a pointer to the one name the option has now.
    if let Ok(toml::Value::Table(t)) = toml::from_str::<toml::Value>(&text) {
        if t.contains_key("allowed_origins") {
            bail!(
                "{}: `allowed_origins` is now `allow_origin` (the same name as --allow-origin)",
                path.display()
            );
        }
    }
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// A duration, 0 meaning "off".
fn off_if_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// The merged settings.
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) workers: Option<usize>,
    /// The config file read, if any.
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) log_json: bool,
    pub(crate) io_uring: bool,
    /// Which transport sockets use, and why, for the log.
    pub(crate) transport: String,
    pub(crate) huge_pages: bool,
    pub(crate) config: ServerConfig,
}

pub(crate) fn settings(a: ServeArgs) -> anyhow::Result<Settings> {
    if std::env::var_os("SWITCHBOARD_ALLOW_ORIGINS").is_some() {
        bail!("SWITCHBOARD_ALLOW_ORIGINS is now SWITCHBOARD_ALLOW_ORIGIN (the same name as --allow-origin)");
    }
    let f = match &a.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let mut config = server_config(&a, &f)?;
    let (io_uring, transport) = match a.io_uring.or(f.io_uring) {
        Some(true) => {
            check_io_uring()?;
            (true, "io_uring".to_string())
        }
        Some(false) => (false, "epoll (io_uring turned off)".to_string()),
        None => match check_io_uring() {
            Ok(()) => (true, "io_uring".to_string()),
            Err(e) => (false, format!("epoll ({e:#})")),
        },
    };
    if io_uring {
        config = config.io_uring(true);
    }
    let workers = a.workers.or(f.workers);
    if workers == Some(0) {
        bail!("workers must be at least 1 (leave it out for one per CPU core)");
    }
    Ok(Settings {
        listen: a
            .listen
            .or(f.listen.map(|l| l.0))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        workers: workers.map(usize::from),
        config_file: a.config,
        log_json: a.log_json.or(f.log_json).unwrap_or(false),
        io_uring,
        transport,
        huge_pages: a.huge_pages.or(f.huge_pages).unwrap_or(false),
        config,
    })
}

/// The server's settings: the library's defaults, with what the flags, the environment and
/// the file set (all but io_uring, which [`settings`] decides).
fn server_config(a: &ServeArgs, f: &FileConfig) -> anyhow::Result<ServerConfig> {
    macro_rules! pick {
        ($name:ident) => {
            a.$name.or(f.$name)
        };
    }
    macro_rules! pick_owned {
        ($name:ident) => {
            a.$name.clone().or_else(|| f.$name.clone())
        };
    }
    macro_rules! pick_duration {
        ($name:ident) => {
            a.$name.or(f.$name.map(|d| d.0))
        };
    }
    let mut c = ServerConfig::default();
    if let Some(n) = pick!(max_message_size) {
        c = c.max_message_size(n);
    }
    if let Some(n) = pick!(echo_max_message_size) {
        c = c.echo_max_message_size(n);
    }
    if let Some(d) = deflate(a, f, c.ws.deflate)? {
        c = c.deflate(d);
    }
    let limits = &mut c.limits;
    set(&mut limits.max_connections, pick!(max_connections));
    set(
        &mut limits.max_connections_per_ip,
        pick!(max_connections_per_ip),
    );
    set(&mut limits.max_subscriptions, pick!(max_subscriptions));
    set(&mut limits.max_chat_text, pick!(max_chat_text));
    let heartbeat = &mut c.heartbeat;
    set(
        &mut heartbeat.ping_interval,
        pick_duration!(ping_interval).map(off_if_zero),
    );
    set(
        &mut heartbeat.pong_timeout,
        pick_duration!(pong_timeout).map(off_if_zero),
    );
    set(
        &mut heartbeat.idle_timeout,
        pick_duration!(idle_timeout).map(off_if_zero),
    );
    set(&mut c.shutdown_timeout, pick_duration!(shutdown_timeout));
    let allowed = Some(a.allow_origin.clone()).filter(|o| !o.is_empty());
    set(
        &mut c.origins.allowed,
        allowed.or_else(|| f.allow_origin.clone()),
    );
    if let Some(p) = pick_owned!(slow_consumer) {
        c.outbox.policy = match p.as_str() {
            "disconnect" => SlowConsumerPolicy::Disconnect,
            "drop-oldest" => SlowConsumerPolicy::DropOldest,
            other => {
                bail!("slow_consumer must be \"disconnect\" or \"drop-oldest\", not {other:?}")
            }
        };
    }
    set(&mut c.outbox.max_bytes, pick!(outbox_max_bytes));
    set(&mut c.outbox.max_messages, pick!(outbox_max_messages));
    set(&mut c.hub.history, pick!(history));
    set(&mut c.socket_send_buffer, pick!(socket_send_buffer));
    if let Some(key) = pick_owned!(api_key).filter(|k| !k.is_empty()) {
        c = c.api_key(key);
    }
    match (pick_owned!(tls_cert), pick_owned!(tls_key)) {
        (Some(cert), Some(key)) => {
            let acceptor = switchboard_tokio::tls::acceptor_from_pem(&cert, &key)
                .context("loading the TLS certificate and key")?;
            c = c.tls(acceptor);
        }
        (None, None) => {}
        _ => bail!("TLS needs both a certificate (--tls-cert) and a key (--tls-key)"),
    }
    Ok(c)
}

/// Overrides `setting` with `value` when there is one.
fn set<T>(setting: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *setting = v;
    }
}

/// permessage-deflate as the options set it: `None` when none of them is given (the
/// library's `default` stands), `Some(None)` for off.
fn deflate(
    a: &ServeArgs,
    f: &FileConfig,
    default: Option<DeflateConfig>,
) -> anyhow::Result<Option<Option<DeflateConfig>>> {
    let on = match a.deflate.as_deref().or(f.deflate.as_deref()) {
        None => None,
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some(other) => bail!("deflate must be \"on\" or \"off\", not {other:?}"),
    };
    let takeover = a.deflate_context_takeover.or(f.deflate_context_takeover);
    let window = a.deflate_window_bits.or(f.deflate_window_bits);
    let threshold = a.deflate_threshold.or(f.deflate_threshold);
    if window.is_some_and(|w| !(8..=15).contains(&w)) {
        bail!("deflate_window_bits must be 8-15");
    }
    if on.is_none() && takeover.is_none() && window.is_none() && threshold.is_none() {
        return Ok(None);
    }
    if !on.unwrap_or(default.is_some()) {
        return Ok(Some(None));
    }
    let mut d = match (takeover, default) {
        (Some(t), _) => ServerConfig::deflate_config(t),
        (None, Some(d)) => d,
        (None, None) => ServerConfig::deflate_config(false),
    };
    if let Some(w) = window {
        d = d.server_max_window_bits(w).client_max_window_bits(w);
    }
    if let Some(t) = threshold {
        d = d.threshold(t);
    }
    Ok(Some(Some(d)))
}

/// `--help` shows the library's default of each option that has one (see
/// [`library_default`]).
fn with_library_default(arg: clap::Arg) -> clap::Arg {
    let Some(default) = library_default(arg.get_id().as_str()) else {
        return arg;
    };
    let add = |h: &clap::builder::StyledStr| format!("{h} [default: {default}]");
    let long = arg.get_long_help().map(add);
    let arg = match arg.get_help().map(add) {
        Some(help) => arg.help(help),
        None => arg,
    };
    match long {
        Some(long) => arg.long_help(long),
        None => arg,
    }
}

/// The default of a server option, as `ServerConfig::default()` has it, written as the
/// option takes it; `None` for options that are not server settings.
fn library_default(id: &str) -> Option<String> {
    let c = ServerConfig::default();
    let off_or = |d: Option<Duration>| d.map_or_else(|| "0".to_string(), crate::duration::show);
    let deflate = c.ws.deflate;
    Some(match id {
        "max_message_size" => c.ws.max_message_size.to_string(),
        "echo_max_message_size" => c.echo.max_message_size.to_string(),
        "max_connections" => c.limits.max_connections.to_string(),
        "max_connections_per_ip" => c.limits.max_connections_per_ip.to_string(),
        "max_subscriptions" => c.limits.max_subscriptions.to_string(),
        "max_chat_text" => c.limits.max_chat_text.to_string(),
        "ping_interval" => off_or(c.heartbeat.ping_interval),
        "pong_timeout" => off_or(c.heartbeat.pong_timeout),
        "idle_timeout" => off_or(c.heartbeat.idle_timeout),
        "shutdown_timeout" => crate::duration::show(c.shutdown_timeout),
        "outbox_max_bytes" => c.outbox.max_bytes.to_string(),
        "outbox_max_messages" => c.outbox.max_messages.to_string(),
        "slow_consumer" => match c.outbox.policy {
            SlowConsumerPolicy::DropOldest => "drop-oldest",
            _ => "disconnect",
        }
        .to_string(),
        "history" => c.hub.history.to_string(),
        "socket_send_buffer" => c.socket_send_buffer.to_string(),
        "deflate" => if deflate.is_some() { "on" } else { "off" }.to_string(),
        "deflate_context_takeover" => deflate
            .is_some_and(|d| !d.server_no_context_takeover)
            .to_string(),
        "deflate_window_bits" => deflate.map_or(15, |d| d.server_max_window_bits).to_string(),
        "deflate_threshold" => format!(
            "{DEFLATE_THRESHOLD}; {DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER} with context takeover"
        ),
        _ => return None,
    })
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), before the
/// server allocates anything per connection. mimalloc asks for them on its arenas
/// (`MADV_HUGEPAGE`); memory then becomes resident 2 MiB at a time, and many idle
/// connections, each a few hundred bytes spread over several size classes, end up holding
/// almost twice their heap.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn disable_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory
    // of ours; it only sets a flag on this process's address space.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "could not turn transparent huge pages off"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_huge_pages() {}

/// Makes mimalloc give the pages it frees back to the system at once (its purge delay 0,
/// unless `MIMALLOC_PURGE_DELAY` says otherwise). With the default delay (1 s in v3; a
/// freed page is purged once it passed, when mimalloc next looks, which a server gone idle
/// may never do), what a reconnect storm left freed stayed resident in about one run in
/// three, even after the idle collect ([`give_back_freed_memory`]): 0.62–1.13 KB per idle
/// connection after 10,000 connections arrived at once over io_uring, and 0.57–0.69 KB
/// with it at 0 (docs/benchmarks.md).
/// Steady traffic allocates nothing per message, so it rarely frees a whole page.
#[allow(unsafe_code)]
fn purge_freed_pages_at_once() {
    /// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v3's `mimalloc.h`).
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    extern "C" {
        // mimalloc's own API (linked in by the `mimalloc` crate, the global allocator).
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: takes plain integers and sets one of mimalloc's options, a plain value
        // (this runs before the runtime's threads exist).
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// Asks mimalloc to give the memory freed on this thread back to the system now. By
/// itself it does so only as the thread goes on allocating, so a thread that went idle
/// after a burst (10,000 handshakes, and the receive buffers they went through, which the
/// ring frees once idle) kept about 200 B per idle connection resident. Only a forced
/// collect returns them; it took 0.24 ms with 10,000 connections open, and runs once each
/// time the ring goes idle with more than its few hottest buffers resident.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn give_back_freed_memory() {
    extern "C" {
        // mimalloc's own API (linked in by the `mimalloc` crate, the global allocator).
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes a plain flag and only works on mimalloc's own structures
    // (mimalloc is the global allocator, so they exist and are consistent).
    unsafe { mi_collect(true) };
}

#[cfg(target_os = "linux")]
fn check_io_uring() -> anyhow::Result<()> {
    switchboard_tokio::uring::available()
        .context("io_uring cannot be used here; --io-uring false runs on epoll")
}

#[cfg(not(target_os = "linux"))]
fn check_io_uring() -> anyhow::Result<()> {
    bail!("io_uring needs Linux; --io-uring false runs on epoll")
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A mistake in the options (flags, environment, file): exit status 2, like clap's own.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let s = settings(args).map_err(|e| UsageError(format!("{e:#}")))?;
    if !s.huge_pages {
        disable_huge_pages();
    }
    purge_freed_pages_at_once();
    init_logging(s.log_json);
    let scheme = if s.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let api = s.config.api_key.is_some();
    let transport = s.transport.clone();
    let workers = s.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let config_file = s.config_file.as_ref().map_or_else(
        || "none".to_string(),
        |p| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        },
    );
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    rt.worker_threads(workers);
    #[cfg(target_os = "linux")]
    if s.io_uring {
        // Each worker submits its ring's queued reads and writes before it parks.
        rt.on_thread_park(switchboard_tokio::uring::before_park);
        switchboard_tokio::uring::on_idle(give_back_freed_memory);
    }
    let rt = rt.build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(s.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another server using that port? choose another with --listen)",
                s.listen
            )
        })?;
        let addr = listener.local_addr()?;
        tracing::info!(
            "switchboard {}: {workers} worker{}, sockets: {transport}, config file: {config_file}",
            env!("CARGO_PKG_VERSION"),
            if workers == 1 { "" } else { "s" }
        );
        tracing::info!(
            "listening on {scheme}://{addr} (chat page at /, WebSockets at /chat, /ws and /echo, metrics at /metrics)"
        );
        if !api {
            tracing::info!("POST /api/publish is disabled until an API key is set (SWITCHBOARD_API_KEY)");
        }
        switchboard_server::run(listener, s.config, shutdown_signal()).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ServeArgs,
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("sb-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\nmax_connections = 7\nping_interval = 0\napi_key = \"k\"\n",
        )
        .unwrap();
        let t = T::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--max-connections",
            "9",
        ]);
        let s = settings(t.a).unwrap();
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.config.limits.max_connections, 9);
        assert_eq!(s.config.heartbeat.ping_interval, None);
        assert_eq!(s.config.api_key.as_deref(), Some("k"));
        assert_eq!(s.config.limits.max_connections_per_ip, 1000);

        std::fs::write(&file, "max_conections = 7\n").unwrap();
        let t = T::parse_from(["x", "--config", file.to_str().unwrap()]);
        let err = format!("{:#}", settings(t.a).err().unwrap());
        assert!(err.contains("unknown field `max_conections`"), "{err}");
    }

    /// Item 13: every option has one name: `--some-option`, `SWITCHBOARD_SOME_OPTION` and
    /// `some_option` in the file (only --config itself is not a file key).
    #[test]
    fn every_option_has_one_name_across_flag_environment_and_file() {
        use clap::CommandFactory;
        let cmd = T::command();
        let mut checked = 0;
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let key = long.replace('-', "_");
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert_eq!(
                env,
                format!("SWITCHBOARD_{}", key.to_ascii_uppercase()),
                "--{long}"
            );
            if long == "config" {
                continue;
            }
            // A wrong value is fine here; an unknown key is not.
            let err = toml::from_str::<FileConfig>(&format!("{key} = []\n"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!err.contains("unknown field"), "--{long}: {err}");
            checked += 1;
        }
        assert!(checked > 20, "{checked}");
    }

    /// `serve` turns mimalloc's purge delay (1 s by default in v3: which tells that the option
    /// number is right) to 0, so what a reconnect storm freed does not stay resident.
    #[test]
    #[allow(unsafe_code)]
    fn freed_pages_are_purged_at_once() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        extern "C" {
            fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
        }
        // SAFETY: reads one of mimalloc's options (the test binary's global allocator).
        let get = || unsafe { mi_option_get(15) };
        assert_eq!(get(), 1000, "mimalloc v3's default purge delay (ms)");
        purge_freed_pages_at_once();
        assert_eq!(get(), 0);
    }

    /// One source of defaults: `serve` with no options runs `ServerConfig::default()` (but
    /// for io_uring, which it turns on where it works), permessage-deflate included.
    #[test]
    fn serve_without_options_runs_the_library_defaults() {
        let s = settings(T::parse_from(["x"]).a).unwrap();
        assert_eq!(s.config.clone().io_uring(false), ServerConfig::default());
        assert!(s.config.ws.deflate.is_some() && s.config.echo.deflate.is_some());
        // An empty config file changes nothing either.
        let dir = std::env::temp_dir().join(format!("sb-cfg-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("empty.toml");
        std::fs::write(&file, "").unwrap();
        let s = settings(T::parse_from(["x", "--config", file.to_str().unwrap()]).a).unwrap();
        assert_eq!(s.config.io_uring(false), ServerConfig::default());
    }

    /// Each option lands in its setting, and the deflate options build on the library's.
    #[test]
    fn options_land_in_their_settings() {
        let s = settings(
            T::parse_from([
                "x",
                "--max-message-size",
                "1000",
                "--echo-max-message-size",
                "2000",
                "--idle-timeout",
                "0",
                "--slow-consumer",
                "drop-oldest",
                "--history",
                "3",
                "--deflate-window-bits",
                "10",
            ])
            .a,
        )
        .unwrap();
        let c = s.config;
        assert_eq!((c.ws.max_message_size, c.ws.max_frame_size), (1000, 1000));
        assert_eq!(c.ws.max_write_buffer, 4 << 20);
        assert_eq!(c.echo.max_message_size, 2000);
        assert_eq!(c.heartbeat.idle_timeout, None);
        assert_eq!(c.outbox.policy, SlowConsumerPolicy::DropOldest);
        assert_eq!(c.hub.history, 3);
        let d = c.ws.deflate.unwrap();
        assert_eq!(
            (d.server_max_window_bits, d.client_max_window_bits),
            (10, 10)
        );
        assert_eq!(d.threshold, DEFLATE_THRESHOLD);
        assert!(d.server_no_context_takeover);
        assert_eq!(c.echo.deflate, Some(d));

        let c = settings(T::parse_from(["x", "--deflate-context-takeover"]).a)
            .unwrap()
            .config;
        let d = c.ws.deflate.unwrap();
        assert!(!d.server_no_context_takeover && !d.client_no_context_takeover);
        assert_eq!(d.threshold, DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER);
        let c = settings(T::parse_from(["x", "--deflate", "off"]).a)
            .unwrap()
            .config;
        assert_eq!((c.ws.deflate, c.echo.deflate), (None, None));
    }

    /// `--help` shows the library's default of every server option, and no option's help
    /// writes one of its own.
    #[test]
    fn help_shows_the_library_defaults() {
        use clap::CommandFactory;
        let mut cmd = T::command().term_width(1000);
        let help = cmd.render_long_help().to_string();
        let c = ServerConfig::default();
        for shown in [
            format!("[default: {}]", c.ws.max_message_size),
            format!("[default: {}]", c.limits.max_connections),
            "[default: 30s]".to_string(),
            "[default: 1h]".to_string(),
            "[default: on]".to_string(),
            format!("[default: {DEFLATE_THRESHOLD}; {DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER} with context takeover]"),
        ] {
            assert!(help.contains(&shown), "{shown} missing in\n{help}");
        }
        let mut with_default = 0;
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let text = arg
                .get_long_help()
                .or(arg.get_help())
                .map(ToString::to_string);
            let text = text.unwrap_or_default();
            assert!(!text.is_empty(), "--{id} has no help");
            let shown = text.matches("[default: ").count();
            match library_default(id) {
                Some(d) => {
                    assert!(text.ends_with(&format!("[default: {d}]")), "--{id}: {text}");
                    assert_eq!(shown, 1, "--{id}: {text}");
                    with_default += 1;
                }
                None => assert!(shown <= 1, "--{id}: {text}"),
            }
        }
        assert_eq!(with_default, 19, "every server setting has its option");
    }

    /// Zero-config `serve` uses io_uring where it works (and says which transport in the
    /// log); `--io-uring false` forces epoll. Huge pages are off unless asked for.
    #[test]
    fn io_uring_is_the_default_where_it_works_and_false_turns_it_off() {
        let s = settings(T::parse_from(["x"]).a).unwrap();
        #[cfg(target_os = "linux")]
        assert_eq!(
            s.io_uring,
            switchboard_tokio::uring::available().is_ok(),
            "{}",
            s.transport
        );
        assert_eq!(s.io_uring, s.config.io_uring);
        assert_eq!(s.transport.starts_with("io_uring"), s.io_uring);
        assert!(!s.huge_pages);

        let s = settings(T::parse_from(["x", "--io-uring", "false", "--huge-pages"]).a).unwrap();
        assert!(!s.io_uring && !s.config.io_uring);
        assert_eq!(s.transport, "epoll (io_uring turned off)");
        assert!(s.huge_pages);
    }
}
