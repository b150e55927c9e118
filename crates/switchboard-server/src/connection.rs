//! One connection's task: its first request is read and routed, an `/echo` WebSocket then
//! runs in a small state machine, anything else boxed, and the closing steps last. It is
//! generic over the transport; the listener chooses which (and where the task runs).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use switchboard_tokio::{SocketControl, Transport, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, debug_span, Instrument, Span};

use crate::close::{finish, Stop};
use crate::endpoint::echo::poll_echo;
use crate::registry::{self, Registration};
use crate::upgrade::route;
use crate::{BoxFuture, Routed, Shared};

/// One connection's task, written as a state machine rather than an `async fn` so that an
/// idle echo connection holds only what it needs: the socket with its protocol state and
/// its registration (an `async fn` keeps room for its largest await point, here the
/// handshake, for the connection's whole life). Everything else runs boxed.
// The open state is the long-lived one: it is meant to be the largest, inline.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ConnTask<S> {
    /// Making the stream, reading the first request and routing it (plain connections).
    Start {
        fut: BoxFuture<Routed<S>>,
        span: Option<Box<Span>>,
    },
    /// The echo loop. Nothing logs here; the connection's span (boxed, and only when
    /// enabled) is kept for the closing steps.
    Echo {
        ws: WebSocket<S>,
        reg: Registration,
        span: Option<Box<Span>>,
    },
    /// A whole TLS connection, a session of its own, or the closing steps of the echo loop.
    Boxed(BoxFuture<()>),
    /// Finished.
    Done,
}

impl<S> ConnTask<S>
where
    S: Transport + SocketControl + Send + 'static,
{
    /// A connection on a stream made already (tokio's epoll transport).
    pub(crate) fn new(stream: S, peer: SocketAddr, shared: &Arc<Shared>) -> Self {
        Self::made_by(move || Ok(stream), peer, shared)
    }

    /// A connection whose stream `make` makes in the task, on the thread that first polls
    /// it: a stream driven by a per-thread ring joins the ring of the worker that runs it.
    ///
    /// A TLS connection runs boxed to its end. A plain one is routed in a box that holds
    /// only the routing (not the TLS handshake's futures): the box lives through the
    /// handshake, and a larger one costs every idle connection resident memory (about 100 B
    /// each on epoll, measured with `driver idle`; the heap at rest does not show it).
    pub(crate) fn made_by(
        make: impl FnOnce() -> io::Result<S> + Send + 'static,
        peer: SocketAddr,
        shared: &Arc<Shared>,
    ) -> Self {
        let (id, span, reg) = admit(peer, shared);
        let shared = Arc::clone(shared);
        if let Some(acceptor) = shared.config.tls.clone() {
            let whole = async move {
                let Some(stream) = made(make, &shared) else {
                    return;
                };
                if let Some(tls) = accept_tls(&acceptor, stream, &shared).await {
                    drive(route(tls, id, peer, reg, shared).await).await;
                }
            };
            return Self::Boxed(Box::pin(whole.instrument(span)));
        }
        let enabled = !span.is_disabled();
        let routing = async move {
            let Some(stream) = made(make, &shared) else {
                return Routed::Done;
            };
            route(stream, id, peer, reg, shared).await
        };
        Self::Start {
            fut: Box::pin(routing.instrument(span.clone())),
            span: enabled.then(|| Box::new(span)),
        }
    }
}

/// Makes the connection's stream and caps its send buffer.
fn made<S: SocketControl>(make: impl FnOnce() -> io::Result<S>, shared: &Shared) -> Option<S> {
    match make() {
        Ok(stream) => {
            cap_send_buffer(&stream, shared);
            Some(stream)
        }
        Err(e) => {
            debug!(error = %e, "could not set the connection's stream up");
            None
        }
    }
}

/// The connection's id, span and registration (refused if over a limit; `route` says so).
fn admit(
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> (
    u64,
    Span,
    Result<Registration, (Registration, registry::Refusal)>,
) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let reg = Registration::new(Arc::clone(&shared.registry), peer.ip());
    (id, conn_span(id, peer), reg)
}

/// Caps the kernel's send buffer of an accepted connection
/// ([`ServerConfig::socket_send_buffer`](crate::ServerConfig::socket_send_buffer)).
fn cap_send_buffer(socket: &impl SocketControl, shared: &Shared) {
    let bytes = shared.config.socket_send_buffer;
    if bytes > 0 {
        if let Err(e) = socket.set_send_buffer(bytes) {
            debug!(error = %e, "could not cap the socket's send buffer");
        }
    }
}

/// The span every connection's events carry. It is `debug`-level on purpose: nothing inside a
/// connection logs at `info` or above, and an enabled span costs the subscriber about 1.2 KB
/// per connection (its slab slot and formatted fields), more than an idle connection itself.
/// With `RUST_LOG=debug` (or `switchboard_server=debug`) every connection event names its
/// `id` and `peer`, and, once a token said who it is, `user`.
pub(crate) fn conn_span(id: u64, peer: SocketAddr) -> Span {
    debug_span!("conn", id, %peer, user = tracing::field::Empty)
}

impl<S> Future for ConnTask<S>
where
    S: Transport + SocketControl + Send + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                Self::Start { fut, span } => {
                    let Poll::Ready(routed) = fut.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    *this = opened(routed, span);
                }
                Self::Echo { ws, reg, .. } => {
                    let Poll::Ready(stop) = poll_echo(ws, reg, cx) else {
                        return Poll::Pending;
                    };
                    if let Self::Echo { ws, reg, span } = std::mem::replace(this, Self::Done) {
                        *this = closing(ws, reg, stop, span);
                    }
                }
                Self::Boxed(fut) => {
                    if fut.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *this = Self::Done;
                    return Poll::Ready(());
                }
                Self::Done => return Poll::Ready(()),
            }
        }
    }
}

/// The state after a connection's first request was routed: done, a future of its own (a
/// session, a connection hyper serves), or the echo loop (taking the connection's span along).
fn opened<S>(routed: Routed<S>, span: &mut Option<Box<Span>>) -> ConnTask<S> {
    match routed {
        Routed::Done => ConnTask::Done,
        Routed::Echo(ws, reg) => ConnTask::Echo {
            ws,
            reg,
            span: span.take(),
        },
        Routed::Boxed(whole) => ConnTask::Boxed(whole),
    }
}

/// The state after the echo loop stopped: its closing steps, boxed, in the connection's span.
fn closing<S>(
    ws: WebSocket<S>,
    reg: Registration,
    stop: Stop,
    span: Option<Box<Span>>,
) -> ConnTask<S>
where
    S: Transport + SocketControl + Send + 'static,
{
    let span = span.map_or_else(Span::none, |s| *s);
    ConnTask::Boxed(Box::pin(end_echo(ws, reg, stop).instrument(span)))
}

/// The TLS handshake, bounded by the handshake timeout.
async fn accept_tls<S>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: S,
    shared: &Shared,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = shared.config.ws.handshake_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!("TLS handshake timed out after {timeout:?}");
            None
        }
    }
}

/// Runs a routed connection to its end (the boxed paths: TLS, an upgrade on a kept-alive
/// HTTP connection).
pub(crate) async fn drive<S>(routed: Routed<S>)
where
    S: Transport + SocketControl,
{
    match routed {
        Routed::Echo(mut ws, mut reg) => {
            let stop = std::future::poll_fn(|cx| poll_echo(&mut ws, &mut reg, cx)).await;
            end_echo(ws, reg, stop).await;
        }
        Routed::Boxed(whole) => whole.await,
        Routed::Done => {}
    }
}

async fn end_echo<S>(ws: WebSocket<S>, reg: Registration, stop: Stop)
where
    S: Transport + SocketControl,
{
    let timeout = ws.connection().config().close_timeout;
    reg.metrics()
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
    finish(ws, stop, reg, timeout).await;
}

#[cfg(test)]
mod tests {
    /// At the default filter (`info`) a connection holds no span, so zero-config `serve`
    /// pays nothing per connection for logging; at `debug` the span is there.
    #[test]
    fn connection_span_costs_nothing_at_the_default_level() {
        use tracing_subscriber::layer::SubscriberExt;
        let peer = "127.0.0.1:9".parse().unwrap();
        let at = |level: &str| {
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new(level))
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
            tracing::subscriber::with_default(subscriber, || {
                super::conn_span(1, peer).is_disabled()
            })
        };
        assert!(at("info"), "the per-connection span is enabled at info");
        assert!(!at("debug"), "the per-connection span is missing at debug");
    }

    /// An idle echo connection's memory is mostly its task: keep the per-connection future
    /// small. Tokio allocates a task as one 128-byte-aligned cell: 96 bytes of its own, the
    /// `TaskTracker`'s 8, and the future. Up to 152 bytes of future the cell is 256 bytes;
    /// past that it is 384, which mimalloc serves from 512-byte blocks to keep the alignment.
    /// (It was 6,776 bytes as a plain `async fn`, and 248 before `Connection` boxed its
    /// rarely used parts and its buffers; benchmarks/README.md has the whole connection's
    /// cost.)
    #[tokio::test]
    async fn connection_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, peer) = l.accept().await.unwrap();
        let server = crate::Server::new(crate::ServerConfig::default());
        let f = super::ConnTask::new(s, peer, &server.shared);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 152, "per-connection future is {size} bytes");
    }
}
