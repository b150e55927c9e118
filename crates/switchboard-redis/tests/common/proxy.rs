//! A TCP proxy in front of Redis that can wedge the pub/sub connections going through it:
//! after [`Proxy::freeze_pubsub`], the connections that had sent a `SUBSCRIBE` stay open
//! but get nothing more from Redis (what a node sees when its pub/sub connection silently
//! stops delivering, Centrifugo #1189). Connections opened later work normally.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; it stops accepting when dropped.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    /// Connections with an id below this that are pub/sub are frozen.
    frozen_below: Arc<AtomicU64>,
    /// The id of the next connection.
    next_id: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream_port`.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let next_id = Arc::new(AtomicU64::new(0));
        let (frozen, ids) = (frozen_below.clone(), next_id.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                let id = ids.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(pump(client, server, id, frozen.clone()));
            }
        });
        Self {
            port,
            frozen_below,
            next_id,
            task,
        }
    }

    /// `redis://127.0.0.1:<proxy port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Wedges every pub/sub connection open now (not the ones opened later).
    pub fn freeze_pubsub(&self) {
        let next = self.next_id.load(Ordering::SeqCst);
        self.frozen_below.store(next, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(client: TcpStream, server: TcpStream, id: u64, frozen_below: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let pubsub = Arc::new(AtomicBool::new(false));
    let seen_subscribe = pubsub.clone();
    let upstream = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if buf[..n]
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
            {
                seen_subscribe.store(true, Ordering::SeqCst);
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if pubsub.load(Ordering::SeqCst) && id < frozen_below.load(Ordering::SeqCst) {
                // Wedged: keep the connection open, deliver nothing more.
                std::future::pending::<()>().await;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // The client closing its side ends the connection, wedged or not.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}
