//! When an HTTP/2 connection closes on its own (hyper has no idle timeout): after the
//! timeout with no stream open, with a GOAWAY; at once on server shutdown. One that has not
//! ended another timeout after an idle GOAWAY (a client that never finishes its handshake, or
//! ignores the GOAWAY) is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A connection's open streams, and when the last one ended.
#[derive(Debug)]
pub(crate) struct Streams {
    open: AtomicUsize,
    base: Instant,
    /// When the last stream ended, in milliseconds after `base` (0: none did).
    last_ms: AtomicU64,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            open: AtomicUsize::new(0),
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Streams {
    /// Counts a stream open until the guard is dropped.
    pub(crate) fn open(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenStream(Arc::clone(self))
    }

    /// Since when no stream is open, or `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.last_ms.load(Ordering::Acquire);
        Some(self.base + Duration::from_millis(ms))
    }
}

/// A stream counted open.
#[derive(Debug)]
pub(crate) struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Closing after server shutdown: the server's shutdown timeout bounds it.
    ShuttingDown,
    /// Closing for idleness: dropped if not closed by the timer.
    Idle,
}

/// The idle timer of one connection.
#[derive(Debug)]
pub(crate) struct Idle {
    streams: Arc<Streams>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    state: State,
}

impl Idle {
    pub(crate) fn new(streams: Arc<Streams>, timeout: Duration) -> Self {
        Self {
            streams,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            state: State::Open,
        }
    }

    /// Whether the connection should begin closing now (true once): on `shutdown`, or after
    /// the timeout with no stream open.
    pub(crate) fn poll_close(&mut self, cx: &mut Context<'_>, shutdown: bool) -> bool {
        if self.state != State::Open {
            return false;
        }
        if shutdown {
            self.state = State::ShuttingDown;
            return true;
        }
        while self.sleep.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match self.streams.idle_since() {
                Some(since) if since + self.timeout <= now => {
                    self.state = State::Idle;
                    self.sleep.as_mut().reset(now + self.timeout);
                    return true;
                }
                Some(since) => self.sleep.as_mut().reset(since + self.timeout),
                None => self.sleep.as_mut().reset(now + self.timeout),
            }
        }
        false
    }

    /// Whether a connection closing for idleness is past its last chance.
    pub(crate) fn poll_give_up(&mut self, cx: &mut Context<'_>) -> bool {
        self.state == State::Idle && self.sleep.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn closes_after_the_timeout_without_streams_then_gives_up() {
        let streams = Arc::new(Streams::default());
        let mut idle = Idle::new(Arc::clone(&streams), Duration::from_secs(10));
        let poll = |idle: &mut Idle, shutdown| {
            let waker = std::task::Waker::noop();
            idle.poll_close(&mut Context::from_waker(waker), shutdown)
        };
        let open = streams.open();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!poll(&mut idle, false), "closed with a stream open");
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(open);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!poll(&mut idle, false), "closed before the timeout");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(poll(&mut idle, false), "not closed after the timeout");
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(!idle.poll_give_up(&mut cx));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(idle.poll_give_up(&mut cx));
    }

    #[test]
    fn shutdown_closes_at_once_and_is_not_given_up() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut idle = Idle::new(Arc::default(), Duration::from_secs(10));
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            assert!(idle.poll_close(&mut cx, true));
            assert!(!idle.poll_close(&mut cx, true), "twice");
            assert!(!idle.poll_give_up(&mut cx));
        });
    }
}
