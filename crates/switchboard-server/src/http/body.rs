//! Request bodies: bounded in size (checked from `Content-Length` before anything is read,
//! then while reading, for chunked bodies) and in time.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use switchboard_proto::handshake::server::Request;

use super::response::Response;

/// What the head says of the body, before any of it is read (so `Expect: 100-continue` is
/// not answered for a body that would be refused): 413 for a `Content-Length` over `max`,
/// 411 for a body with neither a length nor chunked framing.
pub(crate) fn check_length(head: &Request, max: usize) -> Result<(), Response> {
    if head.header("content-length").is_none() && head.header("transfer-encoding").is_none() {
        return Err(Response::text(
            411,
            "a Content-Length (or a chunked body) is required\n",
        ));
    }
    match head.content_length().map(usize::try_from) {
        Some(Ok(len)) if len <= max => Ok(()),
        Some(_) => Err(too_large(max)),
        None => Ok(()),
    }
}

/// Reads a body of at most `max` bytes within `timeout`.
pub(crate) async fn read_body<B>(body: B, max: usize, timeout: Duration) -> Result<Bytes, Response>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(max)),
        Ok(Err(_)) => Err(Response::text(400, "the body ended early\n")),
        Err(_) => Err(Response::text(408, "the body did not arrive in time\n")),
    }
}

fn too_large(max: usize) -> Response {
    Response::text(413, &format!("body over the limit of {max} bytes\n"))
}
