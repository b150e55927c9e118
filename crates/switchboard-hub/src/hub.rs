//! Topics, subscriptions, presence, history and encode-once fan-out.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::frame::{encode_shared, SharedFrame};
use switchboard_proto::Message;

use crate::broker::{Broker, BrokerError, Deliver, InMemoryBroker, Publication};
use crate::outbox::{Outbox, Pushed};
use crate::stream::{HistoryLimits, StreamPosition, TopicStream};

/// Hub settings.
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

/// Someone present in a topic: what presence lists show.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// Unique per server.
    pub id: Arc<str>,
    /// Display name (need not be unique).
    pub name: Arc<str>,
}

/// A subscription handle; give it back with [`Hub::unsubscribe`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    topic: Arc<str>,
    id: u64,
}

impl Subscription {
    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// What subscribing returned: the handle, and a consistent snapshot of the topic taken at
/// the moment the subscriber was added (every later publication reaches its outbox, no
/// earlier one does).
#[derive(Debug)]
pub struct Joined {
    /// The handle.
    pub subscription: Subscription,
    /// Everyone present, in the order they subscribed (the new member last, if it has one).
    pub members: Vec<Member>,
    /// The payloads of the publications the topic's history holds, oldest first.
    pub history: Vec<Bytes>,
    /// The topic's position when the subscriber was added: the offset of the last
    /// publication it did not receive live, and the epoch.
    pub position: StreamPosition,
}

/// What [`Hub::history`] found.
#[derive(Debug, Clone)]
pub struct History {
    /// The topic's position now.
    pub top: StreamPosition,
    /// The publications, oldest first, with their offsets, as subscribers received them.
    pub publications: Vec<(u64, SharedFrame)>,
    /// With a position: whether `publications` is everything after it (see
    /// [`Recovery::recovered`](crate::Recovery::recovered)). Without one: always `false`.
    pub recovered: bool,
    /// With a position: whether the limit stopped the replay (see
    /// [`Recovery::capped`](crate::Recovery::capped)).
    pub capped: bool,
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
}

/// What [`Hub::publish_with`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The publication's position in its topic's stream.
    pub position: StreamPosition,
    /// Subscribers reached on this node (`None` when the broker delivers later).
    pub delivered: Option<usize>,
}

/// Why a publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The broker could not take it.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

struct Sub {
    outbox: Arc<Outbox>,
    member: Option<Member>,
}

/// What a topic's stream lock guards.
struct StreamState {
    /// The rendered frames, as subscribers received them. When positions come from an
    /// engine elsewhere (Redis), history will hold the publication's data and render it
    /// again on replay (see the issue 25 plan); for one node the frame is enough.
    stream: TopicStream<SharedFrame>,
    /// Set when the topic left the hub's map: whoever still holds it looks it up again.
    removed: bool,
}

struct Topic {
    /// Held while a publication is numbered, kept and delivered, and while a subscriber is
    /// added, so every subscriber sees one order and a newcomer's snapshot fits it. Lock
    /// order: `stream`, then `subs`; never wait for `stream` while holding `topics`.
    stream: Mutex<StreamState>,
    subs: RwLock<BTreeMap<u64, Sub>>,
}

impl Topic {
    fn new(limits: HistoryLimits) -> Self {
        Self {
            stream: Mutex::new(StreamState {
                stream: TopicStream::new(limits),
                removed: false,
            }),
            subs: RwLock::new(BTreeMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// This node's topics (each with its stream): the delivery side the broker calls.
struct Local {
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    config: HubConfig,
    stats: HubStats,
}

impl Local {
    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.topics).get(name).cloned()
    }

    /// Runs `f` on the topic (created when missing) with its stream lock held.
    fn locked<R>(&self, name: &str, f: impl FnOnce(&Arc<str>, &Topic, &mut StreamState) -> R) -> R {
        loop {
            let found = read(&self.topics)
                .get_key_value(name)
                .map(|(n, t)| (Arc::clone(n), Arc::clone(t)));
            let (name, topic) = found.unwrap_or_else(|| {
                let mut topics = write(&self.topics);
                if let Some((n, t)) = topics.get_key_value(name) {
                    return (Arc::clone(n), Arc::clone(t));
                }
                let n: Arc<str> = Arc::from(name);
                let t = Arc::new(Topic::new(self.config.limits()));
                topics.insert(Arc::clone(&n), Arc::clone(&t));
                (n, t)
            });
            let mut state = lock(&topic.stream);
            if state.removed {
                continue;
            }
            return f(&name, &topic, &mut state);
        }
    }

    /// Drops `name` if it has no subscriber and its history holds nothing at `now`. A topic
    /// whose stream is busy is left for next time (so `topics` never waits for a stream).
    fn drop_if_idle(&self, name: &str, now: Instant) -> bool {
        let mut topics = write(&self.topics);
        let Some(topic) = topics.get(name).cloned() else {
            return false;
        };
        let Ok(mut state) = topic.stream.try_lock() else {
            return false;
        };
        state.stream.trim(now);
        if state.stream.history_len() > 0 || !read(&topic.subs).is_empty() {
            return false;
        }
        state.removed = true;
        topics.remove(name);
        true
    }
}

impl Deliver for Local {
    fn deliver(&self, p: &Publication) -> usize {
        let Some(topic) = self.topic(&p.topic) else {
            return 0;
        };
        self.stats.publications.fetch_add(1, Ordering::Relaxed);
        let subs = read(&topic.subs);
        let (mut delivered, mut dropped, mut overflowed) = (0u64, 0u64, 0u64);
        for sub in subs.values() {
            match sub.outbox.push(p.frame.clone()) {
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
}

/// Topics with concurrent subscribe, unsubscribe and publish. Cheap to clone (an `Arc`).
///
/// A publish encodes the frame once and hands the same
/// [`SharedFrame`](switchboard_proto::frame::SharedFrame) to every subscriber's
/// [`Outbox`]; nothing is encoded or copied per subscriber, and a full outbox never slows
/// the publisher (see [`SlowConsumerPolicy`](crate::SlowConsumerPolicy)).
///
/// ```
/// use std::sync::Arc;
/// use switchboard_hub::{Hub, HubConfig, Outbox, OutboxLimits};
/// use switchboard_proto::Message;
///
/// let hub = Hub::new(HubConfig::default());
/// let inbox = Arc::new(Outbox::new(OutboxLimits::default()));
/// let joined = hub.subscribe("news", Arc::clone(&inbox), None);
/// assert_eq!(hub.publish("news", Message::text("hello")).unwrap(), Some(1));
/// let mut frames = Vec::new();
/// inbox.drain(usize::MAX, |f| frames.push(f));
/// assert_eq!(&frames[0][..], b"\x81\x05hello");
/// hub.unsubscribe(&joined.subscription);
/// assert_eq!(hub.topic_count(), 0);
/// ```
#[derive(Clone)]
pub struct Hub {
    local: Arc<Local>,
    broker: Arc<dyn Broker>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("topics", &self.topic_count())
            .field("broker", &self.broker)
            .finish()
    }
}

impl Hub {
    /// A hub with the in-memory broker (one node).
    pub fn new(config: HubConfig) -> Self {
        Self::with_broker(config, Arc::new(InMemoryBroker::new()))
    }

    /// A hub whose publications go through `broker` (for several nodes).
    pub fn with_broker(config: HubConfig, broker: Arc<dyn Broker>) -> Self {
        let local = Arc::new(Local {
            topics: RwLock::new(HashMap::new()),
            config,
            stats: HubStats::default(),
        });
        let weak: Weak<dyn Deliver> = Arc::downgrade(&(Arc::clone(&local) as Arc<dyn Deliver>));
        broker.attach(weak);
        Self {
            local,
            broker,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Adds a subscriber: every publication to `topic` from now on reaches `outbox`.
    /// `member` makes it visible in the topic's presence list.
    pub fn subscribe(&self, topic: &str, outbox: Arc<Outbox>, member: Option<Member>) -> Joined {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = Sub { outbox, member };
        let now = Instant::now();
        self.local.locked(topic, |name, t, state| {
            state.stream.trim(now);
            let mut subs = write(&t.subs);
            let first = subs.is_empty();
            subs.insert(id, sub);
            let members = subs.values().filter_map(|s| s.member.clone()).collect();
            drop(subs);
            if first {
                // Under the stream lock, so interest changes reach the broker in order.
                self.broker.interest(name, true);
            }
            Joined {
                subscription: Subscription {
                    topic: Arc::clone(name),
                    id,
                },
                members,
                history: state
                    .stream
                    .retained(now)
                    .map(|(_, f)| f.payload())
                    .collect(),
                position: state.stream.top(),
            }
        })
    }

    /// Removes a subscriber. The topic's stream stays while its history holds anything
    /// (see [`trim`](Self::trim)). Returns the member it had, if any.
    pub fn unsubscribe(&self, sub: &Subscription) -> Option<Member> {
        let topic = self.local.topic(&sub.topic)?;
        let (removed, last) = {
            let state = lock(&topic.stream);
            if state.removed {
                return None;
            }
            let mut subs = write(&topic.subs);
            let removed = subs.remove(&sub.id);
            let last = removed.is_some() && subs.is_empty();
            if last {
                self.broker.interest(&sub.topic, false);
            }
            (removed, last)
        };
        if last {
            self.local.drop_if_idle(&sub.topic, Instant::now());
        }
        removed.and_then(|s| s.member)
    }

    /// Publishes `msg` to every subscriber of `topic`, encoded once, then shared, outside
    /// the topic's stream: it takes no position and the history does not keep it (presence
    /// events, say); see [`publish_with`](Self::publish_with). Returns how many subscribers
    /// it reached on this node (`None` when the broker delivers later).
    pub fn publish(&self, topic: &str, msg: Message) -> Result<Option<usize>, PublishError> {
        Ok(self.broker.publish(Publication {
            topic: Arc::from(topic),
            frame: encode_shared(&msg),
        })?)
    }

    /// Publishes to `topic`'s stream: the publication takes the topic's next offset
    /// (contiguous from 1) in its epoch, `render` makes the message from that position, the
    /// history keeps the frame, and every subscriber gets it, all under the topic's lock, so
    /// every subscriber sees the offsets in order. The stream is created when the topic has
    /// none. Returns the position and how many subscribers it reached on this node (`None`
    /// when the broker delivers later).
    ///
    /// The offset is taken even if the broker then fails: the history has it, and a later
    /// history request returns it.
    pub fn publish_with(
        &self,
        topic: &str,
        render: impl FnOnce(&StreamPosition) -> Message,
    ) -> Result<Published, PublishError> {
        let now = Instant::now();
        self.local.locked(topic, |name, _, state| {
            let stream = &mut state.stream;
            let position = StreamPosition {
                offset: stream.top().offset + 1,
                epoch: Arc::clone(stream.epoch()),
            };
            let frame = encode_shared(&render(&position));
            let appended = stream.append(frame.clone(), now);
            debug_assert_eq!(appended, position);
            let delivered = self.broker.publish(Publication {
                topic: Arc::clone(name),
                frame,
            })?;
            Ok(Published {
                position,
                delivered,
            })
        })
    }

    /// What `topic`'s history holds: with `since`, the publications after that position by
    /// the all-or-nothing rule of [`TopicStream::since`] (at most `limit`); without, the
    /// last `limit` publications it holds (`recovered` is then `false`). A topic with no
    /// stream answers offset 0 in a fresh epoch, and keeps no stream for it: its first
    /// publication starts another epoch.
    pub fn history(
        &self,
        topic: &str,
        since: Option<&StreamPosition>,
        limit: usize,
        now: Instant,
    ) -> History {
        let history = self.local.locked(topic, |_, _, state| {
            let stream = &state.stream;
            if since.is_some() {
                let r = stream.since(since, limit, now);
                return History {
                    top: r.top,
                    publications: r
                        .publications
                        .into_iter()
                        .map(|(o, f)| (o, f.clone()))
                        .collect(),
                    recovered: r.recovered,
                    capped: r.capped,
                };
            }
            let held: Vec<_> = stream.retained(now).collect();
            let skip = held.len().saturating_sub(limit);
            History {
                top: stream.top(),
                publications: held[skip..]
                    .iter()
                    .map(|(o, f)| (*o, (*f).clone()))
                    .collect(),
                recovered: false,
                capped: false,
            }
        });
        self.local.drop_if_idle(topic, now);
        history
    }

    /// Ages every topic's history to `now` and drops the streams of topics with no
    /// subscriber and nothing left in their history (their next publication starts a new
    /// epoch). Call it now and then (the server does from a ticker). Returns how many
    /// streams it dropped.
    pub fn trim(&self, now: Instant) -> usize {
        let names: Vec<Arc<str>> = read(&self.local.topics).keys().cloned().collect();
        let mut dropped = 0;
        for name in names {
            let idle = self.local.topic(&name).is_some_and(|t| {
                t.stream.try_lock().is_ok_and(|mut state| {
                    state.stream.trim(now);
                    state.stream.history_len() == 0 && read(&t.subs).is_empty()
                })
            });
            // Only idle ones take the map's write lock (and are checked again under it).
            if idle && self.local.drop_if_idle(&name, now) {
                dropped += 1;
            }
        }
        dropped
    }

    /// Subscribers of `topic` on this node.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.local.topic(topic).map_or(0, |t| read(&t.subs).len())
    }

    /// Who is present in `topic` on this node.
    pub fn members(&self, topic: &str) -> Vec<Member> {
        self.local.topic(topic).map_or_else(Vec::new, |t| {
            read(&t.subs)
                .values()
                .filter_map(|s| s.member.clone())
                .collect()
        })
    }

    /// Topics with at least one subscriber on this node.
    pub fn topic_count(&self) -> usize {
        read(&self.local.topics)
            .values()
            .filter(|t| !read(&t.subs).is_empty())
            .count()
    }

    /// Topics whose stream this node keeps (with subscribers, or history, or both).
    pub fn stream_count(&self) -> usize {
        read(&self.local.topics).len()
    }

    /// Counters.
    pub fn stats(&self) -> &HubStats {
        &self.local.stats
    }
}
