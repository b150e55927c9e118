//! Plain HTTP end to end: the page, `/healthz`, `/metrics` and its counters, the publish
//! API and its key, HTTP framing.

use std::time::Duration;

use switchboard_proto::{CloseCode, Message};
use switchboard_server::{Limits, ServerConfig};
use switchboard_testkit::server::{http, next_of, publish_request, send_json, start, ws};
use switchboard_tokio::ClientBuilder;

#[tokio::test]
async fn publish_api_needs_its_key() {
    let srv = start(ServerConfig::default()).await;
    let body = r#"{"topic":"news","data":{"headline":"hi"}}"#;
    let (s, b) = http(srv.addr, &publish_request(Some("x"), body)).await;
    assert_eq!(s, 403);
    assert!(
        b.contains("SWITCHBOARD_API_KEY"),
        "says how to set a key: {b}"
    );
    srv.stop().await;

    let srv = start(ServerConfig::default().api_key("sekrit")).await;
    let mut sub = ws(srv.addr, "/ws").await;
    send_json(
        &mut sub,
        serde_json::json!({"type":"subscribe","topic":"news","id":1}),
    )
    .await;
    next_of(&mut sub, "ack").await;
    assert_eq!(http(srv.addr, &publish_request(None, body)).await.0, 401);
    assert_eq!(
        http(srv.addr, &publish_request(Some("wrong"), body))
            .await
            .0,
        403
    );
    let (s, b) = http(srv.addr, &publish_request(Some("sekrit"), body)).await;
    assert_eq!(s, 200);
    let answer: serde_json::Value = serde_json::from_str(&b).unwrap();
    let epoch = answer["epoch"].as_str().unwrap().to_string();
    assert_eq!(
        answer,
        serde_json::json!({"ok":true,"offset":1,"epoch":epoch,"delivered":1})
    );
    let m = next_of(&mut sub, "message").await;
    assert_eq!(m["data"]["headline"], "hi");
    assert_eq!(
        (m["offset"].as_u64(), m["epoch"].as_str()),
        (Some(1), Some(&*epoch))
    );
    let (s, b) = http(
        srv.addr,
        &publish_request(Some("sekrit"), r#"{"topic":"news","data_base64":"AAEC"}"#),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        format!(r#"{{"ok":true,"offset":2,"epoch":"{epoch}","delivered":1}}"#)
    );
    let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut want = b"\x04news".to_vec();
    want.extend_from_slice(&2u64.to_be_bytes());
    want.push(8);
    want.extend_from_slice(epoch.as_bytes());
    want.extend_from_slice(b"\x00\x01\x02");
    assert_eq!(got, Message::binary(want));
    assert_eq!(
        http(srv.addr, &publish_request(Some("sekrit"), "{nope"))
            .await
            .0,
        400
    );
    assert_eq!(
        http(
            srv.addr,
            &publish_request(Some("sekrit"), r#"{"topic":"chat:x","data":1}"#)
        )
        .await
        .0,
        400
    );
    srv.stop().await;
}

#[tokio::test]
async fn pages_health_and_metrics() {
    pages_and_echo(ServerConfig::default()).await;
}

async fn pages_and_echo(config: ServerConfig) {
    let srv = start(config).await;
    let (s, body) = http(srv.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(s, 200);
    assert!(body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"));
    assert_eq!(
        http(srv.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await,
        (200, "ok\n".into())
    );
    assert_eq!(
        http(srv.addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .0,
        404
    );
    assert_eq!(
        http(srv.addr, "GET /chat HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .0,
        426
    );
    assert_eq!(
        http(srv.addr, "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .0,
        405
    );

    let mut e = ws(srv.addr, "/echo").await;
    e.send(&Message::text("hello")).await.unwrap();
    assert_eq!(e.recv().await.unwrap(), Some(Message::text("hello")));
    e.close(CloseCode::NORMAL, "").await.unwrap();
    let _ = ClientBuilder::new(format!("ws://{}/nope", srv.addr))
        .connect()
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, m) = http(srv.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(s, 200);
    for line in [
        "switchboard_handshakes_total{outcome=\"accepted\",http=\"1.1\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"not_found\",http=\"1.1\"} 1",
        "switchboard_messages_received_total 1",
        "switchboard_messages_sent_total 1",
        "switchboard_bytes_received_total 5",
        "switchboard_close_codes_total{code=\"1000\",direction=\"received\"} 1",
        "switchboard_connections_open 0",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    srv.stop().await;
}

/// Every rejected handshake is counted under its reason, every plain HTTP request under its
/// method and status; the process and build metrics are there.
#[tokio::test]
async fn metrics_count_refusals_by_reason_and_requests_by_method_and_status() {
    let mut limits = Limits::default();
    limits.max_connections_per_ip = 1;
    let srv = start(ServerConfig::default().limits(limits).api_key("k")).await;
    let refused = |url: String, origin: Option<&'static str>| async move {
        let mut b = ClientBuilder::new(url);
        if let Some(o) = origin {
            b = b.origin(o);
        }
        match b.connect().await {
            Ok(_) => panic!("not refused"),
            Err(e) => e.to_string(),
        }
    };
    let err = refused(
        format!("ws://{}/chat", srv.addr),
        Some("https://evil.example"),
    )
    .await;
    assert!(err.contains("403"), "{err}");
    let err = refused(format!("ws://{}/nope", srv.addr), None).await;
    assert!(err.contains("404"), "{err}");
    let err = refused(format!("ws://{}/chat?room=%ZZ", srv.addr), None).await;
    assert!(err.contains("400"), "{err}");
    let held = ws(srv.addr, "/echo").await;
    let err = refused(format!("ws://{}/ws", srv.addr), None).await;
    assert!(err.contains("503"), "{err}");

    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(http(srv.addr, get).await.0, 200);
    assert_eq!(
        http(srv.addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await.0,
        200
    );
    let body = r#"{"topic":"t","data":1}"#;
    assert_eq!(http(srv.addr, &publish_request(None, body)).await.0, 401);
    assert_eq!(
        http(srv.addr, &publish_request(Some("no"), body)).await.0,
        403
    );
    assert_eq!(
        http(srv.addr, &publish_request(Some("k"), body)).await.0,
        200
    );
    let purge = "PURGE /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(http(srv.addr, purge).await.0, 405);
    let (s, m) = http(srv.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(s, 200);
    let version = env!("CARGO_PKG_VERSION");
    let build_info = format!("switchboard_build_info{{version=\"{version}\"}} 1");
    let mut lines = vec![
        "switchboard_handshakes_total{outcome=\"accepted\",http=\"1.1\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"origin\",http=\"1.1\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"not_found\",http=\"1.1\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"bad_request\",http=\"1.1\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"per_ip_limit\",http=\"1.1\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"connection_limit\",http=\"1.1\"} 0",
        "switchboard_handshakes_total{outcome=\"failed\",http=\"1.1\"} 0",
        "switchboard_http_requests_total{method=\"GET\",status=\"200\"} 1",
        "switchboard_http_requests_total{method=\"HEAD\",status=\"200\"} 1",
        "switchboard_http_requests_total{method=\"POST\",status=\"200\"} 1",
        "switchboard_http_requests_total{method=\"POST\",status=\"401\"} 1",
        "switchboard_http_requests_total{method=\"POST\",status=\"403\"} 1",
        "switchboard_http_requests_total{method=\"other\",status=\"405\"} 1",
        &build_info,
    ];
    if cfg!(target_os = "linux") {
        lines.extend([
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_open_fds gauge",
            "# TYPE process_max_fds gauge",
            "# TYPE process_start_time_seconds gauge",
        ]);
    }
    for line in lines {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
    let value = |name: &str| -> f64 {
        let line = m.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.and_then(|l| l.split_once(' ')?.1.parse().ok())
            .unwrap_or_else(|| panic!("no value for {name} in\n{m}"))
    };
    if cfg!(target_os = "linux") {
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let fds = value("process_open_fds");
        assert!(fds >= 3.0 && fds <= value("process_max_fds"), "{fds} fds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "started {started}, now {now}"
        );
    }
    drop(held);
    srv.stop().await;

    // The other limit: all connections.
    let mut limits = Limits::default();
    limits.max_connections = 1;
    let srv = start(ServerConfig::default().limits(limits)).await;
    let held = ws(srv.addr, "/echo").await;
    let err = refused(format!("ws://{}/ws", srv.addr), None).await;
    assert!(err.contains("503"), "{err}");
    let (_, m) = http(srv.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let line = "switchboard_handshakes_total{outcome=\"rejected\",reason=\"connection_limit\",http=\"1.1\"} 1";
    assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    drop(held);
    srv.stop().await;
}

/// HTTP framing strictness (issue 23 item 6): a request that could be framed two ways gets
/// 400 (a request-smuggling shape once connections are reused), so does one without a Host
/// or with two; an absolute-form target is served like its path.
#[tokio::test]
async fn ambiguous_requests_get_400_and_absolute_form_is_served() {
    let srv = start(ServerConfig::default().api_key("k")).await;
    for bad in [
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: 22\r\nContent-Length: 40\r\n\r\n{\"topic\":\"t\",\"data\":1}",
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: +22\r\n\r\n{\"topic\":\"t\",\"data\":1}",
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let (status, body) = http(srv.addr, bad).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    let ok = "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: 22\r\n\r\n{\"topic\":\"t\",\"data\":1}";
    assert_eq!(
        http(srv.addr, ok).await.0,
        200,
        "the same request, framed one way"
    );
    let (status, body) = http(
        srv.addr,
        "GET http://localhost/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    srv.stop().await;
}

/// The same on io_uring (`serve --io-uring`), on a runtime with the park hook and two
/// workers.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
mod io_uring {
    use switchboard_server::ServerConfig;
    use switchboard_testkit::server::on_uring;

    #[test]
    fn pages_health_metrics_and_echo() {
        on_uring(super::pages_and_echo(
            ServerConfig::default().io_uring(true),
        ));
    }
}
