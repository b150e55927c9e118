//! The counting allocator counts what it should: allocations, live and peak bytes, live
//! blocks by size, and one thread's allocations apart from the others'.

use std::hint::black_box;
use std::sync::Mutex;

use switchboard_testkit::alloc::{self, CountingAllocator, ThreadCount, SMALL_SIZES};

#[global_allocator]
static A: CountingAllocator = CountingAllocator;

/// The counters are process-wide: one measurement at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Whether `bytes` is `expected`, give or take what the test harness's other threads may
/// allocate or free meanwhile (small blocks).
fn about(bytes: isize, expected: isize) -> bool {
    (bytes - expected).abs() < 16 * 1024
}

#[test]
fn counts_allocations_and_reallocations() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = alloc::allocations();
    let mut v = black_box(Vec::<u8>::with_capacity(10));
    v.reserve_exact(1000);
    drop(black_box(v));
    assert!(alloc::allocations() - before >= 2);
}

#[test]
fn live_and_peak_bytes_follow_the_blocks_held() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let base = alloc::reset_peak();
    let mut v = black_box(Vec::<u8>::with_capacity(100_000));
    let live = alloc::live_bytes() - base;
    assert!(about(live, 100_000), "live {live}");
    // A realloc counts as copying: both blocks are live at the peak.
    v.reserve_exact(200_000);
    assert!(about(alloc::live_bytes() - base, 200_000));
    let peak = alloc::peak_bytes() - base;
    assert!(about(peak, 300_000), "peak {peak}");
    drop(black_box(v));
    assert!(about(alloc::live_bytes() - base, 0));
}

#[test]
fn live_by_size_counts_small_blocks_and_sums_large_ones() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = alloc::live_by_size();
    let small: Vec<_> = (0..5).map(|_| black_box(Box::new([0u8; 777]))).collect();
    let large = black_box(vec![0u8; SMALL_SIZES + 1]);
    let after = alloc::live_by_size();
    assert_eq!(after.counts[777] - before.counts[777], 5);
    // The second snapshot's own vector is live in it, besides `large`.
    let snapshot = (SMALL_SIZES + 1) * size_of::<isize>();
    assert!(about(
        after.large_bytes - before.large_bytes,
        (SMALL_SIZES + 1 + snapshot) as isize
    ));
    drop((small, large));
}

#[test]
fn a_thread_count_sees_its_thread_only() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let counting = ThreadCount::start();
    let other = std::thread::spawn(|| black_box(vec![0u8; 64]).len());
    let b = black_box(Box::new(7u32));
    let v = black_box(vec![1u8; 100]);
    let seen = counting.stop();
    let _ = other.join();
    drop((b, v));
    // Spawning allocates on this thread too; the box and the vector are among the first.
    assert!(seen.count >= 2, "{seen:?}");
    let again = ThreadCount::start().stop();
    assert_eq!(again.count, 0);
    assert_eq!(again.first_sizes, [0; alloc::FIRST_SIZES]);
}
