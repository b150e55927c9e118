//! A counting global allocator, for the tests that count allocations or measure heap.
//!
//! [`CountingAllocator`] forwards every call to [`System`] and keeps, on the side:
//!
//! - the number of allocations in the process ([`allocations`]: `alloc` and `realloc` calls),
//!   for the "no allocation per message" tests;
//! - the live heap in bytes and its peak ([`live_bytes`], [`peak_bytes`], [`reset_peak`]), for
//!   the memory-per-connection tests; a `realloc` is counted as copying (the new block is
//!   live before the old one is freed, as with mimalloc, the server's allocator), so a peak
//!   includes both blocks;
//! - the live allocations by exact size up to [`SMALL_SIZES`] bytes and the bytes of larger
//!   ones ([`live_by_size`]), for the idle-heap test's breakdown;
//! - on request, the allocations of one thread only ([`ThreadCount`]), for a test whose other
//!   threads (a client) allocate freely.
//!
//! Each of these is one or two relaxed atomic operations (or a thread-local cell) per call, so
//! the allocator stays cheap enough for load-shaped tests. The counters are process-wide: a test
//! binary installs the allocator once, and its measurements must not overlap (one `#[test]`
//! function, or a lock).
//!
//! ```ignore
//! use switchboard_testkit::alloc::{self, CountingAllocator};
//!
//! #[global_allocator]
//! static A: CountingAllocator = CountingAllocator;
//!
//! let before = alloc::allocations();
//! // ... the code under test ...
//! assert_eq!(alloc::allocations() - before, 0);
//! ```
//!
//! Every reading function checks that the allocator is installed (and panics if not), so a
//! test that forgot the `#[global_allocator]` line fails instead of passing on zero counts.

// A `GlobalAlloc` implementation is `unsafe` by definition; this file is the only one that needs it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};

/// Sizes counted one by one in [`live_by_size`]; larger allocations (tables that grow with a
/// connection count) are summed in bytes.
pub const SMALL_SIZES: usize = 4096;

/// How many sizes [`ThreadAllocations::first_sizes`] keeps.
pub const FIRST_SIZES: usize = 8;
const FIRST_SIZES_U64: u64 = FIRST_SIZES as u64;

/// A global allocator that forwards to [`System`] and counts; see the [module](self) docs.
///
/// Install it with `#[global_allocator] static A: CountingAllocator = CountingAllocator;`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

static INSTALLED: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static LIVE_BY_SIZE: [AtomicIsize; SMALL_SIZES + 1] =
    [const { AtomicIsize::new(0) }; SMALL_SIZES + 1];
static LIVE_LARGE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    // Const-initialized and without destructors: reading them never allocates.
    static THREAD_COUNTING: Cell<bool> = const { Cell::new(false) };
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
    static THREAD_SIZES: Cell<[usize; FIRST_SIZES]> = const { Cell::new([0; FIRST_SIZES]) };
}

/// Counts one allocation of `size` bytes (an `alloc`, or the new block of a `realloc`).
fn allocated(size: usize) {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    live(size, 1);
    if THREAD_COUNTING.try_with(Cell::get).unwrap_or(false) {
        let n = THREAD_ALLOCS.try_with(|a| {
            a.set(a.get() + 1);
            a.get()
        });
        if let Ok(n @ 1..=FIRST_SIZES_U64) = n {
            let _ = THREAD_SIZES.try_with(|s| {
                let mut sizes = s.get();
                sizes[n as usize - 1] = size;
                s.set(sizes);
            });
        }
    }
}

/// Adds (`n` = 1) or removes (`n` = -1) a live block of `size` bytes.
fn live(size: usize, n: isize) {
    let bytes = n * size as isize;
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    if n > 0 {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
    match LIVE_BY_SIZE.get(size) {
        Some(count) => count.fetch_add(n, Ordering::Relaxed),
        None => LIVE_LARGE.fetch_add(bytes, Ordering::Relaxed),
    };
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// `GlobalAlloc` contract; the counting on the side neither allocates nor touches the blocks.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        // SAFETY: the caller's guarantees for `layout` are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        live(layout.size(), -1);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every block here is).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Copying: the new block is live while the old one is still held.
        allocated(new_size);
        // SAFETY: the caller's guarantees for `ptr`, `layout` and `new_size` are passed on.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        live(layout.size(), -1);
        new
    }
}

/// Panics unless [`CountingAllocator`] is the global allocator of this binary.
fn check_installed() {
    if !INSTALLED.load(Ordering::Relaxed) {
        // Nothing may have allocated yet: allocate once and look again.
        drop(std::hint::black_box(Box::new(0u64)));
    }
    assert!(
        INSTALLED.load(Ordering::Relaxed),
        "switchboard_testkit::alloc::CountingAllocator is not the global allocator: add \
         `#[global_allocator] static A: CountingAllocator = CountingAllocator;`"
    );
}

/// Allocations made in the process so far (`alloc` and `realloc` calls; frees do not count).
pub fn allocations() -> u64 {
    check_installed();
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Bytes allocated and not yet freed, in the whole process, since it started.
pub fn live_bytes() -> isize {
    check_installed();
    LIVE.load(Ordering::Relaxed)
}

/// The most [`live_bytes`] have been since the last [`reset_peak`] (or since the start).
pub fn peak_bytes() -> isize {
    check_installed();
    PEAK.load(Ordering::Relaxed)
}

/// Sets the peak to the live bytes now, and returns them: the base of a peak measurement.
pub fn reset_peak() -> isize {
    let base = live_bytes();
    PEAK.store(base, Ordering::Relaxed);
    base
}

/// The live allocations by size: see [`live_by_size`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBySize {
    /// `counts[size]`: live blocks of exactly `size` bytes, for sizes up to [`SMALL_SIZES`].
    pub counts: Vec<isize>,
    /// Bytes in live blocks larger than [`SMALL_SIZES`].
    pub large_bytes: isize,
}

/// The live allocations now: how many blocks of each size up to [`SMALL_SIZES`], and the bytes
/// of larger ones. Taking it allocates the `counts` vector, a large block that `large_bytes`
/// includes (and later snapshots too, while it is alive).
pub fn live_by_size() -> LiveBySize {
    check_installed();
    let counts = LIVE_BY_SIZE
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let large_bytes = LIVE_LARGE.load(Ordering::Relaxed);
    LiveBySize {
        counts,
        large_bytes,
    }
}

/// Counts the allocations of the thread that started it, until it is stopped or dropped.
///
/// Not `Send`: the counting is the current thread's.
#[derive(Debug)]
pub struct ThreadCount {
    _this_thread: PhantomData<*const ()>,
}

/// What a [`ThreadCount`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadAllocations {
    /// Allocations (`alloc` and `realloc` calls) on the thread while it counted.
    pub count: u64,
    /// The sizes of the first [`FIRST_SIZES`] of them (0 past `count`), for failure messages.
    pub first_sizes: [usize; FIRST_SIZES],
}

impl ThreadCount {
    /// Starts counting this thread's allocations, from zero.
    pub fn start() -> Self {
        check_installed();
        THREAD_ALLOCS.with(|a| a.set(0));
        THREAD_SIZES.with(|s| s.set([0; FIRST_SIZES]));
        THREAD_COUNTING.with(|c| c.set(true));
        ThreadCount {
            _this_thread: PhantomData,
        }
    }

    /// Stops counting and returns what was counted.
    pub fn stop(self) -> ThreadAllocations {
        THREAD_COUNTING.with(|c| c.set(false));
        ThreadAllocations {
            count: THREAD_ALLOCS.with(Cell::get),
            first_sizes: THREAD_SIZES.with(Cell::get),
        }
    }
}

impl Drop for ThreadCount {
    fn drop(&mut self) {
        let _ = THREAD_COUNTING.try_with(|c| c.set(false));
    }
}

#[cfg(test)]
mod tests {
    // This test binary does not install the allocator.
    #[test]
    #[should_panic(expected = "is not the global allocator")]
    fn reading_without_the_allocator_installed_panics() {
        super::allocations();
    }
}
