//! The engine seam: where publications get their positions, where history and presence are
//! kept, and what brings every publication to every node's hub.
//!
//! The hub (local subscribers and their outboxes) talks to one [`Engine`]. The in-memory
//! engine ([`crate::MemoryEngine`]) serves one node; an engine for several nodes (Redis,
//! the `switchboard-redis` crate; NATS could follow) implements the same trait:
//!
//! - [`Engine::publish`] numbers a publication (its topic's next offset, in the topic's
//!   epoch), keeps it in the topic's history (bounded by the topic's [`StreamOptions`], which
//!   the hub passes with every publication) and sends it to every node, atomically, so every
//!   node sees one order. [`Engine::broadcast`] sends without numbering or keeping (presence
//!   events, typing notices).
//! - Every node's hub gets each publication through [`Deliver::deliver`] (the engine calls
//!   it, for its own publications too) and renders the frame once per node.
//! - [`Engine::history`] reads what a topic's history holds, for recovery and the `history`
//!   request; presence lives in the engine too, so it is the same on every node.
//!
//! What crosses an engine is data ([`Body`]: a kind byte the server defines and the payload),
//! never a frame: the frame carries the position, which only the engine knows.
//!
//! Operations return an [`Op`]: ready at once for the in-memory engine (no allocation, no
//! runtime), a boxed future for an engine that asks a server.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::stream::{HistoryLimits, StreamPosition};

/// A publication's content as engines carry it: opaque to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// What the payload is, defined by whoever renders it (the server: JSON, binary, a chat
    /// event). Engines keep and carry it unchanged.
    pub kind: u8,
    /// The payload.
    pub data: Bytes,
}

/// How an engine keeps one topic's stream: its history's bounds. The hub passes them with
/// each publication ([`Engine::publish`]), from its [`TopicOptions`](crate::TopicOptions)
/// (the server's namespaces); the engine keeps the topic's history to the bounds of its
/// latest publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamOptions {
    /// How much of the topic's history is kept (size or age 0: none; publications are still
    /// numbered).
    pub history: HistoryLimits,
}

impl StreamOptions {
    /// A stream whose history keeps to `history`.
    pub const fn new(history: HistoryLimits) -> Self {
        Self { history }
    }
}

impl Default for StreamOptions {
    /// 100 publications for 5 minutes ([`HubConfig`](crate::HubConfig)'s default).
    fn default() -> Self {
        Self::new(crate::HubConfig::default().limits())
    }
}

impl From<HistoryLimits> for StreamOptions {
    fn from(history: HistoryLimits) -> Self {
        Self::new(history)
    }
}

/// One publication as it reaches a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The topic.
    pub topic: Arc<str>,
    /// Its place in the topic's stream; `None` for a [broadcast](Engine::broadcast) (not
    /// numbered, not kept).
    pub position: Option<StreamPosition>,
    /// The content.
    pub body: Body,
}

/// What [`Engine::publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The publication's position in its topic's stream.
    pub position: StreamPosition,
    /// Subscribers reached on this node when the engine delivered at once (the in-memory
    /// engine); `None` when delivery happens later (an engine of several nodes).
    pub delivered: Option<usize>,
}

/// Which part of a topic's history [`Engine::history`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// `Some(n)`: the publications after offset `n`, oldest first (a recovery). `None`: the
    /// newest ones (a welcome's backlog, the `history` request without a position).
    pub since: Option<u64>,
    /// At most this many publications (0: only the topic's position).
    pub limit: usize,
}

/// What [`Engine::history`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The topic's position now (offset 0 in a fresh epoch for a topic with no stream).
    pub top: StreamPosition,
    /// The publications, oldest first, each with its position.
    pub publications: Vec<Publication>,
}

/// One connection present in a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresenceEntry {
    /// The connection: unique in the cluster.
    pub client: Arc<str>,
    /// The user it belongs to (empty: anonymous).
    pub user: Arc<str>,
    /// Shown to others (the chat: the member's name).
    pub name: Arc<str>,
    /// What the application tells others about it: JSON text (a token's `info`), or empty.
    pub info: Arc<str>,
}

/// How many are present in a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PresenceStats {
    /// Connections.
    pub clients: usize,
    /// Distinct users (anonymous connections count as one each).
    pub users: usize,
}

/// Why an engine operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine's backend cannot be reached (and why).
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer in time.
    #[error("engine timed out")]
    Timeout,
    /// The backend answered something unexpected.
    #[error("engine protocol error: {0}")]
    Protocol(String),
}

/// The receiving side of an engine: a node's hub.
pub trait Deliver: Send + Sync {
    /// Hands `publication` to the node's subscribers of its topic; returns how many.
    /// Publications of one topic come in their stream's order.
    fn deliver(&self, publication: &Publication) -> usize;

    /// Publications of `topic` (every topic when `None`) may have been lost on their way
    /// (a dropped connection to the backend): the node's subscribers of it must recover.
    fn lost(&self, topic: Option<&str>);
}

impl fmt::Debug for dyn Deliver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Deliver")
    }
}

/// An engine: positions, history, presence and delivery to every node. See the
/// [module](self) docs.
pub trait Engine: Send + Sync + fmt::Debug {
    /// Called once by the hub with its delivery side.
    ///
    /// Contract for engines of several nodes: a failed [`subscribe`](Self::subscribe) keeps
    /// the node's interest in the topic (it is subscribed once the backend is back) until
    /// [`unsubscribe`](Self::unsubscribe); [`Deliver::lost`] comes after the engine
    /// subscribed again following a lost connection; every
    /// [`presence_add`](Self::presence_add), even one that failed, is followed by a
    /// [`presence_remove`](Self::presence_remove).
    fn attach(&self, hub: Weak<dyn Deliver>);

    /// Numbers `body` as `topic`'s next publication, keeps it in the topic's history (within
    /// `options`, which also bound what the history keeps from then on) and delivers it to
    /// every node.
    fn publish(
        &self,
        topic: &str,
        body: Body,
        options: StreamOptions,
    ) -> Op<Result<Published, EngineError>>;

    /// Delivers `body` to every node's subscribers of `topic` without numbering or keeping it.
    fn broadcast(&self, topic: &str, body: Body) -> Op<Result<(), EngineError>>;

    /// Reads `topic`'s history (within the bounds of its latest publication's
    /// [`StreamOptions`]).
    fn history(&self, topic: &str, query: HistoryQuery) -> Op<Result<HistoryPage, EngineError>>;

    /// This node has its first subscriber to `topic`: resolves once the topic's
    /// publications reach this node's [`Deliver`].
    fn subscribe(&self, topic: &str) -> Op<Result<(), EngineError>>;

    /// This node has no subscriber to `topic` any more.
    fn unsubscribe(&self, topic: &str);

    /// Adds (or refreshes) a connection's presence in `topic`. The engine keeps it alive
    /// until [`presence_remove`](Self::presence_remove); an engine of several nodes lets
    /// the entries of a node that died expire.
    fn presence_add(&self, topic: &str, entry: PresenceEntry) -> Op<Result<(), EngineError>>;

    /// Removes a connection's presence from `topic`.
    fn presence_remove(&self, topic: &str, client: &str) -> Op<Result<(), EngineError>>;

    /// Who is present in `topic`, in no particular order.
    fn presence(&self, topic: &str) -> Op<Result<Vec<PresenceEntry>, EngineError>>;

    /// How many are present in `topic`.
    fn presence_stats(&self, topic: &str) -> Op<Result<PresenceStats, EngineError>>;

    /// Drops what has aged out (history past its age, idle streams). The server calls it
    /// every few seconds with the current time.
    fn trim(&self, now: std::time::Instant) {
        let _ = now;
    }

    /// Topics whose stream this engine keeps on this node (for metrics; `None`: not known
    /// here).
    fn stream_count(&self) -> Option<usize> {
        None
    }

    /// The engine's own counters and gauges, for `/metrics` (its state, its backend's
    /// latency, its reconnects). None by default.
    fn metrics(&self) -> Vec<EngineMetric> {
        Vec::new()
    }
}

/// One of an engine's counters or gauges (see [`Engine::metrics`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineMetric {
    /// The Prometheus name (`switchboard_engine_…`).
    pub name: &'static str,
    /// One line saying what it counts.
    pub help: &'static str,
    /// The value now.
    pub value: f64,
    /// A gauge (it goes up and down) rather than a counter.
    pub gauge: bool,
}

/// A future that [`Op::Pending`] holds.
pub type BoxOp<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The result of an engine operation: ready now, or a future.
///
/// ```
/// use switchboard_hub::engine::Op;
///
/// let op: Op<u32> = Op::ready(7);
/// assert_eq!(op.now().ok(), Some(7));
/// let later: Op<u32> = Op::pending(async { 8 });
/// assert!(later.now().is_err()); // still a future: await it
/// ```
pub enum Op<T> {
    /// Done (taken once, by [`now`](Self::now) or by polling).
    Ready(Option<T>),
    /// To be awaited.
    Pending(BoxOp<T>),
}

impl<T> Op<T> {
    /// Done now.
    pub fn ready(value: T) -> Self {
        Self::Ready(Some(value))
    }

    /// Done when `future` is.
    pub fn pending(future: impl Future<Output = T> + Send + 'static) -> Self {
        Self::Pending(Box::pin(future))
    }

    /// The value if it is ready, or the operation back to await it.
    pub fn now(self) -> Result<T, Self> {
        match self {
            Self::Ready(Some(v)) => Ok(v),
            other => Err(other),
        }
    }
}

impl<T> fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(v) => f.debug_tuple("Ready").field(&v.is_some()).finish(),
            Self::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl<T: Unpin> Future for Op<T> {
    type Output = T;

    /// # Panics
    /// Polled again after it returned its value.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut *self {
            #[expect(clippy::panic, reason = "a future polled after completion is a bug")]
            Self::Ready(v) => Poll::Ready(
                v.take()
                    .unwrap_or_else(|| panic!("Op polled after completion")),
            ),
            Self::Pending(f) => f.as_mut().poll(cx),
        }
    }
}
