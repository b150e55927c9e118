//! Plain HTTP on a kept-alive connection (hyper): many requests on one connection,
//! pipelining, chunked bodies, `Expect: 100-continue`, `HEAD`, the limits and timeouts of a
//! first request, and a WebSocket upgrade after a plain request. The 429 of an address past
//! its new connections a second stays a lean answer that closes. On epoll and io_uring.

use std::time::{Duration, Instant};

use switchboard_proto::handshake::client::ClientRequest;
use switchboard_server::ServerConfig;
use switchboard_testkit::server::{
    next_of, publish_request, read_response, send_json, start, ws, PATIENCE,
};
use switchboard_tokio::{client_handshake, Config, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server with the API key `k`, a 64-byte API body limit and `timeout` for heads.
fn config(timeout: Duration) -> ServerConfig {
    let mut c = ServerConfig::default().api_key("k");
    c.limits.max_api_body = 64;
    c.ws.handshake_timeout = timeout;
    c.echo.handshake_timeout = timeout;
    c
}

async fn response(s: &mut TcpStream) -> (String, String) {
    let (head, body) = tokio::time::timeout(PATIENCE, read_response(s, false))
        .await
        .expect("a response in time");
    (head, String::from_utf8(body).unwrap())
}

fn status(head: &str) -> u16 {
    head[9..12].parse().unwrap()
}

/// Waits for the server to close `s`: true if it did within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A peer that asks for answers and does not read them is cut off after the handshake
/// timeout without progress: it reads far less than it asked for, and the connection ends.
async fn unread_answers_time_out(config: ServerConfig) {
    let timeout = config.ws.handshake_timeout;
    let srv = start(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(srv.addr).await.unwrap();
    let asks = 400;
    s.write_all("GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(asks).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(timeout * 3).await;
    let (mut got, mut b) = (0usize, vec![0u8; 64 * 1024]);
    loop {
        match tokio::time::timeout(PATIENCE, s.read(&mut b)).await {
            Err(_) => panic!("the connection is still open after {got} bytes"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
        }
    }
    let page = 40_000; // the chat page is larger than this
    assert!(
        got < asks * page / 4,
        "read {got} bytes: the server kept writing"
    );
    srv.stop().await;
}

async fn thousand_publishes_on_one_connection(config: ServerConfig) {
    let srv = start(config).await;
    let mut sub = ws(srv.addr, "/ws").await;
    send_json(
        &mut sub,
        serde_json::json!({"type":"subscribe","topic":"t","id":1}),
    )
    .await;
    next_of(&mut sub, "ack").await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    for n in 0..1000 {
        let body = format!("{{\"topic\":\"t\",\"data\":{n}}}");
        s.write_all(publish_request(Some("k"), &body).as_bytes())
            .await
            .unwrap();
        let (head, body) = response(&mut s).await;
        assert_eq!(status(&head), 200, "publish {n}: {head}{body}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
    }
    for n in 0..1000 {
        let m = next_of(&mut sub, "message").await;
        assert_eq!(m["data"], n, "{m}");
    }
    srv.stop().await;
}

async fn pipelined_chunked_head_and_limits(config: ServerConfig) {
    let srv = start(config).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    // Three requests in one write: three answers, in order.
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(format!("{get}{get}{get}").as_bytes())
        .await
        .unwrap();
    for _ in 0..3 {
        let (head, body) = response(&mut s).await;
        assert_eq!((status(&head), body.as_str()), (200, "ok\n"), "{head}");
    }
    // A chunked body.
    let chunked = "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nTransfer-Encoding: chunked\r\n\r\n\
                   a\r\n{\"topic\":\"\r\nf\r\nt\",\"data\":\"hi\"}\r\n0\r\n\r\n";
    s.write_all(chunked.as_bytes()).await.unwrap();
    let (head, body) = response(&mut s).await;
    assert_eq!(status(&head), 200, "{head}{body}");
    assert!(body.starts_with("{\"ok\":true"), "{body}");
    // HEAD: the page's length, no body (the next response follows at once).
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = tokio::time::timeout(PATIENCE, read_response(&mut s, true))
        .await
        .unwrap();
    assert_eq!(status(&head), 200, "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    assert!(length > 1000, "{head}");
    s.write_all(get.as_bytes()).await.unwrap();
    let (head, body) = response(&mut s).await;
    assert_eq!((status(&head), body.as_str()), (200, "ok\n"), "{head}");
    // Over the body limit: by its Content-Length (nothing read), and chunked (while read).
    let big = format!("{{\"topic\":\"t\",\"data\":\"{}\"}}", "x".repeat(100));
    s.write_all(publish_request(Some("k"), &big).as_bytes())
        .await
        .unwrap();
    let (head, body) = response(&mut s).await;
    assert_eq!(status(&head), 413, "{head}{body}");
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let chunk = "x".repeat(40);
    let over = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nTransfer-Encoding: chunked\r\n\r\n\
         28\r\n{chunk}\r\n28\r\n{chunk}\r\n0\r\n\r\n"
    );
    s.write_all(over.as_bytes()).await.unwrap();
    let (head, body) = response(&mut s).await;
    assert_eq!(status(&head), 413, "{head}{body}");
    srv.stop().await;
}

async fn expect_continue(config: ServerConfig) {
    let srv = start(config).await;
    let body = "{\"topic\":\"t\",\"data\":1}";
    let head = |key: &str| {
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    };
    // The right key: 100, then the body, then 200.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(head("k").as_bytes()).await.unwrap();
    let (first, _) = response(&mut s).await;
    assert_eq!(status(&first), 100, "{first}");
    s.write_all(body.as_bytes()).await.unwrap();
    let (answer, text) = response(&mut s).await;
    assert_eq!(status(&answer), 200, "{answer}{text}");
    // A wrong key: 403 at once, no 100 (the body is never asked for).
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(head("wrong").as_bytes()).await.unwrap();
    let (first, _) = response(&mut s).await;
    assert_eq!(status(&first), 403, "{first}");
    // No key: 401, no 100.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let no_key = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(no_key.as_bytes()).await.unwrap();
    let (first, _) = response(&mut s).await;
    assert_eq!(status(&first), 401, "{first}");
    // Too long by its Content-Length: 413, no 100.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let (first, _) = response(&mut s).await;
    assert_eq!(status(&first), 413, "{first}");
    srv.stop().await;
}

async fn large_slow_and_idle_heads(config: ServerConfig) {
    let timeout = config.ws.handshake_timeout;
    let srv = start(config).await;
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    // Over the head limit: as a first request (our parser) and on a kept-alive connection.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(big.as_bytes()).await.unwrap();
    let (head, _) = response(&mut s).await;
    assert_eq!(status(&head), 431, "{head}");
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(status(&response(&mut s).await.0), 200);
    s.write_all(big.as_bytes()).await.unwrap();
    let (head, _) = response(&mut s).await;
    assert_eq!(status(&head), 431, "{head}");
    // A head that never ends, after a first request: closed after the timeout.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(status(&response(&mut s).await.0), 200);
    let started = Instant::now();
    s.write_all(b"GET /hea").await.unwrap();
    assert!(
        closed_within(&mut s, timeout * 4).await,
        "a slow head is not closed"
    );
    assert!(
        started.elapsed() >= timeout / 2,
        "closed too early: {:?}",
        started.elapsed()
    );
    // A kept-alive connection with nothing more to ask: closed after the timeout.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(status(&response(&mut s).await.0), 200);
    let started = Instant::now();
    assert!(
        closed_within(&mut s, timeout * 4).await,
        "an idle connection is not closed"
    );
    assert!(
        started.elapsed() >= timeout / 2,
        "closed too early: {:?}",
        started.elapsed()
    );
    srv.stop().await;
}

async fn upgrade_after_a_plain_request(config: ServerConfig) {
    let srv = start(config).await;
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // /echo, with a subprotocol and permessage-deflate: both negotiated, messages echoed.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(status(&response(&mut s).await.0), 200);
    let req = ClientRequest::new("x", "/echo")
        .protocol("p1")
        .deflate(ServerConfig::deflate_config(false));
    let (mut e, resp) = client_handshake(s, &req, Config::default()).await.unwrap();
    assert_eq!(resp.protocol.as_deref(), Some("p1"));
    assert!(resp.deflate.is_some(), "{:?}", resp.headers);
    for text in ["one", &"long and compressible ".repeat(50)] {
        e.send(&Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(PATIENCE, e.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, Some(Message::text(text)));
    }
    // /ws: its subprotocol, a subscription, a publish from the API.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(status(&response(&mut s).await.0), 200);
    let req = ClientRequest::new("x", "/ws").protocol("switchboard.pubsub.v1");
    let (mut w, resp) = client_handshake(s, &req, Config::default()).await.unwrap();
    assert_eq!(resp.protocol.as_deref(), Some("switchboard.pubsub.v1"));
    w.send(&Message::text(r#"{"type":"subscribe","topic":"t","id":1}"#))
        .await
        .unwrap();
    let ack = tokio::time::timeout(PATIENCE, w.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(format!("{ack:?}").contains("ack"), "{ack:?}");
    // An upgrade to nowhere: 404, and the connection closes.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(status(&response(&mut s).await.0), 200);
    let req = ClientRequest::new("x", "/nope");
    s.write_all(&req.encode().unwrap()).await.unwrap();
    let (head, body) = response(&mut s).await;
    assert_eq!(status(&head), 404, "{head}{body}");
    assert!(closed_within(&mut s, PATIENCE).await);
    let metrics = switchboard_testkit::server::metrics(srv.addr).await;
    assert!(
        metrics.contains("switchboard_handshakes_total{outcome=\"accepted\",http=\"1.1\"} 2"),
        "{metrics}"
    );
    srv.stop().await;
}

async fn rate_limited_answer_is_lean_and_closes(mut config: ServerConfig) {
    config.limits.max_new_connections_per_second_per_ip = 1;
    let srv = start(config).await;
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = TcpStream::connect(srv.addr).await.unwrap();
    first.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(status(&response(&mut first).await.0), 200);
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(get.as_bytes()).await.unwrap();
    let mut all = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut all))
        .await
        .expect("the 429 closes the connection")
        .unwrap();
    assert!(
        all.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{all}"
    );
    assert!(all.contains("\r\nConnection: close\r\n"), "{all}");
    // The first connection is still served.
    first.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(status(&response(&mut first).await.0), 200);
    srv.stop().await;
}

/// Server shutdown closes a kept-alive connection at once, not after its idle timeout.
async fn shutdown_closes_kept_alive_connections(config: ServerConfig) {
    let srv = start(config).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status(&response(&mut s).await.0), 200);
    let started = Instant::now();
    srv.stop().await;
    assert!(closed_within(&mut s, SECOND).await);
    assert!(started.elapsed() < SECOND * 3, "{:?}", started.elapsed());
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn shutdown_closes_a_kept_alive_connection() {
    shutdown_closes_kept_alive_connections(config(SECOND * 30)).await;
}

#[tokio::test]
async fn a_thousand_publishes_on_one_connection() {
    thousand_publishes_on_one_connection(config(SECOND * 10)).await;
}

#[tokio::test]
async fn pipelining_chunked_bodies_head_and_body_limits() {
    pipelined_chunked_head_and_limits(config(SECOND * 10)).await;
}

#[tokio::test]
async fn expect_continue_only_once_the_key_and_length_pass() {
    expect_continue(config(SECOND * 10)).await;
}

#[tokio::test]
async fn large_slow_and_idle_heads_are_refused_or_closed() {
    large_slow_and_idle_heads(config(SECOND)).await;
}

#[tokio::test]
async fn answers_the_peer_does_not_read_time_out() {
    unread_answers_time_out(config(SECOND)).await;
}

#[tokio::test]
async fn a_websocket_upgrade_after_a_plain_request() {
    upgrade_after_a_plain_request(config(SECOND * 10)).await;
}

#[tokio::test]
async fn the_rate_limited_answer_closes() {
    rate_limited_answer_is_lean_and_closes(config(SECOND * 10)).await;
}

/// The same on io_uring.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
mod io_uring {
    use super::*;
    use switchboard_testkit::server::on_uring;

    fn uring(timeout: Duration) -> ServerConfig {
        config(timeout).io_uring(true)
    }

    #[test]
    fn a_thousand_publishes_on_one_connection() {
        on_uring(thousand_publishes_on_one_connection(uring(SECOND * 10)));
    }

    #[test]
    fn pipelining_chunked_bodies_head_and_body_limits() {
        on_uring(pipelined_chunked_head_and_limits(uring(SECOND * 10)));
    }

    #[test]
    fn expect_continue_only_once_the_key_and_length_pass() {
        on_uring(expect_continue(uring(SECOND * 10)));
    }

    #[test]
    fn large_slow_and_idle_heads_are_refused_or_closed() {
        on_uring(large_slow_and_idle_heads(uring(SECOND)));
    }

    #[test]
    fn answers_the_peer_does_not_read_time_out() {
        on_uring(unread_answers_time_out(uring(SECOND)));
    }

    #[test]
    fn a_websocket_upgrade_after_a_plain_request() {
        on_uring(upgrade_after_a_plain_request(uring(SECOND * 10)));
    }

    #[test]
    fn shutdown_closes_a_kept_alive_connection() {
        on_uring(shutdown_closes_kept_alive_connections(uring(SECOND * 30)));
    }

    #[test]
    fn the_rate_limited_answer_closes() {
        on_uring(rate_limited_answer_is_lean_and_closes(uring(SECOND * 10)));
    }
}
