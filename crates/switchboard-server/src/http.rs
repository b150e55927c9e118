//! Plain HTTP on the WebSocket port: the chat page, `/healthz`, `/metrics` and
//! `POST /api/publish`. One request per connection (`Connection: close`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_proto::handshake::server::{reason_phrase, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use crate::pubsub::{binary_message, publish_json, publishable};
use crate::Shared;

/// The chat page, embedded at build time.
const CHAT_PAGE: &str = include_str!("../assets/chat.html");

/// A response, whole, and its status (for the metrics).
pub(crate) struct Response {
    status: u16,
    bytes: Vec<u8>,
}

/// An HTTP response with a body.
pub(crate) fn response(
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = String::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        reason_phrase(status),
        body.len()
    );
    for (n, v) in extra {
        let _ = write!(head, "{n}: {v}\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    Response { status, bytes }
}

fn text(status: u16, body: &str) -> Response {
    response(status, "text/plain; charset=utf-8", &[], body.as_bytes())
}

fn json(status: u16, body: &str) -> Response {
    response(status, "application/json", &[], body.as_bytes())
}

/// Answers one plain HTTP request and closes.
pub(crate) async fn handle<S>(
    mut stream: S,
    req: Request,
    leftover: Vec<u8>,
    peer: SocketAddr,
    shared: &Shared,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = req.path_only().to_string();
    let resp = match (req.method.as_str(), path.as_str()) {
        ("GET" | "HEAD", "/" | "/index.html") => response(
            200,
            "text/html; charset=utf-8",
            &[("X-Content-Type-Options", "nosniff")],
            CHAT_PAGE.as_bytes(),
        ),
        ("GET", "/healthz") => {
            if shared.registry.is_triggered() {
                text(503, "shutting down\n")
            } else {
                text(200, "ok\n")
            }
        }
        ("GET", "/metrics") => response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &[],
            shared
                .metrics
                .render(shared.hub.stats(), shared.hub.topic_count())
                .as_bytes(),
        ),
        ("POST", "/api/publish") => {
            match read_body(&mut stream, &req, leftover, shared.config.limits.max_api_body, shared.config.ws.handshake_timeout).await {
                Ok(body) => publish(&req, &body, peer, shared),
                Err(resp) => resp,
            }
        }
        (_, "/api/publish") => {
            response(405, "text/plain; charset=utf-8", &[("Allow", "POST")], b"use POST\n")
        }
        ("GET", "/echo" | "/chat" | "/ws") => text(
            426,
            &format!("{path} is a WebSocket endpoint: connect with a WebSocket client, for example `switchboard connect ws://HOST{path}`\n"),
        ),
        (_, "/" | "/index.html" | "/healthz" | "/metrics") => {
            response(405, "text/plain; charset=utf-8", &[("Allow", "GET")], b"use GET\n")
        }
        _ => text(404, &format!("nothing at {path}; the chat is at /, WebSockets at /chat, /ws and /echo\n")),
    };
    shared.metrics.http_request(&req.method, resp.status);
    let mut resp = resp.bytes;
    if req.method == "HEAD" {
        // Same head, no body.
        let end = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(resp.len(), |i| i + 4);
        resp.truncate(end);
    }
    // Bounded: a client that does not read its response must not hold the connection.
    let write = async {
        stream.write_all(&resp).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(shared.config.ws.handshake_timeout, write)
        .await
        .is_err()
    {
        debug!("response not read within the handshake timeout; closing");
    }
}

/// Reads a `Content-Length` body of at most `max` bytes within `timeout`.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    req: &Request,
    mut body: Vec<u8>,
    max: usize,
    timeout: Duration,
) -> Result<Vec<u8>, Response> {
    if req.header("transfer-encoding").is_some() {
        return Err(text(
            411,
            "send the body with a Content-Length (chunked bodies are not accepted)\n",
        ));
    }
    // A present Content-Length was checked when the head was parsed (one decimal value).
    let len = match req.content_length().map(usize::try_from) {
        Some(Ok(n)) => n,
        Some(Err(_)) => usize::MAX,
        None if req.header("content-length").is_some() => usize::MAX,
        None => return Err(text(411, "a Content-Length is required\n")),
    };
    if len > max {
        return Err(text(413, &format!("body over the limit of {max} bytes\n")));
    }
    if body.len() > len {
        body.truncate(len);
    }
    let need = len - body.len();
    let start = body.len();
    body.resize(len, 0);
    match tokio::time::timeout(timeout, stream.read_exact(&mut body[start..start + need])).await {
        Ok(Ok(_)) => Ok(body),
        Ok(Err(_)) => Err(text(400, "the body ended early\n")),
        Err(_) => Err(text(408, "the body did not arrive in time\n")),
    }
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    topic: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    data_base64: Option<String>,
}

fn publish(req: &Request, body: &[u8], peer: SocketAddr, shared: &Shared) -> Response {
    let Some(key) = shared.config.api_key.as_deref() else {
        return text(
            403,
            "the publish API is disabled: no API key is configured. Set SWITCHBOARD_API_KEY (or api_key in the config file) and send it as `Authorization: Bearer KEY`\n",
        );
    };
    let given = req
        .header("authorization")
        .and_then(|v| v.trim().strip_prefix("Bearer ").map(str::trim))
        .or_else(|| req.header("x-api-key").map(str::trim));
    let refused = |reason: &str| {
        if let Some(suppressed) = shared.refusals.auth.check() {
            warn!(%peer, reason, suppressed, "publish API refused: no or wrong API key");
        }
    };
    match given {
        None => {
            refused("missing_key");
            return response(
                401,
                "text/plain; charset=utf-8",
                &[("WWW-Authenticate", "Bearer")],
                b"send the API key as `Authorization: Bearer KEY`\n",
            );
        }
        Some(g) if !constant_time_eq(g.as_bytes(), key.as_bytes()) => {
            refused("wrong_key");
            return text(403, "wrong API key\n");
        }
        Some(_) => {}
    }
    let p: PublishBody<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return text(400, &format!("expected {{\"topic\":\"news\",\"data\":<any JSON>}} or {{\"topic\":\"news\",\"data_base64\":\"...\"}}: {e}\n"))
        }
    };
    if let Err((_, why)) = publishable(&p.topic) {
        return text(400, &format!("{why}\n"));
    }
    let delivered = match (p.data, p.data_base64) {
        (Some(data), None) => publish_json(&shared.hub, &p.topic, data),
        (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
            Ok(bytes) => match binary_message(&p.topic, &bytes) {
                Some(msg) => shared
                    .hub
                    .publish(&p.topic, msg, false)
                    .map(|n| n.unwrap_or(0))
                    .map_err(|e| e.to_string()),
                None => Err("topic too long".into()),
            },
            Err(e) => return text(400, &format!("data_base64 is not base64: {e}\n")),
        },
        _ => return text(400, "give exactly one of \"data\" and \"data_base64\"\n"),
    };
    match delivered {
        Ok(n) => {
            debug!(topic = %p.topic, delivered = n, "published via API");
            json(200, &format!("{{\"ok\":true,\"delivered\":{n}}}"))
        }
        Err(e) => text(503, &format!("{e}\n")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `%XX` and `+` in a query value.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The first value of `key` in a query string, decoded.
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<Result<String, String>> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| {
            percent_decode(v).ok_or_else(|| format!("{key} is not valid percent-encoded UTF-8"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param(Some("room=a&name=Ada+L%C3%B6"), "name"),
            Some(Ok("Ada Lö".into()))
        );
        assert_eq!(query_param(Some("room=a"), "name"), None);
        assert!(query_param(Some("name=%ZZ"), "name").unwrap().is_err());
        assert!(query_param(Some("name=%C3"), "name").unwrap().is_err());
    }
}
