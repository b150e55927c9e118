//! The liveness probe of a pub/sub connection (Centrifugo #1189): an idle connection gets
//! a probe published to this node's own probe channel; no echo in time means it is wedged.

use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::engine::EngineError;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};

use crate::Shared;

/// The liveness probe of one pub/sub connection.
pub(crate) struct Probe {
    interval: Duration,
    limit: Duration,
    /// When the connection last delivered something.
    last_heard: Instant,
    /// A probe `PUBLISH` in flight: when it was sent, and its answer.
    pub(crate) in_flight: Option<(Instant, oneshot::Receiver<Result<u64, EngineError>>)>,
    /// A probe was published: its echo must arrive by then.
    pub(crate) deadline: Option<Instant>,
}

impl Probe {
    pub(crate) fn new(interval: Duration, limit: Duration) -> Self {
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
    pub(crate) fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.deadline = None;
    }

    /// Redis took the probe sent at `sent_at`: its echo is due, unless something arrived
    /// since.
    pub(crate) fn published(&mut self, sent_at: Instant) {
        if self.last_heard < sent_at {
            self.deadline = Some(Instant::now() + self.limit);
        }
    }

    /// When to act: send a probe after an idle interval, or give up at the deadline
    /// (`None`: a probe is in flight).
    pub(crate) fn wake(&self) -> Option<Instant> {
        match (self.deadline, &self.in_flight) {
            (Some(deadline), _) => Some(deadline),
            (None, Some(_)) => None,
            (None, None) => Some(self.last_heard + self.interval),
        }
    }
}

/// Sleeps until `at`, or forever.
pub(crate) async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The answer of the probe in flight (never, if none is).
pub(crate) async fn answer(
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

/// Publishes a probe to `channel` (this node's probe channel) from another task; the
/// answer, how many subscribers Redis reached, comes through the receiver.
pub(crate) fn send(
    shared: &Arc<Shared>,
    channel: &str,
) -> oneshot::Receiver<Result<u64, EngineError>> {
    shared.stats.probed();
    let (done, answer) = oneshot::channel();
    let shared = shared.clone();
    let probe = channel.to_owned();
    tokio::spawn(async move {
        let probe = &probe;
        let result = shared
            .commands
            .run(|mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(probe)
                    .arg("probe")
                    .query_async::<u64>(&mut conn)
                    .await
            })
            .await;
        let _ = done.send(result);
    });
    answer
}
