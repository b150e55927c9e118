//! HTTP/2 on the server's port, for plain HTTP: prior knowledge on plain TCP (h2c) and ALPN
//! `h2` on TLS, the page, `/healthz`, `/metrics` and the publish API through hyper's client;
//! the preface trickled in byte by byte; HTTP/2 turned off (the preface is a bad HTTP/1.1
//! request, as before); concurrent streams; GOAWAY on shutdown; the preface deadline and the
//! idle timeout. On epoll and io_uring.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchboard_server::ServerConfig;
use switchboard_testkit::server::{next_of, read_response, send_json, start, ws, Ws, PATIENCE};
use switchboard_tokio::ClientBuilder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn config(timeout: Duration) -> ServerConfig {
    let mut c = ServerConfig::default().api_key("k");
    c.ws.handshake_timeout = timeout;
    c.echo.handshake_timeout = timeout;
    c
}

/// An HTTP/2 client on `io`; its connection runs in a task whose handle is returned.
async fn h2<I>(io: I) -> (SendRequest<Full<Bytes>>, tokio::task::JoinHandle<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("an HTTP/2 handshake");
    let task = tokio::spawn(async move { conn.await.is_ok() });
    (send, task)
}

async fn h2c(addr: SocketAddr) -> (SendRequest<Full<Bytes>>, tokio::task::JoinHandle<bool>) {
    h2(TcpStream::connect(addr).await.unwrap()).await
}

/// One request: the status, the headers and the body.
async fn request(
    send: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tokio::time::timeout(PATIENCE, send.send_request(req))
        .await
        .expect("a response in time")
        .expect("a response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// The page, `/healthz`, `/metrics`, `HEAD` and a publish a subscriber receives, over `send`.
async fn plain_requests(send: &mut SendRequest<Full<Bytes>>, mut sub: Ws, topic: &str) {
    let (status, headers, body) = request(send, "GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(body.contains("<html"), "{body}");
    let (status, headers, body) = request(send, "HEAD", "/", &[], "").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(
        headers["content-length"]
            .to_str()
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 1000
    );
    let (status, _, body) = request(send, "GET", "/healthz", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, _) = request(send, "GET", "/nowhere", &[], "").await;
    assert_eq!(status, 404);
    send_json(
        &mut sub,
        serde_json::json!({"type":"subscribe","topic":topic,"id":1}),
    )
    .await;
    next_of(&mut sub, "ack").await;
    let publish = format!("{{\"topic\":\"{topic}\",\"data\":{{\"over\":\"h2\"}}}}");
    let (status, _, body) = request(
        send,
        "POST",
        "/api/publish",
        &[("authorization", "Bearer k")],
        &publish,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = request(send, "POST", "/api/publish", &[], &publish).await;
    assert_eq!(status, 401);
    let m = next_of(&mut sub, "message").await;
    assert_eq!(m["data"]["over"], "h2", "{m}");
    let (status, _, body) = request(send, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("switchboard_http_requests_total{method=\"POST\",status=\"200\"} 1"),
        "{body}"
    );
}

async fn over_h2c(config: ServerConfig) {
    let srv = start(config).await;
    let (mut send, _conn) = h2c(srv.addr).await;
    plain_requests(&mut send, ws(srv.addr, "/ws").await, "t").await;
    // 20 streams at once on the one connection.
    let all = (0..20).map(|_| {
        let mut send = send.clone();
        tokio::spawn(async move { request(&mut send, "GET", "/healthz", &[], "").await.0 })
    });
    for status in futures_join(all).await {
        assert_eq!(status, 200);
    }
    srv.stop().await;
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// A self-signed certificate for localhost, as a server config with HTTP/2 (ALPN set by
/// the server) and a client config that trusts anything and offers `alpn`.
fn tls(config: ServerConfig, alpn: &[&[u8]]) -> (ServerConfig, tokio_rustls::TlsConnector) {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-h2-{}-{}",
        std::process::id(),
        alpn.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let acceptor =
        switchboard_tokio::tls::acceptor_from_pem(&dir.join("cert.pem"), &dir.join("key.pem"))
            .unwrap();
    let mut client: rustls::ClientConfig =
        (*switchboard_tokio::tls::insecure_client_config().unwrap()).clone();
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (
        config.tls(acceptor),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

async fn over_tls(config: ServerConfig) {
    let (config, h2_connector) = tls(config, &[b"h2", b"http/1.1"]);
    let srv = start(config).await;
    let stream = tls_connect(srv.addr, &h2_connector).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, _conn) = h2(stream).await;
    // A wss:// subscriber (no ALPN: HTTP/1.1, our own handshake).
    let (sub, _) = ClientBuilder::new(format!("wss://localhost:{}/ws", srv.addr.port()))
        .tls_config(switchboard_tokio::tls::insecure_client_config().unwrap())
        .connect()
        .await
        .unwrap();
    plain_requests(&mut send, sub, "tls").await;
    // ALPN http/1.1 (and no ALPN): HTTP/1.1 as before.
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let (_, connector) = tls(ServerConfig::default(), alpn);
        let mut stream = tls_connect(srv.addr, &connector).await;
        let expected = alpn.first().copied();
        assert_eq!(stream.get_ref().1.alpn_protocol(), expected);
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = tokio::time::timeout(PATIENCE, read_response(&mut stream, false))
            .await
            .unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"ok\n");
    }
    srv.stop().await;
}

/// The client's bytes reach the server with the preface one byte a write, a few ms apart.
async fn trickled_preface(config: ServerConfig) {
    let srv = start(config).await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (client, relay) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        let (mut from_client, mut to_client) = tokio::io::split(relay);
        let (mut from_server, mut to_server) = tcp.into_split();
        let up = async move {
            let mut preface = [0u8; 24];
            from_client.read_exact(&mut preface).await.unwrap();
            for b in preface {
                to_server.write_all(&[b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        };
        let down = async move {
            let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        };
        tokio::join!(up, down);
    });
    let (mut send, _conn) = h2(client).await;
    let (status, _, body) = request(&mut send, "GET", "/healthz", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    srv.stop().await;
}

/// HTTP/2 off: the preface is read as a bad HTTP/1.1 request, as before.
async fn disabled(config: ServerConfig) {
    let srv = start(config.http2(false)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    let mut all = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut all))
        .await
        .unwrap()
        .unwrap();
    assert!(all.starts_with("HTTP/1.1 400 "), "{all}");
    srv.stop().await;
}

/// Reads HTTP/2 frames until the connection ends, acknowledging SETTINGS and answering
/// PINGs as a client does; returns the frame types seen.
async fn frame_types(s: &mut TcpStream) -> Vec<u8> {
    let mut types = Vec::new();
    loop {
        let mut header = [0u8; 9];
        if s.read_exact(&mut header).await.is_err() {
            return types;
        }
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).await.is_err() {
            return types;
        }
        let (kind, ack) = (header[3], header[4] & 1 == 1);
        types.push(kind);
        let answer = match kind {
            4 if !ack => vec![0, 0, 0, 4, 1, 0, 0, 0, 0],
            6 if !ack => {
                let mut pong = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                pong
            }
            _ => continue,
        };
        let _ = s.write_all(&answer).await;
    }
}

/// Shutdown: the server's GOAWAY (frame type 7), then the end of the connection, quickly.
async fn goaway_on_shutdown(config: ServerConfig) {
    let srv = start(config).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // SETTINGS, empty
    let mut first = [0u8; 9];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(first[3], 4, "the server's SETTINGS first");
    let mut settings = vec![0u8; usize::from(first[2])];
    s.read_exact(&mut settings).await.unwrap();
    let started = Instant::now();
    let reader = tokio::spawn(async move { frame_types(&mut s).await });
    srv.stop().await;
    let types = tokio::time::timeout(PATIENCE, reader)
        .await
        .unwrap()
        .unwrap();
    assert!(types.contains(&7), "no GOAWAY: {types:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A preface that never ends is cut off after the handshake timeout; so is an HTTP/2
/// connection with no stream open (after a GOAWAY).
async fn preface_deadline_and_idle(config: ServerConfig) {
    let timeout = config.ws.handshake_timeout;
    let srv = start(config).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&PREFACE[..16]).await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(timeout * 4, s.read_to_end(&mut rest))
        .await
        .expect("a half preface is cut off")
        .ok();
    assert!(started.elapsed() >= timeout / 2, "{:?}", started.elapsed());
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let started = Instant::now();
    let types = tokio::time::timeout(timeout * 4, frame_types(&mut s))
        .await
        .expect("an idle HTTP/2 connection is closed");
    assert!(types.contains(&7), "no GOAWAY: {types:?}");
    assert!(started.elapsed() >= timeout / 2, "{:?}", started.elapsed());
    srv.stop().await;
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn page_health_metrics_and_publish_over_h2c() {
    over_h2c(config(SECOND * 10)).await;
}

#[tokio::test]
async fn page_health_metrics_and_publish_over_tls_with_alpn() {
    over_tls(config(SECOND * 10)).await;
}

#[tokio::test]
async fn the_preface_in_one_byte_writes() {
    trickled_preface(config(SECOND * 10)).await;
}

#[tokio::test]
async fn http2_off_answers_the_preface_as_before() {
    disabled(config(SECOND * 10)).await;
}

#[tokio::test]
async fn shutdown_sends_goaway() {
    goaway_on_shutdown(config(SECOND * 10)).await;
}

#[tokio::test]
async fn preface_deadline_and_idle_timeout() {
    preface_deadline_and_idle(config(SECOND)).await;
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
    fn page_health_metrics_and_publish_over_h2c() {
        on_uring(over_h2c(uring(SECOND * 10)));
    }

    #[test]
    fn page_health_metrics_and_publish_over_tls_with_alpn() {
        on_uring(over_tls(uring(SECOND * 10)));
    }

    #[test]
    fn the_preface_in_one_byte_writes() {
        on_uring(trickled_preface(uring(SECOND * 10)));
    }

    #[test]
    fn shutdown_sends_goaway() {
        on_uring(goaway_on_shutdown(uring(SECOND * 10)));
    }

    #[test]
    fn preface_deadline_and_idle_timeout() {
        on_uring(preface_deadline_and_idle(uring(SECOND)));
    }
}
