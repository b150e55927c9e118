//! Starting a server and talking to it, for the server's tests: a server on `127.0.0.1:0`,
//! WebSocket and plain HTTP clients, JSON helpers, and a runtime on io_uring.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use switchboard_proto::{Event, Message};
use switchboard_server::{Hub, Server, ServerConfig};
use switchboard_tokio::{ClientBuilder, MaybeTlsStream, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A client WebSocket as the tests use it.
pub type Ws = WebSocket<MaybeTlsStream>;

/// How long a test waits for a message or a response before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A server running on the current runtime.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its hub, to publish from the test.
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Shuts the server down and waits (up to 20 s) for it to finish cleanly.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("server stops in time")
            .expect("server task did not panic")
            .expect("server ran without error");
    }
}

/// Starts a server with `config` on `127.0.0.1:0`.
pub async fn start(config: ServerConfig) -> Running {
    start_server(Server::new(config)).await
}

/// Starts `server` (built by the test: on another engine, say) on `127.0.0.1:0`.
pub async fn start_server(server: Server) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = server.hub().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        hub,
        stop: Some(stop),
        task,
    }
}

/// Runs `f` to its end on a two-worker runtime whose workers submit their io_uring
/// queues before they park, as `switchboard serve` runs the server on io_uring.
#[cfg(target_os = "linux")]
pub fn on_uring(f: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_park(switchboard_tokio::uring::before_park)
        .build()
        .unwrap()
        .block_on(f);
}

/// A WebSocket client connected to `path`.
pub async fn ws(addr: SocketAddr, path: &str) -> Ws {
    ClientBuilder::new(format!("ws://{addr}{path}"))
        .connect()
        .await
        .unwrap()
        .0
}

/// The next text message as JSON, within [`PATIENCE`] (binary messages are skipped).
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(PATIENCE, ws.recv())
            .await
            .expect("a message in time")
            .unwrap()
            .expect("connection open");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The next message of `kind` (its `"type"`), skipping others.
pub async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// Sends `v` as a text message.
pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(&Message::text(v.to_string())).await.unwrap();
}

/// Waits (up to 15 s) for the end of the connection; returns the close code the server
/// sent, if any.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, ws.next_event()).await {
            Err(_) => panic!("connection did not end"),
            Ok(Ok(Some(Event::Close(f)))) => return f.map(|f| f.code.0),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Ok(Err(_)) => {
                return ws
                    .connection()
                    .received_close()
                    .and_then(|f| f.as_ref().map(|f| f.code.0))
            }
        }
    }
}

/// Sends one raw HTTP request on a connection of its own; returns the response's status and
/// body (the server keeps the connection alive: the body is read by its `Content-Length`).
pub async fn http(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let (head, body) =
        tokio::time::timeout(PATIENCE, read_response(&mut s, req.starts_with("HEAD ")))
            .await
            .expect("a response in time");
    let status = head[9..12].parse().unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Reads one HTTP/1.1 response: its head (up to and with the blank line) and its body, of
/// `Content-Length` bytes (none after a `HEAD`, to the end without a length; chunked
/// bodies are not read). Panics if the connection ends before the head does.
pub async fn read_response<S>(s: &mut S, head_only: bool) -> (String, Vec<u8>)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert_eq!(
            n,
            1,
            "the connection ended in a response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().unwrap())
    });
    let informational = head.starts_with("HTTP/1.1 1");
    let mut body = Vec::new();
    match length {
        _ if head_only || informational => {}
        Some(n) => {
            body.resize(n, 0);
            s.read_exact(&mut body).await.unwrap();
        }
        None => {
            s.read_to_end(&mut body).await.unwrap();
        }
    }
    (head, body)
}

/// `GET /metrics`: the body.
pub async fn metrics(addr: SocketAddr) -> String {
    http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .1
}

/// A `POST /api/publish` request with `body`, and the key as `Authorization: Bearer`.
pub fn publish_request(key: Option<&str>, body: &str) -> String {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Writes the opening handshake of a WebSocket to `path`, with `extra` header lines (each
/// ending in `\r\n`), into `buf` without allocating; returns its length.
fn handshake(buf: &mut [u8; 1024], path: &str, extra: &str) -> usize {
    let parts: [&[u8]; 5] = [
        b"GET ",
        path.as_bytes(),
        b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        extra.as_bytes(),
        b"\r\n",
    ];
    let mut n = 0;
    for p in parts {
        buf[n..n + p.len()].copy_from_slice(p);
        n += p.len();
    }
    n
}

/// Sends the opening handshake to `path` with `extra` header lines on `s` and reads the
/// response's head; returns it.
pub async fn raw_handshake(
    s: &mut tokio::net::TcpStream,
    path: &str,
    extra: &str,
) -> Result<String, String> {
    let mut req = [0u8; 1024];
    let n = handshake(&mut req, path, extra);
    s.write_all(&req[..n]).await.map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        match s.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => return Err(format!("closed after {:?}", String::from_utf8_lossy(&head))),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A WebSocket handshake to `path` on a blocking socket, reading the response into a stack
/// buffer: it allocates nothing, for the tests that count the server's allocations.
pub fn blocking_upgrade(addr: SocketAddr, path: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = [0u8; 1024];
    let n = handshake(&mut req, path, "");
    s.write_all(&req[..n]).unwrap();
    let mut buf = [0u8; 512];
    let mut got = 0;
    while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf[got..]).unwrap();
        assert!(n > 0, "the server closed during the handshake");
        got += n;
    }
    assert!(buf.starts_with(b"HTTP/1.1 101"), "no 101 response");
    s
}
