//! A subscriber's bounded outbound queue of pre-encoded frames.
//!
//! The hub pushes a [`SharedFrame`] (an `Arc` increment, no copy); the connection's
//! task takes frames out when its socket has room and writes them. A consumer that stops
//! reading cannot grow memory without bound: past [`OutboxLimits`] the
//! [`SlowConsumerPolicy`] decides, and publishers never wait for it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use switchboard_proto::frame::SharedFrame;

/// What happens when a subscriber's outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Stop delivering and tell the connection to close (Switchboard's server closes it with
    /// 1008 Policy Violation, reason "slow consumer"). The default: a client that cannot keep
    /// up learns it, instead of silently missing messages.
    #[default]
    Disconnect,
    /// Drop the oldest queued frames to make room, and count them.
    DropOldest,
}

/// Bounds of one outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most bytes queued (default 1 MiB). One frame larger than this is still accepted when
    /// nothing else is queued, so a large publish does not cut off every subscriber.
    pub max_bytes: usize,
    /// Most frames queued (default 4,096).
    pub max_messages: usize,
    /// What happens past either bound.
    pub policy: SlowConsumerPolicy,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_messages: 4096,
            policy: SlowConsumerPolicy::Disconnect,
        }
    }
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued after dropping this many older frames ([`SlowConsumerPolicy::DropOldest`]).
    DroppedOldest(usize),
    /// Not queued: this push overflowed the outbox and the consumer is now cut off
    /// ([`SlowConsumerPolicy::Disconnect`]). Returned once per outbox.
    Overflowed,
    /// Not queued: the outbox was already cut off or closed.
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<SharedFrame>,
    bytes: usize,
    waker: Option<Waker>,
    overflowed: bool,
    closed: bool,
    lost: bool,
    dropped: u64,
}

/// One subscriber's queue. Share it as `Arc<Outbox>` between the hub and the connection.
///
/// ```
/// use switchboard_hub::{Outbox, OutboxLimits, Pushed, SlowConsumerPolicy};
/// use switchboard_proto::{frame::encode_shared, Message};
/// let limits = OutboxLimits { max_bytes: 10, max_messages: 100, policy: SlowConsumerPolicy::Disconnect };
/// let outbox = Outbox::new(limits);
/// let frame = encode_shared(&Message::text("123456")); // 8 bytes with its header
/// assert_eq!(outbox.push(frame.clone()), Pushed::Queued);
/// assert_eq!(outbox.push(frame), Pushed::Overflowed);
/// assert!(outbox.is_overflowed());
/// let mut got = Vec::new();
/// outbox.drain(usize::MAX, |f| got.push(f));
/// assert_eq!(got.len(), 1);
/// ```
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    limits: OutboxLimits,
}

impl Outbox {
    /// An empty outbox with these bounds.
    pub fn new(limits: OutboxLimits) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The queue stays consistent across a panic elsewhere; keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame and wakes the consumer.
    pub fn push(&self, frame: SharedFrame) -> Pushed {
        let mut g = self.lock();
        if g.overflowed || g.closed || g.lost {
            return Pushed::Closed;
        }
        let len = frame.len();
        // The bounds limit what piles up: a single frame larger than the whole outbox still
        // goes through when nothing else is waiting.
        let over = |g: &Inner| {
            !g.queue.is_empty()
                && (g.bytes + len > self.limits.max_bytes
                    || g.queue.len() >= self.limits.max_messages)
        };
        let mut result = Pushed::Queued;
        if over(&g) {
            match self.limits.policy {
                SlowConsumerPolicy::Disconnect => {
                    g.overflowed = true;
                    result = Pushed::Overflowed;
                }
                SlowConsumerPolicy::DropOldest => {
                    let mut dropped = 0;
                    while over(&g) {
                        let Some(old) = g.queue.pop_front() else {
                            break;
                        };
                        g.bytes -= old.len();
                        dropped += 1;
                    }
                    g.dropped += dropped as u64;
                    result = Pushed::DroppedOldest(dropped);
                }
            }
        }
        if result != Pushed::Overflowed {
            g.bytes += len;
            g.queue.push_back(frame);
        }
        let waker = g.waker.take();
        drop(g);
        if let Some(w) = waker {
            w.wake();
        }
        result
    }

    /// Hands queued frames to `f`, oldest first, while fewer than `max_bytes` were taken (the
    /// last frame may pass it). Returns how many bytes it took.
    pub fn drain(&self, max_bytes: usize, mut f: impl FnMut(SharedFrame)) -> usize {
        let mut g = self.lock();
        let mut taken = 0;
        while taken < max_bytes {
            let Some(frame) = g.queue.pop_front() else {
                break;
            };
            g.bytes -= frame.len();
            taken += frame.len();
            f(frame);
        }
        taken
    }

    /// Makes sure `waker` is woken by the next push (or by [`close`](Self::close)).
    pub fn register(&self, waker: &Waker) {
        let mut g = self.lock();
        match &g.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => g.waker = Some(waker.clone()),
        }
    }

    /// Whether frames are waiting.
    pub fn has_frames(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Whether the consumer was cut off by [`SlowConsumerPolicy::Disconnect`].
    pub fn is_overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Frames dropped by [`SlowConsumerPolicy::DropOldest`] so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Publications of a topic it subscribes to were lost on their way to this node (a gap in
    /// offsets, a new epoch): refuses further pushes and wakes the consumer, which sends
    /// what is queued (all from before the gap) and tells its client to reconnect and
    /// recover.
    pub fn lose(&self) {
        let waker = {
            let mut g = self.lock();
            g.lost = true;
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether [`lose`](Self::lose) was called.
    pub fn is_lost(&self) -> bool {
        self.lock().lost
    }

    /// Refuses further pushes (the connection is going away) and wakes the consumer.
    pub fn close(&self) {
        let waker = {
            let mut g = self.lock();
            g.closed = true;
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Drops every queued frame at once (the connection was given up on: what waits for it
    /// will never be sent); returns how many there were.
    pub fn discard(&self) -> usize {
        let mut g = self.lock();
        let n = g.queue.len();
        g.queue = VecDeque::new();
        g.bytes = 0;
        n
    }

    /// The bounds.
    pub fn limits(&self) -> OutboxLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use switchboard_proto::frame::encode_shared;
    use switchboard_proto::Message;

    /// A frame of exactly `n` bytes, header included (`n` at least 2).
    fn frame(n: usize) -> SharedFrame {
        let header = match n {
            ..=127 => 2,
            128..=65_539 => 4,
            _ => 10,
        };
        let f = encode_shared(&Message::binary(vec![0u8; n - header]));
        assert_eq!(f.len(), n);
        f
    }

    #[test]
    fn drop_oldest_keeps_the_newest_within_bounds() {
        let o = Outbox::new(OutboxLimits {
            max_bytes: 100,
            max_messages: 3,
            policy: SlowConsumerPolicy::DropOldest,
        });
        for _ in 0..3 {
            assert_eq!(o.push(frame(10)), Pushed::Queued);
        }
        assert_eq!(o.push(frame(10)), Pushed::DroppedOldest(1));
        assert_eq!(o.push(frame(90)), Pushed::DroppedOldest(2));
        assert_eq!(o.dropped(), 3);
        assert_eq!(o.queued_bytes(), 100);
        // Larger than the whole outbox: everything older goes, the frame itself is kept.
        assert_eq!(o.push(frame(101)), Pushed::DroppedOldest(2));
        assert_eq!(o.queued_bytes(), 101);
        assert!(!o.is_overflowed());
    }

    #[test]
    fn one_frame_larger_than_the_bound_passes_when_nothing_waits() {
        let o = Outbox::new(OutboxLimits {
            max_bytes: 100,
            max_messages: 10,
            policy: SlowConsumerPolicy::Disconnect,
        });
        assert_eq!(o.push(frame(500)), Pushed::Queued);
        assert_eq!(o.push(frame(2)), Pushed::Overflowed);
    }

    #[test]
    fn disconnect_cuts_off_once_and_refuses_more() {
        let o = Outbox::new(OutboxLimits {
            max_bytes: 100,
            max_messages: 2,
            policy: SlowConsumerPolicy::Disconnect,
        });
        assert_eq!(o.push(frame(2)), Pushed::Queued);
        assert_eq!(o.push(frame(2)), Pushed::Queued);
        assert_eq!(o.push(frame(2)), Pushed::Overflowed);
        assert_eq!(o.push(frame(2)), Pushed::Closed);
        assert!(o.is_overflowed());
        // What was queued before the overflow can still be taken.
        let mut n = 0;
        o.drain(usize::MAX, |_| n += 1);
        assert_eq!(n, 2);
    }

    #[test]
    fn push_wakes_the_registered_consumer() {
        let o = Outbox::new(OutboxLimits::default());
        let (waker, count) = futures_test::task::new_count_waker();
        o.register(&waker);
        o.push(frame(2));
        assert_eq!(count.get(), 1);
        // Woken once per registration.
        o.push(frame(2));
        assert_eq!(count.get(), 1);
        o.register(&waker);
        o.close();
        assert_eq!(count.get(), 2);
        assert_eq!(o.push(frame(2)), Pushed::Closed);
    }

    #[test]
    fn drain_takes_at_least_one_frame_and_stops_near_the_budget() {
        let o = Outbox::new(OutboxLimits::default());
        for _ in 0..10 {
            o.push(frame(100));
        }
        let mut n = 0;
        assert_eq!(o.drain(250, |_| n += 1), 300);
        assert_eq!(n, 3);
        assert_eq!(o.drain(0, |_| n += 1), 0);
        assert_eq!(o.drain(1, |_| n += 1), 100);
        assert_eq!(o.queued_bytes(), 600);
    }
}
