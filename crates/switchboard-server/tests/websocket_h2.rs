//! WebSockets over HTTP/2 (RFC 8441) against the server, with our HTTP/2 client: `/echo`,
//! `/chat` and `/ws` on streams of h2c (prior knowledge) and TLS (ALPN `h2`) connections,
//! with a subprotocol and permessage-deflate; refusals as stream statuses that leave the
//! connection and its other streams working; the `http="2"` handshake counters; a stream
//! that is never read does not stall its siblings; shutdown closes every stream with 1001.
//! On epoll and io_uring.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use switchboard_server::{JwtAuthenticator, JwtConfig, ServerConfig};
use switchboard_testkit::server::{
    close_code, metrics, next_json, next_of, send_json, start, Running, Ws, PATIENCE,
};
use switchboard_tokio::client::WsUrl;
use switchboard_tokio::h2::{H2Client, H2Stream};
use switchboard_tokio::proto::extension::DeflateConfig;
use switchboard_tokio::{tls, ClientBuilder, Config, Error, Http2, Message, WebSocket};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

const SECRET: &str = "a test secret of enough length";

/// A connection token for `sub`, valid for an hour.
fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = json!({"sub": sub, "exp": exp});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn config() -> ServerConfig {
    ServerConfig::default().api_key("k")
}

/// How the tests' clients are made: trusting the test's certificate, or for ws://.
#[derive(Clone, Default)]
struct Base {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Base {
    fn builder(&self, url: &str) -> ClientBuilder {
        let b = ClientBuilder::new(url);
        match &self.tls {
            Some(tls) => b.tls_config(Arc::clone(tls)),
            None => b,
        }
    }
}

/// A server with TLS (a self-signed certificate for `localhost`) and the client trusting it.
fn with_tls(config: ServerConfig) -> (ServerConfig, Base) {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-ws-h2-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let acceptor = tls::acceptor_from_pem(&cert_path, &key_path).unwrap();
    let client = tls::client_config(Some(&cert_path)).unwrap();
    (config.tls(acceptor), Base { tls: Some(client) })
}

/// Opens `b`'s URL over HTTP/2 only (h2c for ws://, ALPN h2 for wss://).
async fn open(b: ClientBuilder) -> Result<(Ws, switchboard_tokio::Response), Error> {
    tokio::time::timeout(PATIENCE, b.http2(Http2::Force).connect())
        .await
        .expect("a handshake in time")
}

/// `/echo` text and binary round trips, a subprotocol, deflate; `/ws` gets a publish;
/// `/chat` says welcome; the counters say HTTP/2.
async fn endpoints(server: &Running, base: &Base, scheme: &str) {
    let addr = server.addr;
    let host = if scheme == "wss" {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let echo = format!("{scheme}://{host}:{}/echo", addr.port());
    let deflate = Config::default().deflate(Some(DeflateConfig::default()));
    let b = base
        .builder(&echo)
        .config(deflate)
        .protocol("one")
        .protocol("two");
    let (mut ws, resp) = open(b).await.expect("echo over HTTP/2");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.protocol.as_deref(), Some("one"));
    assert!(resp.deflate.is_some(), "permessage-deflate: {resp:?}");
    for m in [
        Message::text("hello over h2"),
        Message::binary(vec![7u8; 70_000]),
        Message::text("x".repeat(200_000)),
    ] {
        ws.send(&m).await.unwrap();
        let got = tokio::time::timeout(PATIENCE, ws.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got, m);
    }
    ws.close(switchboard_tokio::CloseCode::NORMAL, "bye")
        .await
        .unwrap();

    let url = format!("{scheme}://{host}:{}/ws", addr.port());
    let (mut sub, _) = open(base.builder(&url)).await.expect("/ws over HTTP/2");
    send_json(&mut sub, json!({"type":"subscribe","topic":"news","id":1})).await;
    let ack = next_of(&mut sub, "ack").await;
    assert_eq!(ack["id"], 1, "{ack}");
    let (mut publisher, _) = open(base.builder(&url)).await.unwrap();
    let publish = json!({"type":"publish","topic":"news","data":{"n":1},"id":2});
    send_json(&mut publisher, publish).await;
    assert_eq!(next_of(&mut publisher, "ack").await["id"], 2);
    let publication = next_of(&mut sub, "message").await;
    assert_eq!(publication["data"]["n"], 1, "{publication}");

    let url = format!("{scheme}://{host}:{}/chat?room=lobby&name=ann", addr.port());
    let (mut chat, resp) = open(base.builder(&url)).await.expect("/chat over HTTP/2");
    assert_eq!(resp.status, 200);
    let first = next_json(&mut chat).await;
    assert_eq!(first["type"], "welcome", "{first}");

    if scheme == "wss" {
        return; // /metrics is over https: the h2c run reads it
    }
    let m = metrics(addr).await;
    assert!(
        m.contains("switchboard_handshakes_total{outcome=\"accepted\",http=\"2\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("switchboard_handshakes_total{outcome=\"accepted\",http=\"1.1\"} 0"),
        "{m}"
    );
}

async fn over_h2c(config: ServerConfig) {
    let server = start(config).await;
    endpoints(&server, &Base::default(), "ws").await;
    server.stop().await;
}

async fn over_tls(config: ServerConfig) {
    let (config, base) = with_tls(config);
    let server = start(config).await;
    endpoints(&server, &base, "wss").await;
    server.stop().await;
}

/// An HTTP/2 connection of our own to the server, to open several streams on.
async fn h2_connection(addr: SocketAddr) -> H2Client {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = H2Client::handshake(tcp).await.unwrap();
    assert!(client.is_extended_connect_enabled());
    client
}

async fn stream(
    client: &H2Client,
    addr: SocketAddr,
    path: &str,
    b: &ClientBuilder,
) -> Result<WebSocket<H2Stream>, Error> {
    let url = WsUrl::parse(&format!("ws://{addr}{path}")).unwrap();
    let opened = tokio::time::timeout(PATIENCE, client.websocket(&url, b))
        .await
        .expect("an answer in time");
    opened.map(|(ws, _)| ws)
}

async fn echo_once(ws: &mut WebSocket<H2Stream>, text: &str) {
    ws.send(&Message::text(text)).await.unwrap();
    let got = tokio::time::timeout(PATIENCE, ws.recv())
        .await
        .expect("an echo in time")
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text(text));
}

fn status_of(r: Result<WebSocket<H2Stream>, Error>) -> u16 {
    match r {
        Err(Error::Rejected { status, .. }) => status,
        Err(e) => panic!("not a refusal: {e:?}"),
        Ok(_) => panic!("accepted"),
    }
}

/// Refusals are answers on their stream: 404, 403 (origin), 401 (token), and the
/// connection's other streams go on.
async fn refusals(config: ServerConfig) {
    let auth = JwtAuthenticator::new(JwtConfig::new().hmac_secret(SECRET))
        .await
        .unwrap();
    let server = start(config.websocket_authenticator(auth)).await;
    let addr = server.addr;
    let client = h2_connection(addr).await;
    let good = ClientBuilder::new("").origin("http://localhost:3000");
    let mut echo = stream(&client, addr, "/echo", &good).await.unwrap();
    echo_once(&mut echo, "before").await;
    assert_eq!(
        status_of(stream(&client, addr, "/nowhere", &good).await),
        404
    );
    let bad = ClientBuilder::new("").origin("https://evil.example");
    assert_eq!(status_of(stream(&client, addr, "/echo", &bad).await), 403);
    assert_eq!(status_of(stream(&client, addr, "/ws", &good).await), 401);
    let path = format!("/ws?token={}", token("ann"));
    let mut ws = stream(&client, addr, &path, &good).await.unwrap();
    send_json_h2(&mut ws, json!({"type":"subscribe","topic":"a","id":1})).await;
    let ack = tokio::time::timeout(PATIENCE, ws.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Text(ack) = ack else {
        panic!("{ack:?}")
    };
    assert!(ack.as_str().contains(r#""type":"ack""#), "{ack:?}");
    echo_once(&mut echo, "after").await;
    let m = metrics(addr).await;
    for line in [
        "switchboard_handshakes_total{outcome=\"accepted\",http=\"2\"} 2",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"not_found\",http=\"2\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"origin\",http=\"2\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"unauthorized\",http=\"2\"} 1",
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    server.stop().await;
}

async fn send_json_h2(ws: &mut WebSocket<H2Stream>, v: serde_json::Value) {
    ws.send(&Message::text(v.to_string())).await.unwrap();
}

/// One stream whose client never reads while it keeps sending (large messages, or many tiny
/// ones: each its own DATA frame, which h2 budgets per connection) does not stall another
/// stream of the same connection, nor get the connection closed.
async fn stalled_stream(config: ServerConfig, tiny: bool) {
    let server = start(config).await;
    let addr = server.addr;
    let client = h2_connection(addr).await;
    let b = ClientBuilder::new("");
    let stalled = stream(&client, addr, "/echo", &b).await.unwrap();
    let mut live = stream(&client, addr, "/echo", &b).await.unwrap();
    let (_reader, writer) = stalled.split();
    let flood = tokio::spawn(async move {
        // The echoes pile up unread: the server's writes to this stream wait for its window,
        // then its reads stop, then ours wait for the window in turn. (Far more than every
        // window and buffer on the way holds, in either case.)
        let (count, size) = if tiny {
            (1_000_000, 1)
        } else {
            (1_000, 32 * 1024)
        };
        for i in 0..count {
            let m = if tiny {
                Message::text((i % 10).to_string())
            } else {
                Message::binary(vec![1u8; size])
            };
            writer.send(&m).await?;
        }
        Ok::<_, Error>(())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        echo_once(&mut live, &format!("still here {i}")).await;
    }
    if flood.is_finished() {
        match flood.await.unwrap() {
            Ok(()) => panic!("the unread stream was not held back"),
            Err(e) => panic!("the unread stream failed: {e}"),
        }
    }
    flood.abort();
    server.stop().await;
}

/// Server shutdown closes each WebSocket stream with 1001.
async fn shutdown(config: ServerConfig) {
    let server = start(config).await;
    let addr = server.addr;
    let (mut a, _) = open(ClientBuilder::new(format!("ws://{addr}/echo")))
        .await
        .unwrap();
    let (mut b, _) = open(ClientBuilder::new(format!("ws://{addr}/ws")))
        .await
        .unwrap();
    let stopping = tokio::spawn(server.stop());
    assert_eq!(close_code(&mut a).await, Some(1001));
    assert_eq!(close_code(&mut b).await, Some(1001));
    tokio::time::timeout(PATIENCE * 2, stopping)
        .await
        .expect("the server stops")
        .unwrap();
}

#[tokio::test]
async fn endpoints_over_h2c() {
    over_h2c(config()).await;
}

#[tokio::test]
async fn endpoints_over_tls_with_alpn() {
    over_tls(config()).await;
}

#[tokio::test]
async fn refusals_are_stream_answers() {
    refusals(config()).await;
}

#[tokio::test]
async fn a_stalled_stream_does_not_stall_the_others() {
    stalled_stream(config(), false).await;
}

#[tokio::test]
async fn a_stalled_stream_of_tiny_frames_does_not_stall_the_others() {
    stalled_stream(config(), true).await;
}

#[tokio::test]
async fn shutdown_closes_every_stream_with_1001() {
    shutdown(config()).await;
}

/// The same on io_uring.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
mod io_uring {
    use super::*;
    use switchboard_testkit::server::on_uring;

    fn uring() -> ServerConfig {
        config().io_uring(true)
    }

    #[test]
    fn endpoints_over_h2c() {
        on_uring(over_h2c(uring()));
    }

    #[test]
    fn endpoints_over_tls_with_alpn() {
        on_uring(over_tls(uring()));
    }

    #[test]
    fn a_stalled_stream_does_not_stall_the_others() {
        on_uring(stalled_stream(uring(), false));
    }

    #[test]
    fn a_stalled_stream_of_tiny_frames_does_not_stall_the_others() {
        on_uring(stalled_stream(uring(), true));
    }

    #[test]
    fn shutdown_closes_every_stream_with_1001() {
        on_uring(shutdown(uring()));
    }
}
