//! Measures the heap a connection with permessage-deflate holds after it has sent and
//! received one compressed message, for each window size, with and without context takeover.
//!
//! ```sh
//! cargo run --release -p switchboard-proto --example deflate_memory
//! ```
#![allow(unsafe_code)] // a counting global allocator needs it; measurement-only code

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use switchboard_proto::extension::{DeflateConfig, DeflateParams};
use switchboard_proto::{Config, Connection, Event, Message, Role};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

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
    let before = LIVE.load(Ordering::Relaxed);
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
    let after = LIVE.load(Ordering::Relaxed);
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
