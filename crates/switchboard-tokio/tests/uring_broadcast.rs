//! Encode once, copy never: a frame encoded once for many connections
//! ([`encode_shared`], as the hub does for every publish) goes from each WebSocket over
//! io_uring to the ring by reference, not copied into each connection's send buffer.
//!
//! The peers read nothing and the sockets' buffers are small, so the frame cannot be sent
//! whole yet: after the flushes, the frame's memory is still held (by the ring, for every
//! subscriber) if it went by reference, and would be ours alone had it been copied. Once the
//! peers read, every one gets the frame intact and the ring lets it go.
#![cfg(all(feature = "io-uring", feature = "server", target_os = "linux"))]

use std::future::poll_fn;
use std::task::Poll;

use switchboard_tokio::proto::frame::encode_shared;
use switchboard_tokio::uring::{before_park, UringStream};
use switchboard_tokio::{Config, Message, Role, SocketControl, WebSocket};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const SUBSCRIBERS: usize = 4;
/// Larger than what small socket buffers take, smaller than the ring's write limit (a copy
/// would go into the ring's send buffer whole, and the flush complete all the same).
const PAYLOAD: usize = 200 * 1024;

/// Our end as a WebSocket over a `UringStream` with a small send buffer; the peer's as a
/// tokio stream with a small receive buffer, which reads nothing until told.
async fn subscriber(listener: &TcpListener) -> (WebSocket<UringStream>, TcpStream) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let (peer, accepted) = tokio::join!(
        socket.connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let stream = UringStream::from_tokio(accepted.unwrap().0).unwrap();
    stream.set_send_buffer(4096).unwrap();
    let ws = WebSocket::from_raw(stream, Role::Server, Config::default());
    (ws, peer.unwrap())
}

#[test]
fn a_shared_frame_goes_to_every_subscriber_by_reference() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_park(before_park)
        .build()
        .unwrap()
        .block_on(async {
            tokio::spawn(broadcast()).await.unwrap();
        });
}

async fn broadcast() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut subs = Vec::new();
    for _ in 0..SUBSCRIBERS {
        subs.push(subscriber(&listener).await);
    }
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i % 251) as u8).collect();
    let frame = encode_shared(&Message::binary(payload.clone()));
    let bytes = frame.as_bytes().clone();
    for (i, (ws, _)) in subs.iter_mut().enumerate() {
        ws.feed_shared(frame.clone()).unwrap();
        if i % 2 == 0 {
            // As `/chat` and `/ws` do: the next read flushes first (and then waits).
            let r = poll_fn(|cx| Poll::Ready(ws.poll_next_event(cx))).await;
            assert!(r.is_pending(), "nothing to read yet: {r:?}");
        } else {
            ws.flush().await.unwrap();
        }
        assert_eq!(
            ws.connection().queued_transmit(),
            0,
            "all handed to the ring"
        );
    }
    // Ours alone from here, unless the ring holds the frame.
    drop(frame);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        !bytes.is_unique(),
        "after the flushes only we hold the frame: it was copied, not sent by reference"
    );
    let len = bytes.len();
    for (ws, peer) in &mut subs {
        let mut got = vec![0u8; len];
        let (read, sent) = tokio::join!(peer.read_exact(&mut got), ws.flush());
        read.unwrap();
        sent.unwrap();
        assert!(got == bytes[..], "a subscriber got other bytes");
    }
    // Every send completed (the peers read it all): the ring let go of the frame.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !bytes.is_unique() {
        assert!(
            std::time::Instant::now() < deadline,
            "the frame is still held after every subscriber read it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
