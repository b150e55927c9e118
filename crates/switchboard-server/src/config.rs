//! Server settings, each with a bounded default.

use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::{HubConfig, OutboxLimits};
use switchboard_proto::extension::DeflateConfig;
use switchboard_proto::Config;

use crate::auth::Authenticator;
use crate::namespace::Namespaces;

/// Connection and usage limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Open connections at most (HTTP and WebSocket); past it handshakes get 503.
    /// Default 100,000.
    pub max_connections: usize,
    /// Open connections per client IP address; past it, 503. Default 1,000.
    pub max_connections_per_ip: u32,
    /// New connections a second from one client address (IPv6: its /64), plain HTTP and
    /// WebSocket alike, counted as they are accepted, with a burst of one second's worth;
    /// past it, 429 with `Retry-After: 1`. 0: no limit. Default 0 (behind a proxy or a NAT
    /// many clients share one address; see the README for values to use).
    pub max_new_connections_per_second_per_ip: u32,
    /// Messages a second one `/ws` or `/chat` connection may send, with a burst of one
    /// second's worth. Messages over it are dropped, the first with a `rate_limited` error
    /// event; a connection still over it a second after that is closed with 1008
    /// (docs/protocol.md). 0: no limit. Default 0.
    pub max_messages_per_second: u32,
    /// Message payload bytes a second one `/ws` or `/chat` connection may send, as
    /// [`max_messages_per_second`](Self::max_messages_per_second) (a message larger than a
    /// second's worth passes when the connection sent nothing for a second). 0: no limit.
    /// Default 0.
    pub max_bytes_per_second: u64,
    /// Topics one `/ws` connection may subscribe to. Default 64.
    pub max_subscriptions: usize,
    /// Largest chat message text, in characters. Default 4,000.
    pub max_chat_text: usize,
    /// Largest `POST /api/publish` body. Default 1 MiB.
    pub max_api_body: usize,
    /// Publications replayed at most when a client recovers (`/ws` subscribe with
    /// `recover`, `/chat` with `since`); one that missed more is told `capped` and reloads.
    /// Default [`RECOVERY_MAX`].
    pub recovery_max: usize,
}

/// The default replay cap of a recovery (as Centrifugo's).
pub const RECOVERY_MAX: usize = 300;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            max_new_connections_per_second_per_ip: 0,
            max_messages_per_second: 0,
            max_bytes_per_second: 0,
            max_subscriptions: 64,
            max_chat_text: 4_000,
            max_api_body: 1 << 20,
            recovery_max: RECOVERY_MAX,
        }
    }
}

/// Heartbeats and idle connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeartbeatConfig {
    /// Ping a connection after this long without hearing from it. Default 30 s; `None`
    /// sends no pings.
    pub ping_interval: Option<Duration>,
    /// Close (1011, "ping timeout") a connection that has not answered a ping after this
    /// long. Default 20 s.
    pub pong_timeout: Option<Duration>,
    /// Close (1001, "idle timeout") a connection after this long without a message in
    /// either direction (pings and pongs do not count). Default 1 hour; `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Some(Duration::from_secs(20)),
            idle_timeout: Some(Duration::from_secs(3600)),
        }
    }
}

/// Which browser origins may open WebSockets (see the README on cross-site WebSocket
/// hijacking). Requests without an `Origin` header (non-browser clients) always pass.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OriginPolicy {
    /// Allow the server's own origin (the `Origin` names the `Host` the request was sent to).
    /// Default on.
    pub same_origin: bool,
    /// Allow `http(s)://localhost:*`, `http(s)://127.0.0.1:*` and `http(s)://[::1]:*`.
    /// Default on.
    pub loopback: bool,
    /// More allowed origins, exactly as browsers send them (`https://app.example.com`), or
    /// `*` for any.
    pub allowed: Vec<String>,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        Self {
            same_origin: true,
            loopback: true,
            allowed: Vec::new(),
        }
    }
}

impl OriginPolicy {
    /// Whether a request with `origin` (its `Origin` header) sent to `host` (its `Host`
    /// header) may open a WebSocket.
    ///
    /// ```
    /// use switchboard_server::OriginPolicy;
    /// let p = OriginPolicy::default();
    /// assert!(p.allows(None, "chat.example.com"));
    /// assert!(p.allows(Some("https://chat.example.com"), "chat.example.com"));
    /// assert!(p.allows(Some("http://localhost:5173"), "127.0.0.1:8080"));
    /// assert!(!p.allows(Some("https://evil.example"), "chat.example.com"));
    /// assert!(!p.allows(Some("http://localhost.evil.example"), "chat.example.com"));
    /// ```
    pub fn allows(&self, origin: Option<&str>, host: &str) -> bool {
        let Some(origin) = origin.map(str::trim) else {
            return true;
        };
        if self
            .allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        if !matches!(scheme, "http" | "https") {
            return false;
        }
        if self.same_origin && !host.is_empty() && rest.eq_ignore_ascii_case(host.trim()) {
            return true;
        }
        if self.loopback {
            let hostname = match rest.strip_prefix('[') {
                Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")),
                None => rest.split(':').next().map(str::to_string),
            };
            let port_ok = |h: &str| {
                let after = &rest[h.len()..];
                after.is_empty()
                    || after
                        .strip_prefix(':')
                        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            };
            if let Some(h) = hostname {
                if matches!(
                    h.to_ascii_lowercase().as_str(),
                    "localhost" | "127.0.0.1" | "[::1]"
                ) && port_ok(&h)
                {
                    return true;
                }
            }
        }
        false
    }
}

/// The largest `/chat` and `/ws` message by default: 64 KiB.
pub const MAX_MESSAGE_SIZE: usize = 64 << 10;
/// The largest `/echo` message by default: 16 MiB, what the Autobahn 9.x cases need.
pub const ECHO_MAX_MESSAGE_SIZE: usize = 16 << 20;
/// permessage-deflate without context takeover sends messages shorter than this
/// uncompressed: small JSON messages do not shrink on their own (docs/deflate.md).
pub const DEFLATE_THRESHOLD: usize = 256;
/// With context takeover, messages from this size on shrink (docs/deflate.md).
pub const DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER: usize = 32;

/// Server settings. `ServerConfig::default()` is what `switchboard serve` runs with when
/// given no options (except io_uring, which `serve` turns on where it works).
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Protocol limits for `/chat` and `/ws` connections. Default: [`MAX_MESSAGE_SIZE`]
    /// messages and frames, a write buffer of twice that but at least 4 MiB, and
    /// permessage-deflate as [`ServerConfig::deflate_config`]`(false)` makes it.
    pub ws: Config,
    /// Protocol limits for `/echo` (conformance and benchmarks). Default:
    /// [`ECHO_MAX_MESSAGE_SIZE`] messages and frames, a write buffer of twice that, and
    /// permessage-deflate as for `/chat` and `/ws`.
    pub echo: Config,
    /// TLS: serve `wss://` and `https://` with this acceptor. With HTTP/2 on, and unless
    /// the acceptor names ALPN protocols itself, the server offers `h2` and `http/1.1` by
    /// ALPN.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// How long shutdown waits for open connections to finish their close handshakes.
    pub shutdown_timeout: Duration,
    /// Connection and usage limits.
    pub limits: Limits,
    /// Heartbeats and idle timeout.
    pub heartbeat: HeartbeatConfig,
    /// Allowed browser origins.
    pub origins: OriginPolicy,
    /// Each subscriber's outbound queue bound and slow-consumer policy.
    pub outbox: OutboxLimits,
    /// Topics' history: the bounds of every topic whose namespace sets none.
    pub hub: HubConfig,
    /// Who may subscribe to and publish to which topics, and each namespace's presence,
    /// join/leave events and history bounds. Default: every topic open, as without
    /// namespaces (`user:ID` topics for their user only).
    pub namespaces: Namespaces,
    /// The keys `POST /api/publish` accepts, any one of them (none: the API answers 403),
    /// checked by [`ApiKey`](crate::ApiKey) unless [`authenticator`](Self::authenticator)
    /// is set.
    pub api_keys: Vec<String>,
    /// Who may use `POST /api/publish`, in place of the API key check. Default: `None`.
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Who may open `/ws` and `/chat` (the JWT check): with one set, a handshake without
    /// valid credentials gets 401 unless [`allow_anonymous`](Self::allow_anonymous) lets
    /// one without any in. Default: `None`, everyone is an anonymous guest.
    pub websocket_authenticator: Option<Arc<dyn Authenticator>>,
    /// With a [`websocket_authenticator`](Self::websocket_authenticator): let handshakes
    /// without credentials in, anonymous (a bad token is still refused). Default: off.
    pub allow_anonymous: bool,
    /// Drive every connection's socket through io_uring
    /// ([`UringStream`](switchboard_tokio::uring::UringStream)) instead of epoll. Needs the
    /// `io-uring` feature, Linux 6.0+, and a runtime that calls
    /// [`before_park`](switchboard_tokio::uring::before_park) on park. Default: off.
    pub io_uring: bool,
    /// The kernel's send buffer per connection, in bytes
    /// ([`SocketControl::set_send_buffer`](switchboard_tokio::SocketControl::set_send_buffer));
    /// 0 leaves it to the kernel, which grows it up to `net.ipv4.tcp_wmem`'s maximum
    /// (4 MiB by default) for a peer that does not read. Default: 256 KiB.
    pub socket_send_buffer: usize,
    /// HTTP/2 on the same port (prior knowledge on plain TCP, ALPN `h2` on TLS) for plain
    /// HTTP requests. Default: on.
    pub http2: Http2Config,
}

/// HTTP/2 settings. The flow-control windows are set so that streams that are not read
/// cannot take the whole connection's window: `max_streams` × `stream_window` is the
/// connection window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Http2Config {
    /// Serve HTTP/2 (off: the HTTP/2 preface is answered as a bad HTTP/1.1 request, and
    /// TLS offers no ALPN protocol). Default: on.
    pub enabled: bool,
    /// Streams a client may have open at once on one connection. Default: 100.
    pub max_streams: u32,
    /// Each stream's flow-control window, in bytes. Default: 128 KiB.
    pub stream_window: u32,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            enabled: true,
            max_streams: 100,
            stream_window: 128 << 10,
        }
    }
}

impl Http2Config {
    /// The connection's flow-control window: room for every stream's window.
    pub fn connection_window(&self) -> u32 {
        self.stream_window.saturating_mul(self.max_streams.max(1))
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("ws", &self.ws)
            .field("echo", &self.echo)
            .field("tls", &self.tls.is_some())
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("limits", &self.limits)
            .field("heartbeat", &self.heartbeat)
            .field("origins", &self.origins)
            .field("outbox", &self.outbox)
            .field("hub", &self.hub)
            .field("namespaces", &self.namespaces)
            .field("api_keys", &self.api_keys.len())
            .field("authenticator", &self.authenticator)
            .field("websocket_authenticator", &self.websocket_authenticator)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("io_uring", &self.io_uring)
            .field("socket_send_buffer", &self.socket_send_buffer)
            .field("http2", &self.http2)
            .finish()
    }
}

/// Two [`ServerConfig`]s are equal when every setting is; TLS acceptors and
/// authenticators only when they are the same one (shared).
impl PartialEq for ServerConfig {
    fn eq(&self, other: &Self) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (Some(a), Some(b)) => Arc::ptr_eq(a.config(), b.config()),
            (a, b) => a.is_none() && b.is_none(),
        };
        let same =
            |a: &Option<Arc<dyn Authenticator>>, b: &Option<Arc<dyn Authenticator>>| match (a, b) {
                (Some(a), Some(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
                (a, b) => a.is_none() && b.is_none(),
            };
        same_tls
            && same(&self.authenticator, &other.authenticator)
            && same(
                &self.websocket_authenticator,
                &other.websocket_authenticator,
            )
            && self.allow_anonymous == other.allow_anonymous
            && self.ws == other.ws
            && self.echo == other.echo
            && self.shutdown_timeout == other.shutdown_timeout
            && self.limits == other.limits
            && self.heartbeat == other.heartbeat
            && self.origins == other.origins
            && self.outbox == other.outbox
            && self.hub == other.hub
            && self.namespaces == other.namespaces
            && self.api_keys == other.api_keys
            && self.io_uring == other.io_uring
            && self.socket_send_buffer == other.socket_send_buffer
            && self.http2 == other.http2
    }
}

/// `config` with messages and frames of up to `max` bytes, and room to queue two of them
/// (at least `min_write_buffer`).
fn sized(config: Config, max: usize, min_write_buffer: usize) -> Config {
    config
        .max_message_size(max)
        .max_frame_size(max)
        .max_write_buffer(max.saturating_mul(2).max(min_write_buffer))
}

impl Default for ServerConfig {
    fn default() -> Self {
        let deflate = Some(Self::deflate_config(false));
        Self {
            ws: sized(Config::default(), MAX_MESSAGE_SIZE, 4 << 20).deflate(deflate),
            echo: sized(Config::default(), ECHO_MAX_MESSAGE_SIZE, 1 << 20).deflate(deflate),
            tls: None,
            shutdown_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            heartbeat: HeartbeatConfig::default(),
            origins: OriginPolicy::default(),
            outbox: OutboxLimits::default(),
            hub: HubConfig::default(),
            namespaces: Namespaces::default(),
            api_keys: Vec::new(),
            authenticator: None,
            websocket_authenticator: None,
            allow_anonymous: false,
            io_uring: false,
            socket_send_buffer: 256 << 10,
            http2: Http2Config::default(),
        }
    }
}

impl ServerConfig {
    /// The permessage-deflate parameters the server accepts: 15-bit windows, compression
    /// level 1, and either no context takeover in either direction (`false`: idle
    /// connections hold no zlib memory; messages under [`DEFLATE_THRESHOLD`] go
    /// uncompressed) or context takeover (better ratio, ~300 KiB of zlib state per
    /// connection that compresses; threshold [`DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER`]).
    ///
    /// ```
    /// use switchboard_server::ServerConfig;
    /// let d = ServerConfig::deflate_config(false);
    /// assert!(d.server_no_context_takeover && d.client_no_context_takeover);
    /// assert_eq!(ServerConfig::default().ws.deflate, Some(d));
    /// ```
    pub fn deflate_config(context_takeover: bool) -> DeflateConfig {
        let threshold = if context_takeover {
            DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER
        } else {
            DEFLATE_THRESHOLD
        };
        DeflateConfig::default()
            .server_no_context_takeover(!context_takeover)
            .client_no_context_takeover(!context_takeover)
            .threshold(threshold)
    }

    /// Sets permessage-deflate on every endpoint (`None`: not negotiated).
    pub fn deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.ws = self.ws.deflate(deflate);
        self.echo = self.echo.deflate(deflate);
        self
    }

    /// Sets the largest message (and frame) on `/chat` and `/ws`, with room to queue two
    /// (at least 4 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.ws = sized(self.ws, bytes, 4 << 20);
        self
    }

    /// Sets the largest message (and frame) on `/echo`, with room to queue two (at least
    /// 1 MiB).
    pub fn echo_max_message_size(mut self, bytes: usize) -> Self {
        self.echo = sized(self.echo, bytes, 1 << 20);
        self
    }

    /// Sets the protocol limits of `/chat` and `/ws`.
    pub fn ws(mut self, ws: Config) -> Self {
        self.ws = ws;
        self
    }

    /// Sets the protocol limits of `/echo`.
    pub fn echo(mut self, echo: Config) -> Self {
        self.echo = echo;
        self
    }

    /// Serves HTTP/2 on the port, or not (see [`ServerConfig::http2`]).
    pub fn http2(mut self, on: bool) -> Self {
        self.http2.enabled = on;
        self
    }

    /// Drives sockets through io_uring (see [`ServerConfig::io_uring`]).
    pub fn io_uring(mut self, on: bool) -> Self {
        self.io_uring = on;
        self
    }

    /// Sets the kernel's send buffer per connection (see
    /// [`ServerConfig::socket_send_buffer`]).
    pub fn socket_send_buffer(mut self, bytes: usize) -> Self {
        self.socket_send_buffer = bytes;
        self
    }

    /// Serves TLS with this acceptor.
    pub fn tls(mut self, tls: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets heartbeats and the idle timeout.
    pub fn heartbeat(mut self, heartbeat: HeartbeatConfig) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets the origin policy.
    pub fn origins(mut self, origins: OriginPolicy) -> Self {
        self.origins = origins;
        self
    }

    /// Sets the outbox bounds and slow-consumer policy.
    pub fn outbox(mut self, outbox: OutboxLimits) -> Self {
        self.outbox = outbox;
        self
    }

    /// Sets the hub's settings.
    pub fn hub(mut self, hub: HubConfig) -> Self {
        self.hub = hub;
        self
    }

    /// Sets the namespaces (see [`Namespaces`]).
    pub fn namespaces(mut self, namespaces: Namespaces) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Adds a key `POST /api/publish` accepts.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_keys.push(key.into());
        self
    }

    /// Sets the keys `POST /api/publish` accepts, any one of them (rotation: the old and
    /// the new; or one per backend).
    pub fn api_keys(mut self, keys: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.api_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Sets who may use `POST /api/publish` (see [`Authenticator`]), in place of the API
    /// key check.
    pub fn authenticator(mut self, auth: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(auth));
        self
    }

    /// Sets who may open `/ws` and `/chat` (see
    /// [`websocket_authenticator`](Self::websocket_authenticator)).
    pub fn websocket_authenticator(mut self, auth: impl Authenticator) -> Self {
        self.websocket_authenticator = Some(Arc::new(auth));
        self
    }

    /// Lets handshakes without credentials in as anonymous guests when a
    /// [`websocket_authenticator`](Self::websocket_authenticator) is set.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// Sets how long shutdown waits for connections.
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.shutdown_timeout = t;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_the_setters_that_derive_them_agree() {
        let c = ServerConfig::default();
        assert_eq!(
            (
                c.ws.max_message_size,
                c.ws.max_frame_size,
                c.ws.max_write_buffer
            ),
            (64 << 10, 64 << 10, 4 << 20)
        );
        assert_eq!(
            (c.echo.max_message_size, c.echo.max_write_buffer),
            (16 << 20, Config::default().max_write_buffer)
        );
        let d = c.ws.deflate.expect("deflate on by default");
        assert_eq!(c.echo.deflate, Some(d));
        assert_eq!(
            (d.threshold, d.server_max_window_bits),
            (DEFLATE_THRESHOLD, 15)
        );
        let again = ServerConfig::default()
            .max_message_size(MAX_MESSAGE_SIZE)
            .echo_max_message_size(ECHO_MAX_MESSAGE_SIZE)
            .deflate(Some(ServerConfig::deflate_config(false)));
        assert_eq!(again, c);
        assert_ne!(c.clone().deflate(None), c);
        assert_ne!(c.clone().api_key("k"), c);
        let big = c.clone().max_message_size(8 << 20);
        assert_eq!(big.ws.max_write_buffer, 16 << 20);
    }
}
