//! The steady-state echo path allocates nothing per message: read buffers come from the pool,
//! received payloads are views into them, replies are encoded into a pooled write buffer.
//!
//! Counted with a global allocator, not timed.

#![allow(unsafe_code)] // a counting global allocator needs it; test-only

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use switchboard_tokio::{Config, Message, Role, WebSocket};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn echo_round_trips_do_not_allocate() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let mut server = WebSocket::from_raw(a, Role::Server, Config::default());
        let mut client = WebSocket::from_raw(b, Role::Client, Config::default());
        let text = Message::text("a chat message of a typical small size, around 64 bytes.");
        let binary = Message::binary(vec![3u8; 1024]);

        let mut round_trip = async |msg: &Message| {
            client.send(msg).await.unwrap();
            let got = server.recv().await.unwrap().unwrap();
            server.send(&got).await.unwrap();
            drop(got);
            let back = client.recv().await.unwrap().unwrap();
            assert_eq!(back.payload().len(), msg.payload().len());
        };
        // Warm up: fill the buffer pools.
        for _ in 0..50 {
            round_trip(&text).await;
            round_trip(&binary).await;
        }
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..1000 {
            round_trip(&text).await;
            round_trip(&binary).await;
        }
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(allocs, 0, "{allocs} allocations in 2000 echo round trips");
    });
}
