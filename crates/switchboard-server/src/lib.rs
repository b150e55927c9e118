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
//! Plain HTTP is served by hyper, with keep-alive, and over HTTP/2 on the same port (prior
//! knowledge on plain TCP, ALPN `h2` on TLS; [`ServerConfig::http2`]); a WebSocket
//! handshake as a connection's first request stays on the server's own lean parser.
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
mod connection;
mod endpoint;
mod error;
mod handshake;
mod http;
mod http2;
mod listener;
mod metrics;
mod namespace;
mod process;
mod ratelimit;
mod refusal;
mod registry;
mod render;
mod routes;
mod server;
mod session;
mod upgrade;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub use auth::{
    ApiKey, AuthError, Authenticator, Grant, Identity, JwtAuthenticator, JwtConfig, JwtError,
    JWKS_REFRESH,
};
pub use config::{
    HeartbeatConfig, Http2Config, Limits, OriginPolicy, ServerConfig, DEFLATE_THRESHOLD,
    DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER, ECHO_MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE, RECOVERY_MAX,
};
pub use listener::{check_transport, runtime};
pub use metrics::Metrics;
pub use namespace::{
    namespace_of, NamespaceRules, Namespaces, PublishRule, SubscribeRule, CHAT_NAMESPACE,
    USER_NAMESPACE,
};
pub use render::{publication_binary, publication_json};
pub use switchboard_hub::{Engine, Hub, HubConfig, OutboxLimits, SlowConsumerPolicy};
/// The head of an HTTP request, as an [`Authenticator`] sees it.
pub use switchboard_proto::handshake::server::Request;

use switchboard_proto::Config;
use switchboard_tokio::WebSocket;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

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
    /// This node's id, random: client ids are `{node}.{n}`, unique in the cluster.
    pub(crate) node: Arc<str>,
    /// What every `/ws` connection shares: limits, namespaces.
    pub(crate) pubsub: Arc<endpoint::pubsub::Settings>,
    /// Every connection's task and the tasks hyper spawns for HTTP/2 streams: shutdown
    /// waits for them all.
    pub(crate) tasks: TaskTracker,
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
    /// A server for one node: the in-memory engine. Each topic's history keeps to the
    /// bounds of its namespace (`config.namespaces`), else those of `config.hub`.
    pub fn new(config: ServerConfig) -> Self {
        Self::with_engine(config, Arc::new(switchboard_hub::MemoryEngine::new()))
    }

    /// A server on `engine` (the Redis engine of `switchboard-redis`, for several nodes),
    /// with the history bounds of [`new`](Self::new).
    pub fn with_engine(config: ServerConfig, engine: Arc<dyn Engine>) -> Self {
        let options = config.namespaces.stream_options(config.hub.limits());
        Self::with_hub(config, render::hub_on(engine, options))
    }

    fn with_hub(mut config: ServerConfig, hub: Hub) -> Self {
        if config.http2.enabled {
            config.tls = config.tls.map(http2::with_alpn);
        }
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
                node: endpoint::presence::node_id(),
                pubsub: Arc::new(endpoint::pubsub::Settings {
                    max_subscriptions: config.limits.max_subscriptions,
                    recovery_max: config.limits.recovery_max,
                    namespaces: config.namespaces.clone(),
                }),
                tasks: TaskTracker::new(),
                config,
            }),
        }
    }

    /// The hub: publish to topics from the embedding program.
    pub fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    /// This node's id (6 random letters and digits, new for every `Server`): the part
    /// before the dot of its connections' client ids (`/chat` member ids, `/ws` presence).
    pub fn node(&self) -> &str {
        &self.shared.node
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
    /// Handled completely (refused, or the peer went away).
    Done,
    /// An `/echo` WebSocket, to run in the lean state machine.
    Echo(WebSocket<S>, Registration),
    /// To run on its own, boxed: a `/chat` or `/ws` session, or a connection hyper serves.
    /// What the first request needed (the request, its buffers, the routing future) is
    /// freed before it starts.
    Boxed(BoxFuture<()>),
}
