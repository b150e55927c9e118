//! What can go wrong opening a WebSocket over HTTP/2.

/// Why a WebSocket over HTTP/2 could not be opened (inside [`Error::Http2`](crate::Error::Http2)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Http2Error {
    /// The server's SETTINGS did not enable the extended CONNECT protocol
    /// (`SETTINGS_ENABLE_CONNECT_PROTOCOL`, RFC 8441 §3): it speaks HTTP/2 but cannot carry a
    /// WebSocket over it.
    #[error(
        "the server speaks HTTP/2 but does not offer WebSockets over it \
         (no SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441)"
    )]
    ConnectProtocolDisabled,
    /// TLS was negotiated without HTTP/2: the server did not select `h2` by ALPN.
    #[error("the server did not select HTTP/2 by ALPN (it answered {0})")]
    NotNegotiated(String),
    /// The HTTP/2 connection or stream failed (a protocol error, a reset, GOAWAY, or the
    /// connection closed before the server's SETTINGS arrived).
    #[error("HTTP/2: {0}")]
    Protocol(#[from] h2::Error),
    /// The server did not answer the PING that makes its SETTINGS final.
    #[error("HTTP/2: no answer from the server within {0:?}")]
    Timeout(std::time::Duration),
}

impl From<Http2Error> for crate::Error {
    fn from(e: Http2Error) -> Self {
        Self::Http2(Box::new(e))
    }
}

impl From<h2::Error> for crate::Error {
    fn from(e: h2::Error) -> Self {
        Self::Http2(Box::new(Http2Error::Protocol(e)))
    }
}
