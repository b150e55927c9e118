//! `--trace`: the session drawn as a sequence diagram, live; `--trace-json`: the same events
//! as JSON lines. The format is documented in docs/connect.md and checked against a golden
//! file (tests/connect.rs).
//!
//! ```text
//! [    0.000 ms] client ───▶ server  TCP connect 127.0.0.1:8080
//! [    0.210 ms] client ───▶ server  GET /echo HTTP/1.1
//!                                      Host: 127.0.0.1:8080
//! [    0.950 ms] client ◀─── server  HTTP/1.1 101 Switching Protocols
//!               ═══ established: protocol none, extensions none ═══
//! [    1.100 ms] client ───▶ server  TEXT   fin rsv=000 masked   len=5 "hello"
//! [    1.400 ms] client ◀─── server  TEXT   fin rsv=000 unmasked len=5 "hello"
//!               ═══ closing: client sent close first ═══
//! [    2.000 ms] client ───▶ server  CLOSE  fin rsv=000 masked   len=2 code=1000 reason=""
//! [    2.300 ms] client ◀─── server  CLOSE  fin rsv=000 unmasked len=2 code=1000 reason=""
//! [    2.400 ms] client ─ ✕ ─ server  TCP closed by the server
//!               ═══ closed: 1000, initiated by the client ═══
//! ```

use std::time::Instant;

use serde_json::{json, Value};
use switchboard_proto::frame::OpCode;
use switchboard_proto::handshake::client::Response;
use switchboard_proto::FrameTrace;
use switchboard_tokio::proxy::{Proxy, ProxyKind, TunnelLine};

/// Where trace lines go.
pub(crate) type Sink = Box<dyn FnMut(String) + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Diagram,
    Json,
}

pub(crate) struct Tracer {
    format: Format,
    start: Instant,
    sink: Sink,
    /// The WebSocket is a stream of an HTTP/2 connection (RFC 8441).
    http2: bool,
}

const OUT: &str = "client ───▶ server";
const IN: &str = "client ◀─── server";
const TO_PROXY: &str = "client ───▶ proxy ";
const FROM_PROXY: &str = "client ◀─── proxy ";
const INDENT: &str = "                                     ";

fn opcode_name(op: OpCode) -> &'static str {
    match op {
        OpCode::Continuation => "CONT",
        OpCode::Text => "TEXT",
        OpCode::Binary => "BINARY",
        OpCode::Close => "CLOSE",
        OpCode::Ping => "PING",
        OpCode::Pong => "PONG",
    }
}

/// A short, printable preview: quoted text (escaped, cut at 40 characters) or hex.
pub(crate) fn preview(bytes: &[u8], total: u64, compressed: bool) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    if compressed {
        return format!("(compressed) {}", hex(bytes));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            let cut: String = s.chars().take(40).collect();
            let more = cut.len() < s.len() || (bytes.len() as u64) < total;
            format!("{:?}{}", cut, if more { "…" } else { "" })
        }
        Err(_) => hex(bytes),
    }
}

fn hex(b: &[u8]) -> String {
    let mut s: String = b
        .iter()
        .take(16)
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    if b.len() > 16 {
        s.push_str(" …");
    }
    s
}

impl Tracer {
    pub(crate) fn new(format: Format, sink: Sink) -> Self {
        Self {
            format,
            start: Instant::now(),
            sink,
            http2: false,
        }
    }

    fn ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    fn line(&mut self, arrow: &str, text: &str, details: &[String]) {
        self.line_at(Instant::now(), arrow, text, details);
    }

    /// A line for something that happened at `at`.
    fn line_at(&mut self, at: Instant, arrow: &str, text: &str, details: &[String]) {
        let ms = at.saturating_duration_since(self.start).as_secs_f64() * 1000.0;
        let mut s = format!("[{ms:9.3} ms] {arrow}  {text}");
        for d in details {
            s.push('\n');
            s.push_str(INDENT);
            s.push_str(d);
        }
        (self.sink)(s);
    }

    fn json(&mut self, mut v: Value) {
        if let Value::Object(m) = &mut v {
            m.insert("t_ms".into(), json!((self.ms() * 1000.0).round() / 1000.0));
        }
        (self.sink)(v.to_string());
    }

    fn banner(&mut self, text: &str) {
        (self.sink)(format!("              ═══ {text} ═══"));
    }

    pub(crate) fn tcp_connect(&mut self, target: &str, tls: bool) {
        match self.format {
            Format::Diagram => {
                let what = if tls {
                    "TCP connect + TLS"
                } else {
                    "TCP connect"
                };
                self.line(OUT, &format!("{what} {target}"), &[]);
            }
            Format::Json => self.json(json!({"event": "connect", "target": target, "tls": tls})),
        }
    }

    /// The TCP connection to a proxy (`var`: the environment variable that named it).
    pub(crate) fn proxy_connect(&mut self, proxy: &Proxy, var: Option<&str>) {
        match self.format {
            Format::Diagram => {
                let from = var.map(|v| format!(" (from {v})")).unwrap_or_default();
                let target = format!("{}:{}", proxy.host(), proxy.port());
                let kind = match proxy.kind() {
                    ProxyKind::Socks5 => "SOCKS5 proxy",
                    _ => "HTTP proxy",
                };
                self.line(
                    TO_PROXY,
                    &format!("TCP connect {target}, {kind}{from}"),
                    &[],
                );
            }
            Format::Json => self.json(json!({
                "event": "proxy_connect",
                "proxy": proxy.to_string(),
                "from": var,
            })),
        }
    }

    /// One line of the proxy's handshake, at the time it crossed the wire.
    pub(crate) fn proxy_line(&mut self, line: &TunnelLine) {
        match self.format {
            Format::Diagram => {
                let arrow = if line.to_proxy { TO_PROXY } else { FROM_PROXY };
                self.line_at(line.at, arrow, &line.text, &line.details);
            }
            Format::Json => {
                let ms = line.at.saturating_duration_since(self.start).as_secs_f64() * 1000.0;
                let v = json!({
                    "event": "proxy",
                    "dir": if line.to_proxy { "out" } else { "in" },
                    "line": line.text,
                    "details": line.details,
                });
                if let Value::Object(mut m) = v {
                    m.insert("t_ms".into(), json!((ms * 1000.0).round() / 1000.0));
                    (self.sink)(Value::Object(m).to_string());
                }
            }
        }
    }

    /// The proxy opened the tunnel to `target`.
    pub(crate) fn tunnel_open(&mut self, target: &str, tls: bool) {
        match self.format {
            Format::Diagram => {
                let tls = if tls { ", TLS inside it" } else { "" };
                self.banner(&format!("tunnel to {target} open{tls}"));
            }
            Format::Json => self.json(json!({"event": "tunnel", "target": target, "tls": tls})),
        }
    }

    /// The proxy did not open the tunnel.
    pub(crate) fn tunnel_failed(&mut self, error: &str) {
        match self.format {
            Format::Diagram => self.banner("no tunnel: the proxy failed or refused"),
            Format::Json => self.json(json!({"event": "tunnel_failed", "error": error})),
        }
    }

    pub(crate) fn request(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or_default().to_string();
        let headers: Vec<String> = lines.map(str::to_string).collect();
        match self.format {
            Format::Diagram => self.line(OUT, &first, &headers),
            Format::Json => {
                let h: Vec<Value> = headers
                    .iter()
                    .map(|l| {
                        let (n, v) = l.split_once(':').unwrap_or((l, ""));
                        json!([n.trim(), v.trim()])
                    })
                    .collect();
                self.json(json!({"event": "request", "line": first, "headers": h}));
            }
        }
    }

    /// The HTTP/2 connection is up: how it was negotiated (h2c or ALPN), and that the
    /// server's SETTINGS enable the extended CONNECT.
    pub(crate) fn http2_ready(&mut self, tls: bool) {
        self.http2 = true;
        let how = if tls {
            "ALPN h2"
        } else {
            "h2c, prior knowledge"
        };
        match self.format {
            Format::Diagram => self.banner(&format!(
                "HTTP/2 ({how}): server SETTINGS enable the extended CONNECT"
            )),
            Format::Json => {
                self.json(json!({"event": "http2", "tls": tls, "enable_connect_protocol": true}))
            }
        }
    }

    /// The extended CONNECT (RFC 8441): pseudo-headers, then the headers.
    pub(crate) fn connect_request(
        &mut self,
        pseudo: &[(&str, String)],
        headers: &[(String, String)],
    ) {
        let path = pseudo
            .iter()
            .find(|(n, _)| *n == ":path")
            .map_or("/", |(_, v)| v.as_str());
        let first = format!("CONNECT {path} HTTP/2");
        let all: Vec<(String, String)> = pseudo
            .iter()
            .map(|(n, v)| ((*n).to_string(), v.clone()))
            .chain(headers.iter().cloned())
            .collect();
        match self.format {
            Format::Diagram => {
                let lines: Vec<String> = all.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                self.line(OUT, &first, &lines);
            }
            Format::Json => {
                let h: Vec<Value> = all.iter().map(|(n, v)| json!([n, v])).collect();
                self.json(json!({"event": "request", "line": first, "headers": h}));
            }
        }
    }

    pub(crate) fn response(&mut self, r: &Response) {
        let first = if self.http2 {
            format!(":status {}", r.status)
        } else {
            format!("HTTP/1.1 {} Switching Protocols", r.status)
        };
        match self.format {
            Format::Diagram => {
                let headers: Vec<String> =
                    r.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                self.line(IN, &first, &headers);
                let proto = r.protocol.as_deref().unwrap_or("none");
                let ext = if r.extensions.is_empty() {
                    "none".to_string()
                } else {
                    r.extensions.join(", ")
                };
                self.banner(&format!("established: protocol {proto}, extensions {ext}"));
            }
            Format::Json => {
                let h: Vec<Value> = r.headers.iter().map(|(n, v)| json!([n, v])).collect();
                self.json(json!({"event": "response", "status": r.status, "headers": h}));
                self.json(
                    json!({"event": "open", "protocol": r.protocol, "extensions": r.extensions}),
                );
            }
        }
    }

    pub(crate) fn refused(&mut self, status: u16, reason: &str, body: &str) {
        match self.format {
            Format::Diagram => {
                let details: Vec<String> = if body.is_empty() {
                    vec![]
                } else {
                    vec![body.to_string()]
                };
                let first = if self.http2 {
                    format!(":status {status}")
                } else {
                    format!("HTTP/1.1 {status} {reason}")
                };
                self.line(IN, &first, &details);
                self.banner("handshake refused");
            }
            Format::Json => self.json(
                json!({"event": "refused", "status": status, "reason": reason, "body": body}),
            ),
        }
    }

    pub(crate) fn frame(&mut self, f: &FrameTrace) {
        let h = &f.header;
        let rsv = format!(
            "{}{}{}",
            u8::from(h.rsv1),
            u8::from(h.rsv2),
            u8::from(h.rsv3)
        );
        let (code, reason) = if h.opcode == OpCode::Close && f.preview.len() >= 2 {
            let code = u16::from_be_bytes([f.preview[0], f.preview[1]]);
            (
                Some(code),
                Some(String::from_utf8_lossy(&f.preview[2..]).to_string()),
            )
        } else {
            (None, None)
        };
        match self.format {
            Format::Diagram => {
                let mut text = format!(
                    "{:<6} {} rsv={rsv} {:<8} len={}",
                    opcode_name(h.opcode),
                    if h.fin { "fin" } else { "---" },
                    if h.mask.is_some() {
                        "masked"
                    } else {
                        "unmasked"
                    },
                    h.payload_len
                );
                match (code, &reason) {
                    (Some(c), Some(r)) => text.push_str(&format!(" code={c} reason={r:?}")),
                    _ => {
                        let p = preview(&f.preview, h.payload_len, h.rsv1);
                        if !p.is_empty() {
                            text.push(' ');
                            text.push_str(&p);
                        }
                    }
                }
                self.line(if f.outgoing { OUT } else { IN }, &text, &[]);
            }
            Format::Json => self.json(json!({
                "event": "frame",
                "dir": if f.outgoing { "out" } else { "in" },
                "opcode": opcode_name(h.opcode).to_ascii_lowercase(),
                "fin": h.fin,
                "rsv1": h.rsv1, "rsv2": h.rsv2, "rsv3": h.rsv3,
                "masked": h.mask.is_some(),
                "len": h.payload_len,
                "preview": preview(&f.preview, h.payload_len, h.rsv1),
                "close_code": code,
                "close_reason": reason,
            })),
        }
    }

    pub(crate) fn closing(&mut self, client_first: bool) {
        let who = if client_first { "client" } else { "server" };
        match self.format {
            Format::Diagram => self.banner(&format!("closing: {who} sent close first")),
            Format::Json => self.json(json!({"event": "closing", "initiator": who})),
        }
    }

    pub(crate) fn tcp_closed(&mut self, by_server: bool) {
        let by = if by_server { "server" } else { "client" };
        // Over HTTP/2 the WebSocket is a stream: END_STREAM, the connection may live on.
        let what = if self.http2 { "HTTP/2 stream" } else { "TCP" };
        match self.format {
            Format::Diagram => self.line(
                "client ─ ✕ ─ server",
                &format!("{what} closed by the {by}"),
                &[],
            ),
            Format::Json if self.http2 => {
                self.json(json!({"event": "stream_closed", "by": by}));
            }
            Format::Json => self.json(json!({"event": "tcp_closed", "by": by})),
        }
    }

    pub(crate) fn closed(&mut self, code: Option<u16>, client_first: Option<bool>) {
        let code_s = code.map_or("no status (1005)".to_string(), |c| c.to_string());
        let who = match client_first {
            Some(true) => "the client",
            Some(false) => "the server",
            None => "nobody (the connection was lost)",
        };
        match self.format {
            Format::Diagram => self.banner(&format!("closed: {code_s}, initiated by {who}")),
            Format::Json => self.json(json!({"event": "closed", "code": code, "initiator": client_first.map(|c| if c { "client" } else { "server" })})),
        }
    }
}
