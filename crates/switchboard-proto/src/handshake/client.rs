//! Client side of the opening handshake.

use std::fmt::Write as _;

use base64::Engine;
use rand::Rng;

use super::{
    check_header, collect_headers, find, has_token, head_len, tokens, HandshakeError, Header,
};
use crate::config::Config;
use crate::extension::{parse_extensions, DeflateConfig, DeflateParams, PERMESSAGE_DEFLATE};

/// The upgrade request a client sends, and the checks for the server's answer.
///
/// ```
/// use switchboard_proto::{Config, handshake::client::ClientRequest};
/// let req = ClientRequest::new("example.com", "/chat")
///     .with_key("dGhlIHNhbXBsZSBub25jZQ==")
///     .protocol("chat");
/// let bytes = req.encode().unwrap();
/// assert!(bytes.starts_with(b"GET /chat HTTP/1.1\r\nHost: example.com\r\n"));
/// let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
///                Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
///                Sec-WebSocket-Protocol: chat\r\n\r\n";
/// let (resp, used) = req.parse_response(answer, &Config::default()).unwrap().unwrap();
/// assert_eq!(used, answer.len());
/// assert_eq!(resp.protocol.as_deref(), Some("chat"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    host: String,
    path: String,
    key: String,
    pub(super) origin: Option<String>,
    pub(super) protocols: Vec<String>,
    /// permessage-deflate offers, in order of preference.
    pub(super) deflate: Vec<DeflateConfig>,
    pub(super) headers: Vec<Header>,
}

/// A server's `101` response that passed every RFC 6455 §4.1 check (or, over HTTP/2, its
/// `200` to an extended CONNECT that passed the same checks, RFC 8441 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 101 over HTTP/1.1; the 2xx status (normally 200) of an HTTP/2 extended CONNECT
    /// (RFC 8441, [`parse_extended_response`](ClientRequest::parse_extended_response)).
    pub status: u16,
    /// Every header in the order received.
    pub headers: Vec<Header>,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
    /// The extensions the server accepted, as it wrote them.
    pub extensions: Vec<String>,
    /// permessage-deflate, if the server accepted our offer: pass it to
    /// [`Connection::with_deflate`](crate::Connection::with_deflate).
    pub deflate: Option<DeflateParams>,
}

impl Response {
    /// The first header with that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

impl ClientRequest {
    /// A request for `path` (with query) on `host` (with `:port` when not the default), with
    /// a fresh random 16-byte key.
    pub fn new(host: impl Into<String>, path: impl Into<String>) -> Self {
        let key_bytes: [u8; 16] = rand::rng().random();
        Self {
            host: host.into(),
            path: path.into(),
            key: base64::engine::general_purpose::STANDARD.encode(key_bytes),
            origin: None,
            protocols: Vec::new(),
            deflate: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Uses a fixed key (for tests and examples only).
    pub fn with_key(mut self, key: &str) -> Self {
        self.key = key.to_string();
        self
    }

    /// Sets the `Origin` header.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Offers a subprotocol (call again for more, in order of preference).
    pub fn protocol(mut self, p: impl Into<String>) -> Self {
        self.protocols.push(p.into());
        self
    }

    /// Offers permessage-deflate with these parameters (see [`DeflateConfig::to_offer`]).
    /// Call again to add more offers, in order of preference; the server accepts at most one.
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate.push(config);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The subprotocols offered.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The `Host` header value (over HTTP/2 the `:authority`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The request target: path and query (over HTTP/2 the `:path`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The request head. Fails if a header would break the HTTP framing.
    pub fn encode(&self) -> Result<Vec<u8>, HandshakeError> {
        check_header("Host", &self.host)?;
        if self.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(HandshakeError::InvalidHeader("request target".into()));
        }
        let mut s = String::with_capacity(256);
        let _ = write!(
            s,
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
            self.path, self.host, self.key
        );
        if let Some(o) = &self.origin {
            check_header("Origin", o)?;
            let _ = write!(s, "Origin: {o}\r\n");
        }
        if !self.protocols.is_empty() {
            let v = self.protocols.join(", ");
            check_header("Sec-WebSocket-Protocol", &v)?;
            let _ = write!(s, "Sec-WebSocket-Protocol: {v}\r\n");
        }
        if !self.deflate.is_empty() {
            let offers: Vec<String> = self.deflate.iter().map(DeflateConfig::to_offer).collect();
            let _ = write!(s, "Sec-WebSocket-Extensions: {}\r\n", offers.join(", "));
        }
        for (n, v) in &self.headers {
            check_header(n, v)?;
            let _ = write!(s, "{n}: {v}\r\n");
        }
        s.push_str("\r\n");
        Ok(s.into_bytes())
    }

    /// Parses and checks the server's response head at the start of `buf`.
    ///
    /// `Ok(None)`: not complete yet. A status other than 101 is
    /// [`HandshakeError::UnexpectedStatus`] (the body, if the caller wants it, follows the head).
    pub fn parse_response(
        &self,
        buf: &[u8],
        config: &Config,
    ) -> Result<Option<(Response, usize)>, HandshakeError> {
        let mut storage = vec![httparse::EMPTY_HEADER; config.max_handshake_headers];
        let mut resp = httparse::Response::new(&mut storage);
        let Some(used) = head_len(resp.parse(buf), buf.len(), config)? else {
            return Ok(None);
        };
        if resp.version != Some(1) {
            return Err(HandshakeError::HttpVersion);
        }
        let status = resp.code.unwrap_or_default();
        if status != 101 {
            return Err(HandshakeError::UnexpectedStatus {
                status,
                reason: resp.reason.unwrap_or_default().to_string(),
            });
        }
        let headers = collect_headers(resp.headers);
        if !has_token(&headers, "upgrade", "websocket") {
            return Err(HandshakeError::NotWebSocketUpgrade);
        }
        if !has_token(&headers, "connection", "upgrade") {
            return Err(HandshakeError::ConnectionNotUpgrade);
        }
        let expected = super::accept_key(self.key.as_bytes());
        if find(&headers, "sec-websocket-accept").map(str::trim) != Some(expected.as_str()) {
            return Err(HandshakeError::InvalidAccept);
        }
        Ok(Some((self.check_selection(status, headers)?, used)))
    }

    /// What the server selected (its `Sec-WebSocket-Protocol` and `-Extensions`), checked
    /// against what we offered: the same rules over HTTP/1.1 and HTTP/2 (RFC 8441 §5). The
    /// response with what was selected.
    pub(super) fn check_selection(
        &self,
        status: u16,
        headers: Vec<Header>,
    ) -> Result<Response, HandshakeError> {
        let protocol = match find(&headers, "sec-websocket-protocol").map(str::trim) {
            None => None,
            Some(p) if self.protocols.iter().any(|o| o == p) => Some(p.to_string()),
            Some(p) => return Err(HandshakeError::ProtocolNotOffered(p.to_string())),
        };
        let mut extensions = Vec::new();
        let mut deflate = None;
        for e in tokens(&headers, "sec-websocket-extensions") {
            let items = parse_extensions([e]);
            let Some(item) = items.first() else {
                return Err(HandshakeError::ExtensionNotOffered(e.to_string()));
            };
            if item.name != PERMESSAGE_DEFLATE || self.deflate.is_empty() || deflate.is_some() {
                return Err(HandshakeError::ExtensionNotOffered(e.to_string()));
            }
            // The response must fit one of our offers (the server answers the one it took).
            let mut first_error = None;
            for offer in &self.deflate {
                match offer.check_response(item) {
                    Ok(p) => {
                        deflate = Some(p);
                        break;
                    }
                    Err(err) => {
                        first_error.get_or_insert(err);
                    }
                }
            }
            if deflate.is_none() {
                let reason = first_error.map(|e| e.0).unwrap_or_else(|| e.to_string());
                return Err(HandshakeError::InvalidExtension(reason));
            }
            extensions.push(e.to_string());
        }
        Ok(Response {
            status,
            headers,
            protocol,
            extensions,
            deflate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn resp(extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn check(req: &ClientRequest, extra: &str) -> Result<Response, HandshakeError> {
        req.parse_response(&resp(extra), &Config::default())
            .map(|r| r.unwrap().0)
    }

    #[test]
    fn fresh_random_keys() {
        let a = ClientRequest::new("h", "/");
        let b = ClientRequest::new("h", "/");
        assert_ne!(a.key(), b.key());
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.key())
            .unwrap();
        assert_eq!(raw.len(), 16);
    }

    #[test]
    fn response_checks() {
        let req = ClientRequest::new("h", "/").with_key(KEY).protocol("a");
        let ok = format!("Sec-WebSocket-Accept: {ACCEPT}\r\n");
        assert!(check(&req, &ok).is_ok());
        assert_eq!(
            check(&req, "Sec-WebSocket-Accept: AAAA\r\n").unwrap_err(),
            HandshakeError::InvalidAccept
        );
        assert_eq!(
            check(&req, &format!("{ok}Sec-WebSocket-Protocol: b\r\n")).unwrap_err(),
            HandshakeError::ProtocolNotOffered("b".into())
        );
        assert!(matches!(
            check(
                &req,
                &format!("{ok}Sec-WebSocket-Extensions: permessage-deflate\r\n")
            ),
            Err(HandshakeError::ExtensionNotOffered(_))
        ));
        let err = req
            .parse_response(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
                &Config::default(),
            )
            .unwrap_err();
        assert_eq!(
            err,
            HandshakeError::UnexpectedStatus {
                status: 403,
                reason: "Forbidden".into()
            }
        );
    }

    #[test]
    fn deflate_offer_and_response() {
        let req = ClientRequest::new("h", "/")
            .with_key(KEY)
            .deflate(DeflateConfig::default());
        let head = String::from_utf8(req.encode().unwrap()).unwrap();
        assert!(
            head.contains(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            ),
            "{head}"
        );
        let ok = format!("Sec-WebSocket-Accept: {ACCEPT}\r\n");
        let r = check(&req, &format!("{ok}Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits=10\r\n")).unwrap();
        let p = r.deflate.unwrap();
        assert!(p.server_no_context_takeover);
        assert_eq!(p.client_max_window_bits, 10);
        // Out of range, unknown or repeated: the connection fails.
        for bad in [
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; x=1",
            "permessage-deflate, permessage-deflate",
        ] {
            assert!(
                check(&req, &format!("{ok}Sec-WebSocket-Extensions: {bad}\r\n")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn complete_but_oversized_response_is_refused() {
        // Found by the handshake_response fuzz target: a whole head in one read skipped the limit.
        let req = ClientRequest::new("h", "/").with_key(KEY);
        let big = format!(
            "Sec-WebSocket-Accept: {ACCEPT}\r\nX-Pad: {}\r\n",
            "a".repeat(1000)
        );
        let err = req
            .parse_response(&resp(&big), &Config::default().max_handshake_size(1024))
            .unwrap_err();
        assert_eq!(err, HandshakeError::TooLarge(1024));
    }

    #[test]
    fn several_deflate_offers_in_order() {
        let strict = DeflateConfig::default()
            .server_max_window_bits(10)
            .server_no_context_takeover(true);
        let req = ClientRequest::new("h", "/")
            .with_key(KEY)
            .deflate(strict)
            .deflate(DeflateConfig::default());
        let head = String::from_utf8(req.encode().unwrap()).unwrap();
        assert!(
            head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits, permessage-deflate; client_max_window_bits\r\n"),
            "{head}"
        );
        let ok = format!("Sec-WebSocket-Accept: {ACCEPT}\r\n");
        // The server took the second offer: plain.
        let r = check(
            &req,
            &format!("{ok}Sec-WebSocket-Extensions: permessage-deflate\r\n"),
        )
        .unwrap();
        assert_eq!(r.deflate.unwrap().server_max_window_bits, 15);
        // It took the first.
        let r = check(&req, &format!("{ok}Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_max_window_bits=9\r\n")).unwrap();
        assert_eq!(r.deflate.unwrap().server_max_window_bits, 9);
        // Fits neither.
        assert!(check(
            &req,
            &format!(
                "{ok}Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            )
        )
        .is_err());
        // And the server's side picks the first offer it can accept.
        let (server_req, _) = crate::handshake::server::Request::parse(
            format!(
                "{}Sec-WebSocket-Key: {KEY}\r\n\r\n",
                head.trim_end_matches("\r\n")
                    .replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "")
            )
            .as_bytes(),
            &Config::default(),
        )
        .unwrap()
        .unwrap();
        let n = server_req
            .negotiate_extensions(&Config::default().deflate(Some(DeflateConfig::default())));
        let p = n.deflate.unwrap();
        assert!(p.server_no_context_takeover);
        assert_eq!(p.server_max_window_bits, 10);
    }

    #[test]
    fn header_injection_refused() {
        let req = ClientRequest::new("h", "/").header("X", "a\r\nB: c");
        assert!(req.encode().is_err());
        let req = ClientRequest::new("h", "/a b");
        assert!(req.encode().is_err());
    }
}
