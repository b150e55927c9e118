//! The subscriber side: one dedicated pub/sub connection per node, separate from the
//! command connection, owned by one task.
//!
//! - [`PubSub::subscribe`] records the node's interest in a topic and resolves once Redis
//!   confirmed the `SUBSCRIBE` (requests that arrive together go out as one command, at most
//!   [`BATCH`] channels each). On error (no confirmation within the command timeout) the
//!   topic is not subscribed: the engine forgets the interest, as if
//!   [`unsubscribe`](PubSub::unsubscribe) had been called.
//! - The task hands every message of a subscribed topic to the hub's
//!   [`Deliver::deliver`](switchboard_hub::engine::Deliver::deliver), in the order Redis sent
//!   them (one connection: one topic's publications arrive in offset order).
//! - When the connection drops, the task reconnects with backoff, resubscribes every topic
//!   of interest and calls `Deliver::lost(None)`: publications may have been lost meanwhile.
//! - Probe (Centrifugo #1189: after a failover a node can hold a healthy-looking connection
//!   that delivers nothing): when nothing arrived for
//!   [`probe_interval`](crate::RedisConfig::probe_interval), the node publishes to its own
//!   probe channel through the command connection. If Redis reports no subscriber, or the
//!   probe does not come back within the command timeout, the connection is wedged: it is
//!   dropped and replaced as above.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{Client, Msg};
use switchboard_hub::engine::{EngineError, Publication};
use switchboard_hub::stream::StreamPosition;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::command::engine_error;
use crate::{payload, RedisStats, Shared};

/// At most this many channels per `SUBSCRIBE` / `UNSUBSCRIBE`.
const BATCH: usize = 512;
/// At most this many requests are taken in one batch.
const MAX_REQUESTS: usize = 4096;
/// The first reconnection delay; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest reconnection delay.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

type Answer = oneshot::Sender<Result<(), EngineError>>;

/// What the engine asks of the pub/sub task.
enum Request {
    /// The node wants `topic`'s publications; `done` when Redis confirmed.
    Subscribe {
        topic: Arc<str>,
        ticket: u64,
        done: Answer,
    },
    /// The node no longer wants them.
    Unsubscribe { topic: Arc<str> },
    /// The subscribe with `ticket` gave up waiting: forget its interest unless a later
    /// subscribe renewed it.
    Abandon { topic: Arc<str>, ticket: u64 },
}

/// The engine's handle on the pub/sub task; the task ends when this is dropped.
#[derive(Debug)]
pub(crate) struct PubSub {
    requests: mpsc::UnboundedSender<Request>,
    tickets: AtomicU64,
    timeout: Duration,
    stats: Arc<RedisStats>,
}

impl PubSub {
    /// Connects the pub/sub connection (subscribed to this node's probe channel) and starts
    /// its task.
    pub(crate) async fn start(
        shared: Arc<Shared>,
        client: Client,
        node: &str,
    ) -> Result<Self, EngineError> {
        let probe = shared.keys.probe(node);
        let timeout = shared.commands.timeout();
        let live = Live::connect(&client, &probe, timeout).await?;
        let (requests, receiver) = mpsc::unbounded_channel();
        let stats = shared.stats.clone();
        stats.set_connected(true);
        let task = Task {
            shared,
            client,
            probe,
            requests: receiver,
            wanted: HashMap::new(),
            waiters: HashMap::new(),
        };
        tokio::spawn(task.run(live));
        Ok(Self {
            requests,
            tickets: AtomicU64::new(0),
            timeout,
            stats,
        })
    }

    /// Resolves once `topic`'s channel is subscribed (or fails within the command timeout).
    pub(crate) fn subscribe(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send + 'static {
        let topic: Arc<str> = topic.into();
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        let request = Request::Subscribe {
            topic: topic.clone(),
            ticket,
            done,
        };
        let sent = self.requests.send(request).is_ok();
        let requests = self.requests.downgrade();
        let limit = self.timeout;
        let stats = self.stats.clone();
        async move {
            if !sent {
                return Err(stopped());
            }
            match timeout(limit, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(stopped()),
                Err(_) => {
                    if let Some(requests) = requests.upgrade() {
                        let _ = requests.send(Request::Abandon { topic, ticket });
                    }
                    if stats.snapshot().pubsub_connected {
                        Err(EngineError::Timeout)
                    } else {
                        Err(EngineError::Unavailable(
                            "the Redis pub/sub connection is down".into(),
                        ))
                    }
                }
            }
        }
    }

    /// Unsubscribes `topic`'s channel (in order with earlier and later requests).
    pub(crate) fn unsubscribe(&self, topic: &str) {
        let _ = self.requests.send(Request::Unsubscribe {
            topic: topic.into(),
        });
    }
}

fn stopped() -> EngineError {
    EngineError::Unavailable("the Redis engine stopped".into())
}

/// One pub/sub connection and the topics it is subscribed to.
struct Live {
    sink: PubSubSink,
    stream: PubSubStream,
    subscribed: HashSet<Arc<str>>,
}

impl Live {
    /// Connects and subscribes the probe channel, within `limit` each.
    async fn connect(client: &Client, probe: &str, limit: Duration) -> Result<Self, EngineError> {
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
    /// The subscribe that asked last.
    ticket: u64,
    /// The epoch of its last publication (shared by the following ones).
    epoch: Option<Arc<str>>,
}

/// The pub/sub task's state.
struct Task {
    shared: Arc<Shared>,
    client: Client,
    probe: String,
    requests: mpsc::UnboundedReceiver<Request>,
    wanted: HashMap<Arc<str>, Interest>,
    waiters: HashMap<Arc<str>, Vec<(u64, Answer)>>,
}

impl Task {
    async fn run(mut self, first: Live) {
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
                    probe.in_flight = Some((Instant::now(), self.send_probe()));
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

    /// Publishes a probe to this node's probe channel (from another task: the answer, how
    /// many subscribers Redis reached, comes through the receiver).
    fn send_probe(&self) -> oneshot::Receiver<Result<u64, EngineError>> {
        self.shared.stats.probed();
        let (done, answer) = oneshot::channel();
        let shared = self.shared.clone();
        let probe = self.probe.clone();
        tokio::spawn(async move {
            let result = shared
                .commands
                .run(|mut conn| async move {
                    redis::cmd("PUBLISH")
                        .arg(&probe)
                        .arg("probe")
                        .query_async::<u64>(&mut conn)
                        .await
                })
                .await;
            let _ = done.send(result);
        });
        answer
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
                    .and_modify(|interest| interest.ticket = ticket)
                    .or_insert(Interest {
                        ticket,
                        epoch: None,
                    });
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
                if self.wanted.get(&topic).is_some_and(|i| i.ticket == ticket) {
                    self.wanted.remove(&topic);
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

/// The liveness probe of one pub/sub connection.
struct Probe {
    interval: Duration,
    limit: Duration,
    /// When the connection last delivered something.
    last_heard: Instant,
    /// A probe `PUBLISH` in flight: when it was sent, and its answer.
    in_flight: Option<(Instant, oneshot::Receiver<Result<u64, EngineError>>)>,
    /// A probe was published: its echo must arrive by then.
    deadline: Option<Instant>,
}

impl Probe {
    fn new(interval: Duration, limit: Duration) -> Self {
        Self {
            interval,
            limit,
            last_heard: Instant::now(),
            in_flight: None,
            deadline: None,
        }
    }

    /// The connection delivered something (or a probe could not be sent: wait another
    /// interval).
    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.deadline = None;
    }

    /// Redis took the probe sent at `sent_at`: its echo is due, unless something arrived
    /// since.
    fn published(&mut self, sent_at: Instant) {
        if self.last_heard < sent_at {
            self.deadline = Some(Instant::now() + self.limit);
        }
    }

    /// When to act: send a probe after an idle interval, or give up at the deadline
    /// (`None`: a probe is in flight).
    fn wake(&self) -> Option<Instant> {
        match (self.deadline, &self.in_flight) {
            (Some(deadline), _) => Some(deadline),
            (None, Some(_)) => None,
            (None, None) => Some(self.last_heard + self.interval),
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The answer of the probe in flight (never, if none is).
async fn answer(
    in_flight: &mut Option<(Instant, oneshot::Receiver<Result<u64, EngineError>>)>,
) -> (Instant, Result<u64, EngineError>) {
    match in_flight {
        Some((sent_at, answer)) => {
            let result = answer.await.unwrap_or(Err(EngineError::Timeout));
            (*sent_at, result)
        }
        None => std::future::pending().await,
    }
}

/// `delay` give or take a half, so that many nodes do not reconnect in step.
fn jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(rand::rng().random_range(0.0..2.0))
}
