//! One topic's stream: positions (offset and epoch), a bounded history, and the recovery
//! decision for a client that comes back with the last position it saw.
//!
//! Every publication to a topic gets the next `offset` (contiguous from 1) and the topic's
//! `epoch`: a random string made when the stream is created. A new epoch means the stream was
//! lost (an engine restarted empty, the history expired), so positions from before it mean
//! nothing. [`TopicStream`] is the in-memory form, sans-IO like the rest of the hub: every
//! method that depends on time takes `now` instead of reading a clock.
//!
//! Recovery follows centrifuge (`client.go` `isStreamRecovered`): it is all or nothing.
//! [`TopicStream::since`] either returns every publication the client missed, in order,
//! with [`Recovery::recovered`] set, or none at all, and the application reloads its state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

/// How many letters an epoch has.
pub const EPOCH_LEN: usize = 8;

/// A position in a topic's stream: the offset of the last publication seen, in an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// The publication's offset (0: before the first publication).
    pub offset: u64,
    /// The stream's epoch; a position is only meaningful in the epoch it was taken in.
    pub epoch: Arc<str>,
}

/// A fresh epoch: [`EPOCH_LEN`] random ASCII letters (`[a-zA-Z]`), as centrifuge makes them.
///
/// Engines that keep the stream elsewhere (Redis) make the epoch on the node and hand it to
/// the store, which keeps it only if the stream has none yet.
pub fn new_epoch() -> Arc<str> {
    const LETTERS: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    let epoch: String = (0..EPOCH_LEN)
        .map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())]))
        .collect();
    epoch.into()
}

/// The bounds of a topic's history. Either bound at zero turns history off: offsets still
/// advance, but nothing is kept, so a client can only recover when it missed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// At most this many publications are kept (the oldest go first).
    pub size: usize,
    /// A publication is dropped once it is this old.
    pub ttl: Duration,
}

impl HistoryLimits {
    /// No history: offsets advance, nothing is kept.
    pub const OFF: Self = Self {
        size: 0,
        ttl: Duration::ZERO,
    };

    /// Whether anything is kept.
    pub fn enabled(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

/// What [`TopicStream::since`] found for a client's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery<'a, T> {
    /// The publications after the client's offset, oldest first, with their offsets. Empty
    /// unless [`recovered`](Self::recovered): a replay is never partial.
    pub publications: Vec<(u64, &'a T)>,
    /// The stream's position now (its top offset and epoch): the client's new position when
    /// it has applied [`publications`](Self::publications), or the place to start from after
    /// reloading its state when not recovered.
    pub top: StreamPosition,
    /// `true` when the client has everything it missed: the epoch matches and either it
    /// missed nothing or the history still holds every publication after its offset (and
    /// the replay fits in the limit).
    pub recovered: bool,
    /// `true` when the history holds everything the client missed, but more than the limit:
    /// then nothing is replayed and [`recovered`](Self::recovered) is `false`; the client
    /// reloads its state, as Centrifugo does when its recovery limit is exceeded. A partial
    /// replay would leave the client with a gap it could not see.
    pub capped: bool,
}

/// One topic's stream in memory: its epoch, its top offset and its bounded history of
/// publications (`T`: whatever the engine stores per publication).
///
/// It reads no clock: every method that ages the history takes `now`, which must not go
/// backwards from one call to the next (pass a monotonic clock's reading, such as
/// `Instant::now()`).
///
/// ```
/// use std::time::{Duration, Instant};
/// use switchboard_hub::stream::{HistoryLimits, TopicStream};
///
/// let limits = HistoryLimits { size: 100, ttl: Duration::from_secs(60) };
/// let mut stream = TopicStream::new(limits);
/// let now = Instant::now();
/// let first = stream.append("hello", now);
/// assert_eq!(first.offset, 1);
/// stream.append("world", now);
///
/// // A client that saw offset 1 comes back: it gets exactly what it missed.
/// let recovery = stream.since(Some(&first), 300, now);
/// assert!(recovery.recovered);
/// assert_eq!(recovery.publications, vec![(2, &"world")]);
/// assert_eq!(recovery.top.offset, 2);
///
/// // A client from another epoch (the stream was lost meanwhile) gets nothing: it reloads.
/// let stale = switchboard_hub::stream::StreamPosition { offset: 1, epoch: "elsewhere".into() };
/// let recovery = stream.since(Some(&stale), 300, now);
/// assert!(!recovery.recovered);
/// assert!(recovery.publications.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct TopicStream<T> {
    epoch: Arc<str>,
    top: u64,
    limits: HistoryLimits,
    /// `(offset, published_at, item)`, oldest first, offsets contiguous, the last one `top`.
    history: VecDeque<(u64, Instant, T)>,
}

impl<T> TopicStream<T> {
    /// A new stream with a fresh random epoch ([`new_epoch`]) and no publication yet.
    pub fn new(limits: HistoryLimits) -> Self {
        Self::with_epoch(new_epoch(), limits)
    }

    /// A new stream in the given epoch, with no publication yet.
    pub fn with_epoch(epoch: Arc<str>, limits: HistoryLimits) -> Self {
        Self {
            epoch,
            top: 0,
            limits,
            history: VecDeque::new(),
        }
    }

    /// The stream's epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The history's bounds.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Sets the history's bounds (a topic whose options changed); what is now over them
    /// goes at the next [`append`](Self::append) or [`trim`](Self::trim).
    pub fn set_limits(&mut self, limits: HistoryLimits) {
        self.limits = limits;
    }

    /// The position of the last publication (offset 0 before the first).
    pub fn top(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: Arc::clone(&self.epoch),
        }
    }

    /// How many publications the history holds (some may be past their age until the next
    /// [`trim`](Self::trim) or [`append`](Self::append)).
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// The publications the history holds, oldest first, with their offsets, leaving out
    /// those that have reached their age at `now`.
    pub fn retained(&self, now: Instant) -> impl Iterator<Item = (u64, &T)> {
        self.history
            .iter()
            .filter(move |(_, at, _)| !self.expired(*at, now))
            .map(|(offset, _, item)| (*offset, item))
    }

    /// Assigns `item` the next offset, keeps it in the history (when history is on), drops
    /// what is now over the bounds, and returns the item's position.
    pub fn append(&mut self, item: T, now: Instant) -> StreamPosition {
        self.top += 1;
        if self.limits.enabled() {
            self.history.push_back((self.top, now, item));
        }
        self.trim(now);
        self.top()
    }

    /// Drops the oldest publications while the history holds more than its size, or they
    /// have reached their age.
    pub fn trim(&mut self, now: Instant) {
        let excess = self.history.len().saturating_sub(self.limits.size);
        self.history.drain(..excess);
        while self
            .history
            .front()
            .is_some_and(|(_, at, _)| self.expired(*at, now))
        {
            self.history.pop_front();
        }
    }

    /// What the history holds for a reader, leaving out what has reached its age at `now`:
    /// with `since: Some(n)`, the publications after offset `n`, oldest first, at most
    /// `limit`; with `None`, the newest `limit`, oldest first.
    pub fn read(&self, since: Option<u64>, limit: usize, now: Instant) -> Vec<(u64, &T)> {
        let held = self.retained(now);
        match since {
            Some(n) => held.filter(|(o, _)| *o > n).take(limit).collect(),
            None => {
                let all: Vec<_> = held.collect();
                let skip = all.len().saturating_sub(limit);
                all.into_iter().skip(skip).collect()
            }
        }
    }

    /// Whether a publication made at `at` has reached the history's age at `now`.
    fn expired(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) >= self.limits.ttl
    }

    /// The publications after `from`, for a client coming back with the last position it
    /// saw, by centrifuge's rule: recovered iff the epoch matches and the client missed
    /// nothing the history no longer holds (its offset is the top, or the history still
    /// holds every offset from `from.offset + 1` to the top). Never partial: when not
    /// recovered, no publications. Publications past their age count as gone even before
    /// [`trim`](Self::trim) drops them.
    ///
    /// `from: None` (a client with no position) is never recovered. An offset beyond the top
    /// (a position this stream never gave) is not recovered. When the client missed more
    /// than `limit` publications that the history does hold, the result is
    /// [`capped`](Recovery::capped) and not recovered.
    pub fn since(
        &self,
        from: Option<&StreamPosition>,
        limit: usize,
        now: Instant,
    ) -> Recovery<'_, T> {
        let mut recovery = Recovery {
            publications: Vec::new(),
            top: self.top(),
            recovered: false,
            capped: false,
        };
        let Some(from) = from else {
            return recovery;
        };
        if from.epoch != self.epoch || from.offset > self.top {
            return recovery;
        }
        if from.offset == self.top {
            recovery.recovered = true;
            return recovery;
        }
        // The oldest publication still within its age; the history's offsets are contiguous
        // and end at `top`, so everything from it on is there.
        let Some(oldest) = self
            .history
            .iter()
            .find(|(_, at, _)| !self.expired(*at, now))
            .map(|(offset, _, _)| *offset)
        else {
            return recovery;
        };
        if oldest > from.offset + 1 {
            return recovery;
        }
        let missed = self.top - from.offset;
        if missed > u64::try_from(limit).unwrap_or(u64::MAX) {
            recovery.capped = true;
            return recovery;
        }
        // `oldest <= from.offset + 1`, so this index is within the history.
        let skip = usize::try_from(from.offset + 1 - self.history_first()).unwrap_or(usize::MAX);
        recovery.publications = self
            .history
            .iter()
            .skip(skip)
            .map(|(offset, _, item)| (*offset, item))
            .collect();
        recovery.recovered = true;
        recovery
    }

    /// The offset of the first publication in the history (`top + 1` when it is empty).
    fn history_first(&self) -> u64 {
        self.history
            .front()
            .map_or(self.top + 1, |(offset, _, _)| *offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn limits(size: usize, ttl_secs: u64) -> HistoryLimits {
        HistoryLimits {
            size,
            ttl: Duration::from_secs(ttl_secs),
        }
    }

    fn stream(size: usize, ttl_secs: u64) -> TopicStream<u32> {
        TopicStream::with_epoch("abcdefgh".into(), limits(size, ttl_secs))
    }

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    fn offsets<T>(r: &Recovery<'_, T>) -> Vec<u64> {
        r.publications.iter().map(|(o, _)| *o).collect()
    }

    #[test]
    fn offsets_are_contiguous_from_one() {
        let mut s = stream(10, 60);
        let now = Instant::now();
        assert_eq!(s.top().offset, 0);
        for expected in 1..=25 {
            assert_eq!(s.append(0, now).offset, expected);
            assert_eq!(s.top().offset, expected);
        }
    }

    #[test]
    fn epoch_is_eight_letters_and_stable() {
        let mut s: TopicStream<()> = TopicStream::new(limits(10, 60));
        let epoch = Arc::clone(s.epoch());
        assert_eq!(epoch.len(), EPOCH_LEN);
        assert!(epoch.chars().all(|c| c.is_ascii_alphabetic()), "{epoch}");
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(s.append((), now).epoch, epoch);
        }
        assert_eq!(s.top().epoch, epoch);
        // Two streams get different epochs (52^8 possibilities: a clash is a bug).
        let other: TopicStream<()> = TopicStream::new(limits(10, 60));
        assert_ne!(other.epoch(), &epoch);
    }

    #[test]
    fn size_bound_drops_the_oldest() {
        let mut s = stream(3, 60);
        let now = Instant::now();
        for i in 1..=5 {
            s.append(i, now);
        }
        assert_eq!(s.history_len(), 3);
        let r = s.since(Some(&at(2, "abcdefgh")), 300, now);
        assert!(r.recovered);
        assert_eq!(r.publications, vec![(3, &3), (4, &4), (5, &5)]);
        // Offset 1 is gone: 2 can no longer be replayed.
        let r = s.since(Some(&at(1, "abcdefgh")), 300, now);
        assert!(!r.recovered);
        assert!(r.publications.is_empty());
    }

    #[test]
    fn ttl_bound_drops_the_oldest() {
        let mut s = stream(100, 10);
        let t0 = Instant::now();
        s.append(1, t0);
        s.append(2, t0 + 5 * SECOND);
        s.append(3, t0 + 8 * SECOND);
        s.trim(t0 + 10 * SECOND);
        assert_eq!(s.history_len(), 2, "offset 1 reached its age");
        s.trim(t0 + 15 * SECOND);
        assert_eq!(s.history_len(), 1);
        // Appending also trims.
        s.append(4, t0 + 30 * SECOND);
        assert_eq!(s.history_len(), 1);
        let r = s.since(Some(&at(3, "abcdefgh")), 300, t0 + 30 * SECOND);
        assert!(r.recovered);
        assert_eq!(r.publications, vec![(4, &4)]);
    }

    #[test]
    fn since_counts_expired_entries_as_gone_before_trim() {
        let mut s = stream(100, 10);
        let t0 = Instant::now();
        s.append(1, t0);
        s.append(2, t0 + 8 * SECOND);
        let later = t0 + 12 * SECOND;
        assert!(!s.since(Some(&at(0, "abcdefgh")), 300, later).recovered);
        let r = s.since(Some(&at(1, "abcdefgh")), 300, later);
        assert!(r.recovered);
        assert_eq!(offsets(&r), vec![2]);
    }

    #[test]
    fn since_returns_exactly_the_missed_items_in_order() {
        let mut s = stream(100, 60);
        let now = Instant::now();
        for i in 1..=10 {
            s.append(i * 10, now);
        }
        let r = s.since(Some(&at(6, "abcdefgh")), 300, now);
        assert!(r.recovered);
        assert!(!r.capped);
        assert_eq!(
            r.publications,
            vec![(7, &70), (8, &80), (9, &90), (10, &100)]
        );
        assert_eq!(r.top, at(10, "abcdefgh"));
        // From the very beginning (offset 0): everything.
        let r = s.since(Some(&at(0, "abcdefgh")), 300, now);
        assert!(r.recovered);
        assert_eq!(offsets(&r), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn at_top_is_recovered_with_nothing() {
        let mut s = stream(100, 60);
        let now = Instant::now();
        // Also on a stream with no publication yet.
        let r = s.since(Some(&at(0, "abcdefgh")), 300, now);
        assert!(r.recovered);
        assert!(r.publications.is_empty());
        s.append(1, now);
        s.append(2, now);
        let r = s.since(Some(&at(2, "abcdefgh")), 300, now);
        assert!(r.recovered);
        assert!(r.publications.is_empty());
        assert_eq!(r.top.offset, 2);
    }

    #[test]
    fn no_position_is_not_recovered() {
        let mut s = stream(100, 60);
        let now = Instant::now();
        s.append(1, now);
        let r = s.since(None, 300, now);
        assert!(!r.recovered);
        assert!(r.publications.is_empty());
        assert_eq!(r.top, at(1, "abcdefgh"));
    }

    #[test]
    fn wrong_epoch_is_not_recovered() {
        let mut s = stream(100, 60);
        let now = Instant::now();
        s.append(1, now);
        s.append(2, now);
        for offset in [0, 1, 2] {
            let r = s.since(Some(&at(offset, "zzzzzzzz")), 300, now);
            assert!(!r.recovered, "offset {offset}");
            assert!(!r.capped);
            assert!(r.publications.is_empty());
            assert_eq!(r.top, at(2, "abcdefgh"));
        }
    }

    #[test]
    fn offset_older_than_history_is_not_recovered() {
        let mut s = stream(2, 60);
        let now = Instant::now();
        for i in 1..=5 {
            s.append(i, now);
        }
        // History holds 4 and 5; a client at 2 missed 3.
        let r = s.since(Some(&at(2, "abcdefgh")), 300, now);
        assert!(!r.recovered);
        assert!(!r.capped, "the cap did not stop it: the history did");
        assert!(r.publications.is_empty());
        let r = s.since(Some(&at(3, "abcdefgh")), 300, now);
        assert!(r.recovered);
        assert_eq!(offsets(&r), vec![4, 5]);
    }

    #[test]
    fn limit_cut_is_capped_and_not_recovered() {
        let mut s = stream(100, 60);
        let now = Instant::now();
        for i in 1..=10 {
            s.append(i, now);
        }
        let r = s.since(Some(&at(5, "abcdefgh")), 4, now);
        assert!(r.capped);
        assert!(!r.recovered);
        assert!(r.publications.is_empty());
        // Exactly at the limit: fits.
        let r = s.since(Some(&at(5, "abcdefgh")), 5, now);
        assert!(!r.capped);
        assert!(r.recovered);
        assert_eq!(offsets(&r), vec![6, 7, 8, 9, 10]);
        // Limit 0 still recovers a client that missed nothing.
        let r = s.since(Some(&at(10, "abcdefgh")), 0, now);
        assert!(r.recovered);
        assert!(!r.capped);
    }

    #[test]
    fn offset_beyond_top_is_not_recovered() {
        let mut s = stream(100, 60);
        let now = Instant::now();
        s.append(1, now);
        for offset in [2, 100, u64::MAX] {
            let r = s.since(Some(&at(offset, "abcdefgh")), 300, now);
            assert!(!r.recovered, "offset {offset}");
            assert!(r.publications.is_empty());
        }
    }

    #[test]
    fn history_off_advances_offsets_and_recovers_only_at_top() {
        for off in [limits(0, 60), limits(100, 0), HistoryLimits::OFF] {
            assert!(!off.enabled());
            let mut s: TopicStream<u32> = TopicStream::with_epoch("abcdefgh".into(), off);
            let now = Instant::now();
            for i in 1..=3 {
                assert_eq!(s.append(i, now).offset, u64::from(i));
            }
            assert_eq!(s.history_len(), 0);
            assert!(s.since(Some(&at(3, "abcdefgh")), 300, now).recovered);
            let r = s.since(Some(&at(2, "abcdefgh")), 300, now);
            assert!(!r.recovered);
            assert!(r.publications.is_empty());
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append,
        Wait(u64),
        Trim,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Append),
            1 => (0u64..20).prop_map(Op::Wait),
            1 => Just(Op::Trim),
        ]
    }

    proptest! {
        #[test]
        fn offsets_contiguous_and_since_never_has_a_gap(
            ops in proptest::collection::vec(op(), 0..80),
            size in 0usize..12,
            ttl in 0u64..30,
            from in 0u64..90,
            limit in 0usize..20,
        ) {
            let mut s: TopicStream<u64> = TopicStream::with_epoch("abcdefgh".into(), limits(size, ttl));
            let mut now = Instant::now();
            let mut appended = 0u64;
            for op in ops {
                match op {
                    Op::Append => {
                        appended += 1;
                        let pos = s.append(appended, now);
                        prop_assert_eq!(pos.offset, appended);
                    }
                    Op::Wait(secs) => now += Duration::from_secs(secs),
                    Op::Trim => s.trim(now),
                }
                prop_assert!(s.history_len() <= size);
                let held: Vec<u64> = s.history.iter().map(|(o, _, _)| *o).collect();
                let expected: Vec<u64> = (appended + 1 - held.len() as u64..=appended).collect();
                prop_assert_eq!(held, expected, "the history is contiguous and ends at the top");
            }
            let r = s.since(Some(&at(from, "abcdefgh")), limit, now);
            prop_assert_eq!(r.top.offset, appended);
            if r.recovered {
                let got = offsets(&r);
                prop_assert_eq!(got.clone(), (from + 1..=appended).collect::<Vec<_>>());
                prop_assert!(got.len() <= limit);
                for (offset, item) in &r.publications {
                    prop_assert_eq!(*offset, **item, "each offset with its own item");
                }
            } else {
                prop_assert!(r.publications.is_empty());
            }
            if r.capped {
                prop_assert!(!r.recovered);
                prop_assert!(appended - from > limit as u64);
            }
        }
    }
}
