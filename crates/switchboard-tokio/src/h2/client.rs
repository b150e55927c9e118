//! The client side of RFC 8441: an HTTP/2 connection ([`H2Client`]) and WebSockets opened on
//! it by extended CONNECT ([`extended_connect`], [`websocket_on`]).

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use switchboard_proto::handshake::client::{ClientRequest, Response};
use switchboard_proto::handshake::extended::WEBSOCKET_PROTOCOL;
use switchboard_proto::handshake::{HandshakeError, Header};
use switchboard_proto::{Config, Connection, Role};
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::Http2Error;
use super::stream::H2Stream;
use crate::error::Error;
use crate::WebSocket;

/// Flow control and buffers of the HTTP/2 connections a client opens, set rather than left
/// to `h2`'s defaults (a 64 KiB connection window shared by every stream, which one unread
/// stream would fill).
///
/// Each stream may receive [`stream_window`](Self::stream_window) bytes the WebSocket has
/// not read; the connection window is that times [`max_streams`](Self::max_streams), so a
/// stalled stream never holds up the others (as long as the connection carries at most
/// that many).
///
/// ```
/// use switchboard_tokio::h2::Http2Settings;
/// let s = Http2Settings::default();
/// assert_eq!(s.connection_window(), 100 * 128 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// What the server may send on one stream before the WebSocket reads it. Default 128 KiB.
    pub stream_window: u32,
    /// How many WebSockets one connection is sized for. Default 100.
    pub max_streams: u32,
    /// What one stream may hand to `h2` beyond its send window. Default 64 KiB.
    pub max_send_buffer: usize,
    /// The largest response header list accepted. Default 64 KiB.
    pub max_header_list: u32,
    /// How long the server's SETTINGS may take (the PING round trip). Default 10 s.
    pub settings_timeout: Duration,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            stream_window: 128 * 1024,
            max_streams: 100,
            max_send_buffer: 64 * 1024,
            max_header_list: 64 * 1024,
            settings_timeout: Duration::from_secs(10),
        }
    }
}

impl Http2Settings {
    /// The connection's receive window: `stream_window × max_streams`, at most 2³¹ − 1.
    pub fn connection_window(&self) -> u32 {
        self.stream_window
            .saturating_mul(self.max_streams)
            .min(i32::MAX as u32)
    }

    /// How many small DATA frames the connection may hold unread (`h2` charges a frame of
    /// fewer than 256 bytes `256 − len` of this budget, and closes the whole connection with
    /// `ENHANCE_YOUR_CALM` when it runs out): `stream_window × 128`, room for a whole
    /// stream window of the smallest WebSocket frames (2 bytes each) that a WebSocket is not
    /// reading. `h2`'s own budget (half the connection window) would let one unread stream
    /// that receives tiny messages close the connection under every other stream. The
    /// memory it lets through stays bounded (about 150 bytes per frame held).
    pub fn data_frame_budget(&self) -> usize {
        (self.stream_window as usize).saturating_mul(128)
    }
}

/// A client's HTTP/2 connection, ready for WebSockets (RFC 8441) once
/// [`is_extended_connect_enabled`](Self::is_extended_connect_enabled).
///
/// [`handshake`](Self::handshake) spawns the connection's driver task (it ends when the
/// client and every stream are dropped) and makes one PING round trip: the server's SETTINGS
/// are its first frame, so once the PONG is back they are final, and "the server does not
/// offer WebSockets over HTTP/2" is a fact, not a timeout.
///
/// ```no_run
/// # async fn run() -> Result<(), switchboard_tokio::Error> {
/// use switchboard_tokio::{client::WsUrl, h2::H2Client, ClientBuilder, Message};
/// // h2c (prior knowledge) on plain TCP; over TLS, a stream whose ALPN selected "h2".
/// let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
/// let h2 = H2Client::handshake(tcp).await?;
/// let url = WsUrl::parse("ws://127.0.0.1:8080/echo")?;
/// let builder = ClientBuilder::new("ws://127.0.0.1:8080/echo");
/// // Two WebSockets, one connection.
/// let (mut a, _) = h2.websocket(&url, &builder).await?;
/// let (mut b, _) = h2.websocket(&url, &builder).await?;
/// a.send(&Message::text("on stream 1")).await?;
/// b.send(&Message::text("on stream 3")).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct H2Client {
    send: SendRequest<Bytes>,
    extended: bool,
}

impl H2Client {
    /// The HTTP/2 handshake on `io` with [`Http2Settings::default`].
    ///
    /// # Errors
    /// [`Error::Http2`]: the connection failed or the server did not answer in time.
    pub async fn handshake<T>(io: T) -> Result<Self, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::handshake_with(io, &Http2Settings::default()).await
    }

    /// The HTTP/2 handshake on `io` (plain TCP for h2c, or TLS that selected `h2`), with
    /// these settings: the preface and our SETTINGS, the driver task spawned, a PING round
    /// trip for the server's SETTINGS.
    ///
    /// # Errors
    /// [`Error::Http2`]: the connection failed, or no PONG within
    /// [`settings_timeout`](Http2Settings::settings_timeout).
    pub async fn handshake_with<T>(io: T, settings: &Http2Settings) -> Result<Self, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let timeout = settings.settings_timeout;
        let handshake = h2::client::Builder::new()
            .initial_window_size(settings.stream_window)
            .initial_connection_window_size(settings.connection_window())
            .max_send_buffer_size(settings.max_send_buffer)
            .max_header_list_size(settings.max_header_list)
            .data_frame_budget(settings.data_frame_budget())
            .enable_push(false)
            .handshake::<_, Bytes>(io);
        let (send, mut connection) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| Http2Error::Timeout(timeout))??;
        let ping_pong = connection.ping_pong();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/2 client connection ended");
            }
        });
        if let Some(mut pp) = ping_pong {
            tokio::time::timeout(timeout, pp.ping(h2::Ping::opaque()))
                .await
                .map_err(|_| Http2Error::Timeout(timeout))??;
        }
        let extended = send.is_extended_connect_protocol_enabled();
        Ok(Self { send, extended })
    }

    /// Whether the server's SETTINGS enabled the extended CONNECT protocol, so WebSockets
    /// can be opened on this connection.
    pub fn is_extended_connect_enabled(&self) -> bool {
        self.extended
    }

    /// The connection's request handle, for [`websocket_on`] or other requests.
    pub fn send_request(&self) -> SendRequest<Bytes> {
        self.send.clone()
    }

    /// Opens a WebSocket to `url`'s path on this connection, with `builder`'s subprotocols,
    /// headers, origin, deflate offers and [`Config`] (its URL, proxy and TLS settings are
    /// not used: the connection is open).
    ///
    /// # Errors
    /// As [`websocket_on`].
    #[cfg(feature = "client")]
    pub async fn websocket(
        &self,
        url: &crate::client::WsUrl,
        builder: &crate::ClientBuilder,
    ) -> Result<(WebSocket<H2Stream>, Response), Error> {
        let mut send = self.send.clone();
        let request = builder.request(url);
        websocket_on(&mut send, url.tls, &request, *builder.config_ref()).await
    }
}

/// Opens a WebSocket on an HTTP/2 connection the caller made (with the `h2` crate, whose
/// server's SETTINGS already arrived: see [`H2Client::handshake`]): the extended CONNECT
/// (`:protocol websocket`, `:scheme` `https` if `tls` else `http`, `:authority` and `:path`
/// from `request`), the answer checked, the WebSocket made with `config` and the deflate
/// parameters negotiated.
///
/// ```no_run
/// # async fn run(mut send: h2::client::SendRequest<bytes::Bytes>) -> Result<(), switchboard_tokio::Error> {
/// use switchboard_tokio::{h2::websocket_on, proto::handshake::client::ClientRequest, Config};
/// let request = ClientRequest::new("example.com", "/echo");
/// let (mut ws, response) = websocket_on(&mut send, true, &request, Config::default()).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Http2Error::ConnectProtocolDisabled`] (inside [`Error::Http2`]) when the server's
/// SETTINGS did not enable it; [`Error::Rejected`] for a status other than 2xx;
/// [`Error::Handshake`] when the answer fails a check; [`Error::HandshakeTimeout`] after
/// [`Config::handshake_timeout`].
pub async fn websocket_on(
    send: &mut SendRequest<Bytes>,
    tls: bool,
    request: &ClientRequest,
    config: impl Into<Arc<Config>>,
) -> Result<(WebSocket<H2Stream>, Response), Error> {
    let config: Arc<Config> = config.into();
    let (stream, response) = extended_connect(send, tls, request, &config).await?;
    let mut conn = Connection::new(Role::Client, config);
    if let Some(params) = response.deflate {
        conn = conn.with_deflate(params);
    }
    Ok((WebSocket::from_connection(stream, conn), response))
}

/// The extended CONNECT of [`websocket_on`] without making the WebSocket: the stream and the
/// checked answer, for callers that wrap the stream first (build the WebSocket with
/// [`Connection::with_deflate`] when [`Response::deflate`] is set).
///
/// # Errors
/// As [`websocket_on`].
pub async fn extended_connect(
    send: &mut SendRequest<Bytes>,
    tls: bool,
    request: &ClientRequest,
    config: &Config,
) -> Result<(H2Stream, Response), Error> {
    if !send.is_extended_connect_protocol_enabled() {
        return Err(Http2Error::ConnectProtocolDisabled.into());
    }
    let req = connect_request(tls, request)?;
    let timeout = config.handshake_timeout;
    let run = async {
        poll_fn(|cx| send.poll_ready(cx)).await?;
        let (response, send_stream) = send.send_request(req, false)?;
        let (parts, body) = response.await?.into_parts();
        let headers: Vec<Header> = parts
            .headers
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_string(), value)
            })
            .collect();
        match request.parse_extended_response(parts.status.as_u16(), &headers) {
            Ok(r) => Ok((H2Stream::new(send_stream, body), r)),
            Err(HandshakeError::UnexpectedStatus { status, reason }) => Err(Error::Rejected {
                status,
                reason,
                body: first_line(body).await,
            }),
            Err(e) => Err(e.into()),
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| Error::HandshakeTimeout(timeout))?
}

/// The `CONNECT` request with `:protocol websocket`.
fn connect_request(tls: bool, request: &ClientRequest) -> Result<http::Request<()>, Error> {
    let scheme = if tls { "https" } else { "http" };
    let uri = format!("{scheme}://{}{}", request.host(), request.path());
    let mut b = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(uri)
        .extension(h2::ext::Protocol::from_static(WEBSOCKET_PROTOCOL));
    for (n, v) in request.extended_headers()? {
        b = b.header(n, v);
    }
    b.body(())
        .map_err(|e| Error::Handshake(HandshakeError::InvalidHeader(e.to_string())))
}

/// The first line of a refusal's body (best effort: half a second, at most 4 KiB).
async fn first_line(mut body: h2::RecvStream) -> String {
    let mut buf = Vec::new();
    let read = async {
        while buf.len() < 4096 && !buf.contains(&b'\n') {
            match body.data().await {
                Some(Ok(data)) => {
                    let _ = body.flow_control().release_capacity(data.len());
                    buf.extend_from_slice(&data);
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), read).await;
    let text = String::from_utf8_lossy(&buf[..buf.len().min(4096)]).into_owned();
    text.lines().next().unwrap_or_default().trim().to_string()
}
