//! A connection's first request, read by our own parser: a WebSocket handshake over
//! HTTP/1.1 is [checked](crate::handshake), upgraded and handed to its endpoint, or refused,
//! here (the lean path: what it costs is what every idle WebSocket costs). Anything else
//! goes to hyper with the bytes read so far: HTTP/1.1 ([`http`](crate::http)), or HTTP/2
//! ([`http2`](crate::http2)) when the connection starts with its preface (prior knowledge
//! on plain TCP; ALPN `h2` on TLS).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use switchboard_proto::handshake::server::Request;
use switchboard_proto::Config;
use switchboard_tokio::{
    leftover, read_first, refuse, upgrade_request, Error as WsError, First, SocketControl,
    Transport, WebSocket,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::error::Rejection;
use crate::metrics::{Handshake, HttpVersion};
use crate::registry::{self, Registration};
use crate::{handshake, http, http2, Routed, Shared};

/// Reads the first request and serves it: plain HTTP (hyper, boxed), or a WebSocket on one
/// of the endpoints (the echo one is handed back to run in the connection's state machine).
pub(crate) async fn route<S>(
    mut stream: S,
    id: u64,
    peer: SocketAddr,
    reg: Result<Registration, (Registration, registry::Refusal)>,
    shared: Arc<Shared>,
) -> Routed<S>
where
    S: Transport + SocketControl + Send + 'static,
{
    let http2 = shared.config.http2.enabled;
    let (req, buf, head_len) = match read_first(&mut stream, &shared.echo, http2).await {
        Ok(First::Http1 { req, buf, head_len }) => (req, buf, head_len),
        Ok(First::Http2(buf)) => {
            return Routed::Boxed(http2::serve(stream, buf, peer, reg, shared));
        }
        Err(e) => {
            debug!(error = %e, "bad request");
            if !matches!(e, WsError::Io(_)) {
                shared.metrics.handshake(Handshake::Failed);
            }
            return Routed::Done;
        }
    };
    if !req.is_upgrade() {
        return plain(stream, req, buf, id, peer, reg, shared).await;
    }
    let leftover = leftover(buf, head_len);
    let refusal = reg.as_ref().err().map(|(_, why)| why);
    let admitted = match handshake::check(&req, refusal, peer, id, &shared) {
        Ok(admitted) => admitted,
        Err(why) => return refused(stream, &shared, why, reg).await,
    };
    // Admitted: the connection was within the limits.
    let (Ok(reg) | Err((reg, _))) = reg;
    let protocol = admitted.protocol(&req);
    let config = admitted.config(&shared);
    match upgrade(stream, &req, &leftover, config, protocol, &shared).await {
        Some(ws) => admitted.open(ws, reg, id, shared),
        None => Routed::Done,
    }
}

/// A first request that is not a WebSocket handshake: 429 (and close) for an address past
/// its new connections a second, else the connection goes to hyper, boxed on its own.
async fn plain<S>(
    mut stream: S,
    req: Request,
    buf: Vec<u8>,
    id: u64,
    peer: SocketAddr,
    reg: Result<Registration, (Registration, registry::Refusal)>,
    shared: Arc<Shared>,
) -> Routed<S>
where
    S: Transport + SocketControl + Send + 'static,
{
    if let Some(why) = reg
        .as_ref()
        .err()
        .map(|(_, why)| why)
        .filter(|w| w.is_rate())
    {
        drop(buf);
        http::too_many(&mut stream, &req, why, &shared).await;
        return Routed::Done;
    }
    drop(req);
    Routed::Boxed(http::serve1(stream, buf, id, peer, reg, shared))
}

/// Answers a refused handshake and closes; `held` (the connection's registration) is let go
/// after, so the connection counts against the limits until then.
async fn refused<S, H>(mut stream: S, shared: &Shared, why: Rejection, held: H) -> Routed<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let status = why.status();
    debug!(status, body = %why.body, "handshake refused");
    shared.metrics.handshake(Handshake::Rejected(why.reason));
    let _ = refuse(&mut stream, status, &why.body).await;
    drop(held);
    Routed::Done
}

/// Completes the handshake with `config` and `protocol`, counting it either way.
async fn upgrade<S>(
    stream: S,
    req: &Request,
    leftover: &[u8],
    config: &Arc<Config>,
    protocol: Option<&str>,
    shared: &Shared,
) -> Option<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match upgrade_request(stream, req, leftover, Arc::clone(config), protocol, &[]).await {
        Ok(ws) => {
            accepted(req, shared);
            Some(ws)
        }
        Err(e) => {
            shared.metrics.handshake(Handshake::Failed);
            debug!(error = %e, "handshake failed");
            None
        }
    }
}

/// Counts an HTTP/1.1 WebSocket handshake completed (whatever parsed it) and the connection
/// open.
pub(crate) fn accepted(req: &Request, shared: &Shared) {
    accepted_over(HttpVersion::Http1, req, shared);
}

/// Counts a WebSocket handshake over `http` completed and the connection open.
pub(crate) fn accepted_over(http: HttpVersion, req: &Request, shared: &Shared) {
    shared.metrics.handshake_over(http, Handshake::Accepted);
    shared
        .metrics
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    // The path only: the query may hold a token.
    debug!(path = %req.path_only(), "accepted");
}
