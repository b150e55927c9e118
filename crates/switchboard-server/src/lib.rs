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

mod chat;
mod config;
mod connection;
mod echo;
mod http;
mod listener;
mod metrics;
mod process;
mod pubsub;
mod refusal;
mod registry;
mod server;
mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use config::{HeartbeatConfig, Limits, OriginPolicy, ServerConfig};
pub use listener::{check_transport, runtime};
pub use metrics::Metrics;
pub use switchboard_hub::{Hub, HubConfig, OutboxLimits, SlowConsumerPolicy};

use switchboard_hub::Outbox;
use switchboard_proto::handshake::server::Request;
use switchboard_proto::Config;
use switchboard_tokio::{
    read_request, refuse, upgrade_request, Error as WsError, SocketControl, Transport, WebSocket,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::{debug, warn, Instrument, Span};

use crate::metrics::{Handshake, Reject};
use crate::refusal::RefusalLogs;
use crate::registry::{Registration, Registry};

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
    pub(crate) next_id: AtomicU64,
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

/// The WebSocket endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Echo,
    Chat,
    PubSub,
}

/// Reads the first request and serves it: plain HTTP, or a WebSocket on one of the
/// endpoints (the echo one is handed back to run in the connection's state machine).
async fn route<S>(
    mut stream: S,
    id: u64,
    peer: SocketAddr,
    reg: Result<Registration, (Registration, registry::Refusal)>,
    shared: Arc<Shared>,
) -> Routed<S>
where
    S: Transport + SocketControl + Send + 'static,
{
    let (req, leftover) = match read_request(&mut stream, &shared.echo).await {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "bad request");
            if !matches!(e, WsError::Io(_)) {
                shared.metrics.handshake(Handshake::Failed);
            }
            return Routed::Done;
        }
    };
    if !req.is_upgrade() {
        http::handle(stream, req, leftover, peer, &shared).await;
        return Routed::Done;
    }
    let reject = |why: Reject, status: u16, body: String| async move {
        debug!(status, %body, "handshake refused");
        Err::<(), _>((why, status, body))
    };
    let endpoint = match req.path_only() {
        "/echo" => Endpoint::Echo,
        "/chat" => Endpoint::Chat,
        "/ws" => Endpoint::PubSub,
        other => {
            let body = format!("no WebSocket endpoint at {other}; try /chat, /ws or /echo");
            return refused(stream, &shared, reject(Reject::NotFound, 404, body).await).await;
        }
    };
    let reg = match reg {
        Ok(reg) => reg,
        Err((_, why)) => {
            let (reason, limit) = why.reason_and_limit();
            if let Some(suppressed) = shared.refusals.limit.check() {
                warn!(%peer, reason = reason.label(), limit, suppressed, "WebSocket refused: connection limit");
            }
            return refused(stream, &shared, reject(reason, 503, why.message()).await).await;
        }
    };
    if !shared.config.origins.allows(req.origin(), req.host()) {
        let origin = req.origin().unwrap_or_default();
        if let Some(suppressed) = shared.refusals.origin.check() {
            warn!(%peer, reason = "origin", origin, suppressed, "WebSocket refused: origin not allowed");
        }
        let body = format!(
            "origin {origin} may not open WebSockets here (cross-site WebSocket hijacking protection); operators: allow it with --allow-origin {origin}"
        );
        return refused(stream, &shared, reject(Reject::Origin, 403, body).await).await;
    }
    match endpoint {
        // A test endpoint: it speaks whatever the client offers, so the first offered
        // subprotocol is selected (browsers and Node `ws` fail a handshake that offered
        // one and got none back).
        Endpoint::Echo => match upgrade(
            stream,
            &req,
            &leftover,
            &shared.echo,
            req.protocols().next(),
            &shared,
        )
        .await
        {
            Some(ws) => Routed::Echo(ws, reg),
            None => Routed::Done,
        },
        Endpoint::Chat => {
            let room = match http::query_param(req.query(), "room") {
                None => Ok(chat::DEFAULT_ROOM.to_string()),
                Some(r) => r.and_then(|r| chat::valid_room(&r).map(|()| r)),
            };
            let name = match http::query_param(req.query(), "name") {
                None => Ok(format!(
                    "guest-{:04x}",
                    (id.wrapping_mul(0x9e37_79b9)) & 0xffff
                )),
                Some(n) => n.and_then(|n| chat::clean_name(&n)),
            };
            let (room, name) = match (room, name) {
                (Ok(r), Ok(n)) => (r, n),
                (Err(e), _) | (_, Err(e)) => {
                    return refused(stream, &shared, reject(Reject::BadRequest, 400, e).await).await
                }
            };
            let protocol = req.choose_protocol(&[chat::SUBPROTOCOL]);
            let Some(ws) = upgrade(stream, &req, &leftover, &shared.ws, protocol, &shared).await
            else {
                return Routed::Done;
            };
            debug!(%room, %name, "chat opened");
            let app = chat::Chat::new(id, name, room, shared.config.limits.max_chat_text);
            Routed::Session(run_session(ws, app, reg, shared))
        }
        Endpoint::PubSub => {
            let protocol = req.choose_protocol(&[pubsub::SUBPROTOCOL]);
            let Some(ws) = upgrade(stream, &req, &leftover, &shared.ws, protocol, &shared).await
            else {
                return Routed::Done;
            };
            debug!("pub/sub opened");
            let app = pubsub::PubSub::new(shared.config.limits.max_subscriptions);
            Routed::Session(run_session(ws, app, reg, shared))
        }
    }
}

fn run_session<S, A>(
    ws: WebSocket<S>,
    app: A,
    reg: Registration,
    shared: Arc<Shared>,
) -> BoxFuture<()>
where
    S: Transport + SocketControl + Send + 'static,
    A: session::App + Send + 'static,
{
    let outbox = Arc::new(Outbox::new(shared.config.outbox));
    let span = Span::current();
    Box::pin(
        async move {
            session::run(
                ws,
                app,
                shared.hub.clone(),
                outbox,
                Arc::clone(&shared.metrics),
                reg,
            )
            .await;
            shared
                .metrics
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
        }
        .instrument(span),
    )
}

async fn refused<S>(
    mut stream: S,
    shared: &Shared,
    why: Result<(), (Reject, u16, String)>,
) -> Routed<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err((why, status, body)) = why {
        shared.metrics.handshake(Handshake::Rejected(why));
        let _ = refuse(&mut stream, status, &body).await;
    }
    Routed::Done
}

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
            shared.metrics.handshake(Handshake::Accepted);
            shared
                .metrics
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            debug!(path = %req.path, "accepted");
            Some(ws)
        }
        Err(e) => {
            shared.metrics.handshake(Handshake::Failed);
            debug!(error = %e, "handshake failed");
            None
        }
    }
}
