//! Server side of the opening handshake.

use std::fmt::Write as _;

use base64::Engine;

use super::{
    check_header, collect_headers, find, has_token, head_len, tokens, HandshakeError, Header,
};
use crate::config::Config;
use crate::extension::{parse_extensions, DeflateParams, Negotiated};

/// An HTTP request head, as a client sends it to open a WebSocket.
///
/// [`Request::parse`] only checks HTTP syntax and the size limits, so a server can route on
/// the path (404) or check the origin (403) first; [`Request::validate`] then applies every
/// RFC 6455 §4.2.1 rule, and [`Request::accept`] builds the `101` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, normally `GET`.
    pub method: String,
    /// The request target, for example `/chat?room=lobby`.
    pub path: String,
    /// The HTTP minor version (1 for HTTP/1.1), or 2 for a request an HTTP/2 stream carried
    /// ([`Request::from_extended`]).
    pub version: u8,
    /// Every header in the order received.
    pub headers: Vec<Header>,
}

impl Request {
    /// Parses a request head at the start of `buf`.
    ///
    /// `Ok(None)`: the head is not complete yet (and still under the size limit). Otherwise the
    /// request and the number of bytes its head used; bytes after it are the first WebSocket
    /// frames.
    ///
    /// ```
    /// use switchboard_proto::{Config, handshake::server::Request};
    /// let req = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
    ///             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    ///             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n";
    /// let (r, used) = Request::parse(req, &Config::default()).unwrap().unwrap();
    /// assert_eq!(used, req.len());
    /// assert_eq!(r.path, "/chat");
    /// assert!(r.validate().is_ok());
    /// assert_eq!(r.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
    /// let resp = String::from_utf8(r.accept(Some("chat"), &Config::default(), &[]).unwrap().response).unwrap();
    /// assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    /// assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    /// ```
    ///
    /// Every request is held to what HTTP/1.1 requires of its head, so that it can be framed
    /// one way only (RFC 9112): exactly one `Host` (at most one in HTTP/1.0), a
    /// `Content-Length` that is one decimal number (copies must agree), never together with
    /// `Transfer-Encoding`. An absolute-form target (`GET http://host/path`, as proxies send)
    /// is accepted: its path becomes [`path`](Self::path) and its authority the `Host`
    /// (RFC 9112 §3.2.2).
    ///
    /// ```
    /// use switchboard_proto::{Config, handshake::server::Request};
    /// let c = Config::default();
    /// let two = b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
    /// assert_eq!(Request::parse(two, &c).unwrap_err().status(), 400);
    /// let (r, _) = Request::parse(b"GET http://example.com/healthz HTTP/1.1\r\nHost: x\r\n\r\n", &c)
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!((r.path.as_str(), r.host()), ("/healthz", "example.com"));
    /// ```
    pub fn parse(buf: &[u8], config: &Config) -> Result<Option<(Self, usize)>, HandshakeError> {
        let mut storage = vec![httparse::EMPTY_HEADER; config.max_handshake_headers];
        let mut req = httparse::Request::new(&mut storage);
        let Some(used) = head_len(req.parse(buf), buf.len(), config)? else {
            return Ok(None);
        };
        let mut r = Self {
            method: req.method.unwrap_or_default().to_string(),
            path: req.path.unwrap_or("/").to_string(),
            version: req.version.unwrap_or_default(),
            headers: collect_headers(req.headers),
        };
        r.absolute_form_to_origin_form();
        r.check_framing()?;
        Ok(Some((r, used)))
    }

    /// `http://authority/path?q` becomes `/path?q` with `Host: authority` (the Host sent is
    /// replaced, RFC 9112 §3.2.2; without one, none is made up, so an HTTP/1.1 request still
    /// gets its 400 and the head never has more headers than were sent).
    fn absolute_form_to_origin_form(&mut self) {
        let lower = self
            .path
            .get(..8)
            .unwrap_or(&self.path)
            .to_ascii_lowercase();
        let skip = ["http://", "https://", "ws://", "wss://"]
            .iter()
            .find(|s| lower.starts_with(*s))
            .map(|s| s.len());
        let Some(skip) = skip else {
            return;
        };
        let rest = &self.path[skip..];
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let authority = authority.to_string();
        self.path = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("/{target}")
        };
        let mut first = true;
        self.headers.retain_mut(|(n, v)| {
            if !n.eq_ignore_ascii_case("host") {
                return true;
            }
            if std::mem::take(&mut first) {
                v.clone_from(&authority);
                return true;
            }
            false
        });
    }

    /// The head's framing rules (see [`parse`](Self::parse)).
    fn check_framing(&self) -> Result<(), HandshakeError> {
        let hosts = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
            .count();
        match hosts {
            0 if self.version == 1 => return Err(HandshakeError::MissingHost),
            0 | 1 => {}
            _ => return Err(HandshakeError::MultipleHosts),
        }
        let mut length: Option<&str> = None;
        let values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim);
        for v in values {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HandshakeError::InvalidContentLength(format!("{v:?}")));
            }
            let v = v.trim_start_matches('0');
            match length {
                Some(l) if l != v => {
                    return Err(HandshakeError::InvalidContentLength(
                        "several different values".into(),
                    ))
                }
                _ => length = Some(v),
            }
        }
        if length.is_some() && find(&self.headers, "transfer-encoding").is_some() {
            return Err(HandshakeError::ContentLengthAndTransferEncoding);
        }
        Ok(())
    }

    /// Checks every rule of RFC 6455 §4.2.1 and returns the `Sec-WebSocket-Key`.
    pub fn validate(&self) -> Result<&str, HandshakeError> {
        if self.method != "GET" {
            return Err(HandshakeError::MethodNotAllowed(self.method.clone()));
        }
        if self.version != 1 {
            return Err(HandshakeError::HttpVersion);
        }
        if find(&self.headers, "host").is_none() {
            return Err(HandshakeError::MissingHost);
        }
        if !has_token(&self.headers, "upgrade", "websocket") {
            return Err(HandshakeError::NotWebSocketUpgrade);
        }
        if !has_token(&self.headers, "connection", "upgrade") {
            return Err(HandshakeError::ConnectionNotUpgrade);
        }
        if find(&self.headers, "sec-websocket-version").map(str::trim) != Some("13") {
            return Err(HandshakeError::UnsupportedVersion);
        }
        let key = find(&self.headers, "sec-websocket-key")
            .map(str::trim)
            .ok_or(HandshakeError::InvalidKey)?;
        match base64::engine::general_purpose::STANDARD.decode(key) {
            Ok(k) if k.len() == 16 => Ok(key),
            _ => Err(HandshakeError::InvalidKey),
        }
    }

    /// Whether this looks like a WebSocket upgrade at all (an `Upgrade: websocket` header),
    /// so a server can tell a browser's page request from a broken handshake.
    pub fn is_upgrade(&self) -> bool {
        has_token(&self.headers, "upgrade", "websocket")
    }

    /// The first header with that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The body's length from `Content-Length` (checked by [`parse`](Self::parse): copies
    /// agree), or `None` without one (or one too large for a `u64`).
    pub fn content_length(&self) -> Option<u64> {
        find(&self.headers, "content-length")?
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The `Host` header.
    pub fn host(&self) -> &str {
        self.header("host").unwrap_or_default()
    }

    /// The `Origin` header, sent by browsers.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// The subprotocols the client offers, in its order of preference.
    pub fn protocols(&self) -> impl Iterator<Item = &str> {
        tokens(&self.headers, "sec-websocket-protocol")
    }

    /// The extension offers, one string per offer (parameters included).
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        tokens(&self.headers, "sec-websocket-extensions")
    }

    /// The path without the query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// The query string, if any (without `?`).
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }

    /// The first protocol of ours (in our order of preference) that the client offers.
    pub fn choose_protocol<'a>(&self, supported: &[&'a str]) -> Option<&'a str> {
        supported
            .iter()
            .copied()
            .find(|s| self.protocols().any(|p| p == *s))
    }

    /// Negotiates the extensions the client offers against [`Config::deflate`] (RFC 7692 §7.1).
    pub fn negotiate_extensions(&self, config: &Config) -> Negotiated {
        match &config.deflate {
            Some(d) => d.negotiate_server(&parse_extensions(self.extensions_raw())),
            None => Negotiated::default(),
        }
    }

    /// Every `Sec-WebSocket-Extensions` header value.
    fn extensions_raw(&self) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|(_, v)| v.as_str())
    }

    /// Completes the negotiation and builds the `101 Switching Protocols` response, after
    /// [`validate`](Self::validate).
    ///
    /// `protocol` is the subprotocol the server chose (it must be one the client offered, else
    /// [`HandshakeError::ProtocolNotOffered`]; see [`choose_protocol`](Self::choose_protocol));
    /// extensions are negotiated from `config` ([`negotiate_extensions`](Self::negotiate_extensions));
    /// `extra` headers are appended.
    pub fn accept(
        &self,
        protocol: Option<&str>,
        config: &Config,
        extra: &[(&str, &str)],
    ) -> Result<Accepted, HandshakeError> {
        let key = self.validate()?;
        if let Some(p) = protocol {
            if !self.protocols().any(|o| o == p) {
                return Err(HandshakeError::ProtocolNotOffered(p.to_string()));
            }
        }
        let mut s = String::with_capacity(160);
        s.push_str(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        let _ = write!(
            s,
            "Sec-WebSocket-Accept: {}\r\n",
            super::accept_key(key.as_bytes())
        );
        if let Some(p) = protocol {
            let _ = write!(s, "Sec-WebSocket-Protocol: {p}\r\n");
        }
        let negotiated = self.negotiate_extensions(config);
        if let Some(ext) = &negotiated.response {
            let _ = write!(s, "Sec-WebSocket-Extensions: {ext}\r\n");
        }
        for (n, v) in extra {
            check_header(n, v)?;
            let _ = write!(s, "{n}: {v}\r\n");
        }
        s.push_str("\r\n");
        Ok(Accepted {
            response: s.into_bytes(),
            protocol: protocol.map(str::to_string),
            deflate: negotiated.deflate,
        })
    }
}

/// What a server agreed to, and the response that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `101 Switching Protocols` response head.
    pub response: Vec<u8>,
    /// The subprotocol selected.
    pub protocol: Option<String>,
    /// permessage-deflate, if negotiated: pass it to
    /// [`Connection::with_deflate`](crate::Connection::with_deflate).
    pub deflate: Option<DeflateParams>,
}

/// An HTTP error response with a plain-text body saying why, for a refused handshake.
///
/// 426 carries `Sec-WebSocket-Version: 13` (RFC 6455 §4.4), 405 carries `Allow: GET`, 429
/// carries `Retry-After: 1` (the client may try again in a second).
///
/// ```
/// use switchboard_proto::handshake::{server::reject, HandshakeError};
/// let e = HandshakeError::UnsupportedVersion;
/// let resp = String::from_utf8(reject(e.status(), &e.to_string())).unwrap();
/// assert!(resp.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
/// assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
/// ```
pub fn reject(status: u16, body: &str) -> Vec<u8> {
    let mut s = String::with_capacity(128 + body.len());
    let _ = write!(s, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    match status {
        426 => s.push_str("Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"),
        405 => s.push_str("Allow: GET\r\n"),
        429 => s.push_str("Retry-After: 1\r\n"),
        _ => {}
    }
    let _ = write!(
        s,
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.into_bytes()
}

/// The standard reason phrase of the statuses a handshake answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    /// RFC 9112 framing rules (issue 23 item 6): one Host, one Content-Length value of
    /// digits only, never with Transfer-Encoding; absolute-form targets accepted.
    #[test]
    fn requests_that_could_be_framed_two_ways_are_refused() {
        let c = Config::default();
        let parse = |head: &str| Request::parse(head.as_bytes(), &c);
        let status = |head: &str| parse(head).err().map(|e| e.status());
        for bad in [
            "POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n",
            "POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n",
            "POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n",
            "POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
            "POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /healthz HTTP/1.1\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert_eq!(status(bad), Some(400), "{bad:?}");
        }
        for good in [
            "POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\nContent-Length: 3\r\n\r\n",
            "GET /healthz HTTP/1.0\r\n\r\n",
        ] {
            assert!(parse(good).unwrap().is_some(), "{good:?}");
        }
        let (r, _) =
            parse("GET HTTP://Example.com:8080/healthz?x=1 HTTP/1.1\r\nHost: other\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(r.path, "/healthz?x=1");
        assert_eq!(r.path_only(), "/healthz");
        assert_eq!(r.host(), "Example.com:8080");
        let (r, _) = parse("GET http://example.com HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.path.as_str(), r.host()), ("/", "example.com"));
        assert_eq!(r.headers.len(), 1, "the Hosts sent are replaced by one");
        assert_eq!(
            status("GET http://example.com/ HTTP/1.1\r\n\r\n"),
            Some(400)
        );
    }

    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn req(lines: &[&str]) -> Vec<u8> {
        let mut s = lines.join("\r\n");
        s.push_str("\r\n\r\n");
        s.into_bytes()
    }

    fn good() -> Vec<&'static str> {
        vec![
            "GET /chat HTTP/1.1",
            "Host: example.com",
            "Upgrade: websocket",
            "Connection: keep-alive, Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
    }

    fn parse(lines: &[&str]) -> Result<Request, HandshakeError> {
        let (r, _) = Request::parse(&req(lines), &Config::default())?.expect("complete");
        r.validate()?;
        Ok(r)
    }

    #[test]
    fn accepts_valid_request_case_insensitively() {
        let mut l = good();
        l[2] = "upgrade: WebSocket";
        l[3] = "CONNECTION: keep-alive,UPGRADE";
        let r = parse(&l).unwrap();
        assert_eq!(r.host(), "example.com");
        assert_eq!(r.validate().unwrap(), KEY);
    }

    #[test]
    fn each_missing_piece_has_its_error_and_status() {
        let cases: [(usize, &str, HandshakeError, u16); 6] = [
            (
                0,
                "POST /chat HTTP/1.1",
                HandshakeError::MethodNotAllowed("POST".into()),
                405,
            ),
            (1, "X-Nothing: 1", HandshakeError::MissingHost, 400),
            (2, "Upgrade: h2c", HandshakeError::NotWebSocketUpgrade, 400),
            (
                3,
                "Connection: keep-alive",
                HandshakeError::ConnectionNotUpgrade,
                400,
            ),
            (
                4,
                "Sec-WebSocket-Key: c2hvcnQ=",
                HandshakeError::InvalidKey,
                400,
            ),
            (
                5,
                "Sec-WebSocket-Version: 8",
                HandshakeError::UnsupportedVersion,
                426,
            ),
        ];
        for (i, line, err, status) in cases {
            let mut l = good();
            l[i] = line;
            let got = parse(&l).unwrap_err();
            assert_eq!(got, err);
            assert_eq!(got.status(), status);
        }
    }

    #[test]
    fn http_1_0_is_refused() {
        let mut l = good();
        l[0] = "GET /chat HTTP/1.0";
        assert_eq!(parse(&l).unwrap_err(), HandshakeError::HttpVersion);
    }

    #[test]
    fn partial_then_too_large() {
        let cfg = Config::default().max_handshake_size(64);
        assert!(Request::parse(b"GET / HTTP/1.1\r\nHost: a\r\n", &cfg)
            .unwrap()
            .is_none());
        let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(100));
        assert_eq!(
            Request::parse(big.as_bytes(), &cfg).unwrap_err(),
            HandshakeError::TooLarge(64)
        );
    }

    #[test]
    fn too_many_headers() {
        let cfg = Config::default().max_handshake_headers(4);
        assert_eq!(
            Request::parse(&req(&good()), &cfg).unwrap_err().status(),
            431
        );
    }

    #[test]
    fn protocol_must_be_offered() {
        let mut l = good();
        l.push("Sec-WebSocket-Protocol: a, b");
        let r = parse(&l).unwrap();
        assert_eq!(r.choose_protocol(&["b", "a"]), Some("b"));
        assert_eq!(r.choose_protocol(&["c"]), None);
        let cfg = Config::default();
        assert!(r.accept(Some("c"), &cfg, &[]).is_err());
        assert!(r.accept(Some("a"), &cfg, &[("X-Ok", "1")]).is_ok());
        assert!(r
            .accept(None, &cfg, &[("X-Bad", "a\r\nInjected: 1")])
            .is_err());
    }

    #[test]
    fn deflate_negotiated_only_when_configured() {
        let mut l = good();
        l.push("Sec-WebSocket-Extensions: x-unknown, permessage-deflate; client_max_window_bits");
        let r = parse(&l).unwrap();
        let off = r.accept(None, &Config::default(), &[]).unwrap();
        assert_eq!(off.deflate, None);
        assert!(!String::from_utf8(off.response)
            .unwrap()
            .contains("Extensions"));
        let cfg = Config::default().deflate(Some(crate::extension::DeflateConfig::default()));
        let on = r.accept(None, &cfg, &[]).unwrap();
        assert!(on.deflate.is_some());
        let resp = String::from_utf8(on.response).unwrap();
        assert!(
            resp.contains("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            "{resp}"
        );
    }
}
