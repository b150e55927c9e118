//! The server end to end, with real WebSocket clients over TCP.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use switchboard_proto::{CloseCode, Config, Event, Message};
use switchboard_server::{
    HeartbeatConfig, Limits, OutboxLimits, Server, ServerConfig, SlowConsumerPolicy,
};
use switchboard_tokio::{ClientBuilder, MaybeTlsStream, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type Ws = WebSocket<MaybeTlsStream>;

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    hub: switchboard_server::Hub,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }
}

async fn start(config: ServerConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(config);
    let hub = server.hub().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
        hub,
    }
}

async fn ws(addr: SocketAddr, path: &str) -> Ws {
    ClientBuilder::new(format!("ws://{addr}{path}"))
        .connect()
        .await
        .unwrap()
        .0
}

/// The next text message as JSON, within 10 s.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.recv())
            .await
            .expect("a message in time")
            .unwrap()
            .expect("connection open");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The next message of `kind`, skipping others.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(&Message::text(v.to_string())).await.unwrap();
}

/// One plain HTTP request; returns (status, body).
async fn http(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

fn publish_req(key: Option<&str>, body: &str) -> String {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Waits for the end of the connection; returns the close code the server sent, if any.
async fn close_code(ws: &mut Ws) -> Option<u16> {
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

#[tokio::test]
async fn chat_rooms_presence_and_isolation() {
    chat_rooms(ServerConfig::default()).await;
}

async fn chat_rooms(config: ServerConfig) {
    let srv = start(config).await;
    let mut ada = ws(srv.addr, "/chat?room=r1&name=Ada").await;
    let w = next_of(&mut ada, "welcome").await;
    assert_eq!(w["room"], "r1");
    assert_eq!(w["you"]["name"], "Ada");
    let ada_id = w["you"]["id"].as_str().unwrap().to_string();

    let mut bob = ws(srv.addr, "/chat?room=r1&name=Bob%20B").await;
    let w = next_of(&mut bob, "welcome").await;
    let names: Vec<_> = w["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].clone())
        .collect();
    assert_eq!(names, ["Ada", "Bob B"]);
    // Ada got her own join first (everyone in the room does, the newcomer too).
    assert_eq!(next_of(&mut ada, "join").await["member"]["name"], "Ada");
    let j = next_of(&mut ada, "join").await;
    assert_eq!(j["member"]["name"], "Bob B");

    let mut cy = ws(srv.addr, "/chat?room=r2&name=Cy").await;
    next_of(&mut cy, "welcome").await;

    send_json(
        &mut ada,
        serde_json::json!({"type":"message","text":"hello r1"}),
    )
    .await;
    for c in [&mut ada, &mut bob] {
        let m = next_of(c, "message").await;
        assert_eq!(m["text"], "hello r1");
        assert_eq!(m["room"], "r1");
        assert_eq!(m["from"]["id"], ada_id.as_str());
        assert_eq!(m["seq"], 1);
        assert!(m["time"].as_u64().unwrap() > 1_700_000_000_000);
        assert!(m["id"].as_u64().is_some());
    }
    // Broken JSON is an error event, not a disconnect.
    bob.send(&Message::text("{not json")).await.unwrap();
    let e = next_of(&mut bob, "error").await;
    assert_eq!(e["code"], "invalid_json");
    send_json(
        &mut cy,
        serde_json::json!({"type":"message","text":"hello r2"}),
    )
    .await;
    let m = next_of(&mut cy, "message").await;
    assert_eq!(m["seq"], 1, "rooms count separately");
    // Bob leaves: Ada sees it; Cy (other room) saw nothing of r1.
    bob.close(CloseCode::NORMAL, "bye").await.unwrap();
    let l = next_of(&mut ada, "leave").await;
    assert_eq!(l["member"]["name"], "Bob B");
    send_json(
        &mut cy,
        serde_json::json!({"type":"message","text":"again"}),
    )
    .await;
    let m = next_of(&mut cy, "message").await;
    assert_eq!(m["text"], "again", "no message of r1 reached r2");

    // Switching rooms: Ada goes to r2, gets its welcome with history, Cy sees her join.
    send_json(&mut ada, serde_json::json!({"type":"join","room":"r2"})).await;
    let w = next_of(&mut ada, "welcome").await;
    assert_eq!(w["room"], "r2");
    let hist: Vec<_> = w["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(hist, ["hello r2", "again"]);
    let j = next_of(&mut cy, "join").await;
    assert_eq!(j["member"]["name"], "Ada");
    drop((ada, cy));
    srv.stop().await;
}

#[tokio::test]
async fn chat_validates_its_input() {
    let srv = start(ServerConfig::default()).await;
    let (s, body) = http(
        srv.addr,
        "GET /chat?room=no%20spaces HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(s, 400);
    assert!(body.contains("room names use only"), "{body}");
    let mut c = ws(srv.addr, "/chat").await;
    let w = next_of(&mut c, "welcome").await;
    assert_eq!(w["room"], "lobby");
    assert!(w["you"]["name"].as_str().unwrap().starts_with("guest-"));
    for (req, code) in [
        (
            serde_json::json!({"type":"message","text":"   "}),
            "invalid_text",
        ),
        (
            serde_json::json!({"type":"message","text":"x".repeat(4001)}),
            "invalid_text",
        ),
        (
            serde_json::json!({"type":"join","room":"bad room"}),
            "invalid_room",
        ),
        (serde_json::json!({"type":"dance"}), "unknown_type"),
    ] {
        send_json(&mut c, req).await;
        assert_eq!(next_of(&mut c, "error").await["code"], code);
    }
    c.send(&Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next_of(&mut c, "error").await["code"], "binary_unsupported");
    // The subprotocol is selected when offered.
    let (_c2, resp) = ClientBuilder::new(format!("ws://{}/chat", srv.addr))
        .protocol("switchboard.chat.v1")
        .connect()
        .await
        .unwrap();
    assert_eq!(resp.protocol.as_deref(), Some("switchboard.chat.v1"));
    srv.stop().await;
}

#[tokio::test]
async fn chat_takes_plain_text_as_a_message() {
    let srv = start(ServerConfig::default()).await;
    let mut ada = ws(srv.addr, "/chat?room=plain&name=Ada").await;
    next_of(&mut ada, "welcome").await;
    // What someone types in `switchboard connect ws://…/chat`: not JSON.
    for typed in [
        "hello from a terminal",
        "[1, 2] is a list",
        "42",
        "  indented",
    ] {
        ada.send(&Message::text(typed)).await.unwrap();
        let m = next_of(&mut ada, "message").await;
        assert_eq!(m["text"], typed);
        assert_eq!(m["from"]["name"], "Ada");
    }
    // Text that starts with '{' is still a request, and a broken one is still an error.
    ada.send(&Message::text(" {not json")).await.unwrap();
    let e = next_of(&mut ada, "error").await;
    assert_eq!(e["code"], "invalid_json");
    ada.send(&Message::text("   ")).await.unwrap();
    assert_eq!(next_of(&mut ada, "error").await["code"], "invalid_text");
    send_json(
        &mut ada,
        serde_json::json!({"type":"message","text":"json still works"}),
    )
    .await;
    assert_eq!(
        next_of(&mut ada, "message").await["text"],
        "json still works"
    );
    srv.stop().await;
}

#[tokio::test]
async fn chat_typing_notices_reach_the_room_at_most_every_two_seconds() {
    let srv = start(ServerConfig::default()).await;
    let mut ada = ws(srv.addr, "/chat?room=typing&name=Ada").await;
    next_of(&mut ada, "welcome").await;
    let mut bob = ws(srv.addr, "/chat?room=typing&name=Bob").await;
    next_of(&mut bob, "welcome").await;
    for _ in 0..5 {
        send_json(&mut ada, serde_json::json!({"type":"typing"})).await;
    }
    send_json(
        &mut ada,
        serde_json::json!({"type":"message","text":"done"}),
    )
    .await;
    // Bob: his own join, one typing notice from Ada (the other four were within 2 s), then
    // her message; the notice is not kept in the history.
    let mut seen = Vec::new();
    loop {
        let v = next_json(&mut bob).await;
        seen.push(v["type"].as_str().unwrap_or_default().to_string());
        if v["type"] == "typing" {
            assert_eq!(v["member"]["name"], "Ada");
            assert_eq!(v["room"], "typing");
        }
        if v["type"] == "message" {
            break;
        }
    }
    assert_eq!(seen, ["join", "typing", "message"]);
    // After a message the next keystroke announces itself again at once.
    send_json(&mut ada, serde_json::json!({"type":"typing"})).await;
    assert_eq!(next_json(&mut bob).await["type"], "typing");
    let mut cy = ws(srv.addr, "/chat?room=typing&name=Cy").await;
    let w = next_of(&mut cy, "welcome").await;
    assert_eq!(w["history"].as_array().unwrap().len(), 1, "{w}");
    srv.stop().await;
}

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
async fn a_room_message_reaches_a_thousand_subscribers() {
    let srv = start(ServerConfig::default().limits({
        let mut l = Limits::default();
        l.max_connections_per_ip = 2000;
        l
    }))
    .await;
    let mut watchers = Vec::new();
    for i in 0..1000 {
        let mut w = ws(srv.addr, "/ws").await;
        send_json(
            &mut w,
            serde_json::json!({"type":"subscribe","topic":"chat:big","id":i}),
        )
        .await;
        watchers.push(w);
    }
    for (i, w) in watchers.iter_mut().enumerate() {
        assert_eq!(next_of(w, "ack").await["id"], i);
    }
    let mut talker = ws(srv.addr, "/chat?room=big&name=T").await;
    next_of(&mut talker, "welcome").await;
    send_json(
        &mut talker,
        serde_json::json!({"type":"message","text":"to all"}),
    )
    .await;
    for w in &mut watchers {
        let m = next_of(w, "message").await;
        assert_eq!(m["text"], "to all");
    }
    assert_eq!(srv.hub.subscriber_count("chat:big"), 1001);
    drop(watchers);
    drop(talker);
    srv.stop().await;
}

#[tokio::test]
async fn pubsub_acks_errors_and_binary() {
    let srv = start(ServerConfig::default()).await;
    let mut a = ws(srv.addr, "/ws").await;
    let mut b = ws(srv.addr, "/ws").await;
    send_json(
        &mut a,
        serde_json::json!({"type":"subscribe","topic":"news","id":"s1"}),
    )
    .await;
    assert_eq!(
        next_json(&mut a).await,
        serde_json::json!({"type":"ack","id":"s1"})
    );
    send_json(
        &mut b,
        serde_json::json!({"type":"publish","topic":"news","data":{"n":[1,2]},"id":7}),
    )
    .await;
    assert_eq!(
        next_json(&mut b).await,
        serde_json::json!({"type":"ack","id":7,"delivered":1})
    );
    assert_eq!(
        next_json(&mut a).await,
        serde_json::json!({"type":"message","topic":"news","seq":1,"data":{"n":[1,2]}})
    );
    // Binary: [N][topic][payload] both ways.
    let mut bin = vec![4u8];
    bin.extend_from_slice(b"news");
    bin.extend_from_slice(&[0, 255, 7]);
    b.send(&Message::binary(bin.clone())).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::binary(bin));
    for (req, code) in [
        (
            serde_json::json!({"type":"publish","topic":"chat:lobby","data":1,"id":1}),
            "reserved_topic",
        ),
        (
            serde_json::json!({"type":"subscribe","topic":"bad topic!","id":2}),
            "invalid_topic",
        ),
        (
            serde_json::json!({"type":"unsubscribe","topic":"nope","id":3}),
            "not_subscribed",
        ),
        (serde_json::json!({"type":"nope","id":4}), "unknown_type"),
    ] {
        send_json(&mut b, req).await;
        let e = next_json(&mut b).await;
        assert_eq!(e["type"], "error");
        assert_eq!(e["code"], code, "{e}");
    }
    b.send(&Message::binary(vec![200u8, 1])).await.unwrap();
    assert_eq!(next_json(&mut b).await["code"], "invalid_binary");
    send_json(
        &mut a,
        serde_json::json!({"type":"unsubscribe","topic":"news"}),
    )
    .await;
    send_json(
        &mut b,
        serde_json::json!({"type":"publish","topic":"news","data":2,"id":8}),
    )
    .await;
    assert_eq!(next_json(&mut b).await["delivered"], 0);
    srv.stop().await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_limited() {
    let srv = start(ServerConfig::default().limits({
        let mut l = Limits::default();
        l.max_subscriptions = 2;
        l
    }))
    .await;
    let mut a = ws(srv.addr, "/ws").await;
    for (i, t) in ["a", "b", "c"].iter().enumerate() {
        send_json(
            &mut a,
            serde_json::json!({"type":"subscribe","topic":t,"id":i}),
        )
        .await;
    }
    assert_eq!(next_json(&mut a).await["type"], "ack");
    assert_eq!(next_json(&mut a).await["type"], "ack");
    assert_eq!(next_json(&mut a).await["code"], "too_many_subscriptions");
    srv.stop().await;
}

#[tokio::test]
async fn publish_api_needs_its_key() {
    let srv = start(ServerConfig::default()).await;
    let body = r#"{"topic":"news","data":{"headline":"hi"}}"#;
    let (s, b) = http(srv.addr, &publish_req(Some("x"), body)).await;
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
    assert_eq!(http(srv.addr, &publish_req(None, body)).await.0, 401);
    assert_eq!(
        http(srv.addr, &publish_req(Some("wrong"), body)).await.0,
        403
    );
    let (s, b) = http(srv.addr, &publish_req(Some("sekrit"), body)).await;
    assert_eq!((s, b.as_str()), (200, r#"{"ok":true,"delivered":1}"#));
    let m = next_of(&mut sub, "message").await;
    assert_eq!(m["data"]["headline"], "hi");
    let (s, _) = http(
        srv.addr,
        &publish_req(Some("sekrit"), r#"{"topic":"news","data_base64":"AAEC"}"#),
    )
    .await;
    assert_eq!(s, 200);
    let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::binary(b"\x04news\x00\x01\x02".to_vec()));
    assert_eq!(
        http(srv.addr, &publish_req(Some("sekrit"), "{nope"))
            .await
            .0,
        400
    );
    assert_eq!(
        http(
            srv.addr,
            &publish_req(Some("sekrit"), r#"{"topic":"chat:x","data":1}"#)
        )
        .await
        .0,
        400
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_stalled_reader_is_cut_off_while_others_keep_receiving() {
    let srv = start(ServerConfig::default().outbox(OutboxLimits {
        max_bytes: 256 << 10,
        max_messages: 4096,
        policy: SlowConsumerPolicy::Disconnect,
    }))
    .await;
    let mut stalled = ws(srv.addr, "/ws").await;
    let mut reader = ws(srv.addr, "/ws").await;
    for c in [&mut stalled, &mut reader] {
        send_json(
            c,
            serde_json::json!({"type":"subscribe","topic":"firehose","id":1}),
        )
        .await;
        next_of(c, "ack").await;
    }
    // 64 MiB in 64 KiB-ish messages: far more than socket buffers and the outbox hold.
    let data = Value::String("x".repeat(60_000));
    let reading = tokio::spawn(async move {
        for seq in 1..=1000u64 {
            let m = next_of(&mut reader, "message").await;
            assert_eq!(m["seq"], seq);
        }
        reader
    });
    for _ in 0..1000 {
        srv.hub
            .publish_with("firehose", false, |seq| {
                Message::text(
                    serde_json::json!({"type":"message","topic":"firehose","seq":seq,"data":data})
                        .to_string(),
                )
            })
            .unwrap();
        // Publishers are never blocked; pace them so the reading client can keep up.
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let reader = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        srv.hub.subscriber_count("firehose"),
        1,
        "the stalled one was unsubscribed"
    );
    // When it finally reads, the stalled client finds its connection ended (1008 if the
    // close frame fit in before the deadline).
    let code = close_code(&mut stalled).await;
    assert!(matches!(code, None | Some(1008)), "{code:?}");
    let (_, metrics) = http(srv.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        metrics.contains("switchboard_slow_consumer_disconnects_total 1"),
        "{metrics}"
    );
    drop(reader);
    srv.stop().await;
}

#[tokio::test]
async fn drop_oldest_policy_keeps_the_connection() {
    let srv = start(ServerConfig::default().outbox(OutboxLimits {
        max_bytes: 1 << 20,
        max_messages: 8,
        policy: SlowConsumerPolicy::DropOldest,
    }))
    .await;
    let mut slow = ws(srv.addr, "/ws").await;
    send_json(
        &mut slow,
        serde_json::json!({"type":"subscribe","topic":"t","id":1}),
    )
    .await;
    next_of(&mut slow, "ack").await;
    // Fill the socket buffers so the outbox must hold (and drop) the rest.
    let big = Value::String("y".repeat(60_000));
    for _ in 0..400 {
        srv.hub
            .publish(
                "t",
                Message::text(serde_json::json!({"type":"message","data":big}).to_string()),
                false,
            )
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        srv.hub
            .stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    // Still connected: it can drain and keep going.
    let mut n = 0;
    while n < 5 {
        next_of(&mut slow, "message").await;
        n += 1;
    }
    assert_eq!(srv.hub.subscriber_count("t"), 1);
    srv.stop().await;
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
        srv.hub
            .publish(
                "t",
                Message::text(format!("{{\"type\":\"message\",\"n\":{i}}}")),
                false,
            )
            .unwrap();
    }
    let hub = srv.hub.clone();
    let stopping = tokio::spawn(srv.stop());
    for c in &mut clients {
        for i in 0..500 {
            assert_eq!(next_json(c).await["n"], i);
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
        "switchboard_handshakes_total{outcome=\"accepted\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"not_found\"} 1",
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
    assert_eq!(http(srv.addr, &publish_req(None, body)).await.0, 401);
    assert_eq!(http(srv.addr, &publish_req(Some("no"), body)).await.0, 403);
    assert_eq!(http(srv.addr, &publish_req(Some("k"), body)).await.0, 200);
    let purge = "PURGE /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(http(srv.addr, purge).await.0, 405);
    let (s, m) = http(srv.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(s, 200);
    let version = env!("CARGO_PKG_VERSION");
    let build_info = format!("switchboard_build_info{{version=\"{version}\"}} 1");
    let mut lines = vec![
        "switchboard_handshakes_total{outcome=\"accepted\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"origin\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"not_found\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"bad_request\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"per_ip_limit\"} 1",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"connection_limit\"} 0",
        "switchboard_handshakes_total{outcome=\"failed\"} 0",
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
    let line = "switchboard_handshakes_total{outcome=\"rejected\",reason=\"connection_limit\"} 1";
    assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    drop(held);
    srv.stop().await;
}

/// The same server paths with every socket on io_uring (`serve --io-uring`), on a runtime
/// with the park hook and two workers.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
mod io_uring {
    use super::{chat_rooms, pages_and_echo, shutdown_then_1001, ServerConfig};

    fn on_uring(f: impl std::future::Future<Output = ()>) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_park(switchboard_tokio::uring::before_park)
            .build()
            .unwrap()
            .block_on(f);
    }

    #[test]
    fn chat_rooms_presence_and_isolation() {
        on_uring(chat_rooms(ServerConfig::default().io_uring(true)));
    }

    #[test]
    fn shutdown_delivers_everything_queued_then_1001() {
        on_uring(shutdown_then_1001(ServerConfig::default().io_uring(true)));
    }

    #[test]
    fn pages_health_metrics_and_echo() {
        on_uring(pages_and_echo(ServerConfig::default().io_uring(true)));
    }
}

/// `/echo` selects the first subprotocol a client offers (issue 23 item 8: browsers and
/// Node `ws` fail a handshake that offered one and got none back).
#[tokio::test]
async fn echo_selects_the_first_offered_subprotocol() {
    let srv = start(ServerConfig::default()).await;
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: my.app.v2, other\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("\r\nsec-websocket-protocol: my.app.v2\r\n"),
        "{head}"
    );
    drop(s);
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
