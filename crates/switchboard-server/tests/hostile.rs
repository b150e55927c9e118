//! Hostile clients, on both transports: a client that floods and never reads must not
//! freeze anyone else, and a connection the server gives up on must be reset (its kernel
//! buffers freed) and count against the limits until its socket is really closed.
//!
//! These tests read `/proc/net/tcp` to see the server's side of each connection, so they
//! run on Linux only.
#![cfg(target_os = "linux")]

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_proto::Message;
use switchboard_server::{HeartbeatConfig, Limits, ServerConfig};
use switchboard_testkit::server::{raw_handshake, start, ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A raw client with a 4 KiB receive buffer that opens `/echo` and returns the stream
/// once the 101 has arrived (or the status line it got instead).
async fn raw_client(addr: SocketAddr) -> Result<TcpStream, String> {
    raw_client_to(addr, "/echo").await
}

async fn raw_client_to(addr: SocketAddr, path: &str) -> Result<TcpStream, String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let head = raw_handshake(&mut s, path, "").await?;
    let status = head.lines().next().unwrap_or("").to_string();
    if status.contains(" 101 ") {
        Ok(s)
    } else {
        Err(status)
    }
}

/// Sends pings (each earns a pong) as fast as the server takes them and never reads;
/// returns the error that ended it (the server reset or closed the connection).
fn flood(mut s: TcpStream) -> JoinHandle<std::io::Error> {
    // Masked (key 0) pings with 125 bytes of payload, 100 at a time.
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend_from_slice(&[b'x'; 125]);
    let batch = ping.repeat(100);
    tokio::spawn(async move {
        loop {
            if let Err(e) = s.write_all(&batch).await {
                return e;
            }
        }
    })
}

/// The server's side of its connections from `/proc/net/tcp`: (peer port, state,
/// bytes in the send queue), for the server listening on `server_port`.
fn server_sockets(server_port: u16) -> Vec<(u16, u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap_or(""), 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state, queues) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(4)?);
            if port(local)? != server_port || port(remote)? == 0 {
                return None;
            }
            let tx = u64::from_str_radix(queues.split(':').next()?, 16).ok()?;
            Some((port(remote)?, u8::from_str_radix(state, 16).ok()?, tx))
        })
        .collect()
}

const ESTABLISHED: u8 = 1;

/// Item 1 of issue 23: two clients that flood pings and never read, while ten others
/// echo: every echo client is still answered, `/healthz` answers and new clients get
/// their 101. (On io_uring the flooders used to take every receive buffer of the ring,
/// freezing every connection on it for as long as they stayed connected.)
async fn flooders_freeze_nobody(config: ServerConfig) {
    let srv = start(config).await;
    let mut echoes = Vec::new();
    for _ in 0..10 {
        echoes.push(ws(srv.addr, "/echo").await);
    }
    let flooders: Vec<_> = [raw_client(srv.addr).await, raw_client(srv.addr).await]
        .into_iter()
        .map(|c| flood(c.unwrap()))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for round in 0..3 {
        for (k, e) in echoes.iter_mut().enumerate() {
            let hi = Message::text(format!("hi {round} {k}"));
            e.send(&hi).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(3), e.recv())
                .await
                .unwrap_or_else(|_| panic!("echo client {k} got no answer in round {round}"))
                .unwrap();
            assert_eq!(got, Some(hi));
        }
        let health = async {
            let mut s = TcpStream::connect(srv.addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            out
        };
        let out = tokio::time::timeout(Duration::from_secs(3), health)
            .await
            .expect("/healthz answers while the flooders flood");
        assert!(out.starts_with(b"HTTP/1.1 200"), "{out:?}");
        tokio::time::timeout(Duration::from_secs(3), ws(srv.addr, "/echo"))
            .await
            .expect("a new client gets its 101 while the flooders flood");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for f in flooders {
        f.abort();
    }
    srv.stop().await;
}

/// Items 2 and 3 of issue 23: clients that flood and never read are given up on (their
/// pings go unanswered), then reset: the server's socket disappears at once instead of
/// lingering with its send queue full. Until then each counts against the per-address
/// limit; the kernel's send queue stays within the configured send buffer.
async fn given_up_connections_are_reset_and_count_until_closed(config: ServerConfig) {
    let mut hb = HeartbeatConfig::default();
    hb.ping_interval = Some(Duration::from_millis(300));
    hb.pong_timeout = Some(Duration::from_millis(300));
    let mut limits = Limits::default();
    limits.max_connections_per_ip = 3;
    let close_timeout = Duration::from_millis(500);
    let echo = config.echo.close_timeout(close_timeout);
    let config = config
        .heartbeat(hb)
        .limits(limits)
        .echo(echo)
        .socket_send_buffer(128 << 10);
    let srv = start(config).await;
    let port = srv.addr.port();

    let mut flooders = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let c = raw_client(srv.addr).await.unwrap();
        ports.push(c.local_addr().unwrap().port());
        flooders.push(flood(c));
    }
    let ours = |ports: &[u16]| {
        server_sockets(port)
            .into_iter()
            .filter(|(p, _, _)| ports.contains(p))
            .collect::<Vec<_>>()
    };

    // Until every flooder's socket is gone, no fourth connection is let in; the send
    // queues stay within the cap (the kernel counts its overhead in it too, so the bytes
    // queued are below it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut max_queued = 0;
    loop {
        let socks = ours(&ports);
        max_queued = max_queued.max(socks.iter().map(|s| s.2).max().unwrap_or(0));
        if socks.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server's sockets of the given-up clients are still there: {socks:?}"
        );
        let open = socks.iter().filter(|s| s.1 == ESTABLISHED).count();
        if open == 3 {
            if let Ok(extra) = raw_client(srv.addr).await {
                let still = ours(&ports).iter().filter(|s| s.1 == ESTABLISHED).count();
                assert!(
                    still < 3,
                    "a fourth connection from one address was let in while the three \
                     others' sockets were all still established (limit 3)"
                );
                drop(extra);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        max_queued <= 128 << 10,
        "{max_queued} bytes queued in a socket capped at 128 KiB"
    );
    // Reset, not closed: each flooder's writes fail with a reset.
    for f in flooders {
        let e = tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("the flooder's writes fail once it was reset")
            .unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    // The limit is free again.
    raw_client(srv.addr).await.unwrap();
    srv.stop().await;
}

/// Item 3 of issue 23: a subscriber that stopped reading is cut off as a slow consumer;
/// its close frame cannot get through (its window is shut), so once the close timeout
/// passes its connection is reset and the server's socket is gone, rather than holding
/// its full send queue in FIN-WAIT-1 for minutes.
async fn a_slow_consumer_is_reset_after_the_close_timeout(config: ServerConfig) {
    let close_timeout = Duration::from_millis(500);
    let ws_config = config.ws.close_timeout(close_timeout);
    let config = config
        .ws(ws_config)
        .outbox(switchboard_server::OutboxLimits {
            max_bytes: 64 << 10,
            max_messages: 4096,
            policy: switchboard_server::SlowConsumerPolicy::Disconnect,
        })
        .socket_send_buffer(64 << 10);
    let srv = start(config).await;
    let mut stalled = raw_client_to(srv.addr, "/ws").await.unwrap();
    let peer_port = stalled.local_addr().unwrap().port();
    // A masked (key 0) text frame: subscribe to "t"; then it never reads again.
    let sub = br#"{"type":"subscribe","topic":"t"}"#;
    let mut frame = vec![0x81, 0x80 | sub.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(sub);
    stalled.write_all(&frame).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while srv.hub.subscriber_count("t") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let data = format!("\"{}\"", "x".repeat(1000));
    let mut cut_off = None;
    for _ in 0..20_000 {
        let body = switchboard_server::publication_json(&data).unwrap();
        srv.hub.publish("t", body).await.unwrap();
        if srv.hub.subscriber_count("t") == 0 {
            cut_off = Some(tokio::time::Instant::now());
            break;
        }
        tokio::task::yield_now().await;
    }
    let cut_off = cut_off.expect("the stalled subscriber was cut off");
    // Gone within the close timeout and a margin; a graceful close would leave it in
    // FIN-WAIT-1 with its queue full for as long as the peer keeps its window shut.
    loop {
        let socks: Vec<_> = server_sockets(srv.addr.port())
            .into_iter()
            .filter(|s| s.0 == peer_port)
            .collect();
        if socks.is_empty() {
            break;
        }
        assert!(
            cut_off.elapsed() < close_timeout + Duration::from_secs(3),
            "the cut-off subscriber's socket is still there (port, state, queued): {socks:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stalled);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoll_a_slow_consumer_is_reset_after_the_close_timeout() {
    a_slow_consumer_is_reset_after_the_close_timeout(ServerConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoll_flooders_freeze_nobody() {
    flooders_freeze_nobody(ServerConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoll_given_up_connections_are_reset_and_count_until_closed() {
    given_up_connections_are_reset_and_count_until_closed(ServerConfig::default()).await;
}

/// The same on io_uring, on a runtime with the park hook and two workers.
#[cfg(feature = "io-uring")]
mod io_uring {
    use super::*;
    use switchboard_testkit::server::on_uring;

    #[test]
    fn flooders_freeze_nobody() {
        on_uring(super::flooders_freeze_nobody(
            ServerConfig::default().io_uring(true),
        ));
    }

    #[test]
    fn a_slow_consumer_is_reset_after_the_close_timeout() {
        on_uring(super::a_slow_consumer_is_reset_after_the_close_timeout(
            ServerConfig::default().io_uring(true),
        ));
    }

    #[test]
    fn given_up_connections_are_reset_and_count_until_closed() {
        on_uring(
            super::given_up_connections_are_reset_and_count_until_closed(
                ServerConfig::default().io_uring(true),
            ),
        );
    }
}
