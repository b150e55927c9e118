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
use tokio::task::JoinSet;
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
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
                    tasks.spawn(handle(tcp, peer, Arc::clone(&config), stop_rx.clone()).instrument(span));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    info!(
        open = tasks.len(),
        "shutting down: closing connections with 1001"
    );
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_timeout, drain)
        .await
        .is_err()
    {
        warn!("shutdown deadline passed; dropping remaining connections");
        tasks.abort_all();
    }
    Ok(())
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let result = match &config.tls {
        Some(acceptor) => {
            match tokio::time::timeout(config.ws.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_stream(tls, &config, stop).await,
                Ok(Err(e)) => {
                    debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!("TLS handshake timed out");
                    return;
                }
            }
        }
        None => serve_stream(tcp, &config, stop).await,
    };
    match result {
        Ok(()) => debug!(%peer, "closed"),
        Err(e) => debug!(%peer, error = %e, "ended"),
    }
}

async fn serve_stream<S>(
    stream: S,
    config: &ServerConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws, req) = accept_with(stream, config.ws, |req| match req.path_only() {
        "/echo" => Decision::accept(),
        other => Decision::reject(404, format!("no WebSocket endpoint at {other}; try /echo")),
    })
    .await?;
    debug!(path = %req.path, "accepted");
    // The request (its headers) is not needed any more: don't keep it for the connection's life.
    drop(req);
    echo(ws, &mut stop).await
}

/// Echoes every message back, batching replies to a burst into one write; on shutdown,
/// closes with 1001.
async fn echo<S>(
    mut ws: WebSocket<S>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
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
            _ = stop.changed() => {
                ws.flush().await?;
                return ws.close(switchboard_proto::CloseCode::GOING_AWAY, "server shutting down").await;
            }
        }
    }
}
