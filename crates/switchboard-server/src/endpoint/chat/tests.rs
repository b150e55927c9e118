//! The chat app on a hub alone: welcome, members, messages, typing, room switches.

use serde_json::json;
use switchboard_hub::HubConfig;

use super::*;
use crate::endpoint::testing::{present_in, test_hub, wait, with_runtime, Client, Sent};

fn hub() -> Hub {
    crate::render::memory_hub(HubConfig::default())
}

/// A member of `room` who has opened and taken their welcome and own join.
fn member(hub: &Hub, id: u64, name: &str, room: &str) -> (Chat, Client) {
    let mut chat = Chat::new(format!("u{id}").into(), name.into(), room.into(), 100);
    let mut c = Client::new(hub);
    let welcome = c.open(&mut chat);
    assert_eq!(welcome.len(), 1);
    assert_eq!(welcome[0].kind(), "welcome");
    assert_eq!(c.delivered_kinds(), ["join"]);
    (chat, c)
}

fn error_code(sent: &[Sent]) -> &str {
    match sent {
        [s @ Sent::Reply(_)] if s.kind() == "error" => s.json()["code"].as_str().unwrap(),
        other => panic!("not one error reply: {other:?}"),
    }
}

#[test]
fn joining_welcomes_with_members_and_tells_the_room() {
    let hub = hub();
    let (_ada, ada_c) = member(&hub, 1, "Ada", "r1");
    let mut bob = Chat::new("u2".into(), "Bob".into(), "r1".into(), 100);
    let mut bob_c = Client::new(&hub);
    let sent = bob_c.open(&mut bob);
    let w = sent[0].json();
    assert_eq!(w["you"], json!({"id":"u2","name":"Bob"}));
    assert_eq!(w["room"], "r1");
    assert_eq!(
        w["members"],
        json!([{"id":"u1","name":"Ada"},{"id":"u2","name":"Bob"}])
    );
    assert_eq!(w["history"], json!([]));
    assert_eq!(w["offset"], 0);
    assert_eq!(w["epoch"].as_str().unwrap().len(), 8);
    // The welcome is a reply; the join is a broadcast, to the newcomer too.
    assert!(matches!(sent[0], Sent::Reply(_)));
    let joined = ada_c.delivered();
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].json()["member"]["name"], "Bob");
    assert_eq!(bob_c.delivered_kinds(), ["join"]);
}

#[test]
fn saying_reaches_the_room_numbered_and_kept_for_newcomers() {
    let hub = hub();
    let (mut ada, mut ada_c) = member(&hub, 1, "Ada", "r1");
    let (_bob, bob_c) = member(&hub, 2, "Bob", "r1");
    let (_cy, cy_c) = member(&hub, 3, "Cy", "r2");
    ada_c.delivered();
    assert!(ada_c
        .send_json(&mut ada, &json!({"type":"message","text":"hi"}))
        .is_empty());
    // Typed text (not starting with `{`) is a message too.
    assert!(ada_c.send(&mut ada, Message::text("  plain")).is_empty());
    let mut epochs = Vec::new();
    for c in [&ada_c, &bob_c] {
        let got = c.delivered();
        let texts: Vec<_> = got.iter().map(|s| s.json()["text"].clone()).collect();
        assert_eq!(texts, [json!("hi"), json!("  plain")]);
        assert_eq!(got[0].json()["offset"], 1);
        assert_eq!(got[1].json()["offset"], 2);
        assert_eq!(got[0].json()["epoch"], got[1].json()["epoch"]);
        epochs.push(got[0].json()["epoch"].clone());
        assert_eq!(got[0].json()["from"], json!({"id":"u1","name":"Ada"}));
    }
    assert!(cy_c.delivered().is_empty(), "another room heard it");
    let mut dan = Chat::new("u4".into(), "Dan".into(), "r1".into(), 100);
    let welcome = Client::new(&hub).open(&mut dan);
    assert_eq!(epochs[0], epochs[1], "one epoch for the room");
    assert_eq!(welcome[0].json()["offset"], 2);
    assert_eq!(welcome[0].json()["epoch"], epochs[0]);
    let history = &welcome[0].json()["history"];
    assert_eq!(history[0]["text"], "hi");
    assert_eq!(history[1]["text"], "  plain");
}

#[test]
fn typing_notices_are_throttled_until_the_next_message() {
    let hub = hub();
    let (mut ada, mut ada_c) = member(&hub, 1, "Ada", "t");
    let (_bob, bob_c) = member(&hub, 2, "Bob", "t");
    bob_c.delivered();
    for _ in 0..3 {
        assert!(ada_c
            .send_json(&mut ada, &json!({"type":"typing"}))
            .is_empty());
    }
    assert_eq!(bob_c.delivered_kinds(), ["typing"]);
    ada_c.send_json(&mut ada, &json!({"type":"message","text":"done"}));
    ada_c.send_json(&mut ada, &json!({"type":"typing"}));
    assert_eq!(bob_c.delivered_kinds(), ["message", "typing"]);
}

/// The old room's frames still waiting go out before the new room's welcome; the
/// new room's own join comes after it.
#[test]
fn a_room_switch_sends_what_the_old_room_said_first() {
    let hub = hub();
    let (mut ada, mut ada_c) = member(&hub, 1, "Ada", "r1");
    let (mut bob, mut bob_c) = member(&hub, 2, "Bob", "r1");
    let (_cy, cy_c) = member(&hub, 3, "Cy", "r2");
    bob_c.send_json(&mut bob, &json!({"type":"message","text":"before"}));
    let sent = ada_c.send_json(&mut ada, &json!({"type":"join","room":"r2"}));
    let order: Vec<_> = sent
        .iter()
        .map(|s| match s {
            Sent::Reply(v) => format!("reply {}", v["type"].as_str().unwrap()),
            Sent::Frame(v) => format!("frame {}", v["type"].as_str().unwrap()),
            Sent::BinaryFrame(_) => "binary".into(),
        })
        .collect();
    // Bob's join and message in r1, then the r2 welcome; her join to r2 after it.
    assert_eq!(order, ["frame join", "frame message", "reply welcome"]);
    assert_eq!(sent[2].json()["room"], "r2");
    assert_eq!(ada_c.delivered_kinds(), ["join"]);
    assert_eq!(cy_c.delivered_kinds(), ["join"]);
    let left = bob_c.delivered();
    assert_eq!(left.last().unwrap().kind(), "leave");
    // Joining the room one is in does nothing.
    assert!(ada_c
        .send_json(&mut ada, &json!({"type":"join","room":"r2"}))
        .is_empty());
    assert_eq!(hub.subscriber_count("chat:r1"), 1);
    assert_eq!(hub.subscriber_count("chat:r2"), 2);
}

#[test]
fn bad_requests_get_error_events_with_their_codes() {
    let hub = hub();
    let (mut ada, mut c) = member(&hub, 1, "Ada", "r1");
    let cases = [
        (json!({"type":"message","text":"   "}), "invalid_text"),
        (
            json!({"type":"message","text":"x".repeat(101)}),
            "invalid_text",
        ),
        (json!({"type":"join","room":"bad room"}), "invalid_room"),
        (json!({"type":"dance"}), "unknown_type"),
    ];
    for (req, code) in cases {
        assert_eq!(error_code(&c.send_json(&mut ada, &req)), code, "{req}");
    }
    let sent = c.send(&mut ada, Message::text(" {not json"));
    assert_eq!(error_code(&sent), "invalid_json");
    let sent = c.send(&mut ada, Message::binary(vec![1, 2]));
    assert_eq!(error_code(&sent), "binary_unsupported");
    assert_eq!(
        sent[0].json()["message"],
        "chat messages are JSON text, see docs/protocol.md"
    );
    assert!(c.delivered().is_empty(), "something was broadcast");
}

#[test]
fn leaving_says_goodbye_but_a_shutdown_does_not() {
    let hub = hub();
    let (mut ada, _) = member(&hub, 1, "Ada", "r1");
    let (mut bob, _) = member(&hub, 2, "Bob", "r1");
    let (_cy, cy_c) = member(&hub, 3, "Cy", "r1");
    cy_c.delivered();
    ada.close(&hub);
    bob.shutdown(&hub);
    let got = cy_c.delivered();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind(), "leave");
    assert_eq!(got[0].json()["member"]["name"], "Ada");
    assert_eq!(hub.subscriber_count("chat:r1"), 1);
}

#[test]
fn the_handshake_query_names_room_and_member() {
    let chat = Chat::from_query(None, &Identity::anonymous(), "node01", 7, 100).unwrap();
    assert_eq!(chat.room(), DEFAULT_ROOM);
    assert!(chat.name().starts_with("guest-"), "{}", chat.name());
    let chat = Chat::from_query(
        Some("room=r.1&name=+Ada+L%C3%B6+"),
        &Identity::anonymous(),
        "node01",
        7,
        100,
    )
    .unwrap();
    assert_eq!((chat.room(), chat.name()), ("r.1", "Ada Lö"));
    let refused = |q: &str| {
        Chat::from_query(Some(q), &Identity::anonymous(), "node01", 7, 100)
            .err()
            .unwrap()
    };
    let r = refused("room=no%20spaces");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.body,
        "room names use only A-Z, a-z, 0-9, '_', '-' and '.'"
    );
    assert_eq!(refused("name=").body, "names are 1-32 characters");
    assert_eq!(
        refused("room=%ZZ&name=").body,
        "room is not valid percent-encoded UTF-8"
    );
    assert_eq!(
        refused("name=a%01b").body,
        "names may not contain control characters"
    );
}

/// Members are the engine's presence (those joined on other nodes too), listed by name,
/// then id; a room switch moves the presence, a shutdown removes it without a goodbye; the
/// same on an engine whose operations are ready at once and on one whose are all futures.
#[test]
fn members_are_the_engines_presence() {
    for deferred in [false, true] {
        let (hub, _) = test_hub(deferred);
        let (mut ada, _) = member(&hub, 1, "Ada", "r1");
        let (mut bob, mut bob_c) = member(&hub, 2, "Bob", "r1");
        // Someone in the room on another node: only the engine knows of them.
        let elsewhere = PresenceEntry {
            client: "other.1".into(),
            user: presence::empty(),
            name: "Aaron".into(),
            info: "".into(),
        };
        wait(hub.presence_add("chat:r1", elsewhere)).unwrap();
        let mut cy = Chat::new("u3".into(), "Cy".into(), "r1".into(), 100);
        let sent = Client::new(&hub).open(&mut cy);
        assert_eq!(
            sent[0].json()["members"],
            json!([{"id":"other.1","name":"Aaron"},{"id":"u1","name":"Ada"},
                   {"id":"u2","name":"Bob"},{"id":"u3","name":"Cy"}]),
            "{deferred}"
        );
        bob_c.send_json(&mut bob, &json!({"type":"join","room":"r2"}));
        assert_eq!(present_in(&hub, "chat:r1"), ["other.1", "u1", "u3"]);
        assert_eq!(present_in(&hub, "chat:r2"), ["u2"]);
        let (_dan, dan_c) = member(&hub, 4, "Dan", "r1");
        with_runtime(|| ada.shutdown(&hub));
        assert_eq!(present_in(&hub, "chat:r1"), ["other.1", "u3", "u4"]);
        assert!(dan_c.delivered().is_empty(), "a shutdown says no goodbye");
        with_runtime(|| cy.close(&hub));
        assert_eq!(present_in(&hub, "chat:r1"), ["other.1", "u4"]);
        assert_eq!(dan_c.delivered_kinds(), ["leave"]);
    }
}

/// Presence failing in the engine: the join goes on (the newcomer is not listed to others;
/// its own welcome lists only itself when the list cannot be read) and it can talk.
#[test]
fn a_join_goes_on_when_presence_fails() {
    for deferred in [false, true] {
        let (hub, engine) = test_hub(deferred);
        let (_ada, ada_c) = member(&hub, 1, "Ada", "r1");
        engine.fail_presence(true);
        let mut bob = Chat::new("u2".into(), "Bob".into(), "r1".into(), 100);
        let mut bob_c = Client::new(&hub);
        let sent = bob_c.open(&mut bob);
        assert_eq!(sent[0].kind(), "welcome", "{deferred}");
        assert_eq!(sent[0].json()["members"], json!([{"id":"u2","name":"Bob"}]));
        assert_eq!(ada_c.delivered_kinds(), ["join"]);
        bob_c.send_json(&mut bob, &json!({"type":"message","text":"still here"}));
        assert_eq!(ada_c.delivered_kinds(), ["message"]);
        engine.fail_presence(false);
        let (_cy, _) = member(&hub, 3, "Cy", "r1");
        assert_eq!(
            present_in(&hub, "chat:r1"),
            ["u1", "u3"],
            "Bob's add failed"
        );
        engine.fail_presence(true);
        with_runtime(|| bob.close(&hub));
        assert_eq!(ada_c.delivered_kinds(), ["join", "leave"]);
    }
}
