//! Connecting to a WebSocket server: `ws://` over TCP, `wss://` over rustls.

use std::time::Duration;

use switchboard_proto::handshake::client::{ClientRequest, Response};
use switchboard_proto::handshake::HandshakeError;
use switchboard_proto::{Config, Connection, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::maybe_tls::MaybeTlsStream;
use crate::proxy::{InvalidProxyUrl, Proxy, ProxySettings};
use crate::WebSocket;

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// Whether the scheme is `wss`.
    pub tls: bool,
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port (80/443 when not given).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl WsUrl {
    /// Parses a URL. `http://` and `https://` are accepted as `ws://` and `wss://`.
    ///
    /// ```
    /// use switchboard_tokio::client::WsUrl;
    /// let u = WsUrl::parse("wss://example.com:8443/chat?room=a").unwrap();
    /// assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (true, "example.com", 8443, "/chat?room=a"));
    /// let u = WsUrl::parse("ws://[::1]/").unwrap();
    /// assert_eq!((u.host.as_str(), u.port), ("::1", 80));
    /// assert!(WsUrl::parse("ftp://x").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected ws://HOST[:PORT]/PATH or wss://…"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => false,
            "wss" | "https" => true,
            _ => return Err(bad("the scheme must be ws or wss")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let path = path.split('#').next().unwrap_or("/").to_string();
        if authority.contains('@') {
            return Err(bad("user information in the URL is not supported"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in IPv6 host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("unexpected text after IPv6 host")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("invalid port"))?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(Self {
            tls,
            host,
            port,
            path,
        })
    }

    /// The `Host` header value: the port only when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Connects with default settings.
///
/// ```no_run
/// # async fn run() -> Result<(), switchboard_tokio::Error> {
/// use switchboard_tokio::{connect, Message};
/// let (mut ws, response) = connect("ws://127.0.0.1:8080/echo").await?;
/// ws.send(&Message::text("hello")).await?;
/// let reply = ws.recv().await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTlsStream>, Response), Error> {
    ClientBuilder::new(url).connect().await
}

/// Options for a client connection.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    config: Config,
    protocols: Vec<String>,
    headers: Vec<(String, String)>,
    origin: Option<String>,
    connect_timeout: Duration,
    more_deflate_offers: Vec<switchboard_proto::extension::DeflateConfig>,
    proxy: ProxyChoice,
    http2: crate::Http2,
    http2_settings: crate::h2::Http2Settings,
    #[cfg(feature = "rustls")]
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Where a [`ClientBuilder`]'s proxy settings came from.
#[derive(Debug, Clone)]
enum ProxyChoice {
    Settings(ProxySettings),
    /// The environment named a proxy we cannot use: every connection fails saying so.
    Invalid(InvalidProxyUrl),
}

impl ClientBuilder {
    /// A client for `url` with default limits.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            config: Config::default(),
            protocols: Vec::new(),
            headers: Vec::new(),
            origin: None,
            connect_timeout: Duration::from_secs(10),
            more_deflate_offers: Vec::new(),
            proxy: ProxyChoice::Settings(ProxySettings::default()),
            http2: crate::Http2::Off,
            http2_settings: crate::h2::Http2Settings::default(),
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }

    /// Whether to carry the WebSocket over HTTP/2 (RFC 8441): [`Http2::Off`](crate::Http2)
    /// (the default), `Prefer` (HTTP/2 when a `wss://` server offers it, else HTTP/1.1) or
    /// `Force` (HTTP/2 or an error). See [`Http2`](crate::Http2).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), switchboard_tokio::Error> {
    /// use switchboard_tokio::{ClientBuilder, Http2};
    /// let (ws, response) = ClientBuilder::new("wss://example.com/chat")
    ///     .http2(Http2::Prefer)
    ///     .connect()
    ///     .await?;
    /// println!("over HTTP/2: {}", ws.get_ref().is_http2());
    /// # Ok(()) }
    /// ```
    pub fn http2(mut self, mode: crate::Http2) -> Self {
        self.http2 = mode;
        self
    }

    /// The flow-control windows and buffers of the HTTP/2 connections opened (see
    /// [`Http2Settings`](crate::h2::Http2Settings)).
    pub fn http2_settings(mut self, settings: crate::h2::Http2Settings) -> Self {
        self.http2_settings = settings;
        self
    }

    /// The HTTP/2 mode set with [`http2`](Self::http2).
    pub fn http2_mode(&self) -> crate::Http2 {
        self.http2
    }

    /// The HTTP/2 settings set with [`http2_settings`](Self::http2_settings).
    pub fn http2_settings_ref(&self) -> &crate::h2::Http2Settings {
        &self.http2_settings
    }

    /// The [`Config`] set with [`config`](Self::config).
    pub fn config_ref(&self) -> &Config {
        &self.config
    }

    /// Sets the limits and timeouts, and with [`Config::deflate`] the permessage-deflate offer.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Offers a subprotocol (call again for more, in order of preference).
    pub fn protocol(mut self, p: impl Into<String>) -> Self {
        self.protocols.push(p.into());
        self
    }

    /// Adds a request header (for example `Authorization`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the `Origin` header.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Adds a permessage-deflate offer after the one in [`Config::deflate`], in order of
    /// preference (for example a strict low-memory offer first, a plain one as fallback).
    pub fn deflate_offer(mut self, offer: switchboard_proto::extension::DeflateConfig) -> Self {
        self.more_deflate_offers.push(offer);
        self
    }

    /// How long opening the connection may take: TCP, the proxy's handshake if any, and TLS
    /// for `wss://` (the WebSocket handshake has [`Config::handshake_timeout`]). Default:
    /// 10 s.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Connects through `proxy` (HTTP `CONNECT` or SOCKS5), whatever the URL and the
    /// environment say. See [`proxy`](crate::proxy).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxyChoice::Settings(ProxySettings::all(proxy));
        self
    }

    /// Picks the proxy per URL with `settings` (per scheme, with `NO_PROXY` exemptions);
    /// `ProxySettings::default()` connects directly (the default).
    pub fn proxy_settings(mut self, settings: ProxySettings) -> Self {
        self.proxy = ProxyChoice::Settings(settings);
        self
    }

    /// Reads the proxy environment variables now (`HTTPS_PROXY` for `wss://`, `HTTP_PROXY`
    /// for `ws://`, `ALL_PROXY`, `NO_PROXY`, and their lower-case spellings: see
    /// [`ProxySettings::from_vars`]) and uses what they say. A variable that holds an unusable
    /// proxy URL makes [`connect`](Self::connect) fail with an error naming it. Without this
    /// call the environment is never read.
    pub fn proxy_from_env(mut self) -> Self {
        self.proxy = match ProxySettings::from_env() {
            Ok(s) => ProxyChoice::Settings(s),
            Err(e) => ProxyChoice::Invalid(e),
        };
        self
    }

    /// The proxy these settings use for `url` (`None`: a direct connection), or the error of
    /// an unusable proxy URL read by [`proxy_from_env`](Self::proxy_from_env).
    pub fn proxy_for(&self, url: &WsUrl) -> Result<Option<&Proxy>, Error> {
        match &self.proxy {
            ProxyChoice::Settings(s) => Ok(s.proxy_for(url)),
            ProxyChoice::Invalid(e) => Err(e.clone().into()),
        }
    }

    /// The TLS configuration for `wss://` (default: the bundled webpki roots). See
    /// [`tls::client_config`](crate::tls::client_config) for a custom CA.
    #[cfg(feature = "rustls")]
    pub fn tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// The handshake request this builder sends to `url`'s host and path.
    pub fn request(&self, url: &WsUrl) -> ClientRequest {
        let mut req = ClientRequest::new(url.host_header(), url.path.clone());
        if let Some(o) = &self.origin {
            req = req.origin(o.clone());
        }
        for p in &self.protocols {
            req = req.protocol(p.clone());
        }
        for (n, v) in &self.headers {
            req = req.header(n.clone(), v.clone());
        }
        if let Some(d) = self.config.deflate {
            req = req.deflate(d);
        }
        for d in &self.more_deflate_offers {
            req = req.deflate(*d);
        }
        req
    }

    /// Connects, runs the handshake and returns the socket and the server's response.
    ///
    /// With [`http2`](Self::http2) set, the socket may be a stream of an HTTP/2 connection
    /// ([`MaybeTlsStream::H2`]; [`MaybeTlsStream::is_http2`] tells).
    pub async fn connect(&self) -> Result<(WebSocket<MaybeTlsStream>, Response), Error> {
        let url = WsUrl::parse(&self.url)?;
        let request = self.request(&url);
        match self.open_http(&url).await? {
            crate::h2::Opened::Http1(stream) => {
                client_handshake(stream, &request, self.config).await
            }
            crate::h2::Opened::Http2(h2) => {
                crate::h2::h2_websocket(&h2, url.tls, &request, self.config).await
            }
        }
    }

    /// Opens the TCP connection to `url` (through the proxy, if one applies) and the TLS
    /// session for `wss://`, within the [connect timeout](Self::connect_timeout), without
    /// the WebSocket handshake; [`client_handshake`] with [`request`](Self::request)
    /// completes it. For tools that show each step; [`connect`](Self::connect) does both.
    /// HTTP/1.1 only, whatever the [`http2`](Self::http2) mode: TLS offers no ALPN
    /// protocol of ours; [`open_http`](Self::open_http) follows the mode.
    pub async fn open(&self, url: &WsUrl) -> Result<MaybeTlsStream, Error> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let tcp = self.tcp_until(url, deadline).await?;
        self.secure(tcp, url, deadline, None).await
    }

    /// Opens the TCP connection to `url`'s server, or the tunnel to it through the proxy
    /// if one applies, within the [connect timeout](Self::connect_timeout): the first step
    /// of [`open`](Self::open), for tools that run the next ones themselves.
    pub async fn open_tcp(&self, url: &WsUrl) -> Result<TcpStream, Error> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        self.tcp_until(url, deadline).await
    }

    pub(crate) async fn tcp_until(
        &self,
        url: &WsUrl,
        deadline: tokio::time::Instant,
    ) -> Result<TcpStream, Error> {
        let tcp = match self.proxy_for(url)? {
            Some(proxy) => {
                let mut info = crate::proxy::TunnelInfo::default();
                proxy
                    .tunnel_until(
                        &url.host,
                        url.port,
                        deadline,
                        self.connect_timeout,
                        &mut info,
                    )
                    .await?
            }
            None => {
                let connect = TcpStream::connect((url.host.as_str(), url.port));
                let tcp = tokio::time::timeout_at(deadline, connect)
                    .await
                    .map_err(|_| self.timed_out(url))??;
                let _ = tcp.set_nodelay(true);
                tcp
            }
        };
        Ok(tcp)
    }

    /// Runs TLS for `wss://` (nothing for `ws://`) on `tcp`, a connection to `url`'s server
    /// or a tunnel to it ([`Proxy::tunnel`]), with `url`'s host as the server name, within
    /// the [connect timeout](Self::connect_timeout).
    pub async fn open_over(&self, tcp: TcpStream, url: &WsUrl) -> Result<MaybeTlsStream, Error> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        self.secure(tcp, url, deadline, None).await
    }

    pub(crate) fn connect_timeout_value(&self) -> Duration {
        self.connect_timeout
    }

    fn timed_out(&self, url: &WsUrl) -> Error {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "connecting to {}:{} timed out after {:?}",
                url.host, url.port, self.connect_timeout
            ),
        ))
    }

    /// TLS for `wss://`, offering `alpn` (none: the configuration's own) by ALPN.
    pub(crate) async fn secure(
        &self,
        tcp: TcpStream,
        url: &WsUrl,
        deadline: tokio::time::Instant,
        alpn: Option<&[&[u8]]>,
    ) -> Result<MaybeTlsStream, Error> {
        if !url.tls {
            return Ok(MaybeTlsStream::Plain(tcp));
        }
        #[cfg(feature = "rustls")]
        {
            let mut config = match &self.tls {
                Some(c) => std::sync::Arc::clone(c),
                None => crate::tls::client_config(None)?,
            };
            if let Some(protocols) = alpn {
                let mut with_alpn = (*config).clone();
                with_alpn.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
                config = std::sync::Arc::new(with_alpn);
            }
            let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                .map_err(|e| Error::Tls(format!("invalid server name {:?}: {e}", url.host)))?;
            let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
            let tls = tokio::time::timeout_at(deadline, handshake)
                .await
                .map_err(|_| self.timed_out(url))?
                .map_err(|e| Error::Tls(e.to_string()))?;
            Ok(MaybeTlsStream::Tls(Box::new(tls)))
        }
        #[cfg(not(feature = "rustls"))]
        {
            let _ = (deadline, alpn);
            drop(tcp);
            Err(Error::Tls(
                "wss:// needs the `rustls` feature of switchboard-tokio".into(),
            ))
        }
    }
}

/// Runs the client handshake on an open stream (TCP, TLS, Unix socket, …).
///
/// Bounded by [`Config::handshake_timeout`] and [`Config::max_handshake_size`]. A response
/// other than `101` becomes [`Error::Rejected`] with the status and the body's first line.
pub async fn client_handshake<S>(
    mut stream: S,
    request: &ClientRequest,
    config: impl Into<std::sync::Arc<Config>>,
) -> Result<(WebSocket<S>, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config: std::sync::Arc<Config> = config.into();
    let timeout = config.handshake_timeout;
    let run = async {
        stream.write_all(&request.encode()?).await?;
        stream.flush().await?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            match request.parse_response(&buf, &config) {
                Ok(Some((resp, used))) => return Ok((resp, buf.split_off(used))),
                Ok(None) => {}
                Err(HandshakeError::UnexpectedStatus { status, reason }) => {
                    let body = read_body_line(&mut stream, &mut buf).await;
                    return Err(Error::Rejected {
                        status,
                        reason,
                        body,
                    });
                }
                Err(e) => return Err(Error::Handshake(e)),
            }
            let start = buf.len();
            buf.resize(start + 2048, 0);
            let n = stream.read(&mut buf[start..]).await?;
            buf.truncate(start + n);
            if n == 0 {
                return Err(Error::Handshake(HandshakeError::Malformed(
                    "connection closed before the response was complete".into(),
                )));
            }
        }
    };
    let (resp, leftover) = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| Error::HandshakeTimeout(timeout))??;
    let mut conn = Connection::new(Role::Client, config);
    if let Some(params) = resp.deflate {
        conn = conn.with_deflate(params);
    }
    conn.handle_read(&leftover);
    Ok((WebSocket::from_connection(stream, conn), resp))
}

/// The first line of an error response's body (best effort, a short wait, at most 4 KiB).
async fn read_body_line<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> String {
    let head_end = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        if let Some(end) = head_end(buf) {
            let body = &buf[end..];
            if let Some(nl) = body.iter().position(|&b| b == b'\n') {
                return String::from_utf8_lossy(&body[..nl]).trim().to_string();
            }
            if body.len() >= 4096 {
                return String::from_utf8_lossy(&body[..4096]).trim().to_string();
            }
        }
        let start = buf.len();
        buf.resize(start + 1024, 0);
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf[start..])).await {
            Ok(Ok(n)) => n,
            _ => 0,
        };
        buf.truncate(start + n);
        if n == 0 {
            return head_end(buf)
                .map(|end| String::from_utf8_lossy(&buf[end..]).trim().to_string())
                .unwrap_or_default();
        }
    }
}
