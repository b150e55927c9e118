//! Request bodies: a `Content-Length` body, bounded in size and time.

use std::time::Duration;

use switchboard_proto::handshake::server::Request;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::response::Response;

/// Reads a `Content-Length` body of at most `max` bytes within `timeout`; `body` holds what
/// arrived with the head.
pub(crate) async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    req: &Request,
    mut body: Vec<u8>,
    max: usize,
    timeout: Duration,
) -> Result<Vec<u8>, Response> {
    if req.header("transfer-encoding").is_some() {
        return Err(Response::text(
            411,
            "send the body with a Content-Length (chunked bodies are not accepted)\n",
        ));
    }
    // A present Content-Length was checked when the head was parsed (one decimal value).
    let len = match req.content_length().map(usize::try_from) {
        Some(Ok(n)) => n,
        Some(Err(_)) => usize::MAX,
        None if req.header("content-length").is_some() => usize::MAX,
        None => return Err(Response::text(411, "a Content-Length is required\n")),
    };
    if len > max {
        return Err(Response::text(
            413,
            &format!("body over the limit of {max} bytes\n"),
        ));
    }
    if body.len() > len {
        body.truncate(len);
    }
    let need = len - body.len();
    let start = body.len();
    body.resize(len, 0);
    match tokio::time::timeout(timeout, stream.read_exact(&mut body[start..start + need])).await {
        Ok(Ok(_)) => Ok(body),
        Ok(Err(_)) => Err(Response::text(400, "the body ended early\n")),
        Err(_) => Err(Response::text(408, "the body did not arrive in time\n")),
    }
}
