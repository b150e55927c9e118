//! Refusals are logged for operators (its own test binary: it installs the global
//! subscriber).

use switchboard_server::{Limits, ServerConfig};
use switchboard_testkit::logs::Captured;
use switchboard_testkit::server::{http, start};
use switchboard_tokio::ClientBuilder;

/// At the default level (`info`), origin, connection-limit and publish-key refusals each log
/// a warning naming the peer and the reason.
#[tokio::test]
async fn refusals_are_logged_with_peer_and_reason() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mut limits = Limits::default();
    limits.max_connections_per_ip = 1;
    let srv = start(ServerConfig::default().limits(limits).api_key("k")).await;
    let addr = srv.addr;

    let err = ClientBuilder::new(format!("ws://{addr}/chat"))
        .origin("https://evil.example")
        .connect()
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("403"), "{err}");
    let held = ClientBuilder::new(format!("ws://{addr}/echo"))
        .connect()
        .await
        .unwrap();
    let err = ClientBuilder::new(format!("ws://{addr}/ws"))
        .connect()
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("503"), "{err}");
    let body = r#"{"topic":"t","data":1}"#;
    let publish = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(http(addr, &publish).await.0, 403);

    let logs = captured.text();
    let line = |needle: &str| -> String {
        logs.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{logs}"))
            .to_string()
    };
    for (needle, more) in [
        ("reason=\"origin\"", "https://evil.example"),
        ("reason=\"per_ip_limit\"", "limit=1"),
        ("reason=\"wrong_key\"", "publish"),
    ] {
        let l = line(needle);
        assert!(l.contains("WARN"), "not a warning: {l}");
        assert!(l.contains("peer=127.0.0.1:"), "no peer: {l}");
        assert!(l.contains(more), "no {more:?}: {l}");
    }

    drop(held);
    srv.stop().await;
}
