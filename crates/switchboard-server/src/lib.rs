//! # switchboard-server
//!
//! The Switchboard server as a library. Today it serves the WebSocket echo endpoint at
//! `/echo` (used by the Autobahn TestSuite and the benchmarks); unknown paths get 404.
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

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use switchboard_proto::{Config, Event};
use switchboard_tokio::{accept_with, Decision, Error as WsError, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument, Span};

/// Server settings.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Protocol limits for every connection. The default lets the Autobahn 9.x cases
    /// through: 16 MiB messages and frames.
    pub ws: Config,
    /// TLS: serve `wss://` with this acceptor.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// How long shutdown waits for open connections to finish their close handshakes.
    pub shutdown_timeout: Duration,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("ws", &self.ws)
            .field("tls", &self.tls.is_some())
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            ws: Config::default(),
            tls: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// Sets the protocol limits.
    pub fn ws(mut self, ws: Config) -> Self {
        self.ws = ws;
        self
    }

    /// Serves TLS with this acceptor.
    pub fn tls(mut self, tls: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Accepts connections on `listener` until `shutdown` completes, then closes every open
/// connection with 1001 Going Away and waits (up to [`ServerConfig::shutdown_timeout`]) for
/// them to finish.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let ws_config = Arc::new(config.ws);
    let shutdown_signal = Arc::new(shutdown::Signal::default());
    // A TaskTracker rather than a JoinSet: no JoinHandle entry is kept per connection.
    let tasks = TaskTracker::new();
    let next_id = AtomicU64::new(1);
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    backoff = Duration::from_millis(5);
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let span = info_span!("conn", id, %peer);
                    let stop = shutdown::Registration::new(Arc::clone(&shutdown_signal));
                    tasks.spawn(ConnTask::new(tcp, &config, Arc::clone(&ws_config), stop, span));
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
    info!(
        open = tasks.len(),
        "shutting down: closing connections with 1001"
    );
    shutdown_signal.trigger();
    tasks.close();
    if tokio::time::timeout(config.shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            open = tasks.len(),
            "shutdown deadline passed; dropping remaining connections"
        );
    }
    Ok(())
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One connection's task, written as a state machine rather than an `async fn` so that an
/// idle connection holds only what it needs: the socket with its protocol state and a
/// shutdown registration (an `async fn` keeps room for its largest await point, here the
/// handshake, for the connection's whole life). The handshake, TLS and closing steps are
/// short-lived and run boxed.
// The open state is the long-lived one: it is meant to be the largest, inline.
#[allow(clippy::large_enum_variant)]
enum ConnTask {
    /// Reading and answering the upgrade request.
    Handshake {
        fut: BoxFuture<Result<WebSocket<TcpStream>, WsError>>,
        shutdown: Option<shutdown::Registration>,
        span: Option<Box<Span>>,
    },
    /// The echo loop (plain TCP). Nothing logs here; the connection's span (boxed, and only
    /// when enabled) is kept for the closing steps.
    Open {
        ws: WebSocket<TcpStream>,
        shutdown: shutdown::Registration,
        span: Option<Box<Span>>,
    },
    /// A whole TLS connection, or the closing steps of a plain one.
    Boxed(BoxFuture<()>),
    /// Finished.
    Done,
}

impl ConnTask {
    fn new(
        tcp: TcpStream,
        config: &ServerConfig,
        ws_config: Arc<Config>,
        stop: shutdown::Registration,
        span: Span,
    ) -> Self {
        let _ = tcp.set_nodelay(true);
        match &config.tls {
            Some(acceptor) => Self::Boxed(Box::pin(
                serve_tls(tcp, acceptor.clone(), ws_config, stop).instrument(span),
            )),
            None => Self::Handshake {
                fut: Box::pin(accept_echo(tcp, ws_config).instrument(span.clone())),
                shutdown: Some(stop),
                span: (!span.is_disabled()).then(|| Box::new(span)),
            },
        }
    }
}

impl Future for ConnTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                Self::Handshake {
                    fut,
                    shutdown,
                    span,
                } => {
                    let ws = match fut.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(ws)) => ws,
                        Poll::Ready(Err(e)) => {
                            let _enter = span.as_deref().map(Span::enter);
                            debug!(error = %e, "handshake failed");
                            drop(_enter);
                            *this = Self::Done;
                            return Poll::Ready(());
                        }
                    };
                    let (Some(shutdown), span) = (shutdown.take(), span.take()) else {
                        *this = Self::Done;
                        return Poll::Ready(());
                    };
                    *this = Self::Open { ws, shutdown, span };
                }
                Self::Open { ws, shutdown, .. } => {
                    let stop = match poll_echo(ws, shutdown, cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(stop) => stop,
                    };
                    let Self::Open { ws, span, .. } = std::mem::replace(this, Self::Done) else {
                        return Poll::Ready(());
                    };
                    let span = span.map_or_else(Span::none, |s| *s);
                    *this = Self::Boxed(Box::pin(finish_logged(ws, stop).instrument(span)));
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

async fn serve_tls(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    ws_config: Arc<Config>,
    mut stop: shutdown::Registration,
) {
    let timeout = ws_config.handshake_timeout;
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return debug!(error = %e, "TLS handshake failed"),
        Err(_) => return debug!("TLS handshake timed out after {timeout:?}"),
    };
    let mut ws = match accept_echo(tls, ws_config).await {
        Ok(ws) => ws,
        Err(e) => return debug!(error = %e, "handshake failed"),
    };
    let stop = std::future::poll_fn(|cx| poll_echo(&mut ws, &mut stop, cx)).await;
    finish_logged(ws, stop).await;
}

/// The WebSocket handshake: `/echo` is accepted, anything else gets 404.
async fn accept_echo<S>(stream: S, ws_config: Arc<Config>) -> Result<WebSocket<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws, req) = accept_with(stream, ws_config, |req| match req.path_only() {
        "/echo" => Decision::accept(),
        other => Decision::reject(404, format!("no WebSocket endpoint at {other}; try /echo")),
    })
    .await?;
    debug!(path = %req.path, "accepted");
    Ok(ws)
}

/// Why the echo loop stopped.
enum Stop {
    /// The peer's close frame arrived (the reply is queued).
    PeerClosed,
    /// The connection ended cleanly.
    Ended,
    /// The server is shutting down.
    Shutdown,
    /// The connection failed.
    Failed(WsError),
}

/// Echoes every message back, batching the replies to a burst into one write, until the
/// connection ends or the server shuts down.
fn poll_echo<S>(
    ws: &mut WebSocket<S>,
    shutdown: &mut shutdown::Registration,
    cx: &mut Context<'_>,
) -> Poll<Stop>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if shutdown.is_triggered() {
            return Poll::Ready(Stop::Shutdown);
        }
        match ws.poll_next_event(cx) {
            Poll::Ready(Ok(Some(Event::Message(m)))) => {
                // Queued only: written in one batch before the next read blocks. The queue
                // is flushed before every read, so it never nears its limit here.
                if let Err(e) = ws.feed(&m) {
                    return Poll::Ready(Stop::Failed(e));
                }
            }
            Poll::Ready(Ok(Some(Event::Close(_)))) => return Poll::Ready(Stop::PeerClosed),
            Poll::Ready(Ok(Some(_))) => {}
            Poll::Ready(Ok(None)) => return Poll::Ready(Stop::Ended),
            Poll::Ready(Err(e)) => return Poll::Ready(Stop::Failed(e)),
            Poll::Pending => {
                return if shutdown.register(cx.waker()) {
                    Poll::Ready(Stop::Shutdown)
                } else {
                    Poll::Pending
                };
            }
        }
    }
}

/// [`finish`], then a log line saying how the connection ended.
async fn finish_logged<S>(ws: WebSocket<S>, stop: Stop)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match finish(ws, stop).await {
        Ok(()) => debug!("closed"),
        Err(e) => debug!(error = %e, "ended"),
    }
}

/// The closing steps after the echo loop stopped.
async fn finish<S>(mut ws: WebSocket<S>, stop: Stop) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match stop {
        Stop::PeerClosed => ws.finish().await,
        Stop::Ended => Ok(()),
        Stop::Shutdown => going_away(&mut ws).await,
        Stop::Failed(e @ WsError::Protocol(_)) => {
            let _ = ws.finish().await;
            Err(e)
        }
        Stop::Failed(e) => Err(e),
    }
}

async fn going_away<S>(ws: &mut WebSocket<S>) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.flush().await?;
    ws.close(
        switchboard_proto::CloseCode::GOING_AWAY,
        "server shutting down",
    )
    .await
}

mod shutdown {
    //! Telling every connection to go away, without a future per connection: each one
    //! registers its task's waker once (a slot in a slab) and shutdown wakes them all.

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::task::Waker;

    #[derive(Debug, Default)]
    pub(crate) struct Signal {
        triggered: AtomicBool,
        wakers: Mutex<slab::Slab<Waker>>,
    }

    impl Signal {
        fn wakers(&self) -> MutexGuard<'_, slab::Slab<Waker>> {
            self.wakers.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Marks shutdown and wakes every registered connection.
        pub(crate) fn trigger(&self) {
            self.triggered.store(true, Ordering::Release);
            let wakers: Vec<Waker> = self.wakers().drain().collect();
            for w in wakers {
                w.wake();
            }
        }
    }

    /// One connection's registration.
    #[derive(Debug)]
    pub(crate) struct Registration {
        signal: Arc<Signal>,
        slot: Option<(usize, Waker)>,
    }

    impl Registration {
        pub(crate) fn new(signal: Arc<Signal>) -> Self {
            Self { signal, slot: None }
        }

        pub(crate) fn is_triggered(&self) -> bool {
            self.signal.triggered.load(Ordering::Acquire)
        }

        /// Makes sure `waker` is woken on shutdown; returns whether shutdown already began.
        /// Takes the lock only when the task's waker changed (normally once per connection).
        pub(crate) fn register(&mut self, waker: &Waker) -> bool {
            let current = matches!(&self.slot, Some((_, w)) if w.will_wake(waker));
            if !current {
                let mut wakers = self.signal.wakers();
                match &mut self.slot {
                    Some((key, w)) if wakers.contains(*key) => {
                        wakers[*key] = waker.clone();
                        *w = waker.clone();
                    }
                    _ => {
                        let key = wakers.insert(waker.clone());
                        self.slot = Some((key, waker.clone()));
                    }
                }
            }
            // Checked after registering, so a trigger in between is not missed.
            self.is_triggered()
        }
    }

    impl Drop for Registration {
        fn drop(&mut self) {
            if let Some((key, _)) = self.slot.take() {
                let mut wakers = self.signal.wakers();
                if wakers.contains(key) {
                    wakers.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection's memory is mostly its task: keep the per-connection future small
    /// (240 bytes today: the socket, its protocol state, a shutdown registration and a boxed
    /// span when tracing wants one; it was 6,776 bytes as a plain `async fn`). The target for
    /// a whole idle connection is 1 KB (docs/benchmarks.md).
    #[tokio::test]
    async fn connection_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        let signal = std::sync::Arc::new(super::shutdown::Signal::default());
        let cfg = std::sync::Arc::new(super::ServerConfig::default());
        let ws = std::sync::Arc::new(switchboard_proto::Config::default());
        let f = super::ConnTask::new(
            s,
            &cfg,
            ws,
            super::shutdown::Registration::new(signal),
            tracing::info_span!("conn"),
        );
        let size = std::mem::size_of_val(&f);
        assert!(size <= 256, "per-connection future is {size} bytes");
    }
}
