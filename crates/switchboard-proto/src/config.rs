//! Limits and timeouts, with their defaults.

use std::time::Duration;

/// Which end of the connection this is. It decides who masks (RFC 6455 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The connecting end: masks every frame it sends, expects unmasked frames.
    Client,
    /// The accepting end: sends unmasked frames, requires masked ones.
    Server,
}

/// Every limit and timeout of a connection. Each has a bounded default; none is unlimited.
///
/// Build one with [`Config::default`] and the by-value setters:
///
/// ```
/// use switchboard_proto::Config;
/// use std::time::Duration;
/// let config = Config::default()
///     .max_message_size(1 << 20)
///     .close_timeout(Duration::from_secs(2));
/// assert_eq!(config.max_message_size, 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The largest payload of one frame we accept; larger frames are closed with 1009 as soon
    /// as their header arrives, before any payload is buffered. Default: 16 MiB.
    pub max_frame_size: usize,
    /// The largest message (all fragments together) we accept; 1009 when exceeded, checked
    /// at each frame header. Default: 16 MiB.
    pub max_message_size: usize,
    /// The most bytes of outgoing frames buffered before [`send`](crate::Connection::send)
    /// refuses with [`SendError::WriteBufferFull`](crate::SendError::WriteBufferFull).
    /// Default: 32 MiB (room for one maximal echo plus control frames).
    pub max_write_buffer: usize,
    /// The largest HTTP handshake (request or response head) read before answering
    /// 431 (server) or failing (client). Default: 16 KiB.
    pub max_handshake_size: usize,
    /// The most headers a handshake may carry. Default: 64.
    pub max_handshake_headers: usize,
    /// How long the opening handshake may take, from accepted TCP connection to complete
    /// request (server) or from connect to complete response (client). Default: 10 s.
    pub handshake_timeout: Duration,
    /// How long to wait for the peer's close frame after sending ours, and (client) for the
    /// server to close TCP after the close handshake. Default: 5 s.
    pub close_timeout: Duration,
    /// Whether pings are answered automatically. Default: true.
    pub auto_pong: bool,
    /// permessage-deflate: the parameters a server accepts or a client offers, or `None` to
    /// neither accept nor offer it. Default: `None`.
    pub deflate: Option<crate::extension::DeflateConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            max_write_buffer: 32 << 20,
            max_handshake_size: 16 << 10,
            max_handshake_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            auto_pong: true,
            deflate: None,
        }
    }
}

impl Config {
    /// Sets [`Config::max_frame_size`].
    pub fn max_frame_size(mut self, v: usize) -> Self {
        self.max_frame_size = v;
        self
    }
    /// Sets [`Config::max_message_size`].
    pub fn max_message_size(mut self, v: usize) -> Self {
        self.max_message_size = v;
        self
    }
    /// Sets [`Config::max_write_buffer`].
    pub fn max_write_buffer(mut self, v: usize) -> Self {
        self.max_write_buffer = v;
        self
    }
    /// Sets [`Config::max_handshake_size`].
    pub fn max_handshake_size(mut self, v: usize) -> Self {
        self.max_handshake_size = v;
        self
    }
    /// Sets [`Config::max_handshake_headers`].
    pub fn max_handshake_headers(mut self, v: usize) -> Self {
        self.max_handshake_headers = v;
        self
    }
    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, v: Duration) -> Self {
        self.handshake_timeout = v;
        self
    }
    /// Sets [`Config::close_timeout`].
    pub fn close_timeout(mut self, v: Duration) -> Self {
        self.close_timeout = v;
        self
    }
    /// Sets [`Config::deflate`].
    pub fn deflate(mut self, v: Option<crate::extension::DeflateConfig>) -> Self {
        self.deflate = v;
        self
    }
    /// Sets [`Config::auto_pong`].
    pub fn auto_pong(mut self, v: bool) -> Self {
        self.auto_pong = v;
        self
    }
}
