//! The subscriber side: one dedicated pub/sub connection per node, separate from the
//! command connection, owned by one task (the `subscriber` module; its probe in `probe`).
//!
//! - [`PubSub::subscribe`] records the node's interest in a topic and resolves once Redis
//!   confirmed the `SUBSCRIBE` (requests that arrive together go out as one command, at most
//!   [`BATCH`] channels each). An error (no confirmation within the command timeout: the
//!   connection is down or was replaced) does not drop the interest: the topic is
//!   subscribed as soon as the connection is back, until
//!   [`unsubscribe`](PubSub::unsubscribe). (The hub keeps the topic marked as subscribed
//!   once it asked, so the engine must not forget it.)
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

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Client;
use switchboard_hub::engine::EngineError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::subscriber::{Live, Task};
use crate::{RedisStats, Shared};

/// At most this many channels per `SUBSCRIBE` / `UNSUBSCRIBE`.
pub(crate) const BATCH: usize = 512;

/// Where the pub/sub task answers a subscribe.
pub(crate) type Answer = oneshot::Sender<Result<(), EngineError>>;

/// What the engine asks of the pub/sub task.
pub(crate) enum Request {
    /// The node wants `topic`'s publications; `done` when Redis confirmed.
    Subscribe {
        topic: Arc<str>,
        ticket: u64,
        done: Answer,
    },
    /// The node no longer wants them.
    Unsubscribe { topic: Arc<str> },
    /// The subscribe with `ticket` gave up waiting: forget its waiter (not the interest).
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
        tokio::spawn(Task::new(shared, client, probe, receiver).run(live));
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
