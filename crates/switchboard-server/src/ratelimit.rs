//! Token buckets: the limits on how fast one client may go. Per `/ws` and `/chat`
//! connection, messages and bytes a second ([`MessageLimiter`]); per client address, new
//! connections a second ([`ConnectionRate`]).
//!
//! Every bucket holds one second's worth (its burst is its rate), and is kept as one number:
//! the time at which it will be full again (the "virtual scheduling" form of GCRA). A bucket
//! that will be full at or before now is full; one that will be full a second or more from
//! now is empty. Taking `n` units moves that time `n / rate` seconds on. Times are
//! nanoseconds on the server's clock ([`Registry::clock`](crate::registry::Registry::clock)),
//! so a bucket is a `u64`: no allocation, no lock, no timer.
//!
//! Something passes when its bucket holds what it costs. A message larger than one second's
//! worth of bytes passes when its bucket is full, and overdraws it: the connection then
//! waits until the bucket is paid back. Over any span of `t` seconds a connection gets at
//! most `rate × (t + 1)` units through (plus, for bytes, one message larger than that).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;

use switchboard_proto::Message;

use crate::config::Limits;
use crate::error::{AppError, ErrorCode};

/// Nanoseconds in a second: the burst of every bucket, in time.
const SECOND: u64 = 1_000_000_000;

/// One token bucket with a burst of one second's worth (see the module's docs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    /// When the bucket will be full again, in nanoseconds on the server's clock.
    full_at: u64,
}

impl TokenBucket {
    /// What taking `units` costs at `per_second` units a second (0 counts as 1), in
    /// nanoseconds.
    pub(crate) fn cost(units: u64, per_second: u64) -> u64 {
        let cost = u128::from(units) * u128::from(SECOND) / u128::from(per_second.max(1));
        u64::try_from(cost).unwrap_or(u64::MAX)
    }

    /// Whether something that `cost`s may pass at `now`: the bucket holds that much, or it
    /// is full (a take larger than the whole bucket passes then, and overdraws it).
    pub(crate) fn can_take(self, cost: u64, now: u64) -> bool {
        let used = self.full_at.saturating_sub(now);
        used == 0 || used.saturating_add(cost) <= SECOND
    }

    /// Takes `cost` at `now`, whatever the bucket holds.
    pub(crate) fn take(&mut self, cost: u64, now: u64) {
        self.full_at = self.full_at.max(now).saturating_add(cost);
    }

    /// Takes `cost` at `now` if the bucket holds it; whether it did.
    pub(crate) fn try_take(&mut self, cost: u64, now: u64) -> bool {
        let room = self.can_take(cost, now);
        if room {
            self.take(cost, now);
        }
        room
    }
}

/// Which limit a client went over: the `limit` label of `switchboard_rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Messages a second on one connection.
    Messages,
    /// Bytes a second on one connection.
    Bytes,
    /// New connections a second from one address.
    Connections,
}

impl Limit {
    /// Every limit, in the order of the metrics' counters.
    pub(crate) const ALL: [Self; 3] = [Self::Messages, Self::Bytes, Self::Connections];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Bytes => "bytes",
            Self::Connections => "connections",
        }
    }
}

/// A connection's rates: messages and bytes a second, 0 for no limit (from [`Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageRates {
    messages: u64,
    bytes: u64,
}

impl MessageRates {
    /// The rates `limits` set.
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            messages: u64::from(limits.max_messages_per_second),
            bytes: limits.max_bytes_per_second,
        }
    }

    /// Whether no limit is set (the session then does not read the clock).
    pub(crate) fn is_off(self) -> bool {
        self.messages == 0 && self.bytes == 0
    }

    /// The `rate_limited` error event for going over `limit`.
    pub(crate) fn event(self, limit: Limit) -> Message {
        let what = match limit {
            Limit::Bytes => format!("{} bytes", self.bytes),
            _ => format!("{} messages", self.messages),
        };
        AppError::new(
            ErrorCode::RateLimited,
            format!(
                "too fast: this connection may send {what} a second; messages over the limit are dropped, and a connection that goes on is closed (1008)"
            ),
        )
        .event()
    }
}

/// What becomes of a message a connection sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limits: to the app.
    Pass,
    /// Over `Limit`, the first of a flood: dropped, and the client is told (an error event).
    Warn(Limit),
    /// Over `Limit` again soon after the warning: dropped.
    Drop(Limit),
    /// Still over `Limit` a second after the warning: dropped, and the connection closed
    /// (1008).
    Close(Limit),
}

/// Milliseconds after which the warning ends a flood: a connection whose messages are still
/// dropped this long after it was warned is closed.
const GRACE_MS: u32 = 1_000;

/// One connection's message and byte buckets, and where it is in a flood: three words.
///
/// A flood is a run of dropped messages less than a second apart. Its first drop is answered
/// with a `rate_limited` error event; a drop more than a second after that warning, in the
/// same flood, closes the connection. A connection that pauses its drops for a second (it
/// slowed down: its buckets fill again) starts afresh, and is warned again if it floods again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageLimiter {
    messages: TokenBucket,
    bytes: TokenBucket,
    /// When the current flood's warning went out, in milliseconds on the server's clock
    /// (wrapping; only differences under [`GRACE_MS`] matter).
    warned_ms: u32,
    /// When the last message was dropped, likewise; 0 in a connection that never went
    /// over.
    dropped_ms: u32,
}

impl MessageLimiter {
    /// What becomes of a message of `len` bytes; `clock` reads the server's clock (in
    /// nanoseconds), and is not called when no limit is set.
    pub(crate) fn check(
        &mut self,
        rates: MessageRates,
        len: usize,
        clock: impl FnOnce() -> u64,
    ) -> Verdict {
        if rates.is_off() {
            return Verdict::Pass;
        }
        let now = clock();
        let messages = TokenBucket::cost(1, rates.messages);
        let bytes = TokenBucket::cost(len as u64, rates.bytes);
        let over = if rates.messages > 0 && !self.messages.can_take(messages, now) {
            Some(Limit::Messages)
        } else if rates.bytes > 0 && !self.bytes.can_take(bytes, now) {
            Some(Limit::Bytes)
        } else {
            None
        };
        let Some(limit) = over else {
            if rates.messages > 0 {
                self.messages.take(messages, now);
            }
            if rates.bytes > 0 {
                self.bytes.take(bytes, now);
            }
            return Verdict::Pass;
        };
        // Never 0, which stands for "none" in `dropped_ms`.
        let ms = ((now / 1_000_000) as u32).max(1);
        let in_flood = self.dropped_ms != 0 && ms.wrapping_sub(self.dropped_ms) < GRACE_MS;
        self.dropped_ms = ms;
        if !in_flood {
            self.warned_ms = ms;
            Verdict::Warn(limit)
        } else if ms.wrapping_sub(self.warned_ms) > GRACE_MS {
            Verdict::Close(limit)
        } else {
            Verdict::Drop(limit)
        }
    }
}

/// Sets in the table of [`ConnectionRate`]; each holds [`WAYS`] addresses.
const SETS: usize = 4096;
/// Addresses per set.
const WAYS: usize = 2;

/// One address's bucket in the table.
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// The keyed hash of the address (its set is the hash's low bits).
    tag: u64,
    bucket: TokenBucket,
}

/// New connections a second from one client address, in a fixed table: bounded memory
/// whatever the number of addresses (`SETS × WAYS` entries of 16 bytes: 128 KiB, allocated
/// only when the limit is on).
///
/// An address is hashed with a random key (SipHash), so clients cannot choose which set
/// they land in. A set holds two addresses; a new one takes the place of the one whose
/// bucket will be full first: one that is full already loses nothing, and an address that
/// floods (its bucket furthest from full) keeps its place. Under a flood of many distinct
/// addresses the table forgets some buckets early and the limit gets more lenient; it never
/// refuses an address for another's connections (short of a 64-bit hash collision).
///
/// An IPv6 client is counted by its /64 (a host usually has a whole /64, and could open
/// every connection from a new address in it); an IPv4-mapped IPv6 address as its IPv4.
#[derive(Debug)]
pub(crate) struct ConnectionRate {
    per_second: u64,
    table: Mutex<Box<[[Entry; WAYS]]>>,
    hasher: RandomState,
}

impl ConnectionRate {
    /// A limit of `per_second` new connections a second per address; `None` for 0 (off).
    pub(crate) fn new(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_second: u64::from(per_second),
            table: Mutex::new(vec![[Entry::default(); WAYS]; SETS].into_boxed_slice()),
            hasher: RandomState::new(),
        })
    }

    /// Counts a new connection from `ip` at `now` (nanoseconds on the server's clock);
    /// whether it may go on. Takes a short lock (once per accepted connection).
    pub(crate) fn admit(&self, ip: IpAddr, now: u64) -> bool {
        let tag = self.hasher.hash_one(address_key(ip));
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(set) = table.get_mut(tag as usize % SETS) else {
            return true;
        };
        let way = match set.iter().position(|e| e.tag == tag) {
            Some(i) => i,
            None => {
                let i = (0..WAYS)
                    .min_by_key(|&i| set[i].bucket.full_at)
                    .unwrap_or(0);
                set[i] = Entry {
                    tag,
                    bucket: TokenBucket::default(),
                };
                i
            }
        };
        set[way]
            .bucket
            .try_take(TokenBucket::cost(1, self.per_second), now)
    }
}

/// What an address is counted as: an IPv4 address as it is (also when IPv4-mapped), an
/// IPv6 address by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn rates(messages: u32, bytes: u64) -> MessageRates {
        MessageRates {
            messages: u64::from(messages),
            bytes,
        }
    }

    #[test]
    fn a_bucket_lets_a_second_worth_through_at_once_then_the_rate() {
        let mut b = TokenBucket::default();
        let one = TokenBucket::cost(1, 10);
        let t0 = 5 * SECOND;
        let through = (0..20).filter(|_| b.try_take(one, t0)).count();
        assert_eq!(through, 10, "the burst is one second's worth");
        assert!(!b.can_take(one, t0 + 99 * MS));
        assert!(b.try_take(one, t0 + 100 * MS), "one more after 1/10 s");
        assert!(!b.try_take(one, t0 + 150 * MS));
        // Idle for long: full again, never more than the burst.
        let t1 = t0 + 60 * SECOND;
        assert_eq!((0..20).filter(|_| b.try_take(one, t1)).count(), 10);
        // A rate that does not divide a second: still exactly the burst.
        let mut b = TokenBucket::default();
        let third = TokenBucket::cost(1, 3);
        assert_eq!((0..9).filter(|_| b.try_take(third, t0)).count(), 3);
    }

    #[test]
    fn a_take_larger_than_the_bucket_waits_for_it_full_and_is_paid_back() {
        let mut b = TokenBucket::default();
        let byte = TokenBucket::cost(1, 1_000);
        let big = TokenBucket::cost(3_000, 1_000);
        assert!(b.try_take(byte, 0));
        assert!(
            !b.can_take(big, 0),
            "three seconds' worth needs a full bucket"
        );
        assert!(b.try_take(big, MS));
        // Overdrawn: nothing for two seconds, then the rate.
        assert!(!b.can_take(byte, 2_000 * MS));
        assert!(b.can_take(byte, 2_002 * MS));
        // Huge costs never overflow.
        let mut huge = TokenBucket::default();
        huge.take(TokenBucket::cost(u64::MAX, 1), 0);
        assert_eq!(huge.full_at, u64::MAX);
        assert!(!huge.can_take(0, u64::MAX - SECOND - 1));
    }

    #[test]
    fn no_limit_never_reads_the_clock() {
        let mut l = MessageLimiter::default();
        for _ in 0..1000 {
            let v = l.check(rates(0, 0), 1 << 20, || panic!("clock read"));
            assert_eq!(v, Verdict::Pass);
        }
    }

    #[test]
    fn a_flood_is_warned_once_then_closed_a_second_later() {
        let mut l = MessageLimiter::default();
        let r = rates(100, 0);
        let t0 = 10 * SECOND;
        // 100 at once pass; the 101st is the warning; more within the second are dropped.
        for i in 0..100 {
            assert_eq!(l.check(r, 10, || t0), Verdict::Pass, "message {i}");
        }
        assert_eq!(l.check(r, 10, || t0), Verdict::Warn(Limit::Messages));
        assert_eq!(l.check(r, 10, || t0 + MS), Verdict::Drop(Limit::Messages));
        // Flooding on at 1,000 a second: some pass as the bucket refills, the rest are
        // dropped, and the first drop more than a second after the warning closes.
        let mut t = t0 + MS;
        let verdict = loop {
            t += MS;
            match l.check(r, 10, || t) {
                Verdict::Pass | Verdict::Drop(_) => continue,
                v => break v,
            }
        };
        assert_eq!(verdict, Verdict::Close(Limit::Messages));
        assert!(
            (t0 + SECOND..t0 + SECOND + 5 * MS).contains(&t),
            "closed {} ms after the warning",
            (t - t0) / MS
        );
    }

    #[test]
    fn a_burst_then_a_pause_starts_afresh() {
        let mut l = MessageLimiter::default();
        let r = rates(10, 0);
        let t0 = SECOND;
        for _ in 0..10 {
            assert_eq!(l.check(r, 1, || t0), Verdict::Pass);
        }
        assert_eq!(l.check(r, 1, || t0), Verdict::Warn(Limit::Messages));
        // Paused for a second: the buckets are full, and a new burst gets its warning (and
        // is not closed) even though the last warning was more than a second ago.
        let t1 = t0 + SECOND + 10 * MS;
        for _ in 0..10 {
            assert_eq!(l.check(r, 1, || t1), Verdict::Pass);
        }
        assert_eq!(l.check(r, 1, || t1), Verdict::Warn(Limit::Messages));
        // At the rate from then on: everything passes.
        for i in 1..=100 {
            assert_eq!(l.check(r, 1, || t1 + i * 100 * MS), Verdict::Pass);
        }
    }

    #[test]
    fn bytes_are_limited_on_their_own_and_with_messages() {
        let mut l = MessageLimiter::default();
        let r = rates(0, 1_000);
        // 1,000 bytes a second: two 400-byte messages, not a third.
        assert_eq!(l.check(r, 400, || 0), Verdict::Pass);
        assert_eq!(l.check(r, 400, || 0), Verdict::Pass);
        assert_eq!(l.check(r, 400, || 0), Verdict::Warn(Limit::Bytes));
        assert_eq!(l.check(r, 400, || 300 * MS), Verdict::Pass);
        // A message larger than the burst passes once the bucket is full, and overdraws.
        assert_eq!(l.check(r, 5_000, || 1_200 * MS), Verdict::Pass);
        // Refused at 4 s, more than a second after the last drop: a new flood, warned.
        assert_eq!(l.check(r, 1, || 4_000 * MS), Verdict::Warn(Limit::Bytes));
        assert_eq!(l.check(r, 1, || 5_300 * MS), Verdict::Pass);
        // Both limits: the message count is checked first.
        let mut both = MessageLimiter::default();
        let r = rates(1, 10);
        assert_eq!(both.check(r, 100, || 0), Verdict::Pass);
        assert_eq!(both.check(r, 1, || 0), Verdict::Warn(Limit::Messages));
        assert_eq!(both.check(r, 1, || 2 * SECOND), Verdict::Warn(Limit::Bytes));
        assert_eq!(both.check(r, 1, || 9_500 * MS), Verdict::Pass);
    }

    #[test]
    fn the_limiter_is_three_words() {
        assert_eq!(std::mem::size_of::<MessageLimiter>(), 24);
    }

    #[test]
    fn connections_per_address_and_their_keys() {
        let r = ConnectionRate::new(3).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..5).filter(|_| r.admit(a, SECOND)).count(), 3);
        assert!(r.admit(b, SECOND), "another address has its own bucket");
        assert!(!r.admit(a, SECOND + 300 * MS));
        assert!(
            r.admit(a, SECOND + 340 * MS),
            "one more after a third of a second"
        );
        // IPv6: one /64 is one client; IPv4-mapped is the IPv4 address.
        let v6 = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(v6("2001:db8:1:2:aaaa::1"), v6("2001:db8:1:2:ffff::9"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:192.0.2.1"), a);
        assert!(ConnectionRate::new(0).is_none());
    }

    #[test]
    fn a_flood_of_distinct_addresses_stays_bounded_and_refuses_no_newcomer() {
        let r = ConnectionRate::new(1).unwrap();
        let now = SECOND;
        // A flooder over its limit, then 100,000 other addresses once each in the same
        // instant: every newcomer gets in (its first connection), the table does not grow.
        let flooder: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(r.admit(flooder, now));
        assert!(!r.admit(flooder, now));
        for i in 0..100_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(r.admit(ip, now), "newcomer {ip} refused");
        }
        assert_eq!(r.table.lock().unwrap().len(), SETS);
    }
}
