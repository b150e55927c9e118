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
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard_proto::Config;
use switchboard_tokio::{accept_with, Decision, Error as WsError, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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
                    tasks.spawn(
                        handle(tcp, peer, Arc::clone(&config), Arc::clone(&ws_config), stop_rx.clone())
                            .instrument(span),
                    );
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
    let _ = stop_tx.send(true);
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

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    ws_config: Arc<Config>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    // The handshake and TLS futures are boxed: they are large and short-lived, and an async
    // fn's state is as large as its largest await point for the connection's whole life.
    let result = match &config.tls {
        Some(acceptor) => Box::pin(serve_tls(tcp, acceptor.clone(), ws_config, stop)).await,
        None => match Box::pin(accept_echo(tcp, ws_config)).await {
            Ok(ws) => echo(ws, stop).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => debug!(%peer, "closed"),
        Err(e) => debug!(%peer, error = %e, "ended"),
    }
}

async fn serve_tls(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    ws_config: Arc<Config>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), WsError> {
    let timeout = ws_config.handshake_timeout;
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(WsError::Tls(e.to_string())),
        Err(_) => return Err(WsError::HandshakeTimeout(timeout)),
    };
    let ws = accept_echo(tls, ws_config).await?;
    echo(ws, stop).await
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

/// Echoes every message back, batching replies to a burst into one write; on shutdown,
/// closes with 1001.
async fn echo<S>(
    mut ws: WebSocket<S>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Created once: re-creating it per message would register a waiter each time.
    let shutdown = stop.changed();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            msg = ws.recv() => match msg? {
                Some(m) => {
                    if ws.feed(&m).is_err() {
                        // Write buffer full: write it out, then queue again.
                        ws.flush().await?;
                        ws.feed(&m)?;
                    }
                }
                None => return Ok(()),
            },
            _ = &mut shutdown => return Box::pin(going_away(&mut ws)).await,
        }
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

#[cfg(test)]
mod tests {
    /// An idle connection's memory is mostly its task: keep the per-connection future small.
    /// A regression guard at today's size (1,384 bytes, down from 6,776 before the handshake
    /// and TLS futures were boxed). The target for a whole idle connection is 1 KB, which
    /// needs this future well under 1 KB (docs/benchmarks.md).
    #[tokio::test]
    async fn connection_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, peer) = l.accept().await.unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let cfg = std::sync::Arc::new(super::ServerConfig::default());
        let ws = std::sync::Arc::new(switchboard_proto::Config::default());
        let f = super::handle(s, peer, cfg, ws, rx);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 1400, "per-connection future is {size} bytes");
    }
}
