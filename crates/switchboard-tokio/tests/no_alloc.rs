//! The steady-state echo path allocates nothing per message: read buffers come from the pool,
//! received payloads are views into them, replies are encoded into a pooled write buffer.
//!
//! Counted with a global allocator, not timed.

use switchboard_testkit::alloc::{self, CountingAllocator};
use switchboard_tokio::{Config, Message, Role, WebSocket};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

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
        let before = alloc::allocations();
        for _ in 0..1000 {
            round_trip(&text).await;
            round_trip(&binary).await;
        }
        let allocs = alloc::allocations() - before;
        assert_eq!(allocs, 0, "{allocs} allocations in 2000 echo round trips");
    });
}
