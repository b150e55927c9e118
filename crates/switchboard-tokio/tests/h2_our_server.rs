//! The HTTP/2 client against the switchboard server, which speaks HTTP/2 on its port (h2c
//! and ALPN h2) and enables the extended CONNECT (RFC 8441): `Prefer` over wss:// and
//! `Force` (h2c and wss://) open the WebSocket on an HTTP/2 stream. (The server's own tests,
//! `switchboard-server/tests/websocket_h2.rs`, cover its endpoints over HTTP/2.)

use std::time::Duration;

use switchboard_server::ServerConfig;
use switchboard_tokio::h2::Http2Error;
use switchboard_tokio::{tls, ClientBuilder, CloseCode, Error, Http2, Message};

/// Whether the server's SETTINGS enable the extended CONNECT (RFC 8441).
const OFFERS_RFC8441: bool = true;

fn with_tls(config: ServerConfig) -> ServerConfig {
    let dir = std::env::temp_dir().join(format!("switchboard-h2ours-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let acceptor = tls::acceptor_from_pem(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    config.tls(acceptor)
}

async fn round_trip(url: &str, mode: Http2) -> Result<bool, Error> {
    let (mut ws, _) = ClientBuilder::new(url)
        .http2(mode)
        .tls_config(tls::insecure_client_config().unwrap())
        .connect()
        .await?;
    let over_h2 = ws.get_ref().is_http2();
    ws.send(&Message::text("ours")).await?;
    assert_eq!(ws.recv().await?, Some(Message::text("ours")));
    ws.close(CloseCode::NORMAL, "").await?;
    Ok(over_h2)
}

fn is_disabled(e: &Error) -> bool {
    matches!(e, Error::Http2(h) if matches!(**h, Http2Error::ConnectProtocolDisabled))
}

#[tokio::test]
async fn our_client_and_our_server_over_h2c_and_tls() {
    let plain = switchboard_testkit::server::start(ServerConfig::default()).await;
    let secure = switchboard_testkit::server::start(with_tls(ServerConfig::default())).await;
    let h2c = format!("ws://127.0.0.1:{}/echo", plain.addr.port());
    let wss = format!("wss://localhost:{}/echo", secure.addr.port());
    let run = async {
        // Prefer on ws:// is HTTP/1.1 (no h2c guessing).
        assert!(!round_trip(&h2c, Http2::Prefer).await.unwrap());
        // Prefer on wss:// : HTTP/2 when offered, else HTTP/1.1 on a new connection.
        assert_eq!(
            round_trip(&wss, Http2::Prefer).await.unwrap(),
            OFFERS_RFC8441
        );
        for url in [&h2c, &wss] {
            match round_trip(url, Http2::Force).await {
                Ok(over_h2) => assert!(OFFERS_RFC8441 && over_h2, "{url}"),
                Err(e) => assert!(!OFFERS_RFC8441 && is_disabled(&e), "{url}: {e:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap();
    plain.stop().await;
    secure.stop().await;
}
