//! The in-memory engine: one node's streams, history and presence, delivered at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Instant;

use crate::engine::{
    Body, Deliver, Engine, EngineError, HistoryPage, HistoryQuery, Op, PresenceEntry,
    PresenceStats, Publication, Published, StreamOptions,
};
use crate::presence::Present;
use crate::stream::{new_epoch, HistoryLimits, StreamPosition, TopicStream};
use crate::sync::{lock, read, write};

/// Streams, history and presence for one node, in its memory. Every operation is ready at
/// once; a publication is numbered, kept and delivered to the hub under its topic's lock, so
/// every subscriber sees one order. A topic's history keeps to the [`StreamOptions`] of its
/// latest publication.
///
/// A topic's stream (with its presence) lives while the node has subscribers to it, its
/// history holds something or someone is present (see [`Engine::trim`]); a topic without one answers offset 0 in a fresh epoch
/// and is not kept (a history request for a made-up topic costs nothing), so its first
/// publication starts another epoch. Streams are bounded by [`MemoryEngine::MAX_STREAMS`].
///
/// ```
/// use std::sync::Arc;
/// use switchboard_hub::engine::{Body, Engine, HistoryQuery, StreamOptions};
/// use switchboard_hub::MemoryEngine;
///
/// let engine = MemoryEngine::new();
/// let body = |s: &'static str| Body { kind: 0, data: s.into() };
/// let options = StreamOptions::default(); // 100 publications for 5 minutes
/// let first = engine.publish("news", body("a"), options).now().unwrap().unwrap();
/// engine.publish("news", body("b"), options).now().unwrap().unwrap();
/// assert_eq!(first.position.offset, 1);
/// let page = engine
///     .history("news", HistoryQuery { since: Some(1), limit: 10 })
///     .now()
///     .unwrap()
///     .unwrap();
/// assert_eq!(page.top.offset, 2);
/// assert_eq!(page.publications[0].body.data, "b");
/// ```
#[derive(Debug, Default)]
pub struct MemoryEngine {
    hub: OnceLock<Weak<dyn Deliver>>,
    streams: RwLock<HashMap<Arc<str>, Arc<Mutex<Stream>>>>,
}

#[derive(Debug)]
struct Stream {
    stream: TopicStream<Body>,
    /// Whether the node has subscribers to it (kept even with an empty history).
    interest: bool,
    /// Who is present in the topic (kept while anyone is).
    present: Present,
    /// Set when it left the map: whoever still holds it looks it up again.
    removed: bool,
}

impl Stream {
    /// Nothing keeps it: no subscriber here, nobody present, an empty history.
    fn idle(&self) -> bool {
        !self.interest && self.present.is_empty() && self.stream.history_len() == 0
    }
}

impl MemoryEngine {
    /// At most this many topic streams: past it, publishing to a topic with no stream fails
    /// (with subscribers or history, a topic's stream is kept; a flood of made-up topics
    /// must not grow memory without bound).
    pub const MAX_STREAMS: usize = 1_000_000;

    /// An engine with no stream yet.
    pub fn new() -> Self {
        Self {
            hub: OnceLock::new(),
            streams: RwLock::new(HashMap::new()),
        }
    }

    fn hub(&self) -> Option<Arc<dyn Deliver>> {
        self.hub.get().and_then(Weak::upgrade)
    }

    /// Runs `f` on `topic`'s stream (created when missing) with its lock held.
    fn locked<R>(
        &self,
        topic: &str,
        f: impl FnOnce(&Arc<str>, &mut Stream) -> R,
    ) -> Result<R, EngineError> {
        loop {
            let found = read(&self.streams)
                .get_key_value(topic)
                .map(|(n, s)| (Arc::clone(n), Arc::clone(s)));
            let (name, stream) = match found {
                Some(found) => found,
                None => {
                    let mut streams = write(&self.streams);
                    if let Some((n, s)) = streams.get_key_value(topic) {
                        (Arc::clone(n), Arc::clone(s))
                    } else {
                        if streams.len() >= Self::MAX_STREAMS {
                            return Err(EngineError::Unavailable(format!(
                                "too many topics with a stream ({})",
                                Self::MAX_STREAMS
                            )));
                        }
                        let n: Arc<str> = Arc::from(topic);
                        // A stream made by a subscriber or a presence keeps nothing until
                        // its first publication brings its bounds.
                        let s = Arc::new(Mutex::new(Stream {
                            stream: TopicStream::new(HistoryLimits::OFF),
                            interest: false,
                            present: Present::default(),
                            removed: false,
                        }));
                        streams.insert(Arc::clone(&n), Arc::clone(&s));
                        (n, s)
                    }
                }
            };
            let mut state = lock(&stream);
            if state.removed {
                continue;
            }
            return Ok(f(&name, &mut state));
        }
    }

    /// Drops `topic`'s stream if nobody here subscribes, nobody is present and its history
    /// is empty at `now`.
    /// A busy stream is left for next time (the map never waits for a stream).
    fn drop_if_idle(&self, topic: &str, now: Instant) -> bool {
        let mut streams = write(&self.streams);
        let Some(stream) = streams.get(topic).cloned() else {
            return false;
        };
        let Ok(mut state) = stream.try_lock() else {
            return false;
        };
        state.stream.trim(now);
        if !state.idle() {
            return false;
        }
        state.removed = true;
        streams.remove(topic);
        true
    }
}

impl Engine for MemoryEngine {
    fn attach(&self, hub: Weak<dyn Deliver>) {
        let _ = self.hub.set(hub);
    }

    fn publish(
        &self,
        topic: &str,
        body: Body,
        options: StreamOptions,
    ) -> Op<Result<Published, EngineError>> {
        let now = Instant::now();
        let hub = self.hub();
        Op::ready(self.locked(topic, |name, state| {
            state.stream.set_limits(options.history);
            let position = state.stream.append(body.clone(), now);
            let delivered = hub.map_or(0, |hub| {
                hub.deliver(&Publication {
                    topic: Arc::clone(name),
                    position: Some(position.clone()),
                    body,
                })
            });
            Published {
                position,
                delivered: Some(delivered),
            }
        }))
    }

    fn broadcast(&self, topic: &str, body: Body) -> Op<Result<(), EngineError>> {
        if let Some(hub) = self.hub() {
            hub.deliver(&Publication {
                topic: Arc::from(topic),
                position: None,
                body,
            });
        }
        Op::ready(Ok(()))
    }

    fn history(&self, topic: &str, query: HistoryQuery) -> Op<Result<HistoryPage, EngineError>> {
        let now = Instant::now();
        let found = read(&self.streams).get(topic).cloned();
        let Some(stream) = found else {
            return Op::ready(Ok(HistoryPage {
                top: StreamPosition {
                    offset: 0,
                    epoch: new_epoch(),
                },
                publications: Vec::new(),
            }));
        };
        let state = lock(&stream);
        let epoch = state.stream.epoch();
        let topic: Arc<str> = Arc::from(topic);
        let publications = state
            .stream
            .read(query.since, query.limit, now)
            .into_iter()
            .map(|(offset, body)| Publication {
                topic: Arc::clone(&topic),
                position: Some(StreamPosition {
                    offset,
                    epoch: Arc::clone(epoch),
                }),
                body: body.clone(),
            })
            .collect();
        Op::ready(Ok(HistoryPage {
            top: state.stream.top(),
            publications,
        }))
    }

    fn subscribe(&self, topic: &str) -> Op<Result<(), EngineError>> {
        Op::ready(self.locked(topic, |_, state| state.interest = true))
    }

    fn unsubscribe(&self, topic: &str) {
        let found = read(&self.streams).get(topic).cloned();
        if let Some(stream) = found {
            lock(&stream).interest = false;
            self.drop_if_idle(topic, Instant::now());
        }
    }

    fn presence_add(&self, topic: &str, entry: PresenceEntry) -> Op<Result<(), EngineError>> {
        Op::ready(self.locked(topic, |_, state| state.present.add(entry)))
    }

    fn presence_remove(&self, topic: &str, client: &str) -> Op<Result<(), EngineError>> {
        let found = read(&self.streams).get(topic).cloned();
        if let Some(stream) = found {
            let idle = {
                let mut state = lock(&stream);
                state.present.remove(client) && state.idle()
            };
            if idle {
                self.drop_if_idle(topic, Instant::now());
            }
        }
        Op::ready(Ok(()))
    }

    fn presence(&self, topic: &str) -> Op<Result<Vec<PresenceEntry>, EngineError>> {
        let found = read(&self.streams).get(topic).cloned();
        Op::ready(Ok(
            found.map_or_else(Vec::new, |s| lock(&s).present.entries())
        ))
    }

    fn presence_stats(&self, topic: &str) -> Op<Result<PresenceStats, EngineError>> {
        let found = read(&self.streams).get(topic).cloned();
        Op::ready(Ok(found.map_or_else(PresenceStats::default, |s| {
            lock(&s).present.stats()
        })))
    }

    fn trim(&self, now: Instant) {
        let names: Vec<Arc<str>> = read(&self.streams).keys().cloned().collect();
        for name in names {
            let found = read(&self.streams).get(&name).cloned();
            let idle = found.is_some_and(|s| {
                s.try_lock().is_ok_and(|mut state| {
                    state.stream.trim(now);
                    state.idle()
                })
            });
            // Only idle ones take the map's write lock (and are checked again under it).
            if idle {
                self.drop_if_idle(&name, now);
            }
        }
    }

    fn stream_count(&self) -> Option<usize> {
        Some(read(&self.streams).len())
    }
}
