//! Counters of a [`RedisEngine`](crate::RedisEngine), for the server's metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What the engine counted since it started. Read with [`RedisStats::snapshot`].
#[derive(Debug, Default)]
pub struct RedisStats {
    publishes: AtomicU64,
    publish_errors: AtomicU64,
    broadcasts: AtomicU64,
    pubsub_reconnects: AtomicU64,
    messages_received: AtomicU64,
    malformed_messages: AtomicU64,
    probes_sent: AtomicU64,
    wedged_connections: AtomicU64,
    last_publish_latency_us: AtomicU64,
    last_pubsub_lag_ms: AtomicU64,
    pubsub_connected: AtomicBool,
}

/// A copy of [`RedisStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedisStatsSnapshot {
    /// Publications Redis numbered.
    pub publishes: u64,
    /// Publishes (and broadcasts) that failed: Redis unreachable, timed out or erred.
    pub publish_errors: u64,
    /// Broadcasts sent.
    pub broadcasts: u64,
    /// Times the pub/sub connection was replaced after it dropped or was found wedged.
    pub pubsub_reconnects: u64,
    /// Publications and broadcasts received on the pub/sub connection.
    pub messages_received: u64,
    /// Channel messages that could not be decoded (their topic's subscribers were told to
    /// recover).
    pub malformed_messages: u64,
    /// Probes this node published to itself on an idle pub/sub connection.
    pub probes_sent: u64,
    /// Pub/sub connections given up because a probe did not come back.
    pub wedged_connections: u64,
    /// How long the last successful publish took, in microseconds.
    pub last_publish_latency_us: u64,
    /// How long the last publication received took from Redis numbering it to this node
    /// (Redis's clock against this node's: meaningful when they agree, as on one machine or
    /// with NTP), in milliseconds.
    pub last_pubsub_lag_ms: u64,
    /// Whether the pub/sub connection is up and subscribed now.
    pub pubsub_connected: bool,
}

impl RedisStats {
    /// The counters now.
    pub fn snapshot(&self) -> RedisStatsSnapshot {
        RedisStatsSnapshot {
            publishes: self.publishes.load(Ordering::Relaxed),
            publish_errors: self.publish_errors.load(Ordering::Relaxed),
            broadcasts: self.broadcasts.load(Ordering::Relaxed),
            pubsub_reconnects: self.pubsub_reconnects.load(Ordering::Relaxed),
            messages_received: self.messages_received.load(Ordering::Relaxed),
            malformed_messages: self.malformed_messages.load(Ordering::Relaxed),
            probes_sent: self.probes_sent.load(Ordering::Relaxed),
            wedged_connections: self.wedged_connections.load(Ordering::Relaxed),
            last_publish_latency_us: self.last_publish_latency_us.load(Ordering::Relaxed),
            last_pubsub_lag_ms: self.last_pubsub_lag_ms.load(Ordering::Relaxed),
            pubsub_connected: self.pubsub_connected.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn published(&self, latency: Duration) {
        self.publishes.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.last_publish_latency_us.store(us, Ordering::Relaxed);
    }

    pub(crate) fn publish_failed(&self) {
        self.publish_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn broadcasted(&self) {
        self.broadcasts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reconnected(&self) {
        self.pubsub_reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn received(&self) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
    }

    /// A publication numbered at `published_ms` (Redis's clock) arrived now.
    pub(crate) fn lag(&self, published_ms: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_pubsub_lag_ms
            .store(now.saturating_sub(published_ms), Ordering::Relaxed);
    }

    pub(crate) fn malformed(&self) {
        self.malformed_messages.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn probed(&self) {
        self.probes_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn wedged(&self) {
        self.wedged_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.pubsub_connected.store(connected, Ordering::Relaxed);
    }
}
