//! Measures the heap a connection with permessage-deflate holds after it has sent and
//! received one compressed message, for each window size, with and without context takeover.
//!
//! ```sh
//! cargo run --release -p switchboard-proto --example deflate_memory
//! ```

use switchboard_proto::extension::DeflateConfig;
use switchboard_proto::Message;
use switchboard_testkit::alloc::CountingAllocator;

#[path = "../tests/support/deflate_held.rs"]
mod deflate_held;

#[global_allocator]
static A: CountingAllocator = CountingAllocator;

/// Heap held by one connection after it sent and received one compressed message: a fresh
/// client and server pair is measured together and, being symmetric (each holds one
/// compressor and one inflater), halved.
fn held(bits: u8, no_context: bool, mem_level: u8) -> isize {
    let msg = Message::text(
        r#"{"type":"message","room":"lobby","text":"hello hello hello hello"}"#.repeat(30),
    );
    let deflate = DeflateConfig::default().threshold(0).mem_level(mem_level);
    deflate_held::held_per_connection(deflate_held::params(bits, no_context), deflate, &msg, 1)
}

fn main() {
    // Warm the per-thread pools so their one-off cost is not charged to a connection.
    for bits in 8..=15 {
        held(bits, true, 8);
    }
    println!("| window bits | context takeover, mem level 8 | context takeover, mem level 4 | no context takeover |");
    println!("|---|--:|--:|--:|");
    for bits in (8..=15).rev() {
        println!(
            "| {bits} | {} B | {} B | {} B |",
            held(bits, false, 8),
            held(bits, false, 4),
            held(bits, true, 8)
        );
    }
}
