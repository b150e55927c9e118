//! What the ring's tests share: a runtime with the ring's park hook, and socket pairs.
#![allow(dead_code)] // each test file uses a part

use std::future::Future;

use switchboard_uring::{before_park, UringStream};
use tokio::net::{TcpListener, TcpStream};

/// A runtime that submits ring work before each park, as `serve --io-uring` does.
pub(crate) fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_park(before_park)
        .build()
        .unwrap()
}

/// Runs `f` on a [`runtime`] of `workers` threads.
pub(crate) fn with_hook<F: Future<Output = ()>>(workers: usize, f: F) {
    runtime(workers).block_on(f);
}

/// A pair: our end as a `UringStream`, the peer's as a tokio stream.
pub(crate) async fn pair() -> (UringStream, TcpStream) {
    pairs(1).await.remove(0)
}

/// `n` pairs as [`pair`], accepted on one listener.
pub(crate) async fn pairs(n: usize) -> Vec<(UringStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        pairs.push((
            UringStream::from_tokio(accepted.unwrap().0).unwrap(),
            peer.unwrap(),
        ));
    }
    pairs
}
