//! The pub/sub task: owns the node's pub/sub connection, applies subscribe requests in
//! batches, delivers messages to the hub, reconnects and resubscribes (see the `pubsub`
//! module docs).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{Client, Msg};
use switchboard_hub::engine::{EngineError, Publication};
use switchboard_hub::stream::StreamPosition;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};

use crate::command::engine_error;
use crate::probe::{self, answer, sleep_until_some, Probe};
use crate::pubsub::{Answer, Request, BATCH};
use crate::{payload, Shared};

/// At most this many requests are taken in one batch.
const MAX_REQUESTS: usize = 4096;
/// The first reconnection delay; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest reconnection delay.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One pub/sub connection and the topics it is subscribed to.
pub(crate) struct Live {
    sink: PubSubSink,
    stream: PubSubStream,
    subscribed: HashSet<Arc<str>>,
}

impl Live {
    /// Connects and subscribes the probe channel, within `limit` each.
    pub(crate) async fn connect(
        client: &Client,
        probe: &str,
        limit: Duration,
    ) -> Result<Self, EngineError> {
        let pubsub = timeout(limit, client.get_async_pubsub())
            .await
            .map_err(|_| EngineError::Timeout)?
            .map_err(engine_error)?;
        let (mut sink, stream) = pubsub.split();
        timeout(limit, sink.subscribe(probe))
            .await
            .map_err(|_| EngineError::Timeout)?
            .map_err(engine_error)?;
        Ok(Self {
            sink,
            stream,
            subscribed: HashSet::new(),
        })
    }
}

/// Why [`Task::serve`] returned.
enum End {
    /// The engine was dropped.
    Shutdown,
    /// The connection dropped or is wedged.
    Lost,
}

/// A topic this node wants.
struct Interest {
    /// The epoch of its last publication (shared by the following ones).
    epoch: Option<Arc<str>>,
}

/// The pub/sub task's state.
pub(crate) struct Task {
    shared: Arc<Shared>,
    client: Client,
    probe: String,
    requests: mpsc::UnboundedReceiver<Request>,
    wanted: HashMap<Arc<str>, Interest>,
    waiters: HashMap<Arc<str>, Vec<(u64, Answer)>>,
}

impl Task {
    /// The task's state before its first connection.
    pub(crate) fn new(
        shared: Arc<Shared>,
        client: Client,
        probe: String,
        requests: mpsc::UnboundedReceiver<Request>,
    ) -> Self {
        Self {
            shared,
            client,
            probe,
            requests,
            wanted: HashMap::new(),
            waiters: HashMap::new(),
        }
    }

    /// Serves `first`, then reconnects whenever the connection is lost, until the engine
    /// is dropped.
    pub(crate) async fn run(mut self, first: Live) {
        let mut next = Some(first);
        // Whether the connection was replaced since the hub last heard of it.
        let mut lost_some = false;
        loop {
            let mut live = match next.take() {
                Some(live) => live,
                None => match self.reconnect().await {
                    Some(live) => live,
                    None => return,
                },
            };
            if let Err(err) = self.resubscribe(&mut live).await {
                tracing::warn!(error = %err, "redis pub/sub resubscribe failed; reconnecting");
                lost_some = true;
                continue;
            }
            if lost_some {
                self.shared.stats.reconnected();
                tracing::info!(topics = self.wanted.len(), "redis pub/sub reconnected");
                // The command connection may still hold a socket to the Redis that went away
                // (it finds out on its next command): check it now, so the clients told to
                // recover below find it working.
                // It may be a Redis that restarted: its script cache is empty.
                if let Err(e) = crate::scripts::Scripts::load(&self.shared.commands).await {
                    tracing::debug!(error = %e, "redis command connection not back yet");
                }
                if let Some(hub) = self.shared.hub() {
                    hub.lost(None);
                }
            }
            self.shared.stats.set_connected(true);
            self.answer_waiters(&live);
            let end = self.serve(&mut live).await;
            self.shared.stats.set_connected(false);
            match end {
                End::Shutdown => return,
                End::Lost => lost_some = true,
            }
        }
    }

    /// Connects again, with backoff, taking requests meanwhile; `None` on shutdown.
    async fn reconnect(&mut self) -> Option<Live> {
        let limit = self.shared.commands.timeout();
        let mut backoff = BACKOFF_MIN;
        loop {
            let (client, probe) = (self.client.clone(), self.probe.clone());
            let delay = jitter(backoff);
            let attempt = async move {
                sleep(delay).await;
                Live::connect(&client, &probe, limit).await
            };
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    request = self.requests.recv() => match request {
                        Some(request) => {
                            self.record(request);
                        }
                        None => return None,
                    },
                    result = &mut attempt => break result,
                }
            };
            match result {
                Ok(live) => return Some(live),
                Err(err) => {
                    tracing::debug!(error = %err, "redis pub/sub reconnect failed");
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Subscribes a fresh connection to every topic of interest.
    async fn resubscribe(&mut self, live: &mut Live) -> Result<(), EngineError> {
        let topics: Vec<Arc<str>> = self.wanted.keys().cloned().collect();
        self.sync(live, topics).await
    }

    /// Reads messages and requests until the connection is lost or the engine dropped.
    async fn serve(&mut self, live: &mut Live) -> End {
        let mut probe = Probe::new(
            self.shared.config.probe_interval,
            self.shared.commands.timeout(),
        );
        loop {
            tokio::select! {
                request = self.requests.recv() => {
                    let Some(first) = request else {
                        return End::Shutdown;
                    };
                    let touched = self.record_batch(first);
                    if let Err(err) = self.sync(live, touched).await {
                        tracing::warn!(error = %err, "redis pub/sub subscribe failed; reconnecting");
                        return End::Lost;
                    }
                    self.answer_waiters(live);
                }
                message = live.stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("redis pub/sub connection closed; reconnecting");
                        return End::Lost;
                    };
                    probe.heard();
                    self.on_message(&message);
                }
                () = sleep_until_some(probe.wake()) => {
                    if probe.deadline.is_some() {
                        self.shared.stats.wedged();
                        tracing::warn!("redis pub/sub probe did not come back; reconnecting");
                        return End::Lost;
                    }
                    probe.in_flight = Some((Instant::now(), probe::send(&self.shared, &self.probe)));
                }
                (sent_at, result) = answer(&mut probe.in_flight) => {
                    probe.in_flight = None;
                    match result {
                        Ok(0) => {
                            self.shared.stats.wedged();
                            tracing::warn!("redis has no subscriber for this node's probe; reconnecting");
                            return End::Lost;
                        }
                        Ok(_) => probe.published(sent_at),
                        Err(err) => {
                            // The command connection failed, not necessarily this one: try
                            // again after another interval.
                            tracing::debug!(error = %err, "redis pub/sub probe not sent");
                            probe.heard();
                        }
                    }
                }
            }
        }
    }

    /// Records `first` and the requests queued behind it; the topics they touch.
    fn record_batch(&mut self, first: Request) -> Vec<Arc<str>> {
        let mut touched = HashSet::new();
        touched.insert(self.record(first));
        while touched.len() < MAX_REQUESTS {
            match self.requests.try_recv() {
                Ok(request) => {
                    touched.insert(self.record(request));
                }
                Err(_) => break,
            }
        }
        touched.into_iter().collect()
    }

    /// Applies one request to the wanted topics and waiters; the topic it touches.
    fn record(&mut self, request: Request) -> Arc<str> {
        match request {
            Request::Subscribe {
                topic,
                ticket,
                done,
            } => {
                self.wanted
                    .entry(topic.clone())
                    .or_insert(Interest { epoch: None });
                self.waiters
                    .entry(topic.clone())
                    .or_default()
                    .push((ticket, done));
                topic
            }
            Request::Unsubscribe { topic } => {
                self.wanted.remove(&topic);
                // Whoever still waits no longer cares.
                for (_, done) in self.waiters.remove(&topic).unwrap_or_default() {
                    let _ = done.send(Ok(()));
                }
                topic
            }
            Request::Abandon { topic, ticket } => {
                if let Some(waiters) = self.waiters.get_mut(&topic) {
                    waiters.retain(|(t, _)| *t != ticket);
                    if waiters.is_empty() {
                        self.waiters.remove(&topic);
                    }
                }
                topic
            }
        }
    }

    /// Makes the connection's subscriptions among `topics` match the wanted ones.
    async fn sync(&mut self, live: &mut Live, topics: Vec<Arc<str>>) -> Result<(), EngineError> {
        let limit = self.shared.commands.timeout();
        let (mut add, mut drop) = (Vec::new(), Vec::new());
        for topic in topics {
            match (
                self.wanted.contains_key(&topic),
                live.subscribed.contains(&topic),
            ) {
                (true, false) => add.push(topic),
                (false, true) => drop.push(topic),
                _ => {}
            }
        }
        for chunk in add.chunks(BATCH) {
            let channels = self.channels(chunk);
            timeout(limit, live.sink.subscribe(&channels))
                .await
                .map_err(|_| EngineError::Timeout)?
                .map_err(engine_error)?;
            live.subscribed.extend(chunk.iter().cloned());
        }
        for chunk in drop.chunks(BATCH) {
            let channels = self.channels(chunk);
            timeout(limit, live.sink.unsubscribe(&channels))
                .await
                .map_err(|_| EngineError::Timeout)?
                .map_err(engine_error)?;
            for topic in chunk {
                live.subscribed.remove(topic);
            }
        }
        Ok(())
    }

    fn channels(&self, topics: &[Arc<str>]) -> Vec<String> {
        topics.iter().map(|t| self.shared.keys.channel(t)).collect()
    }

    /// Tells the waiters of every subscribed topic that it is.
    fn answer_waiters(&mut self, live: &Live) {
        self.waiters.retain(|topic, waiters| {
            if !live.subscribed.contains(topic) {
                return true;
            }
            for (_, done) in waiters.drain(..) {
                let _ = done.send(Ok(()));
            }
            false
        });
    }

    /// Hands one channel message to the hub.
    fn on_message(&mut self, message: &Msg) {
        let channel = message.get_channel_name();
        if channel == self.probe {
            return;
        }
        let Some(name) = self.shared.keys.topic_of(channel) else {
            return;
        };
        let Some((topic, _)) = self.wanted.get_key_value(name) else {
            return; // unsubscribed meanwhile
        };
        let topic = topic.clone();
        self.shared.stats.received();
        let Some(hub) = self.shared.hub() else {
            return;
        };
        let bytes = Bytes::copy_from_slice(message.get_payload_bytes());
        match payload::decode(&bytes) {
            Ok(decoded) => {
                if let Some(ms) = decoded.published_ms {
                    self.shared.stats.lag(ms);
                }
                let position = decoded.position.map(|(offset, epoch)| StreamPosition {
                    offset,
                    epoch: self.epoch(&topic, epoch),
                });
                hub.deliver(&Publication {
                    topic,
                    position,
                    body: decoded.body,
                });
            }
            Err(err) => {
                self.shared.stats.malformed();
                tracing::warn!(topic = %topic, error = %err, "malformed redis pub/sub message");
                hub.lost(Some(&topic));
            }
        }
    }

    /// `epoch` as an `Arc`, shared with the topic's previous publication when equal.
    fn epoch(&mut self, topic: &str, epoch: &str) -> Arc<str> {
        let Some(interest) = self.wanted.get_mut(topic) else {
            return epoch.into();
        };
        match &interest.epoch {
            Some(known) if **known == *epoch => known.clone(),
            _ => {
                let fresh: Arc<str> = epoch.into();
                interest.epoch = Some(fresh.clone());
                fresh
            }
        }
    }
}

/// `delay` give or take a half, so that many nodes do not reconnect in step.
fn jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(rand::rng().random_range(0.0..2.0))
}
