//! The options of `switchboard connect`, and the client they configure.

use std::path::PathBuf;
use std::time::Duration;

use switchboard_proto::Config;
use switchboard_tokio::ClientBuilder;

/// Options of `switchboard connect`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = CONNECT_HELP)]
pub(crate) struct ConnectArgs {
    /// ws:// or wss:// URL (http:// and https:// are taken as ws:// and wss://).
    pub(super) url: String,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(long = "header", short = 'H', value_name = "HEADER")]
    pub(super) headers: Vec<String>,
    /// Send this Origin header.
    #[arg(long)]
    pub(super) origin: Option<String>,
    /// Offer this subprotocol (repeatable, in order of preference).
    #[arg(long = "protocol", short = 'p', value_name = "NAME")]
    pub(super) protocols: Vec<String>,
    /// permessage-deflate: offer compression.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub(super) compress: String,
    /// Trust the CA certificates in this PEM file too (wss:// with a private CA).
    #[arg(long, value_name = "PEM")]
    pub(super) ca: Option<PathBuf>,
    /// Accept any server certificate (self-signed test servers). Not for real traffic.
    #[arg(long, short = 'k')]
    pub(super) insecure: bool,
    /// Stay connected when stdin ends (print what arrives until the server closes or
    /// Ctrl-C), instead of closing with 1000.
    #[arg(long, short = 'n')]
    pub(super) no_close: bool,
    /// Keep-alive: send a ping whenever this long has passed since the last one (30s,
    /// 500ms), so idle timeouts of proxies and servers do not end a quiet session.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub(super) ping_interval: Option<Duration>,
    /// Draw the session as a sequence diagram on stderr: handshake, every frame, closing.
    #[arg(long)]
    pub(super) trace: bool,
    /// The same trace as JSON lines on stderr.
    #[arg(long, conflicts_with = "trace")]
    pub(super) trace_json: bool,
    /// Reconnect with exponential backoff and jitter when the connection ends (not when you
    /// close it or stdin ends).
    #[arg(long)]
    pub(super) reconnect: bool,
    /// How long to wait for TCP, TLS and the handshake: 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse, value_name = "DURATION")]
    pub(super) timeout: Duration,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub(super) max_message_size: usize,
    /// WebSocket over HTTP/2 (RFC 8441), no fallback: h2c with prior knowledge for ws://,
    /// ALPN h2 for wss://; fails (exit 5) when the server does not offer it.
    #[arg(long)]
    pub(super) http2: bool,
    #[command(flatten)]
    pub(super) proxy: crate::proxy_options::ProxyArgs,
}

const CONNECT_HELP: &str = "\
Input (typed, or lines on stdin):
  any line               sent as a text message
  /binary hex 0a0b0c     a binary message, from hex (or: /binary base64 AAEC)
  /ping [text]           a ping; the pong is shown
  /close [code [reason]] close with a code (default 1000) and reason, then exit
  //text                 a text message that starts with '/'
  /help                  this list

Output: text messages as they are; binary ones as `base64:DATA` (in a pipe) or as hex. Errors
are one `error: ...` line on stderr. When stdin ends the client closes with 1000 (not with -n).

Exit status: 0 closed with 1000 (or stdin ended and the close completed), 3 closed with another
code, 4 connection lost without a close handshake, 5 handshake refused or invalid (an HTTP
status line instead of 101, HTTP/1.0, not HTTP at all, wrong accept key; with --http2 a server
that does not offer WebSockets over HTTP/2), 6 could not connect
(refused, DNS, timeout; or the proxy failed or refused, its answer shown), 7 TLS failed (or
wss:// to a plain server), 1 other errors, 2 bad usage (unknown option, invalid URL, --header
or proxy URL).

Proxies: --proxy URL, or by default HTTPS_PROXY (wss://), HTTP_PROXY (ws://) or ALL_PROXY, with
NO_PROXY's hosts direct (lower case too); --no-proxy ignores them. TLS runs inside the tunnel,
end to end with the server.

HTTP/2: --http2 carries the WebSocket over HTTP/2 (RFC 8441, CONNECT with :protocol websocket):
h2c with prior knowledge for ws://, ALPN h2 for wss://, no fallback to HTTP/1.1.";

/// The client builder and protocol configuration the options ask for, or why an option is
/// invalid (a `--header` without a colon, an unreadable CA file, an unusable proxy URL).
pub(super) fn builder(a: &ConnectArgs) -> Result<(ClientBuilder, Config), String> {
    let mut config = Config::default()
        .max_message_size(a.max_message_size)
        .max_frame_size(a.max_message_size);
    if a.compress == "on" {
        config = config.deflate(Some(switchboard_proto::extension::DeflateConfig::default()));
    }
    let mut b = ClientBuilder::new(&a.url)
        .config(config)
        .connect_timeout(a.timeout.max(Duration::from_millis(100)))
        .proxy_settings(a.proxy.settings()?);
    if a.http2 {
        b = b.http2(switchboard_tokio::Http2::Force);
    }
    for p in &a.protocols {
        b = b.protocol(p.clone());
    }
    for h in &a.headers {
        let Some((n, v)) = h.split_once(':') else {
            return Err(format!("--header {h:?}: expected \"Name: value\""));
        };
        b = b.header(n.trim(), v.trim());
    }
    if let Some(o) = &a.origin {
        b = b.origin(o.clone());
    }
    if a.insecure {
        b = b.tls_config(
            switchboard_tokio::tls::insecure_client_config().map_err(|e| e.to_string())?,
        );
    } else if let Some(ca) = &a.ca {
        b = b.tls_config(
            switchboard_tokio::tls::client_config(Some(ca)).map_err(|e| e.to_string())?,
        );
    }
    Ok((b, config))
}
