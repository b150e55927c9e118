//! `/echo` end to end (the Autobahn suites and the benchmarks exercise it further).

use switchboard_server::ServerConfig;
use switchboard_testkit::server::{raw_handshake, start};

/// `/echo` selects the first subprotocol a client offers (issue 23 item 8: browsers and
/// Node `ws` fail a handshake that offered one and got none back).
#[tokio::test]
async fn echo_selects_the_first_offered_subprotocol() {
    let srv = start(ServerConfig::default()).await;
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let head = raw_handshake(
        &mut s,
        "/echo",
        "Sec-WebSocket-Protocol: my.app.v2, other\r\n",
    )
    .await
    .unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("\r\nsec-websocket-protocol: my.app.v2\r\n"),
        "{head}"
    );
    drop(s);
    srv.stop().await;
}
