//! A WebSocket upgrade arriving on a kept-alive HTTP/1.1 connection hyper serves: the same
//! [checks](crate::handshake) as a first request's, a `101` hyper writes, then the
//! connection taken back from hyper (its stream, and the bytes hyper read past the head) to
//! run the endpoint as a first request's WebSocket runs.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use switchboard_proto::extension::DeflateParams;
use switchboard_proto::handshake::server::Request;
use switchboard_proto::handshake::HandshakeError;
use switchboard_proto::{Config, Connection, Role};
use switchboard_tokio::upgrade::switching_protocols;
use switchboard_tokio::{Prefixed, SocketControl, Transport, WebSocket};
use tracing::debug;

use super::response::Response;
use crate::handshake::{self, Admitted};
use crate::metrics::Handshake;
use crate::registry::{Refusal, Registration};
use crate::upgrade::accepted;
use crate::{Routed, Shared};

/// An upgrade answered `101`: what the endpoint needs once hyper lets the connection go.
pub(crate) struct Pending {
    on: OnUpgrade,
    admitted: Admitted,
    head: Request,
    config: Arc<Config>,
    deflate: Option<DeflateParams>,
}

/// Who is asking, for the checks.
pub(crate) struct Asker<'a> {
    pub(crate) refusal: Option<&'a Refusal>,
    pub(crate) peer: SocketAddr,
    pub(crate) id: u64,
    pub(crate) shared: &'a Shared,
}

/// Answers an upgrade request (`head` is `req`'s head): `101` and what to run once hyper
/// hands the connection over, or the refusal, with `Connection: close` (a refused handshake
/// closes, as on a first request).
pub(crate) fn answer<B>(
    req: &mut http::Request<B>,
    head: Request,
    asker: &Asker<'_>,
) -> (http::Response<Full<Bytes>>, Option<Pending>) {
    let shared = asker.shared;
    let admitted = match handshake::check(&head, asker.refusal, asker.peer, asker.id, shared) {
        Ok(admitted) => admitted,
        Err(why) => {
            debug!(status = why.status(), body = %why.body, "handshake refused");
            shared.metrics.handshake(Handshake::Rejected(why.reason));
            return (refusal(why.status(), &why.body), None);
        }
    };
    let config = Arc::clone(admitted.config(shared));
    let protocol = admitted.protocol(&head);
    let (resp, deflate) = match switching_protocols(&head, &config, protocol) {
        Ok(answer) => answer,
        Err(e) => return (failed(&e, shared), None),
    };
    let pending = Pending {
        on: hyper::upgrade::on(req),
        admitted,
        head,
        config,
        deflate,
    };
    (resp.map(|_| Full::default()), Some(pending))
}

/// A handshake that breaks RFC 6455 (counted as failed), answered with its status.
fn failed(e: &HandshakeError, shared: &Shared) -> http::Response<Full<Bytes>> {
    debug!(error = %e, "handshake failed");
    shared.metrics.handshake(Handshake::Failed);
    refusal(e.status(), &e.to_string())
}

/// A refused handshake's answer; the connection closes after it.
fn refusal(status: u16, body: &str) -> http::Response<Full<Bytes>> {
    let mut resp = Response::text(status, body).with_header("Connection", "close");
    if status == 426 {
        resp = resp.with_header("Sec-WebSocket-Version", "13");
    }
    resp.into_http()
}

/// The endpoint on the connection hyper upgraded: its stream taken back, with the bytes
/// hyper read past the request head first, then those it had not read yet.
pub(crate) async fn finish<S>(
    pending: Pending,
    reg: Registration,
    id: u64,
    shared: Arc<Shared>,
) -> Routed<S>
where
    S: Transport + SocketControl + Send + 'static,
{
    let upgraded = match pending.on.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            shared.metrics.handshake(Handshake::Failed);
            return Routed::Done;
        }
    };
    let Ok(parts) = upgraded.downcast::<TokioIo<Prefixed<S>>>() else {
        debug!("upgraded connection of another type");
        shared.metrics.handshake(Handshake::Failed);
        return Routed::Done;
    };
    let (unread, stream) = parts.io.into_inner().into_parts();
    let mut conn = Connection::new(Role::Server, pending.config);
    if let Some(params) = pending.deflate {
        conn = conn.with_deflate(params);
    }
    conn.handle_read(&parts.read_buf);
    conn.handle_read(&unread);
    accepted(&pending.head, &shared);
    pending
        .admitted
        .open(WebSocket::from_connection(stream, conn), reg, id, shared)
}
