//! How the program ends: the exit status (docs/connect.md has the table), and a failed
//! connection explained in words.

use switchboard_tokio::client::WsUrl;
use switchboard_tokio::h2::Http2Error;
use switchboard_tokio::Error as WsError;

/// How the program ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    Normal = 0,
    Other = 1,
    Usage = 2,
    CloseCode = 3,
    Lost = 4,
    Refused = 5,
    Unreachable = 6,
    Tls = 7,
}

/// The exit status for the close code the server sent (`None`: none).
pub(super) fn exit_for(code: Option<u16>) -> Exit {
    match code {
        Some(1000) => Exit::Normal,
        _ => Exit::CloseCode,
    }
}

/// The first line of what the server sent, printable (at most 100 characters).
fn first_line(seen: &[u8]) -> String {
    let end = seen
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(seen.len());
    String::from_utf8_lossy(&seen[..end])
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

/// The first line of the body after an HTTP head, if any.
fn body_line(seen: &[u8]) -> String {
    let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
        return String::new();
    };
    first_line(&seen[i + 4..])
}

/// The same URL with the other scheme: `wss://` for `ws://` and back.
fn other_scheme(url: &str) -> String {
    for (from, to) in [
        ("wss://", "ws://"),
        ("https://", "http://"),
        ("ws://", "wss://"),
        ("http://", "https://"),
    ] {
        if let Some(rest) = url.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    url.to_string()
}

/// Why HTTP/2 (`--http2`) failed: the server does not offer it (5), or the connection
/// failed (6).
fn explain_http2(e: &Http2Error, target: &str) -> (String, Exit) {
    match e {
        Http2Error::ConnectProtocolDisabled | Http2Error::NotNegotiated(_) => (
            format!("{target}: {e}; connect without --http2 to use HTTP/1.1"),
            Exit::Refused,
        ),
        Http2Error::Timeout(_) => (format!("{target}: {e}"), Exit::Unreachable),
        Http2Error::Protocol(p) if p.is_io() || p.is_go_away() => (
            format!("the HTTP/2 connection to {target} failed: {e}"),
            Exit::Unreachable,
        ),
        _ => (format!("{target}: {e}"), Exit::Refused),
    }
}

/// Why connecting failed, in words, with the exit status. `seen`: the first bytes the server
/// sent, if any.
pub(super) fn explain(e: &WsError, url: &WsUrl, raw_url: &str, seen: &[u8]) -> (String, Exit) {
    let target = format!("{}:{}", url.host, url.port);
    match e {
        // A TLS client hello answered in plain text (an HTTP 400, typically).
        WsError::Tls(t) if t.contains("InvalidContentType") || t.contains("corrupt message") => (
            format!(
                "{target} answered in plain text, not TLS: try {}",
                other_scheme(raw_url)
            ),
            Exit::Tls,
        ),
        // An HTTP request answered with a TLS record (alert or handshake).
        WsError::Handshake(_) if !url.tls && matches!(seen.first(), Some(0x15 | 0x16)) => (
            format!(
                "{target} answered with TLS, not plain HTTP: try {}",
                other_scheme(raw_url)
            ),
            Exit::Refused,
        ),
        WsError::Handshake(switchboard_proto::handshake::HandshakeError::HttpVersion)
            if !seen.is_empty() =>
        {
            let body = body_line(seen);
            (
                format!(
                    "the server answered {} instead of HTTP/1.1 101 Switching Protocols{}",
                    first_line(seen),
                    if body.is_empty() { String::new() } else { format!(": {body}") }
                ),
                Exit::Refused,
            )
        }
        WsError::Handshake(switchboard_proto::handshake::HandshakeError::Malformed(_))
            if !seen.is_empty() =>
        {
            (
                format!(
                    "the server answered {:?}, which is not HTTP: is {target} a WebSocket server?",
                    first_line(seen)
                ),
                Exit::Refused,
            )
        }
        WsError::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => (
                format!("connection refused by {target}: is the server running, and on that port?"),
                Exit::Unreachable,
            ),
            std::io::ErrorKind::TimedOut => (format!("{target}: {io}"), Exit::Unreachable),
            _ if io.to_string().contains("lookup") || io.to_string().contains("resolve") => (
                format!("cannot resolve host {:?}: {io}", url.host),
                Exit::Unreachable,
            ),
            _ => (format!("cannot connect to {target}: {io}"), Exit::Unreachable),
        },
        WsError::Tls(t) => (
            format!("TLS with {target} failed: {t} (for a self-signed server try --ca FILE or --insecure)"),
            Exit::Tls,
        ),
        WsError::Rejected { status, reason, body } => {
            let first = body.lines().next().unwrap_or_default();
            (
                format!("the server answered HTTP {status} {reason} instead of 101 Switching Protocols{}", if first.is_empty() { String::new() } else { format!(": {first}") }),
                Exit::Refused,
            )
        }
        WsError::Handshake(switchboard_proto::handshake::HandshakeError::InvalidAccept) => (
            "the server's Sec-WebSocket-Accept does not match our key: not a WebSocket server, or a proxy in the way".into(),
            Exit::Refused,
        ),
        WsError::Handshake(h) => (format!("invalid handshake response: {h}"), Exit::Refused),
        // The proxy's own words: its status line, SOCKS5 reply, what to do about credentials.
        WsError::Proxy(p) => (p.to_string(), Exit::Unreachable),
        WsError::HandshakeTimeout(t) => (format!("no handshake response from {target} within {t:?}"), Exit::Unreachable),
        WsError::Http2(h) => explain_http2(h, &target),
        other => (other.to_string(), Exit::Other),
    }
}
