//! A node's topics: its subscribers, their outboxes, and encode-once delivery of what the
//! engine brings.

use std::collections::HashMap;

use slab::Slab;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::sync::{lock, read, write};
use std::time::{Duration, Instant};

use switchboard_proto::frame::{encode_shared_binary, encode_shared_text, SharedFrame};

use crate::engine::{
    Body, Deliver, Engine, EngineError, HistoryPage, HistoryQuery, Op, PresenceEntry,
    PresenceStats, Publication, Published, StreamOptions,
};
use crate::memory::MemoryEngine;
use crate::outbox::{Outbox, Pushed};
use crate::stream::{HistoryLimits, StreamPosition};

/// Hub settings (for the in-memory engine of [`Hub::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubConfig {
    /// Publications each topic's history keeps at most (default 100; 0 keeps none).
    pub history_size: usize,
    /// How long a publication stays in its topic's history (default 5 minutes; zero keeps
    /// none). A topic's stream (its positions and history) outlives its last subscriber
    /// until its history is empty.
    pub history_ttl: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            history_size: 100,
            history_ttl: Duration::from_secs(5 * 60),
        }
    }
}

impl HubConfig {
    /// Sets [`history_size`](Self::history_size).
    pub fn history_size(mut self, n: usize) -> Self {
        self.history_size = n;
        self
    }

    /// Sets [`history_ttl`](Self::history_ttl).
    pub fn history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = ttl;
        self
    }

    /// The history's bounds.
    pub fn limits(&self) -> HistoryLimits {
        HistoryLimits {
            size: self.history_size,
            ttl: self.history_ttl,
        }
    }
}

/// A subscription handle; give it back with [`Hub::unsubscribe`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    topic: Arc<str>,
    id: u64,
    /// Where it sits in its topic's table (checked against `id`: a slot is reused).
    key: usize,
}

impl Subscription {
    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// What [`Hub::subscribe`] started.
#[derive(Debug)]
pub struct Subscribing {
    /// The handle. Until [`Hub::go_live`], the topic's publications wait for it in the hub.
    pub subscription: Subscription,
    /// The history read asked for, once the engine delivers the topic here.
    pub page: Op<Result<HistoryPage, EngineError>>,
}

/// Makes the frame subscribers receive from a publication; the hub calls it once per
/// publication (and per replayed one), never per subscriber.
pub trait Render: Send + Sync {
    /// The frame for `publication`.
    fn render(&self, publication: &Publication) -> SharedFrame;
}

/// Each topic's [`StreamOptions`] (its history's bounds), which the hub passes to the engine
/// with every publication. The server decides them by the topic's namespace; a
/// [`StreamOptions`] is the same for every topic. Called once per publication (never per
/// subscriber): keep it cheap and free of allocation.
///
/// ```
/// use std::time::Duration;
/// use switchboard_hub::{HistoryLimits, StreamOptions, TopicOptions};
///
/// let by_prefix = |topic: &str| {
///     let size = if topic.starts_with("ticks:") { 0 } else { 100 };
///     StreamOptions::new(HistoryLimits { size, ttl: Duration::from_secs(60) })
/// };
/// assert_eq!(by_prefix.options("ticks:eur").history.size, 0);
/// assert_eq!(StreamOptions::default().options("any"), StreamOptions::default());
/// ```
pub trait TopicOptions: Send + Sync + 'static {
    /// The options of `topic`'s stream.
    fn options(&self, topic: &str) -> StreamOptions;
}

impl TopicOptions for StreamOptions {
    fn options(&self, _topic: &str) -> StreamOptions {
        *self
    }
}

impl<F> TopicOptions for F
where
    F: Fn(&str) -> StreamOptions + Send + Sync + 'static,
{
    fn options(&self, topic: &str) -> StreamOptions {
        self(topic)
    }
}

/// Renders a body as it is: kind 0 as a text message (bytes that are not UTF-8 as binary),
/// any other kind as a binary message.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainRender;

impl Render for PlainRender {
    fn render(&self, p: &Publication) -> SharedFrame {
        match std::str::from_utf8(&p.body.data) {
            Ok(text) if p.body.kind == 0 => encode_shared_text(&[text]),
            _ => encode_shared_binary(&[&p.body.data]),
        }
    }
}

/// Counters, for metrics.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Publications delivered on this node.
    pub publications: AtomicU64,
    /// Frames handed to subscriber outboxes.
    pub deliveries: AtomicU64,
    /// Frames dropped by the drop-oldest policy.
    pub dropped: AtomicU64,
    /// Subscribers cut off by the disconnect policy.
    pub overflowed: AtomicU64,
    /// Subscribers told to reconnect and recover (a gap or a new epoch in a topic's stream).
    pub lost: AtomicU64,
}

type Buffered = Vec<(Option<StreamPosition>, SharedFrame)>;

struct Sub {
    /// Unique in the hub: a [`Subscription`] names it with its slot.
    id: u64,
    outbox: Arc<Outbox>,
    /// `Some` until [`Hub::go_live`]: what was delivered meanwhile.
    buffer: Option<Buffered>,
    /// Publications up to this offset are skipped (0: none): the subscriber's history read
    /// saw them already (in its replay, or before its position), but with an engine that
    /// delivers later (Redis) they may still be on their way to this node.
    after: u64,
}

/// What a topic's subscriber lock guards.
#[derive(Default)]
struct Subs {
    /// The subscribers. A slab, not a map: a topic with one subscriber (a `/ws` client's
    /// own topic) holds one slot, not a B-tree leaf of eleven (792 bytes).
    map: Slab<Sub>,
    /// The position of the last publication delivered here (a gap after it, or another
    /// epoch, means publications were lost on their way).
    last: Option<StreamPosition>,
}

struct Topic {
    /// Held while the topic's interest changes (the engine's subscribe and unsubscribe go
    /// out in order) and while it leaves the map. Lock order: `gate`, then the map, then
    /// `subs`; delivery takes only `subs` (the engine may hold its own locks then).
    gate: Mutex<Gate>,
    subs: Mutex<Subs>,
}

#[derive(Default)]
struct Gate {
    /// The engine was asked to deliver the topic here.
    interested: bool,
    /// Out of the map: whoever still holds it looks it up again.
    removed: bool,
}

/// This node's topics: the delivery side the engine calls.
struct Local {
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    render: Arc<dyn Render>,
    /// Each topic's stream options, passed with its publications.
    options: Box<dyn TopicOptions>,
    stats: HubStats,
}

impl Local {
    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.topics).get(name).cloned()
    }

    fn lose(&self, subs: &mut Subs) {
        subs.last = None;
        let mut n = 0;
        for (_, sub) in subs.map.iter_mut() {
            if !sub.outbox.is_lost() {
                sub.outbox.lose();
                n += 1;
            }
            sub.buffer = None;
        }
        self.stats.lost.fetch_add(n, Ordering::Relaxed);
    }
}

/// Where `next` stands after `last`: the next one, one already seen, or past a gap.
fn follows(last: Option<&StreamPosition>, next: &StreamPosition) -> Follows {
    match last {
        None => Follows::Next,
        Some(l) if l.epoch != next.epoch => Follows::Gap,
        Some(l) if next.offset <= l.offset => Follows::Seen,
        Some(l) if next.offset == l.offset + 1 => Follows::Next,
        Some(_) => Follows::Gap,
    }
}

enum Follows {
    Next,
    Seen,
    Gap,
}

impl Deliver for Local {
    fn deliver(&self, p: &Publication) -> usize {
        let Some(topic) = self.topic(&p.topic) else {
            return 0;
        };
        let frame = self.render.render(p);
        let mut subs = lock(&topic.subs);
        if let Some(at) = &p.position {
            match follows(subs.last.as_ref(), at) {
                Follows::Next => subs.last = Some(at.clone()),
                Follows::Seen => return 0,
                Follows::Gap => {
                    self.lose(&mut subs);
                    subs.last = Some(at.clone());
                    return 0;
                }
            }
        }
        self.stats.publications.fetch_add(1, Ordering::Relaxed);
        let (mut delivered, mut dropped, mut overflowed) = (0u64, 0u64, 0u64);
        let offset = p.position.as_ref().map_or(0, |at| at.offset);
        for (_, sub) in subs.map.iter_mut() {
            if sub.after > 0 && offset > 0 {
                if offset <= sub.after {
                    continue;
                }
                sub.after = 0;
            }
            if let Some(buffer) = sub.buffer.as_mut() {
                // Waiting for its history: bounded like its outbox.
                if buffer.len() >= sub.outbox.limits().max_messages {
                    sub.outbox.lose();
                    sub.buffer = None;
                    self.stats.lost.fetch_add(1, Ordering::Relaxed);
                } else {
                    buffer.push((p.position.clone(), frame.clone()));
                    delivered += 1;
                }
                continue;
            }
            match sub.outbox.push(frame.clone()) {
                Pushed::Queued => delivered += 1,
                Pushed::DroppedOldest(n) => {
                    delivered += 1;
                    dropped += n as u64;
                }
                Pushed::Overflowed => overflowed += 1,
                Pushed::Closed => {}
            }
        }
        drop(subs);
        self.stats
            .deliveries
            .fetch_add(delivered, Ordering::Relaxed);
        if dropped > 0 {
            self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if overflowed > 0 {
            self.stats
                .overflowed
                .fetch_add(overflowed, Ordering::Relaxed);
        }
        delivered as usize
    }

    fn lost(&self, topic: Option<&str>) {
        let topics: Vec<Arc<Topic>> = match topic {
            Some(t) => self.topic(t).into_iter().collect(),
            None => read(&self.topics).values().cloned().collect(),
        };
        for t in topics {
            self.lose(&mut lock(&t.subs));
        }
    }
}

/// A node's topics with concurrent subscribe, unsubscribe and publish. Cheap to clone.
///
/// Publications go through the [`Engine`] (which numbers and keeps them) and come back to
/// every node's hub, which renders each one's frame once ([`Render`]) and hands the same
/// [`SharedFrame`] to every local subscriber's [`Outbox`]: nothing is encoded or copied per
/// subscriber, and a full outbox never slows the publisher (see
/// [`SlowConsumerPolicy`](crate::SlowConsumerPolicy)).
///
/// Subscribing is two steps, so that no publication is lost or seen twice between a client's
/// history and its live stream: [`subscribe`](Self::subscribe) adds the subscriber (what is
/// delivered from then on waits in the hub) and starts the history read; once it is done,
/// [`go_live`](Self::go_live) hands over the replay and what waited, merged by offset.
///
/// ```
/// use std::sync::Arc;
/// use switchboard_hub::engine::{Body, HistoryQuery};
/// use switchboard_hub::{Hub, HubConfig, Outbox, OutboxLimits};
///
/// let hub = Hub::new(HubConfig::default());
/// let inbox = Arc::new(Outbox::new(OutboxLimits::default()));
/// let s = hub.subscribe("news", Arc::clone(&inbox), HistoryQuery { since: None, limit: 0 });
/// let page = s.page.now().unwrap().unwrap(); // the in-memory engine is ready at once
/// hub.go_live(&s.subscription, &page.top, Vec::new());
///
/// let body = Body { kind: 0, data: "hello".into() };
/// let published = hub.publish("news", body).now().unwrap().unwrap();
/// assert_eq!((published.position.offset, published.delivered), (1, Some(1)));
/// let mut frames = Vec::new();
/// inbox.drain(usize::MAX, |f| frames.push(f));
/// assert_eq!(&frames[0][..], b"\x81\x05hello");
/// assert!(hub.unsubscribe(&s.subscription));
/// assert_eq!(hub.topic_count(), 0);
/// ```
#[derive(Clone)]
pub struct Hub {
    local: Arc<Local>,
    engine: Arc<dyn Engine>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("topics", &self.topic_count())
            .field("engine", &self.engine)
            .finish()
    }
}

impl Hub {
    /// A hub for one node: the in-memory engine, every topic's history bounded by `config`,
    /// bodies rendered as they are ([`PlainRender`]).
    pub fn new(config: HubConfig) -> Self {
        Self::with_options(
            Arc::new(MemoryEngine::new()),
            Arc::new(PlainRender),
            StreamOptions::new(config.limits()),
        )
    }

    /// A hub on `engine`, rendering publications with `render`; every topic's history
    /// keeps to [`StreamOptions::default`] (100 publications, 5 minutes).
    pub fn with_engine(engine: Arc<dyn Engine>, render: Arc<dyn Render>) -> Self {
        Self::with_options(engine, render, StreamOptions::default())
    }

    /// A hub on `engine`, rendering publications with `render`, each topic's stream kept
    /// by the [`StreamOptions`] `options` gives for it.
    pub fn with_options(
        engine: Arc<dyn Engine>,
        render: Arc<dyn Render>,
        options: impl TopicOptions,
    ) -> Self {
        let local = Arc::new(Local {
            topics: RwLock::new(HashMap::new()),
            render,
            options: Box::new(options),
            stats: HubStats::default(),
        });
        let weak: Weak<dyn Deliver> = Arc::downgrade(&(Arc::clone(&local) as Arc<dyn Deliver>));
        engine.attach(weak);
        Self {
            local,
            engine,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The frame subscribers receive for `publication` (a replay renders it again).
    pub fn render(&self, publication: &Publication) -> SharedFrame {
        self.local.render.render(publication)
    }

    /// Adds a subscriber to `topic` and starts reading the topic's history by `query`
    /// (limit 0: only its position). Publications delivered from now on wait in the hub
    /// until [`go_live`](Self::go_live). If the page fails, give the subscription back with
    /// [`unsubscribe`](Self::unsubscribe).
    ///
    /// Being subscribed does not make a connection present: presence is the engine's
    /// ([`presence_add`](Self::presence_add)), so that every node sees it.
    pub fn subscribe(&self, topic: &str, outbox: Arc<Outbox>, query: HistoryQuery) -> Subscribing {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut sub = Some(Sub {
            id,
            outbox,
            buffer: Some(Vec::new()),
            after: 0,
        });
        loop {
            let (name, t) = self.topic_or_new(topic);
            let mut gate = lock(&t.gate);
            if gate.removed {
                continue;
            }
            let mut key = usize::MAX;
            if let Some(s) = sub.take() {
                key = lock(&t.subs).map.insert(s);
            }
            let ready = if gate.interested {
                Op::ready(Ok(()))
            } else {
                gate.interested = true;
                self.engine.subscribe(&name)
            };
            drop(gate);
            return Subscribing {
                subscription: Subscription {
                    topic: name,
                    id,
                    key,
                },
                page: self.then_history(ready, topic, query),
            };
        }
    }

    fn topic_or_new(&self, name: &str) -> (Arc<str>, Arc<Topic>) {
        if let Some((n, t)) = read(&self.local.topics).get_key_value(name) {
            return (Arc::clone(n), Arc::clone(t));
        }
        let mut topics = write(&self.local.topics);
        if let Some((n, t)) = topics.get_key_value(name) {
            return (Arc::clone(n), Arc::clone(t));
        }
        let n: Arc<str> = Arc::from(name);
        let t = Arc::new(Topic {
            gate: Mutex::new(Gate::default()),
            subs: Mutex::new(Subs::default()),
        });
        topics.insert(Arc::clone(&n), Arc::clone(&t));
        (n, t)
    }

    /// The history read, once `ready` (the engine's subscribe) is done.
    fn then_history(
        &self,
        ready: Op<Result<(), EngineError>>,
        topic: &str,
        query: HistoryQuery,
    ) -> Op<Result<HistoryPage, EngineError>> {
        match ready.now() {
            Ok(Ok(())) => self.engine.history(topic, query),
            Ok(Err(e)) => Op::ready(Err(e)),
            Err(pending) => {
                let engine = Arc::clone(&self.engine);
                let topic = topic.to_owned();
                Op::pending(async move {
                    pending.await?;
                    engine.history(&topic, query).await
                })
            }
        }
    }

    /// Ends a subscription's wait: returns the frames to send it, in order (before anything
    /// its outbox gets from now on): `replay` (the publications it recovered, rendered),
    /// then what was delivered while it waited that comes after `top` (the position its
    /// history read saw). Earlier ones are in `replay` or were missed on purpose (a client
    /// that did not recover reloads its state from `top`).
    pub fn go_live(
        &self,
        sub: &Subscription,
        top: &StreamPosition,
        mut replay: Vec<SharedFrame>,
    ) -> Vec<SharedFrame> {
        let Some(t) = self.local.topic(&sub.topic) else {
            return replay;
        };
        let mut subs = lock(&t.subs);
        let Some(s) = subs.map.get_mut(sub.key).filter(|s| s.id == sub.id) else {
            return replay;
        };
        s.after = top.offset;
        if let Some(buffered) = s.buffer.take() {
            let newer = |at: &Option<StreamPosition>| {
                at.as_ref()
                    .is_none_or(|at| at.epoch != top.epoch || at.offset > top.offset)
            };
            replay.extend(
                buffered
                    .into_iter()
                    .filter(|(at, _)| newer(at))
                    .map(|(_, f)| f),
            );
        }
        // Only a topic nothing was delivered for yet takes its position from the read (so a
        // gap right after it is seen); otherwise deliveries alone move it: others'
        // publications up to `top` may still be on their way here.
        if subs.last.is_none() {
            subs.last = Some(top.clone());
        }
        replay
    }

    /// Removes a subscriber. The topic's stream stays in the engine while its history holds
    /// anything. Returns whether it was subscribed (giving a subscription back twice is
    /// harmless).
    pub fn unsubscribe(&self, sub: &Subscription) -> bool {
        let Some(t) = self.local.topic(&sub.topic) else {
            return false;
        };
        let mut gate = lock(&t.gate);
        let (removed, empty) = {
            let mut subs = lock(&t.subs);
            let mine = subs.map.get(sub.key).is_some_and(|s| s.id == sub.id);
            let removed = mine.then(|| subs.map.remove(sub.key));
            (removed, subs.map.is_empty())
        };
        if removed.is_some() && empty && !gate.removed {
            // Subscribers come in only through the gate, which is held: it stays empty.
            if gate.interested {
                self.engine.unsubscribe(&sub.topic);
                gate.interested = false;
            }
            gate.removed = true;
            let mut topics = write(&self.local.topics);
            if topics.get(&sub.topic).is_some_and(|x| Arc::ptr_eq(x, &t)) {
                topics.remove(&sub.topic);
            }
        }
        drop(gate);
        removed.is_some()
    }

    /// Publishes `body` to `topic`'s stream: the engine numbers it, keeps it (within the
    /// topic's [`StreamOptions`]) and delivers it to every node.
    pub fn publish(&self, topic: &str, body: Body) -> Op<Result<Published, EngineError>> {
        let options = self.local.options.options(topic);
        self.engine.publish(topic, body, options)
    }

    /// Delivers `body` to every node's subscribers of `topic`, not numbered and not kept
    /// (presence events, typing notices).
    pub fn broadcast(&self, topic: &str, body: Body) -> Op<Result<(), EngineError>> {
        self.engine.broadcast(topic, body)
    }

    /// Reads `topic`'s history.
    pub fn history(
        &self,
        topic: &str,
        query: HistoryQuery,
    ) -> Op<Result<HistoryPage, EngineError>> {
        self.engine.history(topic, query)
    }

    /// Adds (or refreshes) a connection's presence in `topic`, in the engine: every node
    /// sees it until [`presence_remove`](Self::presence_remove) (or, on an engine of several
    /// nodes, until it expires after this node died).
    pub fn presence_add(&self, topic: &str, entry: PresenceEntry) -> Op<Result<(), EngineError>> {
        self.engine.presence_add(topic, entry)
    }

    /// Removes a connection's presence from `topic`.
    pub fn presence_remove(&self, topic: &str, client: &str) -> Op<Result<(), EngineError>> {
        self.engine.presence_remove(topic, client)
    }

    /// Who is present in `topic`, on every node, in no particular order.
    pub fn presence(&self, topic: &str) -> Op<Result<Vec<PresenceEntry>, EngineError>> {
        self.engine.presence(topic)
    }

    /// How many are present in `topic`, on every node.
    pub fn presence_stats(&self, topic: &str) -> Op<Result<PresenceStats, EngineError>> {
        self.engine.presence_stats(topic)
    }

    /// Lets the engine drop what has aged out at `now`. Call it now and then (the server
    /// does from a ticker).
    pub fn trim(&self, now: Instant) {
        self.engine.trim(now);
    }

    /// Subscribers of `topic` on this node.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.local
            .topic(topic)
            .map_or(0, |t| lock(&t.subs).map.len())
    }

    /// Topics with at least one subscriber on this node.
    pub fn topic_count(&self) -> usize {
        read(&self.local.topics)
            .values()
            .filter(|t| !lock(&t.subs).map.is_empty())
            .count()
    }

    /// Topics whose stream the engine keeps on this node (with subscribers, or history, or
    /// both); 0 when the engine keeps them elsewhere.
    pub fn stream_count(&self) -> usize {
        self.engine.stream_count().unwrap_or(0)
    }

    /// Counters.
    pub fn stats(&self) -> &HubStats {
        &self.local.stats
    }
}
