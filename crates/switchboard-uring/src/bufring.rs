//! The ring of provided receive buffers (`IORING_REGISTER_PBUF_RING`): the kernel picks one
//! per receive; the ring keeps a window of the hottest in the kernel's ring, lends received
//! ones out without copying, and gives cold ones back when the thread goes idle.

use std::io;

use bytes::{Buf, BytesMut};
use io_uring::{types, IoUring};

/// Provided receive buffers per ring (a power of two).
pub(crate) const BUFFERS: u16 = 512;
/// Bytes per provided receive buffer.
pub(crate) const BUFFER_SIZE: usize = 32 * 1024;
/// Receive buffers lent to readers ([`UringStream::poll_read_take`]) that may wait for
/// their views to be dropped; past this the oldest are replaced by new allocations.
///
/// [`UringStream::poll_read_take`]: crate::UringStream::poll_read_take
const LENT_MAX: usize = 64;
/// Free receive buffers kept resident once the thread has received nothing for
/// [`IDLE_AFTER`](crate::ring::IDLE_AFTER) (the hottest; colder ones are given back to the
/// system).
pub(crate) const IDLE_RESIDENT: usize = 16;
/// The fewest receive buffers kept in the kernel's ring (it grows with demand). Small, so
/// few streams receiving large messages cycle through few buffers that stay in cache: at
/// 64, 10 streams of 16 KiB messages cycled through 2 MiB, more than the L2 cache, and the
/// kernel's copy into them cost 50 % more.
const MIN_WINDOW: usize = 16;
/// The buffer group id of the receive buffers.
pub(crate) const GROUP: u16 = 0;

/// A ring of provided receive buffers (`IORING_REGISTER_PBUF_RING`).
pub(crate) struct BufRing {
    /// The entries the kernel reads: page-aligned, `BUFFERS` of them.
    entries: *mut types::BufRingEntry,
    layout: std::alloc::Layout,
    /// The buffers themselves, `BUFFER_SIZE` bytes each, allocated when first handed to
    /// the kernel and freed when cold. The kernel writes a buffer's spare capacity (it
    /// stays empty: what a completion says was received is read through [`get`]
    /// (Self::get), or lent by [`lend`](Self::lend), which moves the bytes out). A
    /// buffer's allocation does not move while the kernel may write it.
    homes: Vec<BytesMut>,
    /// Buffers lent out with their bytes ([`lend`](Self::lend)): each comes back to the
    /// stack once the views into it are gone ([`reclaim`](Self::reclaim)).
    lent: Vec<u16>,
    /// Touched buffers on the stack.
    pub(crate) resident: usize,
    /// Buffers the kernel ever filled (the idle timer compares it).
    pub(crate) taken_total: u64,
    tail: u16,
    /// Buffers read since the last top-up, most recently freed last, so the hottest go
    /// back to the kernel first.
    stack: Vec<u16>,
    /// Buffers handed to the kernel since starved receives were last armed again.
    pub(crate) handed: usize,
    /// Buffers in the kernel's ring: handed over and not yet seen in a completion (so
    /// never fewer than the kernel really has).
    in_ring: usize,
    /// How many buffers to keep in the kernel's ring (see [`adapt`](Self::adapt)).
    window: usize,
    /// Buffers the kernel filled since the last [`adapt`](Self::adapt).
    taken: usize,
}

// SAFETY: the raw pointer is owned memory, only touched under the ring's mutex.
unsafe impl Send for BufRing {}

impl BufRing {
    pub(crate) fn new(uring: &IoUring) -> io::Result<Self> {
        let layout = std::alloc::Layout::from_size_align(
            usize::from(BUFFERS) * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        // SAFETY: a non-zero size; checked for null below.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<types::BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut ring = Self {
            entries,
            layout,
            homes: std::iter::repeat_with(BytesMut::new)
                .take(usize::from(BUFFERS))
                .collect(),
            lent: Vec::new(),
            resident: 0,
            taken_total: 0,
            tail: 0,
            stack: (0..BUFFERS).rev().collect(),
            handed: 0,
            in_ring: 0,
            window: MIN_WINDOW,
            taken: 0,
        };
        // SAFETY: the entries stay allocated until the ring (dropped first) is gone.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(entries as u64, BUFFERS, GROUP, 0)?;
        }
        ring.top_up();
        Ok(ring)
    }

    /// The first `end` bytes of buffer `bid`, which a completion said the kernel wrote
    /// (and it writes a buffer only while the buffer is in its ring, which one named by a
    /// completion is not until it is recycled).
    pub(crate) fn get(&self, bid: u16, end: usize) -> &[u8] {
        let home = &self.homes[usize::from(bid % BUFFERS)];
        let end = end.min(home.capacity());
        // SAFETY: inside the allocation (at most its capacity), and written by the kernel.
        unsafe { std::slice::from_raw_parts(home.as_ptr(), end) }
    }

    /// Moves bytes `start..end` of buffer `bid` (received, see [`get`](Self::get)) out
    /// as a buffer of their own, without copying: a view into the buffer's allocation. The
    /// buffer comes back once every view into it is gone ([`reclaim`](Self::reclaim)).
    pub(crate) fn lend(&mut self, bid: u16, start: usize, end: usize) -> BytesMut {
        let home = &mut self.homes[usize::from(bid % BUFFERS)];
        let end = end.min(home.capacity());
        // SAFETY: the kernel wrote these bytes (the completion said so) and is done with
        // the buffer; the length stays within the capacity.
        unsafe { home.set_len(end) };
        let mut bytes = home.split_to(end);
        bytes.advance(start.min(end));
        self.lent.push(bid);
        bytes
    }

    /// Lent buffers whose views are all gone go back on the stack, rewound to their whole
    /// allocation. One still held after [`LENT_MAX`] others were lent is replaced by a
    /// new allocation (its memory stays with whoever holds the view).
    pub(crate) fn reclaim(&mut self) {
        let mut k = 0;
        while k < self.lent.len() {
            let bid = self.lent[k];
            let home = &mut self.homes[usize::from(bid)];
            if home.try_reclaim(BUFFER_SIZE) {
                self.lent.swap_remove(k);
                self.recycle(bid);
            } else if self.lent.len() > LENT_MAX {
                *home = BytesMut::new();
                self.lent.swap_remove(k);
                self.stack.push(bid);
            } else {
                k += 1;
            }
        }
    }

    /// Buffer `bid` was read: it goes back on the stack.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.stack.push(bid);
        self.resident += 1;
    }

    /// Gives back the pages of the coldest free buffers (the bottom of the stack) while
    /// more than `keep` free buffers are resident, so a burst of connections or traffic
    /// does not stay in the memory of a server that went quiet.
    pub(crate) fn release_cold(&mut self, keep: usize) {
        for k in 0..self.stack.len() {
            if self.resident <= keep {
                return;
            }
            let bid = usize::from(self.stack[k]);
            if self.homes[bid].capacity() > 0 {
                // A free buffer (on the stack: neither the kernel's nor a reader's).
                self.homes[bid] = BytesMut::new();
                self.resident -= 1;
            }
        }
    }

    /// The kernel filled a buffer (a receive completed with data).
    pub(crate) fn taken(&mut self) {
        self.in_ring = self.in_ring.saturating_sub(1);
        self.taken += 1;
        self.taken_total += 1;
    }

    /// A receive found the kernel's ring empty: hand over every free buffer until the
    /// rounds show fewer are needed.
    pub(crate) fn starved(&mut self) {
        self.window = usize::from(BUFFERS);
    }

    /// Once per scheduler round: sizes the window to what the last round took (twice that,
    /// at least [`MIN_WINDOW`]), growing at once and shrinking by an eighth of the excess;
    /// not shrinking while receives wait for buffers.
    pub(crate) fn adapt(&mut self, starving: bool) {
        let want = (2 * self.taken).clamp(MIN_WINDOW, usize::from(BUFFERS));
        self.taken = 0;
        if starving {
            // Receives still wait for buffers: keep handing over all there are.
        } else if want >= self.window {
            self.window = want;
        } else {
            self.window -= (self.window - want).div_ceil(8);
        }
    }

    /// Hands free buffers to the kernel, the most recently freed (hottest) first, until the
    /// kernel's ring holds `window` of them. The kernel takes buffers in the order they
    /// were handed over, so a short ring keeps receives in memory that is still cached;
    /// handing over every free buffer would cycle them through all `BUFFERS`.
    pub(crate) fn top_up(&mut self) {
        if self.in_ring >= self.window {
            return;
        }
        let before = self.in_ring;
        while self.in_ring < self.window {
            let Some(bid) = self.stack.pop() else {
                break;
            };
            self.in_ring += 1;
            self.handed += 1;
            let home = &mut self.homes[usize::from(bid)];
            if home.capacity() >= BUFFER_SIZE {
                self.resident -= 1;
            } else {
                *home = BytesMut::with_capacity(BUFFER_SIZE);
                // Make the buffer shared now, with its allocation: the first `lend` of a
                // fresh `BytesMut` would otherwise allocate its 40-byte shared header then,
                // on a message (seen as one allocation in 4,000 echoes when a buffer handed
                // over during warm-up was first filled later).
                drop(home.split_to(0));
            }
            let idx = usize::from(self.tail & (BUFFERS - 1));
            // The kernel writes from the start of the (empty) buffer's capacity.
            let addr = home.as_mut_ptr() as u64;
            // SAFETY: `idx < BUFFERS`, inside the allocation.
            let entry = unsafe { &mut *self.entries.add(idx) };
            entry.set_addr(addr);
            entry.set_len(BUFFER_SIZE as u32);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
        }
        if self.in_ring == before {
            return;
        }
        // SAFETY: the tail field lives in the first entry; the kernel reads it with acquire.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries).cast_mut();
            std::sync::atomic::AtomicU16::from_ptr(tail)
                .store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring was dropped before us, so
        // the kernel no longer uses it (nor the buffers, freed after this).
        unsafe {
            std::alloc::dealloc(self.entries.cast(), self.layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (IoUring, BufRing) {
        let uring = IoUring::builder().build(8).unwrap();
        let bufs = BufRing::new(&uring).unwrap();
        (uring, bufs)
    }

    /// The kernel's ring is kept at the window, not every free buffer: hot buffers are
    /// reused, and a round that took many grows it (and starving fills it).
    #[test]
    fn the_kernel_ring_holds_the_window_and_grows_with_demand() {
        let (_uring, mut b) = ring();
        assert_eq!(b.in_ring, MIN_WINDOW);
        // The kernel fills 100 buffers in one round.
        for _ in 0..100 {
            b.taken();
        }
        b.adapt(false);
        assert_eq!(b.window, 200);
        b.top_up();
        assert_eq!(b.in_ring, 200);
        // Quiet rounds shrink it gradually, never below the minimum.
        for _ in 0..200 {
            b.adapt(false);
        }
        assert_eq!(b.window, MIN_WINDOW);
        b.starved();
        b.top_up();
        assert!(b.stack.is_empty(), "starving hands over every free buffer");
    }

    /// Releasing frees the coldest free buffers and keeps the most recently used; a
    /// round of traffic keeps them all.
    #[test]
    fn cold_buffers_are_released_when_the_thread_goes_idle() {
        let (_uring, mut b) = ring();
        // Take 100 buffers out as the kernel would fill them, then read them back
        // (recycle), coldest first.
        let bids: Vec<u16> = (0..100).map(|_| b.stack.pop().unwrap()).collect();
        for &bid in &bids {
            b.homes[usize::from(bid)] = BytesMut::with_capacity(BUFFER_SIZE);
        }
        for &bid in &bids {
            b.recycle(bid);
        }
        assert_eq!(b.resident, 100);
        b.adapt(false);
        assert_eq!(b.resident, 100, "a round releases nothing");
        b.release_cold(IDLE_RESIDENT);
        assert_eq!(b.resident, IDLE_RESIDENT);
        let held = |b: &BufRing, bid: u16| b.homes[usize::from(bid)].capacity();
        for &bid in &bids[..100 - IDLE_RESIDENT] {
            assert_eq!(held(&b, bid), 0, "buffer {bid} was released");
        }
        for &bid in &bids[100 - IDLE_RESIDENT..] {
            assert!(
                held(&b, bid) >= BUFFER_SIZE,
                "buffer {bid} is among the hottest, kept"
            );
        }
    }

    /// A lent buffer comes back, whole, once its views are gone, and not before; one held
    /// too long is replaced by new memory while its view stays intact.
    #[test]
    fn lent_buffers_come_back_when_their_views_are_dropped() {
        let (_uring, mut b) = ring();
        let bid = b.stack.pop().unwrap();
        let home = &mut b.homes[usize::from(bid)];
        *home = BytesMut::with_capacity(BUFFER_SIZE);
        let base = home.as_ptr();
        // SAFETY: (test) as the kernel would, write into the empty buffer's capacity.
        unsafe { std::ptr::copy_nonoverlapping(b"xxhello".as_ptr(), home.as_mut_ptr(), 7) };
        let mut view = b.lend(bid, 2, 7);
        assert_eq!(&view[..], b"hello");
        let payload = view.split_to(5).freeze();
        drop(view);
        b.reclaim();
        assert!(!b.stack.contains(&bid), "still viewed by the payload");
        drop(payload);
        b.reclaim();
        assert_eq!(b.stack.last(), Some(&bid));
        assert!(b.lent.is_empty());
        let home = &b.homes[usize::from(bid)];
        assert_eq!(
            (home.as_ptr(), home.len()),
            (base, 0),
            "rewound to its start"
        );
        assert!(home.capacity() >= BUFFER_SIZE);

        // Held views: past LENT_MAX the buffers are replaced, the views keep their bytes.
        let mut views = Vec::new();
        for _ in 0..=LENT_MAX {
            let bid = b.stack.pop().unwrap();
            b.homes[usize::from(bid)] = BytesMut::with_capacity(BUFFER_SIZE);
            // SAFETY: (test) as above.
            unsafe { *b.homes[usize::from(bid)].as_mut_ptr() = 7 };
            views.push(b.lend(bid, 0, 1));
        }
        b.reclaim();
        assert!(b.lent.len() <= LENT_MAX);
        assert!(views.iter().all(|v| v[..] == [7]));
    }
}
