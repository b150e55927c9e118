//! The hyper 1.x integration: upgrade inside a hyper service, talk to it with our client.
#![cfg(feature = "hyper")]

use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use switchboard_tokio::{connect, upgrade, ClientBuilder, CloseCode, Config, Error, Message};

async fn handle(
    mut req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, std::convert::Infallible>>, std::convert::Infallible> {
    let protocol = if req.headers().contains_key("sec-websocket-protocol") {
        Some("p1")
    } else {
        None
    };
    match upgrade::upgrade(&mut req, Config::default(), protocol) {
        Ok((resp, fut)) => {
            tokio::spawn(async move {
                let mut ws = fut.await.unwrap();
                while let Some(m) = ws.recv().await.unwrap() {
                    ws.feed(&m).unwrap();
                }
            });
            Ok(resp.map(|b: Empty<Bytes>| b.boxed()))
        }
        Err(Error::Handshake(e)) => Ok(upgrade::rejection(&e).map(|b| b.boxed())),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn echo_through_hyper_upgrade() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(handle))
                    .with_upgrades(),
            );
        }
    });
    let (mut ws, resp) = ClientBuilder::new(format!("ws://{addr}/ws"))
        .protocol("p1")
        .connect()
        .await
        .unwrap();
    assert_eq!(resp.protocol.as_deref(), Some("p1"));
    ws.send(&Message::text("via hyper")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some(Message::text("via hyper")));
    ws.close(CloseCode::NORMAL, "").await.unwrap();

    // A request with the wrong version is refused with 426 and the supported version.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(resp.starts_with("http/1.1 426"), "{resp}");
    assert!(resp.contains("sec-websocket-version: 13"), "{resp}");
    let _ = connect;
}
