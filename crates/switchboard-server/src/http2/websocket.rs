//! A WebSocket on an HTTP/2 stream (RFC 8441): an extended `CONNECT` with
//! `:protocol websocket` gets the same [checks](crate::handshake) as an HTTP/1.1 upgrade
//! (route, limits, origin, token, the endpoint's query) and the same negotiation
//! (subprotocol, permessage-deflate), counts as a connection of its own (the connection
//! limits, server shutdown, `connections_open`), is answered `200`, and runs its endpoint on
//! the stream in a task of its own on the server's task tracker. A refusal is an ordinary
//! response on the stream (401, 403, 404, 503…): the HTTP/2 connection and its other streams
//! go on.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use switchboard_tokio::h2::{extended_request, extended_upgrade};
use switchboard_tokio::Error as WsError;
use tracing::{debug, Instrument};

use super::idle::OpenStream;
use crate::connection::{conn_span, drive};
use crate::handshake;
use crate::http::response::Response;
use crate::metrics::{Handshake, HttpVersion};
use crate::registry::Registration;
use crate::upgrade::accepted_over;
use crate::Shared;

/// Whether `req` is an extended `CONNECT` (it carries a `:protocol`), a WebSocket handshake
/// whatever its protocol says (a protocol other than `websocket` is refused by the checks).
pub(super) fn is_extended_connect<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::CONNECT
        && req.extensions().get::<hyper::ext::Protocol>().is_some()
}

/// Answers an extended `CONNECT`: `200` with the negotiated headers, the endpoint then
/// started on the stream once hyper hands it over (`open` keeps the stream counted open for
/// the connection's idle timer until the WebSocket ends), or the refusal.
pub(super) fn answer<B>(
    mut req: http::Request<B>,
    peer: SocketAddr,
    open: OpenStream,
    shared: &Arc<Shared>,
) -> http::Response<Full<Bytes>> {
    let head = extended_request(&req);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let span = conn_span(id, peer);
    let (reg, refusal) = match Registration::new(Arc::clone(&shared.registry), peer.ip()) {
        Ok(reg) => (reg, None),
        Err((reg, why)) => (reg, Some(why)),
    };
    let checked = span.in_scope(|| handshake::check(&head, refusal.as_ref(), peer, id, shared));
    let admitted = match checked {
        Ok(admitted) => admitted,
        Err(why) => {
            span.in_scope(
                || debug!(status = why.status(), body = %why.body, "HTTP/2 handshake refused"),
            );
            let http = HttpVersion::Http2;
            shared
                .metrics
                .handshake_over(http, Handshake::Rejected(why.reason));
            return refusal_response(why.status(), &why.body);
        }
    };
    let config = Arc::clone(admitted.config(shared));
    let protocol = admitted.protocol(&head).map(str::to_owned);
    let (response, upgrade) = match extended_upgrade(&mut req, config, protocol.as_deref()) {
        Ok(accepted) => accepted,
        Err(e) => {
            span.in_scope(|| debug!(error = %e, "HTTP/2 handshake failed"));
            let http = HttpVersion::Http2;
            shared.metrics.handshake_over(http, Handshake::Failed);
            let status = match &e {
                WsError::Handshake(h) => h.status(),
                _ => 400,
            };
            return refusal_response(status, &e.to_string());
        }
    };
    let task_shared = Arc::clone(shared);
    let endpoint = async move {
        let _open = open;
        let shared = task_shared;
        let ws = match upgrade.await {
            Ok(ws) => ws,
            Err(e) => {
                debug!(error = %e, "HTTP/2 upgrade failed");
                let http = HttpVersion::Http2;
                shared.metrics.handshake_over(http, Handshake::Failed);
                return;
            }
        };
        accepted_over(HttpVersion::Http2, &head, &shared);
        let routed = admitted.open(ws, reg, id, Arc::clone(&shared));
        drive(routed).await;
    };
    shared.tasks.spawn(endpoint.instrument(span));
    response.map(|_| Full::default())
}

/// A refused handshake's answer on its stream (426 names the version this server speaks).
fn refusal_response(status: u16, body: &str) -> http::Response<Full<Bytes>> {
    let mut resp = Response::text(status, body);
    if status == 426 {
        resp = resp.with_header("Sec-WebSocket-Version", "13");
    }
    resp.into_http()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_connect_with_a_protocol_is_extended() {
        let mut req = http::Request::builder()
            .method("CONNECT")
            .uri("https://example.com/echo")
            .body(())
            .unwrap();
        assert!(!super::is_extended_connect(&req));
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert!(super::is_extended_connect(&req));
        *req.method_mut() = http::Method::GET;
        assert!(!super::is_extended_connect(&req));
    }
}
