//! Reusable I/O buffers, so an idle connection holds none and a busy one allocates none.
//!
//! A connection takes a buffer when it has bytes to read or write and gives it back as soon as
//! the buffer is empty (read side: when the socket has nothing more; write side: after a
//! flush). Buffers live in a small per-thread free list: no lock, no allocation in steady
//! state, and an idle connection costs no buffer memory at all. They move boxed, into and
//! out of a connection's buffer slots (one pointer each while empty), so lending one
//! allocates nothing either.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of a pooled buffer.
pub(crate) const BUF_SIZE: usize = 8 * 1024;
/// The largest adaptive read size (a buffer this big is still pooled).
pub(crate) const MAX_READ_SIZE: usize = 32 * 1024;
/// Buffers kept per thread.
const POOL_MAX: usize = 32;
/// Buffers grown past this (by a large message) are freed rather than kept.
const POOL_MAX_CAPACITY: usize = 64 * 1024;

thread_local! {
    // Boxed on purpose: the boxes move into connections' buffer slots and back.
    #[allow(clippy::vec_box)]
    static POOL: RefCell<Vec<Box<BytesMut>>> = const { RefCell::new(Vec::new()) };
    /// Empty boxes (holding no memory), for buffers that move into and out of slots
    /// without one (io_uring's lent receive buffers).
    #[allow(clippy::vec_box)]
    static BOXES: RefCell<Vec<Box<BytesMut>>> = const { RefCell::new(Vec::new()) };
}

/// The least room a pooled buffer has: a buffer is rewound (its consumed front reclaimed)
/// only when its room falls below this, not every time it comes back.
pub(crate) const MIN_ROOM: usize = BUF_SIZE / 2;

/// A buffer with at least [`MIN_ROOM`] bytes free (a fresh one has [`BUF_SIZE`]).
pub(crate) fn take() -> Box<BytesMut> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Box::new(BytesMut::with_capacity(BUF_SIZE)))
}

/// Makes sure `slot` holds a buffer with memory (a pooled one if it has none).
pub(crate) fn fill(slot: &mut Option<Box<BytesMut>>) -> &mut BytesMut {
    match slot {
        Some(b) if b.capacity() == 0 => {
            // Swapped, not replaced: the emptied box is kept for `put`.
            let mut p = take();
            std::mem::swap(&mut **b, &mut *p);
            *p = BytesMut::new();
            keep_box(p);
        }
        Some(_) => {}
        None => *slot = Some(take()),
    }
    slot.get_or_insert_with(take)
}

/// Puts `bytes` (memory of its own, such as a lent receive buffer) in the empty `slot`; a
/// pooled buffer the slot held goes back to the pool. Allocates nothing once warm.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
pub(crate) fn put(slot: &mut Option<Box<BytesMut>>, bytes: BytesMut) {
    match slot {
        Some(b) => {
            let old = std::mem::replace(&mut **b, bytes);
            if old.capacity() > 0 {
                let mut bx = empty_box();
                *bx = old;
                give(bx);
            }
        }
        None => {
            let mut bx = empty_box();
            *bx = bytes;
            *slot = Some(bx);
        }
    }
}

#[cfg(all(feature = "io-uring", target_os = "linux"))]
fn empty_box() -> Box<BytesMut> {
    BOXES
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| Box::new(BytesMut::new()))
}

/// Keeps an empty box (holding no memory) for [`put`].
pub(crate) fn keep_box(b: Box<BytesMut>) {
    BOXES.with(|bs| {
        let mut bs = bs.borrow_mut();
        if bs.len() < POOL_MAX {
            bs.push(b);
        }
    });
}

/// Gives the buffer in `slot` back if it is empty; it then holds none.
pub(crate) fn give_back(slot: &mut Option<Box<BytesMut>>) {
    if slot.as_ref().is_some_and(|b| b.is_empty()) {
        if let Some(b) = slot.take() {
            give(b);
        }
    }
}

/// Returns an empty buffer to the pool. A buffer still shared with a message the
/// application holds, or grown large, is simply dropped.
pub(crate) fn give(mut buf: Box<BytesMut>) {
    if !buf.is_empty() || buf.capacity() == 0 || buf.capacity() > POOL_MAX_CAPACITY {
        return;
    }
    // An empty buffer's capacity is its room. Rewinding costs more than the rest of this
    // function, so it is done only once the room runs low.
    if buf.capacity() < MIN_ROOM && !buf.try_reclaim(BUF_SIZE) {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}
