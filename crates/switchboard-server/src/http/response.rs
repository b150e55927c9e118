//! HTTP responses: whole, with `Connection: close` (one request per connection).

use std::fmt::Write as _;
use std::time::Duration;

use switchboard_proto::handshake::server::reason_phrase;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::debug;

/// A response, whole, and its status (for the metrics).
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    bytes: Vec<u8>,
}

impl Response {
    /// A response with a body and `extra` headers.
    pub(crate) fn new(
        status: u16,
        content_type: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Self {
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
        Self { status, bytes }
    }

    /// A plain text response.
    pub(crate) fn text(status: u16, body: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", &[], body.as_bytes())
    }

    /// A JSON response.
    pub(crate) fn json(status: u16, body: &str) -> Self {
        Self::new(status, "application/json", &[], body.as_bytes())
    }

    /// The same head without the body (the answer to `HEAD`).
    pub(crate) fn head_only(mut self) -> Self {
        let end = self
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.bytes.len(), |i| i + 4);
        self.bytes.truncate(end);
        self
    }

    /// Writes the response and closes the stream, within `timeout`: a client that does not
    /// read its response must not hold the connection.
    pub(crate) async fn write<S>(self, stream: &mut S, timeout: Duration)
    where
        S: AsyncWrite + Unpin,
    {
        let write = async {
            stream.write_all(&self.bytes).await?;
            stream.flush().await?;
            stream.shutdown().await
        };
        if tokio::time::timeout(timeout, write).await.is_err() {
            debug!("response not read within the handshake timeout; closing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_and_its_head() {
        let r = Response::new(405, "text/plain", &[("Allow", "GET")], b"use GET\n");
        let text = String::from_utf8(r.bytes.clone()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 8\r\nConnection: close\r\nCache-Control: no-store\r\nAllow: GET\r\n\r\nuse GET\n"
        );
        let head = r.head_only();
        assert!(head.bytes.ends_with(b"Allow: GET\r\n\r\n"));
    }
}
