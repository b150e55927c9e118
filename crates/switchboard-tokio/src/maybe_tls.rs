//! A client stream: plain TCP, TLS over TCP, or a stream of an HTTP/2 connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The stream under a client connection: `ws://` is plain TCP, `wss://` TLS; a WebSocket
/// over HTTP/2 ([`ClientBuilder::http2`](crate::ClientBuilder::http2)) is a stream of an
/// HTTP/2 connection over either.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    #[cfg(feature = "rustls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A WebSocket over HTTP/2 (RFC 8441): one stream of a connection (h2c for `ws://`, TLS
    /// with ALPN `h2` for `wss://`) whose driver task owns the socket.
    H2(Box<crate::h2::H2Stream>),
}

impl MaybeTlsStream {
    /// The protocol TLS selected by ALPN (`h2`, `http/1.1`), if TLS ran and one was.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            #[cfg(feature = "rustls")]
            Self::Tls(s) => s.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }

    /// Whether this is a stream of an HTTP/2 connection.
    pub fn is_http2(&self) -> bool {
        matches!(self, Self::H2(_))
    }
}

impl crate::Transport for MaybeTlsStream {
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut switchboard_proto::Connection,
        size: &mut crate::ReadSize,
    ) -> Poll<io::Result<usize>> {
        match self {
            Self::H2(s) => s.poll_fill(cx, conn, size),
            _ => crate::transport::poll_read_copied(self, cx, conn, size),
        }
    }

    fn poll_transmit(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut switchboard_proto::Connection,
    ) -> Poll<io::Result<()>> {
        match self {
            Self::H2(s) => s.poll_transmit(cx, conn),
            _ => crate::transport::poll_write_copied(self, cx, conn),
        }
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "rustls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::H2(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "rustls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::H2(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "rustls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Self::H2(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "rustls")]
            Self::Tls(s) => s.is_write_vectored(),
            Self::H2(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "rustls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::H2(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "rustls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::H2(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
