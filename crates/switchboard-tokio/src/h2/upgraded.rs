//! The server side of RFC 8441 on hyper (feature `http2-server`): an extended CONNECT that
//! hyper's HTTP/2 server accepted ([`extended_upgrade`]) becomes a WebSocket on the
//! upgraded stream ([`H2Io`]).
//!
//! hyper's HTTP/2 server must advertise the protocol: `http2::Builder::enable_connect_protocol()`.
//!
//! ```no_run
//! use http_body_util::Empty;
//! use hyper::{body::Bytes, Request, Response};
//! use switchboard_tokio::{h2::extended_upgrade, upgrade::rejection, Config, Error};
//!
//! async fn handle(mut req: Request<hyper::body::Incoming>) -> Result<Response<Empty<Bytes>>, Error> {
//!     // Route on the path, check the origin and credentials (`extended_request(&req)`) first.
//!     let (response, upgraded) = extended_upgrade(&mut req, Config::default(), None)?;
//!     tokio::spawn(async move {
//!         if let Ok(mut ws) = upgraded.await {
//!             while let Ok(Some(msg)) = ws.recv().await {
//!                 if ws.send(&msg).await.is_err() { break; }
//!             }
//!         }
//!     });
//!     Ok(response) // 200: hyper then hands the stream over
//! }
//! ```

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use switchboard_proto::extension::DeflateParams;
use switchboard_proto::handshake::extended::ExtendedAccept;
use switchboard_proto::handshake::server::Request;
use switchboard_proto::handshake::HandshakeError;
use switchboard_proto::{Config, Connection, Role};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::Error;
use crate::pool;
use crate::transport::{ReadSize, Transport};
use crate::WebSocket;

/// Queued runs smaller than this are copied together into one write: hyper's upgraded
/// HTTP/2 stream allocates and copies every write and sends it as a DATA frame of its own,
/// so a burst of small frames costs one of each, not one per frame.
const COALESCE: usize = 16 * 1024;

/// A WebSocket on the stream of an HTTP/2 extended CONNECT hyper accepted.
pub type H2WebSocket = WebSocket<H2Io>;

/// The upgraded stream of an HTTP/2 extended CONNECT (hyper's `Upgraded`) as a
/// [`Transport`]: reads copy the DATA frames (hyper gives flow-control credit back only
/// once they are read, so an unread WebSocket stops its peer, not the connection); writes
/// coalesce the queued frames into as few writes as possible (each costs hyper an
/// allocation and a copy, see the [module](super) notes); [`SocketControl`](crate::SocketControl)
/// does nothing (the socket is the connection's).
#[derive(Debug)]
pub struct H2Io {
    io: TokioIo<Upgraded>,
}

impl H2Io {
    /// Wraps hyper's upgraded stream.
    pub fn new(upgraded: Upgraded) -> Self {
        Self {
            io: TokioIo::new(upgraded),
        }
    }

    /// The upgraded stream.
    pub fn into_inner(self) -> Upgraded {
        self.io.into_inner()
    }
}

/// Turns a hyper HTTP/2 request into the [`Request`] the handshake checks see (as over
/// HTTP/1.1): `:authority` as `host`, `:protocol` kept
/// ([`Request::extended_protocol`]), method, path and headers.
pub fn extended_request<B>(req: &http::Request<B>) -> Request {
    let protocol = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .map(hyper::ext::Protocol::as_str);
    let authority = req.uri().authority().map_or("", |a| a.as_str());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_string(), value)
        })
        .collect();
    Request::from_extended(req.method().as_str(), protocol, authority, path, headers)
}

/// Checks an HTTP/2 extended CONNECT ([`Request::validate_extended`]), negotiates as over
/// HTTP/1.1 ([`Request::accept_extended`]) and returns the `200` to answer with, plus a
/// future that yields the WebSocket once hyper hands over the stream.
///
/// `protocol` must be one the client offered. On error, answer with
/// [`HandshakeError::status`] (for example [`rejection`](crate::upgrade::rejection)).
///
/// # Errors
/// [`Error::Handshake`] when the request fails a check.
pub fn extended_upgrade<B>(
    req: &mut http::Request<B>,
    config: impl Into<Arc<Config>>,
    protocol: Option<&str>,
) -> Result<(http::Response<Empty<Bytes>>, ExtendedUpgradeFut), Error> {
    let config: Arc<Config> = config.into();
    let accepted = extended_request(req).accept_extended(protocol, &config, &[])?;
    let response = accept_response(&accepted)?;
    Ok((
        response,
        ExtendedUpgradeFut {
            on: hyper::upgrade::on(req),
            config,
            deflate: accepted.deflate,
        },
    ))
}

/// The `200` response of an [`ExtendedAccept`], with its headers and an empty body.
///
/// # Errors
/// [`Error::Handshake`] for a header HTTP does not allow.
pub fn accept_response(accepted: &ExtendedAccept) -> Result<http::Response<Empty<Bytes>>, Error> {
    let mut b = http::Response::builder().status(accepted.status);
    for (n, v) in &accepted.headers {
        b = b.header(n.as_str(), v.as_str());
    }
    b.body(Empty::new())
        .map_err(|e| Error::Handshake(HandshakeError::InvalidHeader(e.to_string())))
}

/// Resolves to the WebSocket once hyper has sent the `200` and released the stream.
#[derive(Debug)]
#[must_use = "the upgrade only completes when this future is awaited"]
pub struct ExtendedUpgradeFut {
    on: OnUpgrade,
    config: Arc<Config>,
    deflate: Option<DeflateParams>,
}

impl ExtendedUpgradeFut {
    /// The permessage-deflate parameters negotiated, if any.
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }
}

impl Future for ExtendedUpgradeFut {
    type Output = Result<H2WebSocket, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let upgraded =
            ready!(Pin::new(&mut this.on).poll(cx)).map_err(|e| Error::Io(io::Error::other(e)))?;
        let mut conn = Connection::new(Role::Server, Arc::clone(&this.config));
        if let Some(params) = this.deflate {
            conn = conn.with_deflate(params);
        }
        Poll::Ready(Ok(WebSocket::from_connection(H2Io::new(upgraded), conn)))
    }
}

impl Transport for H2Io {
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
        size: &mut ReadSize,
    ) -> Poll<io::Result<usize>> {
        crate::transport::poll_read_copied(self, cx, conn, size)
    }

    /// One write per run of at least 16 KiB; smaller runs copied together
    /// first, up to that much a write.
    fn poll_transmit(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
    ) -> Poll<io::Result<()>> {
        while !conn.transmit_is_empty() {
            let first = conn.pending_transmit();
            let n = if first.len() >= COALESCE || first.len() == conn.queued_transmit() {
                ready!(Pin::new(&mut self.io).poll_write(cx, first))?
            } else {
                let mut joined = pool::take();
                let mut slices = [IoSlice::new(&[]); 64];
                let count = conn.transmit_slices(&mut slices);
                for s in &slices[..count] {
                    let room = COALESCE.saturating_sub(joined.len());
                    if room == 0 {
                        break;
                    }
                    joined.extend_from_slice(&s[..s.len().min(room)]);
                }
                let r = Pin::new(&mut self.io).poll_write(cx, &joined);
                joined.clear();
                pool::give(joined);
                ready!(r)?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            conn.advance_transmit(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(feature = "server")]
impl crate::SocketControl for H2Io {
    /// Nothing: the socket is the HTTP/2 connection's; the stream's window bounds it.
    fn set_send_buffer(&self, _bytes: usize) -> io::Result<()> {
        Ok(())
    }

    /// Nothing: dropping the stream resets it.
    fn reset_on_drop(&self) {}
}
