//! The Redis engine of Switchboard: stream positions, history, presence and delivery to
//! every node, through one Redis server.
//!
//! [`RedisEngine`] implements the hub's [`Engine`] seam. Several `switchboard serve` nodes
//! that share a Redis (and a [prefix](RedisConfig::prefix)) share their topics:
//!
//! - **Publish** runs one Lua script (`src/lua/publish.lua`) that, atomically, takes the
//!   topic's epoch (setting the node's fresh one if the topic has none), increments its top
//!   offset, appends the publication to the topic's history stream (`XADD … MAXLEN`, entry ID
//!   `<offset>-0`, whole-stream expiry refreshed on each publish) and `PUBLISH`es it with its
//!   position to the topic's channel. Every node therefore receives one topic's publications
//!   in offset order. The history's bounds are the topic's own (the
//!   [`StreamOptions`](switchboard_hub::StreamOptions) the hub passes with each publication,
//!   by the topic's namespace); the TTL is kept with the position for reads. With history
//!   off (size or TTL 0) publications are still numbered.
//! - **History** (`src/lua/history.lua`) reads the position (creating the epoch if missing,
//!   so a position handed out before the first publication stays valid) and `XRANGE`s after
//!   an offset or `XREVRANGE`s the newest; entries older than the topic's history TTL (by
//!   the Redis server's clock) are left out.
//! - **Delivery**: one dedicated pub/sub connection per node subscribes to the channels of
//!   the topics this node has subscribers for ([`Engine::subscribe`] resolves once Redis
//!   confirmed; concurrent requests are batched). After that connection drops or is found
//!   wedged (an idle connection is probed: see [`RedisConfig::probe_interval`]) the engine
//!   reconnects with backoff, resubscribes every topic and calls [`Deliver::lost`]`(None)`.
//! - **Presence**: a hash of entries plus a sorted set of expiry times per topic; this node
//!   refreshes the entries it added, so the entries of a node that died expire within
//!   [`RedisConfig::presence_ttl`].
//!
//! Keys and channels are listed in the `keys` module's docs, the pub/sub format in the
//! `payload` module's docs.
//!
//! # Faults
//!
//! - Redis unreachable at start: [`RedisEngine::connect`] fails with
//!   [`EngineError::Unavailable`] naming the URL (password redacted); the server exits.
//! - Redis down while serving: every operation fails within
//!   [`RedisConfig::command_timeout`] with `Unavailable` or `Timeout`; nothing hangs.
//! - Redis back: commands work again (the command connection reconnects by itself); the
//!   pub/sub connection reconnects, resubscribes every topic of interest (a subscribe that
//!   failed meanwhile included: interest is dropped only by [`Engine::unsubscribe`]) and
//!   reports [`Deliver::lost`]; the refresher writes this node's presence entries again.
//! - Redis restarted empty: the next publish or history read starts a new epoch.
//!
//! # Guarantees
//!
//! Offsets are contiguous per topic and assigned atomically with storing and sending.
//! Delivery over Redis pub/sub is at most once: a publication sent while a node's pub/sub
//! connection is down is lost on its way to that node, which is why the engine reports
//! [`Deliver::lost`] and the hub makes those subscribers recover from the history (and why
//! the hub checks offsets for gaps). History survives only as long as Redis keeps its data.
//!
//! # Runtime
//!
//! [`RedisEngine::connect`] must run inside a Tokio runtime (with the time driver); the
//! engine's background tasks (pub/sub, presence refresh) end when the engine is dropped.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod command;
mod config;
mod history;
mod keys;
mod payload;
mod presence;
mod probe;
mod publish;
mod pubsub;
mod scripts;
mod stats;
mod subscriber;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, Weak};

use switchboard_hub::engine::{
    Body, Deliver, Engine, EngineError, EngineMetric, HistoryPage, HistoryQuery, Op, PresenceEntry,
    PresenceStats, Published, StreamOptions,
};
use tokio::sync::watch;

pub use config::{RedisConfig, DEFAULT_PREFIX};
pub use payload::PayloadError;
pub use stats::{RedisStats, RedisStatsSnapshot};

use command::Commands;
use keys::Keys;
use presence::PresenceKeeper;
use pubsub::PubSub;
use scripts::Scripts;

/// What the engine's operations and background tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    pub(crate) commands: Commands,
    pub(crate) stats: Arc<RedisStats>,
    hub: RwLock<Option<Weak<dyn Deliver>>>,
}

impl Shared {
    /// The attached hub, if it is still alive.
    pub(crate) fn hub(&self) -> Option<Arc<dyn Deliver>> {
        self.hub
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade)
    }
}

/// The Redis engine. See the [crate] docs.
pub struct RedisEngine {
    shared: Arc<Shared>,
    pubsub: PubSub,
    presence: Arc<PresenceKeeper>,
    node: Arc<str>,
    /// Dropped with the engine: the background tasks see it and end.
    _shutdown: watch::Sender<()>,
}

impl fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngine")
            .field("url", &self.shared.config.redacted_url())
            .field("prefix", &self.shared.config.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// Connects to Redis (the command connection and the pub/sub connection, each attempt
    /// bounded by [`RedisConfig::command_timeout`]) and starts the background tasks.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`] naming the URL (its password redacted) when Redis cannot
    /// be reached, does not answer in time or the URL is invalid: the engine does not start
    /// and retry, so a wrong URL is seen at once.
    pub async fn connect(config: RedisConfig) -> Result<Arc<Self>, EngineError> {
        let url = config.redacted_url();
        let unreachable = |err: EngineError| {
            EngineError::Unavailable(format!("cannot connect to Redis at {url}: {err}"))
        };
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| EngineError::Unavailable(format!("invalid Redis URL {url}: {e}")))?;
        let timeout = config.command_timeout;
        let commands = Commands::connect(client.clone(), timeout)
            .await
            .map_err(unreachable)?;
        scripts::Scripts::load(&commands).await?;
        let node = switchboard_hub::stream::new_epoch();
        let shared = Arc::new(Shared {
            keys: Keys::new(&config.prefix),
            config,
            scripts: Scripts::new(),
            commands,
            stats: Arc::new(RedisStats::default()),
            hub: RwLock::new(None),
        });
        let (shutdown, shutdown_rx) = watch::channel(());
        let pubsub = PubSub::start(shared.clone(), client, &node)
            .await
            .map_err(unreachable)?;
        let presence = Arc::new(PresenceKeeper::default());
        presence::spawn_refresher(shared.clone(), presence.clone(), shutdown_rx);
        tracing::info!(url = %url, node = %node, "redis engine connected");
        Ok(Arc::new(Self {
            shared,
            pubsub,
            presence,
            node,
            _shutdown: shutdown,
        }))
    }

    /// The engine's counters (shared: keep the `Arc` to read them later).
    pub fn stats(&self) -> Arc<RedisStats> {
        self.shared.stats.clone()
    }

    /// The settings it runs with.
    pub fn config(&self) -> &RedisConfig {
        &self.shared.config
    }

    /// This node's random name (its probe channel's suffix).
    pub fn node_id(&self) -> &str {
        &self.node
    }
}

impl Engine for RedisEngine {
    fn attach(&self, hub: Weak<dyn Deliver>) {
        *self
            .shared
            .hub
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(hub);
    }

    fn publish(
        &self,
        topic: &str,
        body: Body,
        options: StreamOptions,
    ) -> Op<Result<Published, EngineError>> {
        Op::pending(publish::publish(
            self.shared.clone(),
            topic.to_owned(),
            body,
            options,
        ))
    }

    fn broadcast(&self, topic: &str, body: Body) -> Op<Result<(), EngineError>> {
        Op::pending(publish::broadcast(
            self.shared.clone(),
            topic.to_owned(),
            body,
        ))
    }

    fn history(&self, topic: &str, query: HistoryQuery) -> Op<Result<HistoryPage, EngineError>> {
        Op::pending(history::read(self.shared.clone(), topic.into(), query))
    }

    fn subscribe(&self, topic: &str) -> Op<Result<(), EngineError>> {
        Op::pending(self.pubsub.subscribe(topic))
    }

    fn unsubscribe(&self, topic: &str) {
        self.pubsub.unsubscribe(topic);
    }

    fn presence_add(&self, topic: &str, entry: PresenceEntry) -> Op<Result<(), EngineError>> {
        Op::pending(presence::add(
            self.shared.clone(),
            self.presence.clone(),
            topic.into(),
            entry,
        ))
    }

    fn presence_remove(&self, topic: &str, client: &str) -> Op<Result<(), EngineError>> {
        Op::pending(presence::remove(
            self.shared.clone(),
            self.presence.clone(),
            topic.into(),
            client.into(),
        ))
    }

    fn presence(&self, topic: &str) -> Op<Result<Vec<PresenceEntry>, EngineError>> {
        Op::pending(presence::get(self.shared.clone(), topic.to_owned()))
    }

    fn presence_stats(&self, topic: &str) -> Op<Result<PresenceStats, EngineError>> {
        Op::pending(presence::stats(self.shared.clone(), topic.to_owned()))
    }

    fn metrics(&self) -> Vec<EngineMetric> {
        let s = self.shared.stats.snapshot();
        let counter = |name, help, value: u64| EngineMetric {
            name,
            help,
            value: value as f64,
            gauge: false,
        };
        vec![
            EngineMetric {
                name: "switchboard_engine_redis_up",
                help: "1 while the Redis pub/sub connection is up and subscribed, else 0.",
                value: if s.pubsub_connected { 1.0 } else { 0.0 },
                gauge: true,
            },
            EngineMetric {
                name: "switchboard_engine_publish_latency_seconds",
                help: "How long the last successful publish through Redis took.",
                value: s.last_publish_latency_us as f64 / 1e6,
                gauge: true,
            },
            EngineMetric {
                name: "switchboard_engine_pubsub_lag_seconds",
                help: "How long the last publication received took from Redis numbering it to this node (Redis's clock against this node's).",
                value: s.last_pubsub_lag_ms as f64 / 1e3,
                gauge: true,
            },
            counter(
                "switchboard_engine_publishes_total",
                "Publications Redis numbered for this node.",
                s.publishes,
            ),
            counter(
                "switchboard_engine_publish_errors_total",
                "Publishes and broadcasts that failed (Redis unreachable, timed out or erred).",
                s.publish_errors,
            ),
            counter(
                "switchboard_engine_messages_received_total",
                "Publications and broadcasts received from Redis pub/sub.",
                s.messages_received,
            ),
            counter(
                "switchboard_engine_pubsub_reconnects_total",
                "Times the Redis pub/sub connection was replaced (dropped, or found wedged by the probe).",
                s.pubsub_reconnects,
            ),
            counter(
                "switchboard_engine_wedged_connections_total",
                "Redis pub/sub connections given up because a probe did not come back.",
                s.wedged_connections,
            ),
            counter(
                "switchboard_engine_malformed_messages_total",
                "Redis pub/sub messages that could not be decoded.",
                s.malformed_messages,
            ),
        ]
    }
}
