//! Topics, subscriptions, presence, history and encode-once fan-out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use bytes::Bytes;
use switchboard_proto::frame::encode_shared;
use switchboard_proto::Message;

use crate::broker::{Broker, BrokerError, Deliver, InMemoryBroker, Publication};
use crate::outbox::{Outbox, Pushed};

/// Hub settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubConfig {
    /// Publications each topic keeps for newcomers (those published with history on).
    /// Default 50; 0 keeps none. A topic's history goes when its last subscriber does.
    pub history: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self { history: 50 }
    }
}

impl HubConfig {
    /// Sets [`history`](Self::history).
    pub fn history(mut self, n: usize) -> Self {
        self.history = n;
        self
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
    /// The payloads of the topic's recent publications kept as history, oldest first.
    pub history: Vec<Bytes>,
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

struct Topic {
    /// Held while a publication is numbered and handed to the broker, so sequence numbers
    /// follow delivery order.
    seq: Mutex<u64>,
    subs: RwLock<BTreeMap<u64, Sub>>,
    /// Locked only while `subs` is held, so joining and delivery see one order.
    history: Mutex<VecDeque<Bytes>>,
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

/// This node's topics: the delivery side the broker calls.
struct Local {
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    config: HubConfig,
    stats: HubStats,
}

impl Local {
    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.topics).get(name).cloned()
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
        if p.history && self.config.history > 0 {
            let mut h = lock(&topic.history);
            if h.len() == self.config.history {
                h.pop_front();
            }
            h.push_back(p.frame.payload());
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
/// assert_eq!(hub.publish("news", Message::text("hello"), false).unwrap(), Some(1));
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
        let join = |t: &Topic, name: Arc<str>, sub: Sub| {
            let mut subs = write(&t.subs);
            subs.insert(id, sub);
            let members = subs.values().filter_map(|s| s.member.clone()).collect();
            let history = lock(&t.history).iter().cloned().collect();
            Joined {
                subscription: Subscription { topic: name, id },
                members,
                history,
            }
        };
        {
            let topics = read(&self.local.topics);
            if let Some((name, t)) = topics.get_key_value(topic) {
                return join(t, Arc::clone(name), sub);
            }
        }
        let mut topics = write(&self.local.topics);
        let mut created = false;
        let (name, t) = match topics.get_key_value(topic) {
            Some((n, t)) => (Arc::clone(n), Arc::clone(t)),
            None => {
                let name: Arc<str> = Arc::from(topic);
                let t = Arc::new(Topic {
                    seq: Mutex::new(0),
                    subs: RwLock::new(BTreeMap::new()),
                    history: Mutex::new(VecDeque::new()),
                });
                topics.insert(Arc::clone(&name), Arc::clone(&t));
                created = true;
                (name, t)
            }
        };
        let joined = join(&t, name, sub);
        drop(topics);
        if created {
            self.broker.interest(topic, true);
        }
        joined
    }

    /// Removes a subscriber. The topic (and its history) goes when its last subscriber does.
    /// Returns the member it had, if any.
    pub fn unsubscribe(&self, sub: &Subscription) -> Option<Member> {
        let (removed, now_empty) = {
            let topics = read(&self.local.topics);
            let t = topics.get(&sub.topic)?;
            let mut subs = write(&t.subs);
            let removed = subs.remove(&sub.id);
            (removed, subs.is_empty())
        };
        if now_empty {
            let mut topics = write(&self.local.topics);
            let still_empty = topics
                .get(&sub.topic)
                .is_some_and(|t| read(&t.subs).is_empty());
            if still_empty {
                topics.remove(&sub.topic);
                drop(topics);
                self.broker.interest(&sub.topic, false);
            }
        }
        removed.and_then(|s| s.member)
    }

    /// Publishes `msg` to every subscriber of `topic`: encoded once, then shared. `history`
    /// keeps it for newcomers. It takes no sequence number (presence events, say); see
    /// [`publish_with`](Self::publish_with). Returns how many subscribers it reached on this
    /// node (`None` when the broker delivers later).
    pub fn publish(
        &self,
        topic: &str,
        msg: Message,
        history: bool,
    ) -> Result<Option<usize>, PublishError> {
        Ok(self.broker.publish(Publication {
            topic: Arc::from(topic),
            frame: encode_shared(&msg),
            history,
        })?)
    }

    /// Like [`publish`](Self::publish), with the message rendered from the topic's next
    /// sequence number (1, 2, … per topic while it has subscribers on this node; 0 when it
    /// has none). Numbering and delivery happen under one per-topic lock, so every
    /// subscriber sees the numbers in order.
    pub fn publish_with(
        &self,
        topic: &str,
        history: bool,
        render: impl FnOnce(u64) -> Message,
    ) -> Result<Option<usize>, PublishError> {
        let Some(t) = self.local.topic(topic) else {
            let frame = encode_shared(&render(0));
            return Ok(self.broker.publish(Publication {
                topic: Arc::from(topic),
                frame,
                history,
            })?);
        };
        let mut seq = lock(&t.seq);
        *seq += 1;
        let frame = encode_shared(&render(*seq));
        let r = self.broker.publish(Publication {
            topic: Arc::from(topic),
            frame,
            history,
        });
        drop(seq);
        Ok(r?)
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
        read(&self.local.topics).len()
    }

    /// Counters.
    pub fn stats(&self) -> &HubStats {
        &self.local.stats
    }
}
