//! Measures the heap a connection with permessage-deflate holds after it has sent and
//! received one compressed message, for each window size, with and without context takeover.
//!
//! ```sh
//! cargo run --release -p switchboard-proto --example deflate_memory
//! ```

use switchboard_proto::extension::{DeflateConfig, DeflateParams};
use switchboard_proto::{Config, Connection, Event, Message, Role};
use switchboard_testkit::alloc::{self, CountingAllocator};

#[global_allocator]
static A: CountingAllocator = CountingAllocator;

/// Heap held by one connection after it sent and received one compressed message: a fresh
/// client and server pair is measured together and, being symmetric (each holds one
/// compressor and one inflater), halved.
fn held(bits: u8, no_context: bool, mem_level: u8) -> isize {
    let p = DeflateParams {
        server_no_context_takeover: no_context,
        client_no_context_takeover: no_context,
        server_max_window_bits: bits,
        client_max_window_bits: bits,
    };
    let cfg = Config::default().deflate(Some(
        DeflateConfig::default().threshold(0).mem_level(mem_level),
    ));
    let msg = Message::text(
        r#"{"type":"message","room":"lobby","text":"hello hello hello hello"}"#.repeat(30),
    );
    let before = alloc::live_bytes();
    let mut client = Connection::new(Role::Client, cfg).with_deflate(p);
    let mut server = Connection::new(Role::Server, cfg).with_deflate(p);
    client.send(&msg).unwrap();
    server.handle_read(client.pending_transmit());
    let n = client.pending_transmit().len();
    client.advance_transmit(n);
    while let Ok(Some(Event::Message(_))) = server.poll_event() {}
    server.send(&msg).unwrap();
    client.handle_read(server.pending_transmit());
    let n = server.pending_transmit().len();
    server.advance_transmit(n);
    while let Ok(Some(Event::Message(_))) = client.poll_event() {}
    server.release_idle_buffers();
    client.release_idle_buffers();
    let after = alloc::live_bytes();
    std::hint::black_box((&server, &client));
    (after - before) / 2
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
