//! Accepting WebSocket connections on a raw stream.

use std::sync::Arc;
use switchboard_proto::handshake::server::{reason_phrase, reject, Request};
use switchboard_proto::handshake::sniff::{sniff, Sniff};
use switchboard_proto::handshake::HandshakeError;

use switchboard_proto::{Config, Connection, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Error;
use crate::WebSocket;

/// What to do with an upgrade request, decided by the callback of [`accept_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Complete the handshake.
    Accept {
        /// The subprotocol to select; it must be one the client offered.
        protocol: Option<String>,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Answer with an HTTP error and close.
    Reject {
        /// The status (for example 403 or 404).
        status: u16,
        /// A short plain-text body saying why.
        body: String,
    },
}

impl Decision {
    /// Accept with no subprotocol.
    pub fn accept() -> Self {
        Self::Accept {
            protocol: None,
            headers: Vec::new(),
        }
    }

    /// Reject with a status and a reason.
    pub fn reject(status: u16, body: impl Into<String>) -> Self {
        Self::Reject {
            status,
            body: body.into(),
        }
    }
}

/// Accepts a WebSocket on `stream`, whatever the request path.
pub async fn accept<S>(stream: S, config: impl Into<Arc<Config>>) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(stream, config, |_| Decision::accept())
        .await
        .map(|(ws, _)| ws)
}

/// Accepts a WebSocket on `stream` after `decide` has seen the request (path, headers,
/// offered subprotocols) and chosen to accept or reject it.
///
/// The request is read within [`Config::handshake_timeout`] and
/// [`Config::max_handshake_size`]; a malformed or refused request is answered with an HTTP
/// error naming the problem (400, 405, 426 with `Sec-WebSocket-Version: 13`, 431, or the
/// callback's status) before the error is returned.
///
/// ```no_run
/// # async fn run(stream: tokio::net::TcpStream) -> Result<(), switchboard_tokio::Error> {
/// use switchboard_tokio::{accept_with, Config, Decision};
/// let (mut ws, req) = accept_with(stream, Config::default(), |req| {
///     if req.path_only() != "/chat" {
///         return Decision::reject(404, "no such endpoint");
///     }
///     let protocol = req.choose_protocol(&["chat.v1"]).map(String::from);
///     Decision::Accept { protocol, headers: vec![] }
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn accept_with<S, F>(
    mut stream: S,
    config: impl Into<Arc<Config>>,
    decide: F,
) -> Result<(WebSocket<S>, Request), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> Decision,
{
    let config: Arc<Config> = config.into();
    let (req, leftover) = read_request(&mut stream, &config).await?;
    let (protocol, headers) = match decide(&req) {
        Decision::Accept { protocol, headers } => (protocol, headers),
        Decision::Reject { status, body } => {
            let _ = refuse(&mut stream, status, &body).await;
            return Err(Error::Rejected {
                status,
                reason: reason_phrase(status).to_string(),
                body,
            });
        }
    };
    let extra: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let ws = upgrade_request(stream, &req, &leftover, config, protocol.as_deref(), &extra).await?;
    Ok((ws, req))
}

/// The first half of [`accept_with`], for servers that also answer plain HTTP on the same
/// port: reads one request head within [`Config::handshake_timeout`] and
/// [`Config::max_handshake_size`], and returns it with the bytes that followed it (a request
/// body, or the first WebSocket frames). A malformed or late request is answered with the
/// HTTP error that names the problem (400, 408, 431, …) before the error is returned.
///
/// Then either [`upgrade_request`] completes a WebSocket handshake, or the caller answers it
/// as plain HTTP.
pub async fn read_request<S>(stream: &mut S, config: &Config) -> Result<(Request, Vec<u8>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match read_first(stream, config, false).await? {
        First::Http1 { req, buf, head_len } => Ok((req, leftover(buf, head_len))),
        // Not sniffed for: never returned.
        First::Http2(_) => Err(Error::Handshake(HandshakeError::HttpVersion)),
    }
}

/// What a connection starts with: a request head (HTTP/1.x), or the HTTP/2 preface.
#[derive(Debug)]
pub enum First {
    /// An HTTP/1.x request head, parsed.
    Http1 {
        /// The head.
        req: Request,
        /// Every byte read: the head, then what followed it (a body, pipelined requests,
        /// WebSocket frames), for another HTTP implementation to read the connection from its
        /// start. [`leftover`] keeps what followed the head.
        buf: Vec<u8>,
        /// The head's length in `buf`.
        head_len: usize,
    },
    /// The HTTP/2 connection preface (and whatever followed it): every byte read.
    Http2(Vec<u8>),
}

/// Like [`read_request`], for servers that hand plain HTTP to another implementation (which
/// parses the head again from the bytes returned) and, with `http2`, speak HTTP/2 with prior
/// knowledge on the same port: the HTTP/2 preface is recognised before the bytes are parsed
/// as an HTTP/1.1 head (see [`sniff`](switchboard_proto::handshake::sniff)). Errors are
/// answered as [`read_request`] answers them.
pub async fn read_first<S>(stream: &mut S, config: &Config, http2: bool) -> Result<First, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = config.handshake_timeout;
    match tokio::time::timeout(timeout, read_head(stream, config, http2)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(Error::Handshake(e))) => {
            let _ = refuse(stream, e.status(), &e.to_string()).await;
            Err(Error::Handshake(e))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let _ = refuse(stream, 408, "handshake timed out").await;
            Err(Error::HandshakeTimeout(timeout))
        }
    }
}

/// The bytes of `buf` after its head of `head_len` bytes, in a buffer of their own: usually
/// nothing follows the request, and the read buffer's capacity is not kept.
pub fn leftover(mut buf: Vec<u8>, head_len: usize) -> Vec<u8> {
    let mut rest = buf.split_off(head_len.min(buf.len()));
    rest.shrink_to_fit();
    rest
}

/// The second half of [`accept_with`]: checks `req` against RFC 6455, writes the
/// `101 Switching Protocols` response (with `protocol`, the negotiated extensions and
/// `headers`), and returns the connection, fed with `leftover` (bytes read past the head).
/// A request that fails the checks is answered with its HTTP error.
pub async fn upgrade_request<S>(
    mut stream: S,
    req: &Request,
    leftover: &[u8],
    config: impl Into<Arc<Config>>,
    protocol: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config: Arc<Config> = config.into();
    let accepted = match req.accept(protocol, &config, headers) {
        Ok(r) => r,
        Err(e) => {
            let _ = refuse(&mut stream, e.status(), &e.to_string()).await;
            return Err(Error::Handshake(e));
        }
    };
    stream.write_all(&accepted.response).await?;
    stream.flush().await?;
    let mut conn = Connection::new(Role::Server, config);
    if let Some(params) = accepted.deflate {
        conn = conn.with_deflate(params);
    }
    conn.handle_read(leftover);
    Ok(WebSocket::from_connection(stream, conn))
}

/// Reads until a complete request head (or, with `http2`, the HTTP/2 preface).
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    config: &Config,
    http2: bool,
) -> Result<First, Error> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let sniffed = if http2 { sniff(&buf) } else { Sniff::Http1 };
        match sniffed {
            Sniff::Http2 => return Ok(First::Http2(buf)),
            Sniff::NeedMore => {}
            Sniff::Http1 => {
                if let Some((req, head_len)) = Request::parse(&buf, config)? {
                    return Ok(First::Http1 { req, buf, head_len });
                }
            }
        }
        let room = (config.max_handshake_size + 1)
            .saturating_sub(buf.len())
            .clamp(1, 4096);
        let start = buf.len();
        buf.resize(start + room, 0);
        let n = stream.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Err(Error::Handshake(HandshakeError::Malformed(
                "connection closed before the request was complete".into(),
            )));
        }
    }
}

/// Answers with an HTTP error (`status`, a plain-text `body`, `Connection: close`) and closes
/// the stream.
pub async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    body: &str,
) -> std::io::Result<()> {
    stream.write_all(&reject(status, body)).await?;
    stream.flush().await?;
    stream.shutdown().await
}
