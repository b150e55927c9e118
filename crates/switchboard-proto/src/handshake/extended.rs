//! WebSocket over HTTP/2 (RFC 8441): the extended CONNECT, both roles, no I/O.
//!
//! Over HTTP/2 a WebSocket is one stream of a connection. The client sends a `CONNECT`
//! request with the pseudo-header `:protocol: websocket` (allowed only once the server's
//! SETTINGS carried `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`); the server answers `200` and the
//! stream's DATA frames carry the WebSocket frames. There is no `Upgrade`/`Connection` and no
//! `Sec-WebSocket-Key`/`-Accept`; `Origin`, `Sec-WebSocket-Version`, `-Protocol` and
//! `-Extensions` mean what they mean in RFC 6455 (names in lower case), and `:authority`
//! takes the place of `Host` (RFC 8441 §4-5). So permessage-deflate and subprotocols are
//! negotiated by the same code as over HTTP/1.1.
//!
//! The HTTP/2 framing is the transport's (the `h2` crate, hyper): this module sees the
//! method, the pseudo-headers and the header list, as plain strings.
//!
//! - Server: [`Request::from_extended`] builds the same [`Request`] an HTTP/1.1 upgrade
//!   parses into (so routing, origin checks and authentication see no difference),
//!   [`Request::validate_extended`] checks it, [`Request::accept_extended`] negotiates and
//!   gives the `200`'s headers.
//! - Client: [`ClientRequest::extended_headers`] gives the request's headers,
//!   [`ClientRequest::parse_extended_response`] checks the answer.
//!
//! ```
//! use switchboard_proto::{Config, handshake::{client::ClientRequest, server::Request}};
//! let client = ClientRequest::new("example.com", "/chat").protocol("chat");
//! // The client sends CONNECT with :protocol websocket, :authority, :path and these headers.
//! let headers = client.extended_headers().unwrap();
//! // The server's HTTP/2 stack hands over what it received.
//! let req = Request::from_extended("CONNECT", Some("websocket"), client.host(), client.path(), headers);
//! assert!(req.validate_extended().is_ok());
//! assert_eq!(req.host(), "example.com");
//! let accepted = req.accept_extended(Some("chat"), &Config::default(), &[]).unwrap();
//! assert_eq!(accepted.status, 200);
//! // The client checks the 200 and its headers.
//! let resp = client.parse_extended_response(accepted.status, &accepted.headers).unwrap();
//! assert_eq!(resp.protocol.as_deref(), Some("chat"));
//! ```

use super::client::{ClientRequest, Response};
use super::server::{reason_phrase, Request};
use super::{check_header, find, HandshakeError, Header};
use crate::config::Config;
use crate::extension::DeflateParams;

/// The `:protocol` value of a WebSocket extended CONNECT.
pub const WEBSOCKET_PROTOCOL: &str = "websocket";

/// The pseudo-header under which [`Request::from_extended`] keeps `:protocol`.
pub const PROTOCOL_PSEUDO_HEADER: &str = ":protocol";

/// The HTTP version [`Request::from_extended`] records in [`Request::version`].
pub const HTTP2_VERSION: u8 = 2;

/// Request headers a client must not send over HTTP/2 (connection-specific, RFC 9113
/// §8.2.2) or that the extended CONNECT replaces (`host` is `:authority`; there is no key).
const NOT_OVER_H2: [&str; 9] = [
    "host",
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "sec-websocket-key",
    "sec-websocket-version",
];

/// What a server agreed to over HTTP/2, and the headers of the `200` that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedAccept {
    /// The status to answer with: 200.
    pub status: u16,
    /// The response headers, names in lower case: `sec-websocket-protocol`,
    /// `sec-websocket-extensions` when negotiated, then the extra headers.
    pub headers: Vec<Header>,
    /// The subprotocol selected.
    pub protocol: Option<String>,
    /// permessage-deflate, if negotiated: pass it to
    /// [`Connection::with_deflate`](crate::Connection::with_deflate).
    pub deflate: Option<DeflateParams>,
}

impl Request {
    /// The request an HTTP/2 stream carried, as the same [`Request`] an HTTP/1.1 upgrade
    /// parses into: `method` (`CONNECT` for a WebSocket), the `:protocol` pseudo-header if
    /// any (kept as a header named [`PROTOCOL_PSEUDO_HEADER`]), `:authority` as the `host`
    /// header (replacing any `host` sent, RFC 9113 §8.3.1), `:path` as
    /// [`path`](Request::path), and the regular headers. [`version`](Request::version) is
    /// [`HTTP2_VERSION`].
    ///
    /// ```
    /// use switchboard_proto::handshake::server::Request;
    /// let r = Request::from_extended("CONNECT", Some("websocket"), "example.com:8443", "/ws?x=1",
    ///     vec![("sec-websocket-version".into(), "13".into())]);
    /// assert_eq!((r.host(), r.path_only(), r.query()), ("example.com:8443", "/ws", Some("x=1")));
    /// assert_eq!(r.version, 2);
    /// ```
    pub fn from_extended(
        method: &str,
        protocol: Option<&str>,
        authority: &str,
        path: &str,
        headers: Vec<Header>,
    ) -> Self {
        let mut all = Vec::with_capacity(headers.len() + 2);
        if !authority.is_empty() {
            all.push(("host".to_string(), authority.to_string()));
        }
        if let Some(p) = protocol {
            all.push((PROTOCOL_PSEUDO_HEADER.to_string(), p.to_string()));
        }
        let keep = |(n, _): &Header| {
            let drop = n.eq_ignore_ascii_case(PROTOCOL_PSEUDO_HEADER)
                || (!authority.is_empty() && n.eq_ignore_ascii_case("host"));
            !drop
        };
        all.extend(headers.into_iter().filter(keep));
        Self {
            method: method.to_string(),
            path: if path.is_empty() { "/" } else { path }.to_string(),
            version: HTTP2_VERSION,
            headers: all,
        }
    }

    /// The `:protocol` pseudo-header of an HTTP/2 request ([`from_extended`](Self::from_extended)).
    pub fn extended_protocol(&self) -> Option<&str> {
        self.header(PROTOCOL_PSEUDO_HEADER)
    }

    /// Whether this is an extended CONNECT for a WebSocket (RFC 8441), so a server can tell
    /// it from other HTTP/2 requests, as [`is_upgrade`](Self::is_upgrade) does over HTTP/1.1.
    pub fn is_extended_connect(&self) -> bool {
        self.method == "CONNECT"
            && self
                .extended_protocol()
                .is_some_and(|p| p.eq_ignore_ascii_case(WEBSOCKET_PROTOCOL))
    }

    /// Checks what RFC 8441 §4-5 requires of a WebSocket extended CONNECT: method `CONNECT`,
    /// `:protocol` `websocket`, an authority, `sec-websocket-version: 13`.
    ///
    /// ```
    /// use switchboard_proto::handshake::{server::Request, HandshakeError};
    /// let v13 = || vec![("sec-websocket-version".to_string(), "13".to_string())];
    /// let r = Request::from_extended("GET", Some("websocket"), "a", "/", v13());
    /// assert_eq!(r.validate_extended().unwrap_err().status(), 405);
    /// let r = Request::from_extended("CONNECT", None, "a", "/", v13());
    /// assert_eq!(r.validate_extended().unwrap_err(), HandshakeError::NotExtendedConnect(None));
    /// ```
    pub fn validate_extended(&self) -> Result<(), HandshakeError> {
        if self.method != "CONNECT" {
            return Err(HandshakeError::MethodNotAllowed(self.method.clone()));
        }
        match self.extended_protocol() {
            Some(p) if p.eq_ignore_ascii_case(WEBSOCKET_PROTOCOL) => {}
            other => {
                return Err(HandshakeError::NotExtendedConnect(
                    other.map(str::to_string),
                ))
            }
        }
        if self.host().is_empty() {
            return Err(HandshakeError::MissingHost);
        }
        if find(&self.headers, "sec-websocket-version").map(str::trim) != Some("13") {
            return Err(HandshakeError::UnsupportedVersion);
        }
        Ok(())
    }

    /// Completes the negotiation of an extended CONNECT, after
    /// [`validate_extended`](Self::validate_extended) (called again here): the subprotocol the
    /// server chose (it must be one the client offered), the extensions from `config`
    /// ([`negotiate_extensions`](Self::negotiate_extensions), as over HTTP/1.1), `extra`
    /// headers appended (names sent in lower case, as HTTP/2 requires).
    pub fn accept_extended(
        &self,
        protocol: Option<&str>,
        config: &Config,
        extra: &[(&str, &str)],
    ) -> Result<ExtendedAccept, HandshakeError> {
        self.validate_extended()?;
        if let Some(p) = protocol {
            if !self.protocols().any(|o| o == p) {
                return Err(HandshakeError::ProtocolNotOffered(p.to_string()));
            }
        }
        let mut headers = Vec::with_capacity(2 + extra.len());
        if let Some(p) = protocol {
            headers.push(("sec-websocket-protocol".to_string(), p.to_string()));
        }
        let negotiated = self.negotiate_extensions(config);
        if let Some(ext) = negotiated.response {
            headers.push(("sec-websocket-extensions".to_string(), ext));
        }
        for (n, v) in extra {
            check_header(n, v)?;
            headers.push((n.to_ascii_lowercase(), (*v).to_string()));
        }
        Ok(ExtendedAccept {
            status: 200,
            headers,
            protocol: protocol.map(str::to_string),
            deflate: negotiated.deflate,
        })
    }
}

impl ClientRequest {
    /// The regular headers of the extended CONNECT, names in lower case:
    /// `sec-websocket-version: 13`, `origin`, `sec-websocket-protocol`,
    /// `sec-websocket-extensions`, then the headers added with
    /// [`header`](Self::header), without those HTTP/2 forbids or the extended CONNECT
    /// replaces (`host`, `connection`, `upgrade`, `sec-websocket-key`, …). The pseudo-headers
    /// are the transport's: `:method CONNECT`, `:protocol websocket`
    /// ([`WEBSOCKET_PROTOCOL`]), `:scheme`, `:authority` ([`host`](Self::host)), `:path`
    /// ([`path`](Self::path)).
    ///
    /// ```
    /// use switchboard_proto::handshake::client::ClientRequest;
    /// let h = ClientRequest::new("a", "/").header("Authorization", "Bearer x")
    ///     .header("Connection", "keep-alive").extended_headers().unwrap();
    /// assert_eq!(h, [("sec-websocket-version".to_string(), "13".to_string()),
    ///                ("authorization".to_string(), "Bearer x".to_string())]);
    /// ```
    pub fn extended_headers(&self) -> Result<Vec<Header>, HandshakeError> {
        check_header("host", self.host())?;
        if self.path().bytes().any(|b| b <= b' ' || b == 0x7f) || !self.path().starts_with('/') {
            return Err(HandshakeError::InvalidHeader(":path".into()));
        }
        let mut h = vec![("sec-websocket-version".to_string(), "13".to_string())];
        if let Some(o) = &self.origin {
            check_header("origin", o)?;
            h.push(("origin".to_string(), o.clone()));
        }
        if !self.protocols.is_empty() {
            let v = self.protocols.join(", ");
            check_header("sec-websocket-protocol", &v)?;
            h.push(("sec-websocket-protocol".to_string(), v));
        }
        if !self.deflate.is_empty() {
            let offers: Vec<String> = self.deflate.iter().map(|d| d.to_offer()).collect();
            h.push(("sec-websocket-extensions".to_string(), offers.join(", ")));
        }
        for (n, v) in &self.headers {
            check_header(n, v)?;
            let lower = n.to_ascii_lowercase();
            if !NOT_OVER_H2.contains(&lower.as_str()) {
                h.push((lower, v.clone()));
            }
        }
        Ok(h)
    }

    /// Checks the server's answer to the extended CONNECT: a 2xx `status` (anything else is
    /// [`HandshakeError::UnexpectedStatus`]), a selected subprotocol we offered, extensions
    /// we offered with parameters we allow: the checks
    /// [`parse_response`](Self::parse_response) makes after the HTTP/1.1-only ones.
    pub fn parse_extended_response(
        &self,
        status: u16,
        headers: &[Header],
    ) -> Result<Response, HandshakeError> {
        if !(200..300).contains(&status) {
            return Err(HandshakeError::UnexpectedStatus {
                status,
                reason: reason_phrase(status).to_string(),
            });
        }
        self.check_selection(status, headers.to_vec())
    }
}

#[cfg(test)]
mod tests;
