//! WebSockets over `UringStream` end to end over real sockets on 127.0.0.1, with and without
//! the park hook: reads take the ring's receive buffers and frames queued by reference go to
//! the ring as they are (the `Transport` of `UringStream`). The ring alone is tested in the
//! switchboard-uring crate.
#![cfg(all(feature = "io-uring", target_os = "linux"))]

use std::future::Future;

use switchboard_tokio::uring::{before_park, UringStream};
use switchboard_tokio::{accept, connect, CloseCode, Config, Event, Message, State};
use tokio::net::TcpListener;

/// Runs `f` on a runtime that submits ring work before each park, as `serve --io-uring` does.
fn with_hook<F: Future<Output = ()>>(workers: usize, f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_park(before_park)
        .build()
        .unwrap()
        .block_on(f);
}

/// An echo server whose accepted streams are `UringStream`s, echoing with [`echo`] or, when
/// `batched`, with [`echo_batched`].
async fn uring_echo_server(batched: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let stream = UringStream::from_tokio(tcp).unwrap();
            if batched {
                tokio::spawn(echo_batched(stream));
            } else {
                tokio::spawn(echo(stream));
            }
        }
    });
    addr
}

/// As [`echo`], the way `serve`'s `/echo` does it: replies are queued, and written in one
/// batch before the next read waits (large ones by reference).
async fn echo_batched(stream: UringStream) {
    let mut ws = accept(stream, Config::default()).await.unwrap();
    loop {
        match std::future::poll_fn(|cx| ws.poll_next_event(cx)).await {
            Ok(Some(Event::Message(m))) => ws.feed(&m).unwrap(),
            Ok(Some(Event::Close(_))) => {
                let _ = ws.finish().await;
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Accepts a WebSocket on `stream` and echoes its messages until the peer closes.
async fn echo(stream: UringStream) {
    let mut ws = accept(stream, Config::default()).await.unwrap();
    while let Ok(Some(m)) = ws.recv().await {
        ws.send(&m).await.unwrap();
    }
}

async fn echo_round_trips() {
    round_trips(uring_echo_server(false).await).await;
}

async fn round_trips(addr: std::net::SocketAddr) {
    let (mut ws, _) = connect(&format!("ws://{addr}/")).await.unwrap();
    // Sizes around the 4 KiB receive buffers, the 8 KiB direct sends and the 256 KiB
    // write limit.
    for size in [
        0,
        20,
        1024,
        4090,
        4096,
        8 * 1024,
        16 * 1024 + 1,
        100_000,
        3 << 20,
        8 << 20,
    ] {
        let msg = Message::binary((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        ws.send(&msg).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(msg), "size {size}");
    }
    for i in 0..500 {
        ws.feed(&Message::text(format!("m{i}"))).unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..500 {
        assert_eq!(
            ws.recv().await.unwrap(),
            Some(Message::text(format!("m{i}")))
        );
    }
    ws.close(CloseCode::NORMAL, "bye").await.unwrap();
    assert_eq!(ws.connection().state(), State::Closed);
    // The server closes TCP after the close handshake.
    assert_eq!(ws.recv().await.unwrap(), None);
}

#[test]
fn websocket_echo_with_the_park_hook() {
    with_hook(1, echo_round_trips());
}

#[test]
fn websocket_echo_on_two_workers_with_the_park_hook() {
    with_hook(2, async {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            tasks.push(tokio::spawn(echo_round_trips()));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// The batched echo gets every size back intact: messages within one receive buffer (parsed
/// where the kernel put them, sent by reference), messages spanning many (copied on from
/// the first), and bursts of small ones; on one worker and on two.
#[test]
fn batched_echo_round_trips() {
    with_hook(1, async {
        round_trips(uring_echo_server(true).await).await
    });
    with_hook(2, async {
        let addr = uring_echo_server(true).await;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            tasks.push(tokio::spawn(round_trips(addr)));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Without the hook every operation is submitted as it is queued.
#[tokio::test]
async fn websocket_echo_without_the_park_hook() {
    echo_round_trips().await;
}

/// Connections accepted by a `UringListener` (never registered with tokio's epoll driver)
/// carry a WebSocket echo like any other.
#[test]
fn a_uring_listener_accepts_streams_for_the_ring() {
    with_hook(1, async {
        let listener = switchboard_tokio::uring::UringListener::from_tokio(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
        .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(echo(UringStream::new(tcp).unwrap()));
            }
        });
        for i in 0..3 {
            let (mut ws, _) = connect(&format!("ws://{addr}/")).await.unwrap();
            let msg = Message::text(format!("hello {i}"));
            ws.send(&msg).await.unwrap();
            assert_eq!(ws.recv().await.unwrap(), Some(msg));
            ws.close(CloseCode::NORMAL, "").await.unwrap();
        }
    });
}
