//! The memory a connection with permessage-deflate holds, as stated in docs/deflate.md:
//! without context takeover it keeps no zlib state between messages; with context takeover
//! at window 15 it holds one compressor and one inflater (~430 KB), less at smaller windows.
//! Counted with a global allocator.

use switchboard_proto::extension::{DeflateConfig, DeflateParams};
use switchboard_proto::{Config, Connection, Event, Message, Role};
use switchboard_testkit::alloc::{self, CountingAllocator};

#[global_allocator]
static A: CountingAllocator = CountingAllocator;

/// Heap held per connection after a pair exchanged compressed messages both ways.
fn held_per_connection(bits: u8, no_context: bool) -> isize {
    let p = DeflateParams {
        server_no_context_takeover: no_context,
        client_no_context_takeover: no_context,
        server_max_window_bits: bits,
        client_max_window_bits: bits,
    };
    let cfg = Config::default().deflate(Some(DeflateConfig::default().threshold(0)));
    let msg = Message::text(r#"{"type":"message","text":"hello hello hello hello"}"#.repeat(30));
    let before = alloc::live_bytes();
    let mut client = Connection::new(Role::Client, cfg).with_deflate(p);
    let mut server = Connection::new(Role::Server, cfg).with_deflate(p);
    for _ in 0..3 {
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
    }
    client.release_idle_buffers();
    server.release_idle_buffers();
    let after = alloc::live_bytes();
    std::hint::black_box((&client, &server));
    (after - before) / 2
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
