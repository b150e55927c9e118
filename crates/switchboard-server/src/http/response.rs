//! HTTP responses, whole: handed to hyper (HTTP/1.1 with keep-alive, HTTP/2), or written by
//! hand and the connection closed (the 429 of an address past its new connections a second).

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use switchboard_proto::handshake::server::reason_phrase;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::debug;

/// A response, whole, and its status (for the metrics).
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    content_type: &'static str,
    extra: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Response {
    /// A response with a body and `extra` headers.
    pub(crate) fn new(
        status: u16,
        content_type: &'static str,
        extra: &[(&'static str, &str)],
        body: impl Into<Bytes>,
    ) -> Self {
        Self {
            status,
            content_type,
            extra: extra.iter().map(|(n, v)| (*n, (*v).to_string())).collect(),
            body: body.into(),
        }
    }

    /// A plain text response.
    pub(crate) fn text(status: u16, body: &str) -> Self {
        Self::new(
            status,
            "text/plain; charset=utf-8",
            &[],
            Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    /// A JSON response.
    pub(crate) fn json(status: u16, body: &str) -> Self {
        Self::new(
            status,
            "application/json",
            &[],
            Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    /// The same response with another header (a refused upgrade's `Connection: close`).
    pub(crate) fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.extra.push((name, value.to_string()));
        self
    }

    /// The response for hyper, which adds `Content-Length` (and leaves the body out of the
    /// answer to `HEAD`).
    pub(crate) fn into_http(self) -> http::Response<Full<Bytes>> {
        let mut b = http::Response::builder()
            .status(self.status)
            .header(http::header::CONTENT_TYPE, self.content_type)
            .header(http::header::CACHE_CONTROL, "no-store");
        for (n, v) in &self.extra {
            b = b.header(*n, v.as_str());
        }
        b.body(Full::new(self.body)).unwrap_or_else(|e| {
            debug!(error = %e, "a response that could not be built");
            let mut r = http::Response::new(Full::default());
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }

    /// The answer to `HEAD`: the head of the response, with the length of the body left out
    /// (HTTP/2 does not leave it out by itself).
    pub(crate) fn into_http_head(self) -> http::Response<Full<Bytes>> {
        let length = self.body.len();
        let mut resp = Self {
            body: Bytes::new(),
            ..self
        }
        .into_http();
        resp.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(length),
        );
        resp
    }

    /// The response as bytes, with `Connection: close`; only the head for `HEAD`.
    fn closing_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut head = String::with_capacity(160);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        for (n, v) in &self.extra {
            let _ = write!(head, "{n}: {v}\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }

    /// Writes the response and closes the stream, within `timeout`: a client that does not
    /// read its response must not hold the connection.
    pub(crate) async fn write_and_close<S>(self, stream: &mut S, head_only: bool, timeout: Duration)
    where
        S: AsyncWrite + Unpin,
    {
        let bytes = self.closing_bytes(head_only);
        let write = async {
            stream.write_all(&bytes).await?;
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
    fn a_closing_response_and_its_head() {
        let r = Response::new(405, "text/plain", &[("Allow", "GET")], &b"use GET\n"[..]);
        let text = String::from_utf8(r.closing_bytes(false)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 8\r\nConnection: close\r\nCache-Control: no-store\r\nAllow: GET\r\n\r\nuse GET\n"
        );
        assert!(r.closing_bytes(true).ends_with(b"Allow: GET\r\n\r\n"));
        let h = r.into_http();
        assert_eq!(h.status(), 405);
        assert_eq!(h.headers()["allow"], "GET");
        assert!(h.headers().get("connection").is_none());
    }
}
