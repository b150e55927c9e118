//! Helpers of the Redis engine's tests: a recording hub, engine settings for tests, bounded
//! waits, and a TCP proxy that can wedge a pub/sub connection.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use switchboard_hub::engine::{Body, Deliver, Engine, Publication, StreamOptions};
use switchboard_redis::{RedisConfig, RedisEngine};

/// Every test's whole body must finish within this.
pub const TEST_LIMIT: Duration = Duration::from_secs(40);
/// A wait for something that should happen soon.
pub const WAIT: Duration = Duration::from_secs(10);

/// Runs `test`, failing it if it takes longer than [`TEST_LIMIT`].
pub async fn bounded<F: Future<Output = ()>>(test: F) {
    // `RUST_LOG=switchboard_redis=debug` shows what the engine did.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {TEST_LIMIT:?}"));
}

/// A hub that records what the engine hands it.
#[derive(Debug, Default)]
pub struct Recorder {
    publications: Mutex<Vec<Publication>>,
    lost: Mutex<Vec<Option<String>>>,
}

impl Deliver for Recorder {
    fn deliver(&self, publication: &Publication) -> usize {
        self.publications.lock().unwrap().push(publication.clone());
        1
    }

    fn lost(&self, topic: Option<&str>) {
        self.lost.lock().unwrap().push(topic.map(str::to_owned));
    }
}

impl Recorder {
    /// A recorder attached to `engine`.
    pub fn attach(engine: &RedisEngine) -> Arc<Self> {
        let recorder = Arc::new(Self::default());
        let hub: Arc<dyn Deliver> = recorder.clone();
        let weak: Weak<dyn Deliver> = Arc::downgrade(&hub);
        engine.attach(weak);
        recorder
    }

    /// The publications received so far.
    pub fn publications(&self) -> Vec<Publication> {
        self.publications.lock().unwrap().clone()
    }

    /// The publications of `topic` received so far.
    pub fn of(&self, topic: &str) -> Vec<Publication> {
        self.publications()
            .into_iter()
            .filter(|p| &*p.topic == topic)
            .collect()
    }

    /// The `lost` calls so far.
    pub fn lost(&self) -> Vec<Option<String>> {
        self.lost.lock().unwrap().clone()
    }

    /// Waits until `topic` has at least `n` publications; returns them.
    pub async fn wait_for(&self, topic: &str, n: usize) -> Vec<Publication> {
        eventually(&format!("{n} publications of {topic}"), || {
            let got = self.of(topic);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// Polls `check` every 10 ms until it gives a value; panics after [`WAIT`].
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The stream options most tests publish with: the default history (100, 5 minutes).
pub fn options() -> StreamOptions {
    StreamOptions::default()
}

/// Settings for tests: short timeouts, probe and presence periods.
pub fn config(url: &str) -> RedisConfig {
    let mut config = RedisConfig::new(url);
    config.command_timeout = Duration::from_secs(2);
    config.probe_interval = Duration::from_secs(1);
    config.presence_ttl = Duration::from_secs(2);
    config.presence_refresh = Duration::from_millis(500);
    config
}

/// Connects an engine with [`config`].
pub async fn engine(url: &str) -> Arc<RedisEngine> {
    connect(config(url)).await
}

/// Connects an engine.
pub async fn connect(config: RedisConfig) -> Arc<RedisEngine> {
    RedisEngine::connect(config)
        .await
        .unwrap_or_else(|e| panic!("engine did not connect: {e}"))
}

/// A JSON-ish body of kind 1.
pub fn body(text: &str) -> Body {
    Body {
        kind: 1,
        data: Bytes::copy_from_slice(text.as_bytes()),
    }
}

/// The offsets of `publications`.
pub fn offsets(publications: &[Publication]) -> Vec<u64> {
    publications
        .iter()
        .map(|p| p.position.as_ref().map_or(0, |at| at.offset))
        .collect()
}
