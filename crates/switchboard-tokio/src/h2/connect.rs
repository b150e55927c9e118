//! Choosing HTTP/1.1 or HTTP/2 for a client connection ([`Http2`]), and opening it.

use switchboard_proto::handshake::client::{ClientRequest, Response};
use switchboard_proto::{Config, Connection, Role};
use tokio::net::TcpStream;

use super::client::{extended_connect, H2Client};
use super::error::Http2Error;
use crate::client::{client_handshake, ClientBuilder, WsUrl};
use crate::error::Error;
use crate::maybe_tls::MaybeTlsStream;
use crate::WebSocket;

/// ALPN protocol names.
const H2: &[u8] = b"h2";
const HTTP11: &[u8] = b"http/1.1";

/// Whether a client carries its WebSocket over HTTP/2 (RFC 8441).
///
/// | mode | `ws://` | `wss://` |
/// |---|---|---|
/// | `Off` | HTTP/1.1 | HTTP/1.1, no ALPN |
/// | `Prefer` | HTTP/1.1 | ALPN `h2, http/1.1`; HTTP/2 if selected and the server's SETTINGS enable the extended CONNECT, else HTTP/1.1 (on a new connection with ALPN `http/1.1` if the first one became HTTP/2) |
/// | `Force` | h2c (prior knowledge) | ALPN `h2` |
///
/// `Prefer` never guesses h2c on `ws://`: a server that does not speak HTTP/2 would see a
/// malformed request. `Force` fails with [`Http2Error::NotNegotiated`] or
/// [`Http2Error::ConnectProtocolDisabled`] (inside [`Error::Http2`]) when the server cannot.
///
/// ```
/// use switchboard_tokio::{ClientBuilder, Http2};
/// let b = ClientBuilder::new("wss://example.com/chat").http2(Http2::Prefer);
/// assert_eq!(b.http2_mode(), Http2::Prefer);
/// assert_eq!(Http2::default(), Http2::Off);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Http2 {
    /// HTTP/1.1 only (the default).
    #[default]
    Off,
    /// HTTP/2 when a `wss://` server offers it, else HTTP/1.1.
    Prefer,
    /// HTTP/2 or an error.
    Force,
}

/// A connection opened by [`ClientBuilder::open_http`], ready for the WebSocket handshake of
/// its HTTP version.
#[derive(Debug)]
pub enum Opened {
    /// An HTTP/1.1 connection: run [`client_handshake`](crate::client_handshake).
    Http1(MaybeTlsStream),
    /// An HTTP/2 connection whose server enabled the extended CONNECT: run
    /// [`extended_connect`](super::extended_connect) or
    /// [`H2Client::websocket`].
    Http2(H2Client),
}

/// A WebSocket on a new stream of `h2`, as a [`MaybeTlsStream::H2`].
pub(crate) async fn h2_websocket(
    h2: &H2Client,
    tls: bool,
    request: &ClientRequest,
    config: Config,
) -> Result<(WebSocket<MaybeTlsStream>, Response), Error> {
    let mut send = h2.send_request();
    let (stream, resp) = extended_connect(&mut send, tls, request, &config).await?;
    let mut conn = Connection::new(Role::Client, config);
    if let Some(params) = resp.deflate {
        conn = conn.with_deflate(params);
    }
    let stream = MaybeTlsStream::H2(Box::new(stream));
    Ok((WebSocket::from_connection(stream, conn), resp))
}

impl ClientBuilder {
    /// Connects over `tcp`, a connection to `url`'s server (or a tunnel to it) the caller
    /// opened (say from a chosen local address): TLS for `wss://`, then the handshake;
    /// with [`Http2::Force`] over HTTP/2 ([`open_http2_over`](Self::open_http2_over)).
    /// [`Http2::Prefer`] is HTTP/1.1 here: its fallback would need a new connection.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_over(
        &self,
        tcp: TcpStream,
        url: &WsUrl,
    ) -> Result<(WebSocket<MaybeTlsStream>, Response), Error> {
        let request = self.request(url);
        let config = *self.config_ref();
        if self.http2_mode() == Http2::Force {
            let h2 = self.open_http2_over(tcp, url).await?;
            return h2_websocket(&h2, url.tls, &request, config).await;
        }
        let stream = self.open_over(tcp, url).await?;
        client_handshake(stream, &request, config).await
    }

    /// Opens a connection to `url` (through the proxy if one applies; TLS for `wss://`) in
    /// the HTTP version the [`http2`](Self::http2) mode picks (see [`Http2`]), falling back
    /// to HTTP/1.1 where `Prefer` says so. [`connect`](Self::connect) does this and the
    /// handshake.
    ///
    /// # Errors
    /// As [`open`](Self::open); with [`Http2::Force`] also [`Error::Http2`].
    pub async fn open_http(&self, url: &WsUrl) -> Result<Opened, Error> {
        match (self.http2_mode(), url.tls) {
            (Http2::Off, _) | (Http2::Prefer, false) => Ok(Opened::Http1(self.open(url).await?)),
            (Http2::Force, _) => {
                let tcp = self.open_tcp(url).await?;
                Ok(Opened::Http2(self.open_http2_over(tcp, url).await?))
            }
            (Http2::Prefer, true) => self.prefer_h2(url).await,
        }
    }

    /// `Prefer` on `wss://`: ALPN `h2, http/1.1`.
    async fn prefer_h2(&self, url: &WsUrl) -> Result<Opened, Error> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout_value();
        let tcp = self.tcp_until(url, deadline).await?;
        let stream = self.secure(tcp, url, deadline, Some(&[H2, HTTP11])).await?;
        if stream.alpn_protocol() != Some(H2) {
            return Ok(Opened::Http1(stream));
        }
        let client = H2Client::handshake_with(stream, self.http2_settings_ref()).await?;
        if client.is_extended_connect_enabled() {
            return Ok(Opened::Http2(client));
        }
        tracing::debug!(
            host = %url.host,
            "HTTP/2 without the extended CONNECT: falling back to HTTP/1.1 on a new connection"
        );
        drop(client);
        let deadline = tokio::time::Instant::now() + self.connect_timeout_value();
        let tcp = self.tcp_until(url, deadline).await?;
        let stream = self.secure(tcp, url, deadline, Some(&[HTTP11])).await?;
        Ok(Opened::Http1(stream))
    }

    /// Makes `tcp` (a connection to `url`'s server, or a tunnel to it) an HTTP/2 connection
    /// ready for WebSockets, as [`Http2::Force`] does: h2c with prior knowledge for `ws://`,
    /// TLS with ALPN `h2` for `wss://`, the server's SETTINGS read. For tools that open the
    /// TCP connection themselves ([`open_tcp`](Self::open_tcp), [`Proxy::tunnel`](crate::proxy::Proxy::tunnel)).
    ///
    /// # Errors
    /// As [`open_over`](Self::open_over); [`Error::Http2`] when the server did not select
    /// `h2` by ALPN, its SETTINGS did not enable the extended CONNECT, or HTTP/2 failed.
    pub async fn open_http2_over(&self, tcp: TcpStream, url: &WsUrl) -> Result<H2Client, Error> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout_value();
        let stream = if url.tls {
            let s = match self.secure(tcp, url, deadline, Some(&[H2])).await {
                // rustls: the server has ALPN protocols, none of them h2.
                Err(Error::Tls(m)) if m.contains("NoApplicationProtocol") => {
                    let why = "a refusal of h2 (TLS alert no_application_protocol)";
                    return Err(Http2Error::NotNegotiated(why.to_string()).into());
                }
                other => other?,
            };
            if s.alpn_protocol() != Some(H2) {
                let got = s.alpn_protocol().map_or_else(
                    || "without ALPN".to_string(),
                    |p| format!("{:?}", String::from_utf8_lossy(p)),
                );
                return Err(Http2Error::NotNegotiated(got).into());
            }
            s
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        let client = H2Client::handshake_with(stream, self.http2_settings_ref()).await?;
        if !client.is_extended_connect_enabled() {
            return Err(Http2Error::ConnectProtocolDisabled.into());
        }
        Ok(client)
    }
}
