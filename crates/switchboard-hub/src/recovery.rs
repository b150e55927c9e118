//! Whether a client that comes back with its last position gets everything it missed: the
//! all-or-nothing rule of centrifuge's recovery, over what any engine's history returned.

use crate::engine::{HistoryPage, HistoryQuery};
use crate::stream::StreamPosition;

/// What [`decide`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// The page holds exactly every publication after the client's position, up to the
    /// top, in the same epoch: replay them all.
    pub recovered: bool,
    /// The history holds what the client missed, but more of it than the replay cap: nothing
    /// is replayed (the client reloads its state, as after a lost history).
    pub capped: bool,
}

/// The history read a recovery from `from` needs: the publications after its offset, at
/// most `cap` of them (more than `cap` missed is [`capped`](Decision::capped) anyway).
pub fn query(from: &StreamPosition, cap: usize) -> HistoryQuery {
    HistoryQuery {
        since: Some(from.offset),
        limit: cap,
    }
}

/// Decides a recovery from `from` given the `page` read with [`query`]`(from, cap)`.
///
/// Recovered iff the epoch is the same and either the client is at the top, or the page
/// starts right after its offset and holds every publication up to the top (no more than
/// `cap`). Never partial.
///
/// ```
/// use std::sync::Arc;
/// use switchboard_hub::engine::{Body, HistoryPage, Publication};
/// use switchboard_hub::recovery::decide;
/// use switchboard_hub::StreamPosition;
///
/// let at = |offset| StreamPosition { offset, epoch: Arc::from("e1") };
/// let publication = |offset| Publication {
///     topic: Arc::from("news"),
///     position: Some(at(offset)),
///     body: Body { kind: 0, data: "x".into() },
/// };
/// let page = HistoryPage { top: at(3), publications: vec![publication(2), publication(3)] };
/// assert!(decide(&at(1), &page, 300).recovered);
/// // Offset 1 is gone from the history: a client at 0 cannot recover.
/// assert!(!decide(&at(0), &page, 300).recovered);
/// // More missed than the cap: nothing replayed, and it says why.
/// assert!(decide(&at(1), &page, 1).capped);
/// ```
pub fn decide(from: &StreamPosition, page: &HistoryPage, cap: usize) -> Decision {
    let no = Decision::default();
    let top = &page.top;
    if from.epoch != top.epoch || from.offset > top.offset {
        return no;
    }
    if from.offset == top.offset {
        return Decision {
            recovered: true,
            capped: false,
        };
    }
    let first = page
        .publications
        .first()
        .and_then(|p| p.position.as_ref())
        .map(|p| p.offset);
    if first != Some(from.offset + 1) {
        return no;
    }
    let missed = top.offset - from.offset;
    if missed > u64::try_from(cap).unwrap_or(u64::MAX) {
        return Decision {
            recovered: false,
            capped: true,
        };
    }
    // Contiguous from `from + 1`: complete iff it has as many as were missed and ends at top.
    let last = page
        .publications
        .last()
        .and_then(|p| p.position.as_ref())
        .map(|p| p.offset);
    Decision {
        recovered: u64::try_from(page.publications.len()).ok() == Some(missed)
            && last == Some(top.offset),
        capped: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Body, Publication};
    use std::sync::Arc;

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: Arc::from(epoch),
        }
    }

    /// No publications.
    const EMPTY: std::ops::Range<u64> = 1..1;

    fn page(top: u64, offsets: impl Iterator<Item = u64>) -> HistoryPage {
        HistoryPage {
            top: at(top, "e"),
            publications: offsets
                .map(|o| Publication {
                    topic: Arc::from("t"),
                    position: Some(at(o, "e")),
                    body: Body {
                        kind: 0,
                        data: bytes::Bytes::new(),
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn at_the_top_is_recovered_with_nothing() {
        assert!(decide(&at(5, "e"), &page(5, EMPTY), 300).recovered);
    }

    #[test]
    fn another_epoch_or_a_position_beyond_the_top_is_not() {
        assert_eq!(
            decide(&at(5, "x"), &page(5, EMPTY), 300),
            Decision::default()
        );
        assert_eq!(
            decide(&at(6, "e"), &page(5, 1..=5), 300),
            Decision::default()
        );
    }

    #[test]
    fn exactly_what_was_missed_is_recovered() {
        assert!(decide(&at(2, "e"), &page(5, 3..=5), 300).recovered);
    }

    #[test]
    fn a_history_that_no_longer_reaches_back_is_not() {
        assert_eq!(
            decide(&at(2, "e"), &page(5, 4..=5), 300),
            Decision::default()
        );
        assert_eq!(
            decide(&at(2, "e"), &page(5, EMPTY), 300),
            Decision::default()
        );
    }

    #[test]
    fn more_than_the_cap_is_capped_not_partial() {
        let d = decide(&at(2, "e"), &page(9, 3..=5), 3);
        assert_eq!(
            d,
            Decision {
                recovered: false,
                capped: true
            }
        );
    }

    #[test]
    fn a_page_cut_short_is_not_recovered() {
        // The engine returned fewer than were missed (a hole, or a limit below the cap).
        assert!(!decide(&at(2, "e"), &page(6, 3..=5), 300).recovered);
    }
}
