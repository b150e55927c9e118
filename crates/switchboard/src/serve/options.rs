//! The options of `switchboard serve` (flags, `SWITCHBOARD_*` environment variables, the
//! TOML file) and how they become the server's settings: the library's defaults
//! (`ServerConfig::default()`), overridden by what is set, highest first: flags, the
//! environment, the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use switchboard_proto::extension::DeflateConfig;
use switchboard_server::{
    ServerConfig, SlowConsumerPolicy, DEFLATE_THRESHOLD, DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER,
};

use super::check_io_uring;
use crate::duration::FileDuration;
pub(crate) use auth::{fix as jwt_fix, hmac_secrets};
use auth::{JwtArgs, JwtSettings, OneOrMany};

mod auth;

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
    /// New connections a second from one client IP (IPv6: its /64), HTTP and WebSocket,
    /// with a burst of one second's worth; past it, 429 with Retry-After: 1. 0: no limit.
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_NEW_CONNECTIONS_PER_SECOND_PER_IP",
        value_name = "N"
    )]
    max_new_connections_per_second_per_ip: Option<u32>,
    /// Messages a second one /ws or /chat connection may send (a burst of one second's
    /// worth); over it messages are dropped with a `rate_limited` error, and a connection
    /// that goes on for a second is closed with 1008. 0: no limit.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGES_PER_SECOND", value_name = "N")]
    max_messages_per_second: Option<u32>,
    /// Message bytes a second one /ws or /chat connection may send, as
    /// --max-messages-per-second. 0: no limit.
    #[arg(long, env = "SWITCHBOARD_MAX_BYTES_PER_SECOND", value_name = "BYTES")]
    max_bytes_per_second: Option<u64>,
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
    /// Publications each topic's history keeps (for `/ws` history requests and chat
    /// newcomers); 0 keeps none.
    #[arg(long, env = "SWITCHBOARD_HISTORY_SIZE", value_name = "N")]
    history_size: Option<usize>,
    /// How long a publication stays in its topic's history; 0 keeps none.
    #[arg(long, env = "SWITCHBOARD_HISTORY_TTL", value_name = "DURATION", value_parser = crate::duration::parse)]
    history_ttl: Option<Duration>,
    /// Publications replayed at most when a client recovers after a reconnect; one that
    /// missed more is told `capped` and reloads its state.
    #[arg(long, env = "SWITCHBOARD_RECOVERY_MAX", value_name = "N")]
    recovery_max: Option<usize>,

    /// A key POST /api/publish accepts (`Authorization: Bearer KEY`); repeatable, any one
    /// of them is accepted (comma-separated in the environment, `api_key = ["k1", "k2"]` in
    /// the file). Without one the API answers 403. Prefer the environment variable or the
    /// file over the flag (flags show in `ps`).
    #[arg(
        long,
        env = "SWITCHBOARD_API_KEY",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "KEY"
    )]
    api_key: Vec<String>,

    #[command(flatten)]
    jwt: JwtArgs,

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
    /// message than epoll (benchmarks/README.md). `false` forces epoll; `true` fails if
    /// io_uring cannot be used [default: io_uring where it works here, else epoll, said
    /// in the log at start].
    #[arg(long, env = "SWITCHBOARD_IO_URING", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    io_uring: Option<bool>,
    /// Turn HTTP/2 off: HTTP/1.1 only. HTTP/2 (prior knowledge on plain TCP, ALPN `h2` on
    /// TLS) carries the page, /healthz, /metrics, the publish API and WebSockets (RFC 8441:
    /// /echo, /chat and /ws on HTTP/2 streams, as browsers open them once the page came over
    /// HTTP/2); off, the HTTP/2 preface gets 400 and TLS offers no ALPN protocol.
    #[arg(long, env = "SWITCHBOARD_NO_HTTP2", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    no_http2: Option<bool>,
    /// Where topics' positions, history and presence live, and what carries publications:
    /// `memory` (this process only) or `redis` (several `serve` nodes sharing one Redis,
    /// see --redis-url) [default: memory].
    #[arg(long, env = "SWITCHBOARD_ENGINE", value_parser = ["memory", "redis"], value_name = "ENGINE")]
    engine: Option<String>,
    /// The Redis server of `--engine redis` (`redis://[:PASSWORD@]HOST:PORT/DB`; `rediss://`
    /// for TLS) [default: redis://127.0.0.1:6379/0].
    #[arg(long, env = "SWITCHBOARD_REDIS_URL", value_name = "URL")]
    redis_url: Option<String>,
    /// Let the heap use transparent huge pages (2 MiB) where the kernel offers them
    /// (`madvise` mode). Off by default: the allocator would ask for them, and 2 MiB pages
    /// touched by a few connections each make an idle connection cost about 1.1 KB
    /// instead of about 660 B (benchmarks/log/) [default: false].
    #[arg(long, env = "SWITCHBOARD_HUGE_PAGES", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    huge_pages: Option<bool>,
}

const CONFIG_HELP: &str = "\
Config file (--config FILE), TOML, every key optional:

  listen = \"0.0.0.0:8080\"     # or \":8080\", \"localhost:8080\"
  workers = 2
  api_key = \"change-me\"       # or a list: [\"old-key\", \"new-key\"]
  jwt_hmac_secret = \"s3cret\"  # or a list; tokens on /ws and /chat: see below
  jwt_public_key = [\"/etc/switchboard/rs256.pem\"]
  jwks = \"https://auth.example.com/.well-known/jwks.json\"
  allow_anonymous = true
  allow_origin = [\"https://app.example.com\"]
  max_message_size = 65536
  max_connections = 100000
  max_connections_per_ip = 1000
  max_messages_per_second = 100 # per /ws or /chat connection; 0: no limit
  ping_interval = \"30s\"       # durations: \"500ms\", \"2m\", \"1h\"; 0 disables
  slow_consumer = \"disconnect\" # or \"drop-oldest\"
  # ... and every other option, named as its flag with underscores.

Tokens: with any of jwt_hmac_secret, jwt_public_key or jwks set, /ws and /chat need a JWT
(`Authorization: Bearer TOKEN` or `?token=TOKEN`; `switchboard token --sub alice --ttl 1h`
makes one) unless allow_anonymous. Claims: sub, exp (checked without leeway), optional name,
info, channels. Missing or invalid tokens get 401 with the reason.

Namespaces (file only, no flags): a topic's namespace is what comes before its first
':' (\"private:room1\" is in \"private\"; \"news\" has none). Per namespace:

  [topics]                    # topics without a namespace (and every namespace while
                              # no [namespaces.NAME] besides chat and user is set)
  subscribe = \"anyone\"        # anyone | authenticated | token (a subscription token)
  publish = \"anyone\"          # from clients: nobody | subscribers | authenticated | anyone
  presence = true             # /ws subscribers are present (and may be listed)
  join_leave = false          # subscribers get join/leave events (needs presence)

  [namespaces.private]        # a namespace you name starts closed (subscribe = \"token\",
  subscribe = \"token\"         # publish = \"nobody\"), and once one is named, topics in a
  publish = \"nobody\"          # namespace not named get unknown_namespace
  presence = false
  history_size = 0            # default: the top-level history_size and history_ttl
  history_ttl = \"1m\"

  Built in: [namespaces.chat] (the chat rooms: subscribe, publish, history) and
  [namespaces.user] (user:ID for the user ID only; publish = \"nobody\" by default).

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
    max_new_connections_per_second_per_ip: Option<u32>,
    max_messages_per_second: Option<u32>,
    max_bytes_per_second: Option<u64>,
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
    history_size: Option<usize>,
    history_ttl: Option<FileDuration>,
    recovery_max: Option<usize>,
    api_key: Option<OneOrMany<String>>,
    jwt_hmac_secret: Option<OneOrMany<String>>,
    jwt_public_key: Option<OneOrMany<PathBuf>>,
    jwks: Option<String>,
    jwks_refresh: Option<FileDuration>,
    jwks_ca_file: Option<PathBuf>,
    jwt_algorithm: Option<OneOrMany<String>>,
    allow_anonymous: Option<bool>,
    deflate: Option<String>,
    deflate_context_takeover: Option<bool>,
    deflate_window_bits: Option<u8>,
    deflate_threshold: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    log_json: Option<bool>,
    io_uring: Option<bool>,
    no_http2: Option<bool>,
    huge_pages: Option<bool>,
    engine: Option<String>,
    redis_url: Option<String>,
    /// `[topics]`: the rules of topics without a namespace (file only).
    topics: Option<toml::Value>,
    /// `[namespaces.NAME]`: each namespace's rules (file only).
    namespaces: Option<toml::Value>,
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

/// Where topics' streams, history and presence live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EngineChoice {
    /// In this process.
    Memory,
    /// On the Redis server at this URL.
    Redis(String),
}

/// The Redis server `--engine redis` uses without `--redis-url`.
pub(crate) const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

fn engine_choice(a: &ServeArgs, f: &FileConfig) -> anyhow::Result<EngineChoice> {
    let url = a.redis_url.clone().or_else(|| f.redis_url.clone());
    match a.engine.as_deref().or(f.engine.as_deref()) {
        None | Some("memory") => {
            if url.is_some() {
                bail!("--redis-url is set but the engine is memory: add --engine redis (SWITCHBOARD_ENGINE=redis, or engine = \"redis\" in the config file)");
            }
            Ok(EngineChoice::Memory)
        }
        Some("redis") => {
            let url = url.unwrap_or_else(|| DEFAULT_REDIS_URL.to_string());
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+unix://")
                || url.starts_with("unix://"))
            {
                bail!("--redis-url {url:?} is not a Redis URL: write redis://HOST:PORT/DB (rediss:// for TLS)");
            }
            Ok(EngineChoice::Redis(url))
        }
        Some(other) => bail!(
            "engine {other:?} is not one of memory, redis: set engine = \"memory\" or \"redis\""
        ),
    }
}

/// The merged settings.
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) workers: Option<usize>,
    /// The config file read, if any.
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) log_json: bool,
    /// Which transport sockets use, and why, for the log.
    pub(crate) transport: String,
    pub(crate) huge_pages: bool,
    pub(crate) engine: EngineChoice,
    /// The JWT check of `/ws` and `/chat`, if any key is configured (made at start: a
    /// JWKS URL is fetched).
    pub(crate) jwt: Option<JwtSettings>,
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
    let engine = engine_choice(&a, &f)?;
    let jwt = auth::jwt_settings(&a.jwt, &f)?;
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
        transport,
        huge_pages: a.huge_pages.or(f.huge_pages).unwrap_or(false),
        engine,
        jwt,
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
    set(
        &mut limits.max_new_connections_per_second_per_ip,
        pick!(max_new_connections_per_second_per_ip),
    );
    set(
        &mut limits.max_messages_per_second,
        pick!(max_messages_per_second),
    );
    set(
        &mut limits.max_bytes_per_second,
        pick!(max_bytes_per_second),
    );
    set(&mut limits.max_subscriptions, pick!(max_subscriptions));
    set(&mut limits.recovery_max, pick!(recovery_max));
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
    set(&mut c.hub.history_size, pick!(history_size));
    set(&mut c.hub.history_ttl, pick_duration!(history_ttl));
    set(&mut c.socket_send_buffer, pick!(socket_send_buffer));
    if let Some(off) = pick!(no_http2) {
        c = c.http2(!off);
    }
    if f.topics.is_some() || f.namespaces.is_some() {
        c = c.namespaces(namespaces::from_file(
            f.topics.as_ref(),
            f.namespaces.as_ref(),
        )?);
    }
    c = c.api_keys(auth::api_keys(&a.api_key, f));
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
        "max_new_connections_per_second_per_ip" => {
            c.limits.max_new_connections_per_second_per_ip.to_string()
        }
        "max_messages_per_second" => c.limits.max_messages_per_second.to_string(),
        "max_bytes_per_second" => c.limits.max_bytes_per_second.to_string(),
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
        "history_size" => c.hub.history_size.to_string(),
        "history_ttl" => crate::duration::show(c.hub.history_ttl),
        "recovery_max" => c.limits.recovery_max.to_string(),
        "allow_anonymous" => c.allow_anonymous.to_string(),
        "jwks_refresh" => crate::duration::show(switchboard_server::JWKS_REFRESH),
        "socket_send_buffer" => c.socket_send_buffer.to_string(),
        "no_http2" => (!c.http2.enabled).to_string(),
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

mod namespaces;
#[cfg(test)]
mod tests;
