//! A connection's life on any endpoint: limits and origins at the handshake, heartbeats and
//! idle timeouts, oversize messages, shutdown.

use std::time::Duration;

use serde_json::Value;
use switchboard_proto::{Config, Event, Message};
use switchboard_server::{HeartbeatConfig, Limits, ServerConfig};
use switchboard_testkit::server::{close_code, http, next_json, next_of, send_json, start, ws};
use switchboard_tokio::ClientBuilder;

#[tokio::test]
async fn shutdown_tells_no_one_that_the_others_left() {
    let srv = start(ServerConfig::default()).await;
    let mut clients = Vec::new();
    for name in ["Ada", "Bob", "Cy"] {
        let mut c = ws(srv.addr, &format!("/chat?room=bye&name={name}")).await;
        next_of(&mut c, "welcome").await;
        clients.push(c);
    }
    // Everyone has seen everyone join.
    for c in &mut clients[..2] {
        while next_json(c).await["member"]["name"] != "Cy" {}
    }
    next_of(&mut clients[2], "join").await;
    let stopping = tokio::spawn(srv.stop());
    for c in &mut clients {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), c.recv()).await {
                Err(_) => panic!("no 1001 within 15 s"),
                Ok(Ok(Some(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_ne!(v["type"], "leave", "a leave during shutdown: {v}");
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) | Ok(Err(_)) => break,
            }
        }
        let code = c
            .connection()
            .received_close()
            .and_then(|f| f.as_ref().map(|f| f.code.0));
        assert_eq!(code, Some(1001));
    }
    stopping.await.unwrap();
}

#[tokio::test]
async fn shutdown_delivers_everything_queued_then_1001() {
    shutdown_then_1001(ServerConfig::default()).await;
}

async fn shutdown_then_1001(config: ServerConfig) {
    let srv = start(config).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = ws(srv.addr, "/ws").await;
        send_json(
            &mut c,
            serde_json::json!({"type":"subscribe","topic":"t","id":1}),
        )
        .await;
        next_of(&mut c, "ack").await;
        clients.push(c);
    }
    let mut chat = ws(srv.addr, "/chat?name=Z").await;
    next_of(&mut chat, "welcome").await;
    for i in 0..500 {
        let body = switchboard_server::publication_json(&format!("{{\"n\":{i}}}")).unwrap();
        srv.hub.publish("t", body).await.unwrap();
    }
    let hub = srv.hub.clone();
    let stopping = tokio::spawn(srv.stop());
    for c in &mut clients {
        for i in 0..500 {
            assert_eq!(next_json(c).await["data"]["n"], i);
        }
        assert_eq!(close_code(c).await, Some(1001));
    }
    assert_eq!(close_code(&mut chat).await, Some(1001));
    stopping.await.unwrap();
    assert_eq!(hub.topic_count(), 0);
}

#[tokio::test]
async fn oversize_messages_get_1009() {
    let srv = start(
        ServerConfig::default().ws(Config::default()
            .max_message_size(1000)
            .max_frame_size(1000)),
    )
    .await;
    let mut c = ws(srv.addr, "/ws").await;
    c.send(&Message::text("x".repeat(1001))).await.unwrap();
    assert_eq!(close_code(&mut c).await, Some(1009));
    srv.stop().await;
}

#[tokio::test]
async fn connection_limits_answer_503() {
    let mut limits = Limits::default();
    limits.max_connections = 2;
    let srv = start(ServerConfig::default().limits(limits)).await;
    let _a = ws(srv.addr, "/ws").await;
    let _b = ws(srv.addr, "/echo").await;
    let err = ClientBuilder::new(format!("ws://{}/ws", srv.addr))
        .connect()
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("503"), "{msg}");
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _c = ws(srv.addr, "/ws").await;
    srv.stop().await;

    let mut limits = Limits::default();
    limits.max_connections_per_ip = 1;
    let srv = start(ServerConfig::default().limits(limits)).await;
    let _a = ws(srv.addr, "/chat").await;
    let err = ClientBuilder::new(format!("ws://{}/chat", srv.addr))
        .connect()
        .await
        .err()
        .unwrap();
    assert!(
        format!("{err:?}").contains("per-ip") || err.to_string().contains("503"),
        "{err}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn origins_outside_the_allowlist_get_403() {
    let srv = start(ServerConfig::default()).await;
    let url = format!("ws://{}/chat", srv.addr);
    let err = ClientBuilder::new(&url)
        .origin("https://evil.example")
        .connect()
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("403"), "{err}");
    ClientBuilder::new(&url)
        .origin("http://localhost:3000")
        .connect()
        .await
        .unwrap();
    ClientBuilder::new(&url)
        .origin(format!("http://{}", srv.addr))
        .connect()
        .await
        .unwrap();
    srv.stop().await;

    let mut origins = switchboard_server::OriginPolicy::default();
    origins.allowed = vec!["https://app.example".into()];
    let srv = start(ServerConfig::default().origins(origins)).await;
    let url = format!("ws://{}/chat", srv.addr);
    ClientBuilder::new(&url)
        .origin("https://app.example")
        .connect()
        .await
        .unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn silent_peers_are_pinged_then_closed() {
    let mut hb = HeartbeatConfig::default();
    hb.ping_interval = Some(Duration::from_millis(100));
    hb.pong_timeout = Some(Duration::from_millis(200));
    let srv = start(ServerConfig::default().heartbeat(hb)).await;
    // One client keeps reading (and so answers pings); one never reads.
    let mut lively = ws(srv.addr, "/ws").await;
    let mut silent = ws(srv.addr, "/echo").await;
    let alive = tokio::spawn(async move {
        let mut pings = 0;
        let end = tokio::time::Instant::now() + Duration::from_millis(1200);
        while let Ok(ev) = tokio::time::timeout_at(end, lively.next_event()).await {
            if let Ok(Some(Event::Ping(_))) = ev {
                pings += 1;
            }
        }
        (pings, lively)
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (pings, mut lively) = alive.await.unwrap();
    assert!(pings >= 2, "pinged {pings} times");
    lively
        .send(&Message::text(
            "{\"type\":\"subscribe\",\"topic\":\"t\",\"id\":1}",
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut lively).await["type"],
        "ack",
        "the answering client is still open"
    );
    assert_eq!(close_code(&mut silent).await, Some(1011));
    let (_, metrics) = http(srv.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        metrics.contains("switchboard_ping_timeouts_total 1"),
        "{metrics}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let mut hb = HeartbeatConfig::default();
    hb.idle_timeout = Some(Duration::from_millis(300));
    let srv = start(ServerConfig::default().heartbeat(hb)).await;
    let mut c = ws(srv.addr, "/ws").await;
    assert_eq!(close_code(&mut c).await, Some(1001));
    srv.stop().await;
}

/// The same on io_uring (`serve --io-uring`), on a runtime with the park hook and two
/// workers.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
mod io_uring {
    use switchboard_server::ServerConfig;
    use switchboard_testkit::server::on_uring;

    #[test]
    fn shutdown_delivers_everything_queued_then_1001() {
        on_uring(super::shutdown_then_1001(
            ServerConfig::default().io_uring(true),
        ));
    }
}
