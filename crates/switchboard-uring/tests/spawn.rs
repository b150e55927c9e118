//! `uring::spawn`: futures polled by the thread's ring, on a runtime with the park hook.
#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::runtime;
use switchboard_uring::{before_park, spawn, UringStream};

/// A timer fires inside tokio's park, where the park hook does not run again: the wake must
/// poke the ring, or the task would wait forever on an otherwise idle runtime.
#[test]
fn a_timer_wakes_a_ring_task_on_an_idle_runtime() {
    runtime(1).block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(());
        })
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the ring task never woke after its timer")
            .unwrap();
    });
}

/// A ring task still pending when the runtime shuts down is dropped, as tokio drops its own.
#[test]
fn pending_ring_tasks_are_dropped_with_the_runtime() {
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let rt = runtime(1);
    let flag = Flag(Arc::clone(&dropped));
    rt.block_on(async {
        // The task holds a stream on the ring, and the ring holds the task: a cycle that
        // outlives the thread's own reference to the ring unless the shutdown breaks it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        spawn(async move {
            let _flag = flag;
            let _stream = UringStream::new(server).unwrap();
            std::future::pending::<()>().await;
        })
        .unwrap();
        drop(client);
        tokio::time::sleep(Duration::from_millis(20)).await;
    });
    drop(rt);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the pending ring task was leaked"
    );
}

/// A ring task that is always ready (it wakes itself at every poll) must not keep the
/// thread from its tokio tasks: a run polls tasks up to a budget, then lets the runtime go
/// on. On one thread, a tokio task woken by the ring task's first poll runs long before the
/// ring task has used up its polls.
#[test]
fn a_busy_ring_task_lets_tokio_tasks_run() {
    const POLLS: usize = 100_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(before_park)
        .build()
        .unwrap();
    let seen = rt.block_on(async {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let counted = Arc::clone(&polls);
        let mut started_tx = Some(started_tx);
        spawn(std::future::poll_fn(move |cx| {
            if let Some(tx) = started_tx.take() {
                let _ = tx.send(());
            }
            if counted.fetch_add(1, Ordering::SeqCst) + 1 >= POLLS {
                return std::task::Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }))
        .unwrap();
        let watcher = tokio::spawn(async move {
            started_rx.await.unwrap();
            polls.load(Ordering::SeqCst)
        });
        tokio::time::timeout(Duration::from_secs(30), watcher)
            .await
            .expect("the tokio task never ran")
            .unwrap()
    });
    assert!(
        seen < POLLS / 2,
        "the tokio task ran only after {seen} polls of the busy ring task"
    );
}
