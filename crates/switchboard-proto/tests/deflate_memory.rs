//! The memory a connection with permessage-deflate holds, as stated in docs/deflate.md:
//! without context takeover it keeps no zlib state between messages; with context takeover
//! at window 15 it holds one compressor and one inflater (~430 KB), less at smaller windows.
//! Counted with a global allocator.

use switchboard_proto::extension::DeflateConfig;
use switchboard_proto::Message;
use switchboard_testkit::alloc::CountingAllocator;

#[path = "support/deflate_held.rs"]
mod deflate_held;

#[global_allocator]
static A: CountingAllocator = CountingAllocator;

/// Heap held per connection after a pair exchanged compressed messages both ways.
fn held_per_connection(bits: u8, no_context: bool) -> isize {
    let msg = Message::text(r#"{"type":"message","text":"hello hello hello hello"}"#.repeat(30));
    let deflate = DeflateConfig::default().threshold(0);
    deflate_held::held_per_connection(deflate_held::params(bits, no_context), deflate, &msg, 3)
}

// One test function: the counter is process-wide, so the measurements must not overlap.
#[test]
fn memory_per_connection_with_deflate() {
    // Warm the per-thread pools (shared no-context streams, scratch buffer) first.
    held_per_connection(15, true);
    let no_context = held_per_connection(15, true);
    assert!(
        no_context < 2048,
        "no context takeover holds {no_context} B per connection"
    );
    let w15 = held_per_connection(15, false);
    assert!(
        (300_000..=450_000).contains(&w15),
        "window 15 holds {w15} B"
    );
    let w9 = held_per_connection(9, false);
    assert!(
        w9 < w15,
        "window 9 ({w9} B) must hold less than window 15 ({w15} B)"
    );
}
