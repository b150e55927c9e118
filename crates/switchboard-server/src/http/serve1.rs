//! One HTTP/1.1 connection served by hyper, handed the bytes our parser read first: keep-alive,
//! pipelining, chunked request bodies, `HEAD`, `Expect: 100-continue`, with the first
//! request's limits (head size → 431, header count, the handshake timeout for a head, which
//! also bounds an idle kept-alive connection). A WebSocket upgrade on it is checked as a
//! first request's and runs its endpoint on the stream hyper lets go. Server shutdown ends
//! it gracefully (the request in flight is answered, then the connection closes).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_tokio::{Prefixed, SocketControl, Transport};
use tracing::{debug, Instrument, Span};

use super::upgrade::{self, Asker, Pending};
use super::{head, respond};
use crate::connection::drive;
use crate::registry::{Refusal, Registration};
use crate::{BoxFuture, Routed, Shared};

/// What a connection's requests share.
struct Conn1 {
    shared: Arc<Shared>,
    peer: SocketAddr,
    id: u64,
    /// Why the connection is over a limit, if it is (plain requests are served anyway; a
    /// WebSocket upgrade is refused).
    refusal: Option<Refusal>,
    /// An upgrade answered `101`, for when hyper lets the connection go.
    pending: Mutex<Option<Pending>>,
}

/// The connection, from its first request (in `buf`, with whatever followed it) to its end,
/// boxed on its own.
pub(crate) fn serve1<S>(
    stream: S,
    buf: Vec<u8>,
    id: u64,
    peer: SocketAddr,
    reg: Result<Registration, (Registration, Refusal)>,
    shared: Arc<Shared>,
) -> BoxFuture<()>
where
    S: Transport + SocketControl + Send + 'static,
{
    let whole = async move { drive(serve(stream, buf, id, peer, reg, shared).await).await };
    Box::pin(whole.instrument(Span::current()))
}

async fn serve<S>(
    stream: S,
    buf: Vec<u8>,
    id: u64,
    peer: SocketAddr,
    mut reg: Result<Registration, (Registration, Refusal)>,
    shared: Arc<Shared>,
) -> Routed<S>
where
    S: Transport + SocketControl + Send + 'static,
{
    let conn1 = Arc::new(Conn1 {
        shared: Arc::clone(&shared),
        peer,
        id,
        refusal: reg.as_ref().err().map(|(_, why)| why.clone()),
        pending: Mutex::new(None),
    });
    let service = {
        let conn1 = Arc::clone(&conn1);
        service_fn(move |req| {
            let conn1 = Arc::clone(&conn1);
            async move { Ok::<_, Infallible>(conn1.answer(req).await) }
        })
    };
    // hyper has no write timeout: an answer the peer does not read fails after the handshake
    // timeout, as a first request's answer always did.
    let stalled = shared.echo.handshake_timeout;
    let io = TokioIo::new(Prefixed::new(Bytes::from(buf), stream).write_timeout(stalled));
    let conn = builder(&shared)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    let ended = std::future::poll_fn(|cx| {
        let registration = match &mut reg {
            Ok(r) | Err((r, _)) => r,
        };
        if !closing && registration.register(cx.waker()) {
            closing = true;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = ended {
        debug!(error = %e, "HTTP connection ended");
    }
    let pending = conn1
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match pending {
        Some(pending) => {
            let (Ok(reg) | Err((reg, _))) = reg;
            upgrade::finish(pending, reg, id, shared).await
        }
        None => Routed::Done,
    }
}

/// hyper's HTTP/1.1 server with the limits of a connection's first request.
fn builder(shared: &Shared) -> http1::Builder {
    let limits = &shared.echo;
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .keep_alive(true)
        .half_close(false)
        .max_headers(limits.max_handshake_headers)
        .max_header_size(limits.max_handshake_size)
        .max_buf_size((limits.max_handshake_size + 1).max(8192));
    b
}

impl Conn1 {
    /// One request: plain HTTP, or a WebSocket upgrade.
    async fn answer(&self, mut req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
        let head = head(&req);
        if !head.is_upgrade() {
            return respond(req, &head, self.peer, &self.shared).await;
        }
        let asker = Asker {
            refusal: self.refusal.as_ref(),
            peer: self.peer,
            id: self.id,
            shared: &self.shared,
        };
        let (resp, pending) = upgrade::answer(&mut req, head, &asker);
        if let Some(pending) = pending {
            *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(pending);
        }
        resp
    }
}
