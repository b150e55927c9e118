//! Errors of the tokio transport.

use std::time::Duration;

use switchboard_proto::handshake::HandshakeError;
use switchboard_proto::{ProtocolError, SendError};

/// Everything that can end or refuse a WebSocket connection.
///
/// A clean close is not an error: [`WebSocket::recv`](crate::WebSocket::recv) returns
/// `Ok(None)` after it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke RFC 6455 or one of our limits; the close frame with
    /// [`ProtocolError::close_code`] was sent.
    #[error("protocol error: {0} (closed with {code})", code = .0.close_code())]
    Protocol(#[from] ProtocolError),
    /// The opening handshake was malformed or failed a check.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server answered the upgrade with an HTTP error (client), or our accept callback
    /// refused the request (server).
    #[error("handshake refused with HTTP {status} {reason}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The reason phrase.
        reason: String,
        /// The first line of the response body, if any.
        body: String,
    },
    /// The opening handshake took longer than
    /// [`Config::handshake_timeout`](switchboard_proto::Config::handshake_timeout).
    #[error("handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer did not answer our close frame within
    /// [`Config::close_timeout`](switchboard_proto::Config::close_timeout).
    #[error("close handshake timed out after {0:?}")]
    CloseTimeout(Duration),
    /// A message could not be queued.
    #[error("send failed: {0}")]
    Send(#[from] SendError),
    /// The TCP connection ended without a close frame (seen by the application as 1006).
    #[error("connection ended without a close frame (1006 abnormal closure)")]
    Disconnected,
    /// A URL we cannot connect to.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS setup failed (certificates, keys, server name).
    #[error("TLS: {0}")]
    Tls(String),
    /// The proxy could not be used, or did not open the tunnel (client). Boxed: it is
    /// rare, and `Error` stays small.
    #[cfg(feature = "client")]
    #[error(transparent)]
    Proxy(Box<crate::proxy::ProxyError>),
    /// WebSocket over HTTP/2 (RFC 8441) failed: the server does not offer it, the HTTP/2
    /// connection or stream failed. Boxed, as [`Proxy`](Self::Proxy).
    #[cfg(feature = "http2")]
    #[error(transparent)]
    Http2(Box<crate::h2::Http2Error>),
}

#[cfg(feature = "client")]
impl From<crate::proxy::ProxyError> for Error {
    fn from(e: crate::proxy::ProxyError) -> Self {
        Self::Proxy(Box::new(e))
    }
}

#[cfg(feature = "client")]
impl From<crate::proxy::InvalidProxyUrl> for Error {
    fn from(e: crate::proxy::InvalidProxyUrl) -> Self {
        Self::Proxy(Box::new(e.into()))
    }
}
