//! `UringStream` over real sockets on 127.0.0.1: reads, writes, end of stream, receive
//! buffers running out, slow readers, tasks that move between workers, the idle hook.
#![cfg(target_os = "linux")]

mod common;

use common::{pair, pairs, runtime, with_hook};
use switchboard_uring::UringStream;
use tokio::io::AsyncRead;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// More than 256 KiB written at once waits for sends (the write limit), all of it arrives
/// in order, and shutdown completes only after the last byte is sent.
#[test]
fn large_writes_arrive_whole_and_shutdown_waits_for_them() {
    with_hook(1, async {
        let (mut ours, mut peer) = pair().await;
        let data: Vec<u8> = (0..(8 << 20)).map(|i: u32| (i % 253) as u8).collect();
        let expect = data.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        ours.write_all(&data).await.unwrap();
        ours.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ");
    });
}

/// The peer's close reads as end of stream; dropping our end (with a receive queued)
/// closes the socket, which the peer reads as end of stream too.
#[test]
fn end_of_stream_both_ways() {
    with_hook(1, async {
        let (mut ours, peer) = pair().await;
        drop(peer);
        let mut buf = [0u8; 16];
        assert_eq!(ours.read(&mut buf).await.unwrap(), 0);

        let (mut ours, mut peer) = pair().await;
        // Queue a receive, then drop the stream while it waits.
        let read = tokio::time::timeout(std::time::Duration::from_millis(50), ours.read(&mut buf));
        assert!(
            read.await.is_err(),
            "nothing was sent, so the read must wait"
        );
        ours.write_all(b"last words").await.unwrap();
        drop(ours);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
    });
}

/// More streams with unread data than the ring has receive buffers (2,048): the receives
/// that find none wait for buffers to come back, and every stream still gets its bytes.
#[test]
fn more_pending_receives_than_buffers() {
    with_hook(1, async {
        let mut pairs = pairs(2300).await;
        // Each of ours queues a receive (one poll), then every peer sends.
        for (ours, _) in &mut pairs {
            std::future::poll_fn(|cx| {
                let mut b = [0u8; 1];
                let mut rb = tokio::io::ReadBuf::new(&mut b);
                let r = std::pin::Pin::new(&mut *ours).poll_read(cx, &mut rb);
                assert!(r.is_pending(), "nothing was sent yet");
                std::task::Poll::Ready(())
            })
            .await;
        }
        for (i, (_, peer)) in pairs.iter_mut().enumerate() {
            peer.write_all(format!("stream {i}").as_bytes())
                .await
                .unwrap();
        }
        // Let every receive complete (or find no buffer) before reading any.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        for (i, (ours, _)) in pairs.iter_mut().enumerate() {
            let want = format!("stream {i}");
            let mut got = vec![0u8; want.len()];
            ours.read_exact(&mut got).await.unwrap();
            assert_eq!(got, want.as_bytes());
        }
    });
}

/// A reader that falls behind: its receive stops after a few buffers (it does not take the
/// ring's buffers from everyone else) and starts again as it reads; every byte arrives in
/// order.
#[test]
fn a_slow_reader_gets_everything_in_order() {
    with_hook(1, async {
        let (mut ours, mut peer) = pair().await;
        let data: Vec<u8> = (0..(4 << 20)).map(|i: u32| (i % 249) as u8).collect();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            peer.write_all(&data).await.unwrap();
            peer.shutdown().await.unwrap();
        });
        // Arm the receive, then read nothing for a while.
        let mut first = [0u8; 1];
        ours.read_exact(&mut first).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut got = first.to_vec();
        ours.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ");
    });
}

/// Tasks move between workers (a task woken in one worker's park hook may run on the
/// other), and the workers sleep between messages: a completion on one worker's ring must
/// still wake its task when that worker sleeps and the task runs elsewhere. Each client is
/// a plain thread with blocking sockets, so it keeps no worker busy; a stall fails the read
/// timeout.
#[test]
fn completions_reach_tasks_that_moved_while_the_ring_owner_sleeps() {
    let rt = runtime(2);
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut s = UringStream::from_tokio(tcp).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    s.write_all(&buf[..n]).await.unwrap();
                }
            });
        }
    });
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut tcp = std::net::TcpStream::connect(addr).unwrap();
                tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                tcp.set_nodelay(true).unwrap();
                let mut got = vec![0u8; 40_000];
                for i in 0..400u64 {
                    let len = [1usize, 100, 3000, 40_000][(i % 4) as usize];
                    let msg: Vec<u8> = (0..len).map(|j| (j as u64 + i + c) as u8).collect();
                    tcp.write_all(&msg).unwrap();
                    tcp.read_exact(&mut got[..len])
                        .unwrap_or_else(|e| panic!("client {c}, message {i}: {e}"));
                    assert!(got[..len] == msg[..], "client {c}, message {i} differs");
                    // Let the workers park now and then.
                    if i % 3 == 0 {
                        std::thread::sleep(std::time::Duration::from_micros(300 + 97 * (i % 7)));
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// Calls of the hook set by [`the_idle_hook_runs_once_the_ring_goes_idle`] (from any ring
/// of this test binary).
static IDLE_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Every peer writes, then every stream reads what its peer wrote.
async fn burst(pairs: &mut [(UringStream, TcpStream)]) {
    for (_, peer) in pairs.iter_mut() {
        peer.write_all(b"burst").await.unwrap();
    }
    for (ours, _) in pairs.iter_mut() {
        let mut got = [0u8; 5];
        ours.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"burst");
    }
}

fn count_idle() {
    IDLE_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// A burst that cycles more receive buffers than the ring keeps when idle, then quiet: the
/// ring frees the cold buffers and runs the `on_idle` hook (where `serve` asks the
/// allocator to give the freed memory back).
#[test]
fn the_idle_hook_runs_once_the_ring_goes_idle() {
    assert!(switchboard_uring::on_idle(count_idle));
    // On a worker: the park hook (which arms the idle timer) runs on workers only.
    with_hook(1, async { tokio::spawn(idle_hook_body()).await.unwrap() });
}

async fn idle_hook_body() {
    let mut pairs = pairs(64).await;
    // The first burst finds the kernel's ring short of buffers, so the ring hands it
    // every buffer; the quiet rounds after shrink what it tops up to again; the second
    // burst then leaves its buffers with the ring, free: more than it keeps when idle.
    burst(&mut pairs).await;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    burst(&mut pairs).await;
    // The ring waits 500 ms with nothing received before it calls the thread idle.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while IDLE_CALLS.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle hook did not run within 10 s of the burst"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
