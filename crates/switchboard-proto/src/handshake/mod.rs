//! The opening handshake (RFC 6455 §4): HTTP/1.1 bytes in and out, no I/O; and its HTTP/2
//! form (RFC 8441), headers in and out.
//!
//! - [`server`]: parse and check the client's upgrade request, build the `101` response or an
//!   HTTP error that says what was wrong.
//! - [`client`]: build the upgrade request, parse and check the server's response.
//! - [`extended`]: the HTTP/2 extended CONNECT (`:protocol websocket`, answered 200), both
//!   roles, with the same negotiation (subprotocols, permessage-deflate).
//! - [`sniff`]: tell an HTTP/2 connection (its preface) from HTTP/1.1 by its first bytes.
//!
//! Both sides bound what they read: a head larger than
//! [`Config::max_handshake_size`](crate::Config::max_handshake_size) or with more than
//! [`Config::max_handshake_headers`](crate::Config::max_handshake_headers) headers is refused.

pub mod client;
pub mod extended;
pub mod server;
pub mod sniff;

use base64::Engine;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the key before hashing.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
///
/// ```
/// // The example from RFC 6455 §1.3.
/// assert_eq!(
///     switchboard_proto::handshake::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Why a handshake failed. On the server side each maps to the HTTP status it is answered
/// with ([`HandshakeError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The head grew past the size limit before it was complete.
    #[error("handshake larger than {0} bytes")]
    TooLarge(usize),
    /// More headers than the limit.
    #[error("more than {0} headers")]
    TooManyHeaders(usize),
    /// The bytes are not a valid HTTP/1.1 head.
    #[error("malformed HTTP: {0}")]
    Malformed(String),
    /// The request method was not GET.
    #[error("method {0} not allowed: a WebSocket handshake is a GET request")]
    MethodNotAllowed(String),
    /// The request or response was not HTTP/1.1.
    #[error("HTTP/1.1 required")]
    HttpVersion,
    /// No Host header.
    #[error("missing Host header")]
    MissingHost,
    /// More than one Host header (RFC 9112 §3.2: exactly one).
    #[error("more than one Host header")]
    MultipleHosts,
    /// A `Content-Length` that is not one decimal number, or several that differ (RFC 9112
    /// §6.3: a request that could be framed two ways must be refused).
    #[error("invalid Content-Length: {0}")]
    InvalidContentLength(String),
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1: a request-smuggling
    /// shape).
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthAndTransferEncoding,
    /// The Upgrade header is missing or does not name websocket.
    #[error("missing or wrong Upgrade header: expected `Upgrade: websocket`")]
    NotWebSocketUpgrade,
    /// The Connection header is missing or does not contain the `upgrade` token.
    #[error("missing or wrong Connection header: expected a token `Upgrade`")]
    ConnectionNotUpgrade,
    /// `Sec-WebSocket-Key` is missing or not 16 base64-encoded bytes.
    #[error("missing or invalid Sec-WebSocket-Key (must be 16 base64-encoded bytes)")]
    InvalidKey,
    /// An HTTP/2 `CONNECT` without `:protocol: websocket` (RFC 8441): the `:protocol`
    /// received, if any.
    #[error("not a WebSocket extended CONNECT: :protocol is {}", .0.as_deref().map_or("missing".to_string(), |p| format!("{p:?}, expected \"websocket\"")))]
    NotExtendedConnect(Option<String>),
    /// `Sec-WebSocket-Version` is missing or not 13.
    #[error("unsupported Sec-WebSocket-Version (this server supports 13)")]
    UnsupportedVersion,
    /// The server answered with another status than 101.
    #[error("server answered {status} {reason} instead of 101 Switching Protocols")]
    UnexpectedStatus {
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// `Sec-WebSocket-Accept` did not match the key we sent.
    #[error("Sec-WebSocket-Accept does not match the key sent")]
    InvalidAccept,
    /// The server selected a subprotocol the client did not offer.
    #[error("server selected subprotocol {0:?}, which was not offered")]
    ProtocolNotOffered(String),
    /// The server accepted an extension the client did not offer.
    #[error("server accepted extension {0:?}, which was not offered")]
    ExtensionNotOffered(String),
    /// The server's permessage-deflate response has parameters we did not offer or allow.
    #[error("invalid extension response: {0}")]
    InvalidExtension(String),
    /// A header name or value to send contains characters HTTP does not allow.
    #[error("invalid header {0:?}")]
    InvalidHeader(String),
}

impl HandshakeError {
    /// The HTTP status a server answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge(_) | Self::TooManyHeaders(_) => 431,
            Self::MethodNotAllowed(_) => 405,
            Self::UnsupportedVersion => 426,
            Self::HttpVersion => 505,
            _ => 400,
        }
    }
}

/// A header as received: the name as sent, the value as (lossy) UTF-8.
pub type Header = (String, String);

/// Finds a header by name, case-insensitively.
pub(crate) fn find<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// All comma-separated tokens of every header with that name, trimmed.
pub(crate) fn tokens<'a>(headers: &'a [Header], name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a header's comma-separated tokens contain `token` (case-insensitive).
pub(crate) fn has_token(headers: &[Header], name: &str, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// Converts httparse headers into owned pairs.
pub(crate) fn collect_headers(raw: &[httparse::Header<'_>]) -> Vec<Header> {
    raw.iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// The length of a complete head, `None` while it is incomplete, or the error: malformed,
/// too many headers, or (complete or not) larger than `max_handshake_size`.
pub(crate) fn head_len(
    parsed: Result<httparse::Status<usize>, httparse::Error>,
    buffered: usize,
    config: &crate::Config,
) -> Result<Option<usize>, HandshakeError> {
    let too_large = HandshakeError::TooLarge(config.max_handshake_size);
    match parsed {
        Ok(httparse::Status::Complete(n)) if n > config.max_handshake_size => Err(too_large),
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buffered > config.max_handshake_size => Err(too_large),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            Err(HandshakeError::TooManyHeaders(config.max_handshake_headers))
        }
        Err(other) => Err(HandshakeError::Malformed(other.to_string())),
    }
}

/// Checks a header to be sent for CR, LF and other bytes that would break the head.
pub(crate) fn check_header(name: &str, value: &str) -> Result<(), HandshakeError> {
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let value_ok = value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    if name_ok && value_ok {
        Ok(())
    } else {
        Err(HandshakeError::InvalidHeader(name.to_string()))
    }
}
