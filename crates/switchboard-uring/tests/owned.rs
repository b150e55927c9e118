//! Owned sends (`UringStream::poll_send_owned`): runs held by reference, not copied, in
//! order with copied writes, let go once sent, bounded by the write limit.
#![cfg(target_os = "linux")]

mod common;

use std::future::poll_fn;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use common::{pair, with_hook};
use switchboard_uring::UringStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Sends `runs` as a transport does: by reference while the ring takes them, copied with
/// `write_all` when it takes none (copied bytes wait, which go first).
async fn send_all(ours: &mut UringStream, runs: &[Bytes]) {
    let mut it = runs.iter().cloned().peekable();
    while it.peek().is_some() {
        let n = poll_fn(|cx| ours.poll_send_owned(cx, &mut it))
            .await
            .unwrap();
        if n == 0 {
            if let Some(run) = it.next() {
                ours.write_all(&run).await.unwrap();
            }
        }
    }
}

/// Short and long runs, a header joined to its payload (one run of memory), copied writes
/// between them, and runs of several MiB (sent in parts): everything arrives in order, and
/// every run is let go once sent.
#[test]
fn owned_runs_and_copied_writes_arrive_in_order() {
    with_hook(1, async {
        let (mut ours, mut peer) = pair().await;
        // A header written just before its payload, in one buffer.
        let mut joined = BytesMut::from(&pattern(4 + 40_000, 9)[..]);
        let head = joined.split_to(4).freeze();
        let payload = joined.freeze();
        let runs = vec![
            pattern(10, 1),
            pattern(5_000, 2),
            pattern(3, 3),
            pattern(32, 4),
            pattern(33, 5),
            head,
            payload,
            pattern(3 << 20, 6),
            pattern(1, 7),
        ];
        let more = vec![pattern(70_000, 8), pattern(20, 10)];
        let mut expect = Vec::new();
        for r in &runs {
            expect.extend_from_slice(r);
        }
        expect.extend_from_slice(b"copied in between");
        for r in &more {
            expect.extend_from_slice(r);
        }
        let total = expect.len();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; total];
            peer.read_exact(&mut got).await.unwrap();
            got
        });
        send_all(&mut ours, &runs).await;
        ours.write_all(b"copied in between").await.unwrap();
        // Copied bytes wait (or were just sent): owned runs never overtake them.
        send_all(&mut ours, &more).await;
        ours.flush().await.unwrap();
        let got = reader.await.unwrap();
        assert!(got == expect, "bytes differ");
        ours.shutdown().await.unwrap();
        // Every run was let go once sent (the shutdown waited for the last send). The
        // header and its payload share one buffer: each is checked alone.
        let mut all: Vec<Bytes> = runs.into_iter().chain(more).collect();
        while let Some(r) = all.pop() {
            let len = r.len();
            let shares = all.iter().any(|o| o.as_ptr_range().end == r.as_ptr());
            assert!(
                shares || r.is_unique(),
                "a run of {len} bytes is still held after it was sent"
            );
        }
    });
}

/// Runs go out by reference: while the peer reads nothing, the ring still holds the one
/// that did not fit the socket (a copy would have let it go), and past the 256 KiB write
/// limit `poll_send_owned` waits. Once the peer reads, all of it arrives and is let go.
#[test]
fn runs_are_held_until_sent_and_bounded_by_the_write_limit() {
    with_hook(1, async {
        let (mut ours, mut peer) = pair().await;
        // Larger than what the kernel's socket buffers take before the peer reads.
        let frame = pattern(16 << 20, 3);
        let mut it = std::iter::once(frame.clone());
        let r = poll_fn(|cx| Poll::Ready(ours.poll_send_owned(cx, &mut it))).await;
        assert!(matches!(r, Poll::Ready(Ok(1))), "{r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !frame.is_unique(),
            "the frame was let go before the peer read it: copied, not held"
        );
        // 16 MiB wait: more runs wait for the sends.
        let next = pattern(100, 4);
        let mut it = std::iter::once(next.clone());
        let r = poll_fn(|cx| Poll::Ready(ours.poll_send_owned(cx, &mut it))).await;
        assert!(r.is_pending(), "{r:?}");
        assert_eq!(it.next(), Some(next.clone()), "a run it did not take");
        let total = frame.len() + next.len();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; total];
            peer.read_exact(&mut got).await.unwrap();
            got
        });
        send_all(&mut ours, std::slice::from_ref(&next)).await;
        ours.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert!(got[..frame.len()] == frame[..], "the frame differs");
        assert!(got[frame.len()..] == next[..], "the run after it differs");
        assert!(frame.is_unique(), "the frame is still held once sent");
    });
}
