//! `/chat` end to end: rooms, presence, history, typing notices, input checks.

use switchboard_proto::{CloseCode, Message};
use switchboard_server::{Limits, ServerConfig};
use switchboard_testkit::server::{http, next_json, next_of, send_json, start, ws};
use switchboard_tokio::ClientBuilder;

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
        assert_eq!(m["offset"], 1);
        assert_eq!(m["epoch"].as_str().unwrap().len(), 8);
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
    assert_eq!(m["offset"], 1, "rooms count separately");
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

/// The same on io_uring (`serve --io-uring`), on a runtime with the park hook and two
/// workers.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
mod io_uring {
    use switchboard_server::ServerConfig;
    use switchboard_testkit::server::on_uring;

    #[test]
    fn chat_rooms_presence_and_isolation() {
        on_uring(super::chat_rooms(ServerConfig::default().io_uring(true)));
    }
}

/// A chat client that reconnects with its last position (`?since=N&epoch=E`) is welcomed
/// with `recovered: true` and an empty history, then gets every message it missed, once,
/// in order; with a position the room no longer has, it is welcomed with
/// `recovered: false` and the newest messages.
#[tokio::test]
async fn a_reconnect_with_a_position_gets_what_was_missed() {
    let srv = start(ServerConfig::default()).await;
    let mut ada = ws(srv.addr, "/chat?room=rec&name=Ada").await;
    let welcome = next_of(&mut ada, "welcome").await;
    assert_eq!(welcome["recovered"], false);
    let epoch = welcome["epoch"].as_str().unwrap().to_string();
    let mut bob = ws(srv.addr, "/chat?room=rec&name=Bob").await;
    next_of(&mut bob, "welcome").await;
    send_json(&mut bob, serde_json::json!({"type":"message","text":"one"})).await;
    let seen = next_of(&mut ada, "message").await;
    assert_eq!(seen["text"], "one");
    let last = seen["offset"].as_u64().unwrap();
    drop(ada);
    for text in ["two", "three", "four"] {
        send_json(&mut bob, serde_json::json!({"type":"message","text":text})).await;
        next_of(&mut bob, "message").await;
    }
    let mut back = ws(
        srv.addr,
        &format!("/chat?room=rec&name=Ada&since={last}&epoch={epoch}"),
    )
    .await;
    let welcome = next_json(&mut back).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(welcome["history"], serde_json::json!([]));
    assert_eq!(welcome["offset"], last + 3);
    for (i, text) in ["two", "three", "four"].iter().enumerate() {
        let m = next_of(&mut back, "message").await;
        assert_eq!(
            (m["text"].as_str(), m["offset"].as_u64()),
            (Some(*text), Some(last + 1 + i as u64))
        );
    }
    send_json(
        &mut bob,
        serde_json::json!({"type":"message","text":"live"}),
    )
    .await;
    assert_eq!(next_of(&mut back, "message").await["text"], "live");

    let mut stale = ws(srv.addr, "/chat?room=rec&name=Cy&since=1&epoch=gone").await;
    let welcome = next_json(&mut stale).await;
    assert_eq!(welcome["recovered"], false, "{welcome}");
    let texts: Vec<_> = welcome["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, ["one", "two", "three", "four", "live"]);
    let (status, _) = http(srv.addr, "GET /chat?since=3 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await;
    assert_eq!(status, 400, "since without epoch is refused");
    srv.stop().await;
}
