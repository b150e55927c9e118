//! # switchboard-server
//!
//! The Switchboard real-time server as a library. On one port it serves:
//!
//! - `GET /`: the chat page; `GET /chat?room=R&name=N`: chat rooms over WebSocket;
//! - `GET /ws`: publish/subscribe for applications; `POST /api/publish`: publishing from a
//!   backend (with an API key);
//! - `GET /echo`: a WebSocket echo (conformance, benchmarks);
//! - `GET /healthz`, `GET /metrics` (Prometheus).
//!
//! The protocols are in `docs/protocol.md`. Every topic lives in a [`Hub`]: one publish is
//! encoded once and handed to every subscriber's bounded outbox.
//!
//! The binary only binds, wires the shutdown signal and calls [`run`]; tests do the same on
//! `127.0.0.1:0`:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard_server::{run, ServerConfig};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(run(listener, ServerConfig::default(), async { let _ = stopped.await; }));
//!
//! let (mut ws, _) = switchboard_tokio::connect(&format!("ws://{addr}/echo")).await?;
//! ws.send(&switchboard_tokio::Message::text("hi")).await?;
//! assert_eq!(ws.recv().await?, Some(switchboard_tokio::Message::text("hi")));
//!
//! stop.send(()).ok();
//! server.await??;
//! # Ok(()) }
//! ```

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod close;
mod config;
mod endpoint;
mod error;
mod http;
mod metrics;
mod process;
mod refusal;
mod registry;
mod routes;
mod session;
mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub use auth::{ApiKey, AuthError, Authenticator, Identity};
pub use config::{
    HeartbeatConfig, Limits, OriginPolicy, ServerConfig, DEFLATE_THRESHOLD,
    DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER, ECHO_MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE,
};
pub use metrics::Metrics;
pub use switchboard_hub::{Hub, HubConfig, OutboxLimits, SlowConsumerPolicy};
/// The head of an HTTP request, as an [`Authenticator`] sees it.
pub use switchboard_proto::handshake::server::Request;

use switchboard_proto::Config;
use switchboard_tokio::{SocketControl, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::{debug, debug_span, info, warn, Instrument, Span};

use crate::close::{finish, Stop};
use crate::endpoint::echo::poll_echo;
use crate::refusal::RefusalLogs;
use crate::registry::{Registration, Registry};
use crate::upgrade::route;
#[cfg(all(feature = "io-uring", target_os = "linux"))]
use switchboard_tokio::uring::UringStream;

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) ws: Arc<Config>,
    pub(crate) echo: Arc<Config>,
    pub(crate) hub: Hub,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) registry: Arc<Registry>,
    /// Rate limits for the refusals logged.
    pub(crate) refusals: RefusalLogs,
    next_id: AtomicU64,
}

/// A server: its configuration, its hub and its counters. [`run`] is the short way.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use switchboard_server::{Server, ServerConfig};
/// let server = Server::new(ServerConfig::default().api_key("secret"));
/// let hub = server.hub().clone(); // publish from your own code too
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// server.run(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub struct Server {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Server {
    /// A server with an in-memory hub.
    pub fn new(config: ServerConfig) -> Self {
        let hub = Hub::new(config.hub);
        Self::with_hub(config, hub)
    }

    /// A server on a hub built by the caller (for example with a broker for several nodes).
    pub fn with_hub(config: ServerConfig, hub: Hub) -> Self {
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(
            config.limits,
            config.heartbeat,
            Arc::clone(&metrics),
        ));
        Self {
            shared: Arc::new(Shared {
                ws: Arc::new(config.ws),
                echo: Arc::new(config.echo),
                hub,
                metrics,
                registry,
                refusals: RefusalLogs::default(),
                next_id: AtomicU64::new(1),
                config,
            }),
        }
    }

    /// The hub: publish to topics from the embedding program.
    pub fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    /// The counters `/metrics` reports.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Accepts connections on `listener` until `shutdown` completes; then stops accepting,
    /// flushes what every connection has queued, closes each with 1001 Going Away and waits
    /// (up to [`ServerConfig::shutdown_timeout`]) for the close handshakes.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let shared = self.shared;
        // A TaskTracker rather than a JoinSet: no JoinHandle entry is kept per connection.
        let tasks = TaskTracker::new();
        let ticker = shared.registry.tick_interval().map(|every| {
            let registry = Arc::clone(&shared.registry);
            tokio::spawn(async move {
                let mut t = tokio::time::interval(every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    t.tick().await;
                    registry.tick();
                }
            })
        });
        tokio::pin!(shutdown);
        let listener = Listener::new(listener, &shared.config)?;
        let mut backoff = Duration::from_millis(5);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((conn, peer)) => {
                        backoff = Duration::from_millis(5);
                        shared.metrics.tcp_accepted.add(1);
                        conn.spawn(peer, &shared, &tasks);
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accept failed; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                },
            }
        }
        drop(listener);
        info!(
            open = shared.registry.open(),
            "shutting down: closing connections with 1001"
        );
        shared.registry.trigger();
        tasks.close();
        if tokio::time::timeout(shared.config.shutdown_timeout, tasks.wait())
            .await
            .is_err()
        {
            warn!(
                open = tasks.len(),
                "shutdown deadline passed; dropping remaining connections"
            );
        }
        if let Some(t) = ticker {
            t.abort();
        }
        Ok(())
    }
}

/// Runs a server with `config` on `listener` until `shutdown` completes (see
/// [`Server::run`]).
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    Server::new(config).run(listener, shutdown).await
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The listening socket: tokio's, or (io_uring) one whose connections are never registered
/// with the epoll driver they will not use.
enum Listener {
    Tokio(TcpListener),
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    Raw(switchboard_tokio::uring::UringListener),
}

/// An accepted connection, from either kind of [`Listener`].
enum Accepted {
    Tokio(TcpStream),
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    Std(std::net::TcpStream),
}

impl Listener {
    #[cfg_attr(
        not(all(feature = "io-uring", target_os = "linux")),
        allow(clippy::unnecessary_wraps)
    )]
    fn new(listener: TcpListener, config: &ServerConfig) -> std::io::Result<Self> {
        #[cfg(all(feature = "io-uring", target_os = "linux"))]
        if config.io_uring {
            let raw = switchboard_tokio::uring::UringListener::from_tokio(listener)?;
            return Ok(Self::Raw(raw));
        }
        let _ = config;
        Ok(Self::Tokio(listener))
    }

    async fn accept(&self) -> std::io::Result<(Accepted, SocketAddr)> {
        match self {
            Self::Tokio(l) => l.accept().await.map(|(s, p)| (Accepted::Tokio(s), p)),
            #[cfg(all(feature = "io-uring", target_os = "linux"))]
            Self::Raw(l) => l.accept().await.map(|(s, p)| (Accepted::Std(s), p)),
        }
    }
}

impl Accepted {
    /// Starts the connection's task: a tokio task over epoll; over io_uring, a task the
    /// ring of the worker that picks it up polls itself (see [`uring::spawn`]).
    ///
    /// [`uring::spawn`]: switchboard_tokio::uring::spawn
    fn spawn(self, peer: SocketAddr, shared: &Arc<Shared>, tasks: &TaskTracker) {
        match self {
            Self::Tokio(tcp) => {
                tasks.spawn(ConnTask::new(tcp, peer, shared));
            }
            #[cfg(all(feature = "io-uring", target_os = "linux"))]
            Self::Std(tcp) => {
                let task = tasks.track_future(ConnTask::new_uring(tcp, peer, shared));
                // A tokio task first, so connections spread over the workers as tokio
                // spreads tasks; it hands the connection to its worker's ring.
                tokio::spawn(async move {
                    if let Err(e) = switchboard_tokio::uring::spawn(task) {
                        debug!(error = %e, "io_uring task failed");
                    }
                });
            }
        }
    }
}

/// Where a connection went after its first request.
// Returned once per connection, moved straight into the task's state.
#[allow(clippy::large_enum_variant)]
enum Routed<S> {
    /// Handled completely (HTTP, chat, pub/sub, refused).
    Done,
    /// An `/echo` WebSocket, to run in the lean state machine.
    Echo(WebSocket<S>, Registration),
    /// A `/chat` or `/ws` session, to run on its own: what the handshake needed (the
    /// request, its buffers, this routing future) is freed before it starts.
    Session(BoxFuture<()>),
}

/// One connection's task, written as a state machine rather than an `async fn` so that an
/// idle echo connection holds only what it needs: the socket with its protocol state and
/// its registration (an `async fn` keeps room for its largest await point, here the
/// handshake, for the connection's whole life). Everything else runs boxed.
// The open state is the long-lived one: it is meant to be the largest, inline.
#[allow(clippy::large_enum_variant)]
enum ConnTask {
    /// Reading the first request and routing it.
    Start {
        fut: BoxFuture<Routed<TcpStream>>,
        span: Option<Box<Span>>,
    },
    /// The echo loop (plain TCP). Nothing logs here; the connection's span (boxed, and only
    /// when enabled) is kept for the closing steps.
    Echo {
        ws: WebSocket<TcpStream>,
        reg: Registration,
        span: Option<Box<Span>>,
    },
    /// As `Start`, over io_uring (the stream is made in the task, on its worker's ring).
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    StartUring {
        fut: BoxFuture<Routed<UringStream>>,
        span: Option<Box<Span>>,
    },
    /// As `Echo`, over io_uring.
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    EchoUring {
        ws: WebSocket<UringStream>,
        reg: Registration,
        span: Option<Box<Span>>,
    },
    /// A whole TLS connection, or the closing steps of a plain one.
    Boxed(BoxFuture<()>),
    /// Finished.
    Done,
}

impl ConnTask {
    /// A connection on tokio's epoll transport (with io_uring on, [`Listener`] hands out
    /// plain streams for [`new_uring`](Self::new_uring) instead).
    fn new(tcp: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) -> Self {
        let _ = tcp.set_nodelay(true);
        cap_send_buffer(&tcp, shared);
        let (id, span, reg) = Self::admit(peer, shared);
        match &shared.config.tls {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let shared = Arc::clone(shared);
                Self::Boxed(Box::pin(
                    async move {
                        if let Some(tls) = accept_tls(&acceptor, tcp, &shared).await {
                            drive(route(tls, id, peer, reg, shared).await).await;
                        }
                    }
                    .instrument(span),
                ))
            }
            None => Self::Start {
                fut: Box::pin(
                    route(tcp, id, peer, reg, Arc::clone(shared)).instrument(span.clone()),
                ),
                span: (!span.is_disabled()).then(|| Box::new(span)),
            },
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

    /// A connection accepted straight from the listening socket, routed over io_uring.
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    fn new_uring(tcp: std::net::TcpStream, peer: SocketAddr, shared: &Arc<Shared>) -> Self {
        let _ = tcp.set_nodelay(true);
        let (id, span, reg) = Self::admit(peer, shared);
        let shared = Arc::clone(shared);
        let enabled = !span.is_disabled();
        let routing = async move {
            // Made here, in the task, so the stream joins the ring of the worker that runs it.
            let stream = match UringStream::new(tcp) {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "io_uring stream failed");
                    return Routed::Done;
                }
            };
            cap_send_buffer(&stream, &shared);
            match shared.config.tls.clone() {
                Some(acceptor) => {
                    if let Some(tls) = accept_tls(&acceptor, stream, &shared).await {
                        drive(route(tls, id, peer, reg, shared).await).await;
                    }
                    Routed::Done
                }
                None => route(stream, id, peer, reg, shared).await,
            }
        };
        Self::StartUring {
            fut: Box::pin(routing.instrument(span.clone())),
            span: enabled.then(|| Box::new(span)),
        }
    }
}

/// Caps the kernel's send buffer of an accepted connection
/// ([`ServerConfig::socket_send_buffer`]).
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
/// `id` and `peer`.
fn conn_span(id: u64, peer: SocketAddr) -> Span {
    debug_span!("conn", id, %peer)
}

impl Future for ConnTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                Self::Start { fut, span } => {
                    let Poll::Ready(routed) = fut.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    *this = opened(routed, span, |ws, reg, span| Self::Echo { ws, reg, span });
                }
                Self::Echo { ws, reg, .. } => {
                    let Poll::Ready(stop) = poll_echo(ws, reg, cx, WebSocket::poll_next_event)
                    else {
                        return Poll::Pending;
                    };
                    if let Self::Echo { ws, reg, span } = std::mem::replace(this, Self::Done) {
                        *this = closing(ws, reg, stop, span);
                    }
                }
                #[cfg(all(feature = "io-uring", target_os = "linux"))]
                Self::StartUring { fut, span } => {
                    let Poll::Ready(routed) = fut.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    *this = opened(routed, span, |ws, reg, span| Self::EchoUring {
                        ws,
                        reg,
                        span,
                    });
                }
                #[cfg(all(feature = "io-uring", target_os = "linux"))]
                Self::EchoUring { ws, reg, .. } => {
                    let Poll::Ready(stop) = poll_echo(ws, reg, cx, WebSocket::poll_next_event_take)
                    else {
                        return Poll::Pending;
                    };
                    if let Self::EchoUring { ws, reg, span } = std::mem::replace(this, Self::Done) {
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

/// The state after a connection's first request was routed: done, a session of its own,
/// or the echo loop that `open` makes (taking the connection's span along).
fn opened<S>(
    routed: Routed<S>,
    span: &mut Option<Box<Span>>,
    open: impl FnOnce(WebSocket<S>, Registration, Option<Box<Span>>) -> ConnTask,
) -> ConnTask {
    match routed {
        Routed::Done => ConnTask::Done,
        Routed::Echo(ws, reg) => open(ws, reg, span.take()),
        Routed::Session(session) => ConnTask::Boxed(session),
    }
}

/// The state after the echo loop stopped: its closing steps, boxed, in the connection's span.
fn closing<S>(ws: WebSocket<S>, reg: Registration, stop: Stop, span: Option<Box<Span>>) -> ConnTask
where
    S: AsyncRead + AsyncWrite + Unpin + SocketControl + Send + 'static,
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

/// Runs a routed connection to its end (the boxed path: TLS, io_uring).
async fn drive<S>(routed: Routed<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + SocketControl,
{
    match routed {
        Routed::Echo(mut ws, mut reg) => {
            let stop = std::future::poll_fn(|cx| {
                poll_echo(&mut ws, &mut reg, cx, WebSocket::poll_next_event)
            })
            .await;
            end_echo(ws, reg, stop).await;
        }
        Routed::Session(session) => session.await,
        Routed::Done => {}
    }
}

async fn end_echo<S>(ws: WebSocket<S>, reg: Registration, stop: Stop)
where
    S: AsyncRead + AsyncWrite + Unpin + SocketControl,
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
    /// rarely used parts and its buffers; docs/benchmarks.md has the whole connection's
    /// cost.)
    #[tokio::test]
    async fn connection_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, peer) = l.accept().await.unwrap();
        let server = super::Server::new(super::ServerConfig::default());
        let f = super::ConnTask::new(s, peer, &server.shared);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 152, "per-connection future is {size} bytes");
    }
}
