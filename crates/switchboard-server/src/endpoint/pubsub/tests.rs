//! The `/ws` app on a hub alone: requests, answers, deliveries, presence.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use switchboard_hub::HubConfig;

use super::*;
use crate::endpoint::chat::Chat;
use crate::endpoint::testing::{present_in, test_hub, with_runtime, Client, Sent};

/// Connection `n` of node `node01`.
fn client(n: u64) -> ClientId {
    ClientId::new("node01".into(), n)
}

/// An app with a client id of its own (`node01.1000`, `node01.1001`, …).
fn app() -> PubSub {
    static NEXT: AtomicU64 = AtomicU64::new(1000);
    PubSub::new(8, 300, client(NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// The `/ws` presence entry of connection `n`.
fn present(n: u64) -> Value {
    json!({"client":format!("node01.{n}"),"user":"","name":""})
}

fn reply(sent: &[Sent]) -> &Value {
    match sent {
        [Sent::Reply(v)] => v,
        other => panic!("not one reply: {other:?}"),
    }
}

#[test]
fn subscribe_publish_ack_and_delivery() {
    let hub = crate::render::memory_hub(HubConfig::default());
    let (mut a, mut a_c) = (app(), Client::new(&hub));
    let (mut b, mut b_c) = (app(), Client::new(&hub));
    assert!(a_c.open(&mut a).is_empty());
    let sent = a_c.send_json(
        &mut a,
        &json!({"type":"subscribe","topic":"news","id":"s1"}),
    );
    let ack = reply(&sent);
    let epoch0 = ack["epoch"].as_str().unwrap().to_string();
    assert_eq!(
        ack,
        &json!({"type":"ack","id":"s1","offset":0,"epoch":epoch0,"recovered":false})
    );
    // Without an id there is no ack; subscribing twice is fine.
    assert!(a_c
        .send_json(&mut a, &json!({"type":"subscribe","topic":"news"}))
        .is_empty());
    assert_eq!(hub.subscriber_count("news"), 1);
    let publish = json!({"type":"publish","topic":"news","data":{"n":[1,2]},"id":7});
    let sent = b_c.send_json(&mut b, &publish);
    let epoch = reply(&sent)["epoch"].as_str().unwrap().to_string();
    assert_eq!(
        reply(&sent),
        &json!({"type":"ack","id":7,"delivered":1,"offset":1,"epoch":epoch})
    );
    assert_eq!(
        a_c.delivered(),
        [Sent::Frame(
            json!({"type":"message","topic":"news","offset":1,"epoch":epoch,"data":{"n":[1,2]}})
        )]
    );
    assert!(b_c.delivered().is_empty());
    let sent = a_c.send_json(&mut a, &json!({"type":"unsubscribe","topic":"news","id":2}));
    assert_eq!(reply(&sent)["type"], "ack");
    let sent = b_c.send_json(
        &mut b,
        &json!({"type":"publish","topic":"news","data":2,"id":8}),
    );
    assert_eq!(reply(&sent)["delivered"], 0);
    assert!(a_c.delivered().is_empty());
}

#[test]
fn binary_publishes_are_delivered_with_their_position() {
    let hub = crate::render::memory_hub(HubConfig::default());
    let (mut a, mut a_c) = (app(), Client::new(&hub));
    let (mut b, mut b_c) = (app(), Client::new(&hub));
    a_c.send_json(&mut a, &json!({"type":"subscribe","topic":"news"}));
    let bin = b"\x04news\x00\xff\x07".to_vec();
    assert!(b_c.send(&mut b, Message::binary(bin)).is_empty());
    let top = hub
        .history(
            "news",
            HistoryQuery {
                since: None,
                limit: 0,
            },
        )
        .now()
        .unwrap()
        .unwrap()
        .top;
    assert_eq!(top.offset, 1);
    let mut want = b"\x04news\x00\x00\x00\x00\x00\x00\x00\x01\x08".to_vec();
    want.extend_from_slice(top.epoch.as_bytes());
    want.extend_from_slice(b"\x00\xff\x07");
    assert_eq!(a_c.delivered(), [Sent::BinaryFrame(want)]);
    let sent = b_c.send(&mut b, Message::binary(vec![200, 1]));
    assert_eq!(reply(&sent)["code"], "invalid_binary");
    let sent = b_c.send(&mut b, Message::binary(b"\x06chat:x!".to_vec()));
    assert_eq!(reply(&sent)["code"], "reserved_topic");
    assert!(binary_body(&"t".repeat(256), vec![]).is_none());
}

#[test]
fn history_requests_answer_what_the_stream_holds() {
    let hub = crate::render::memory_hub(HubConfig::default());
    let (mut a, mut c) = (app(), Client::new(&hub));
    let mut epoch = String::new();
    for n in 1..=5 {
        let sent = c.send_json(
            &mut a,
            &json!({"type":"publish","topic":"t","data":{"n":n},"id":n}),
        );
        epoch = reply(&sent)["epoch"].as_str().unwrap().to_string();
    }
    assert!(c
        .send(&mut a, Message::binary(b"\x01t\x09\x08".to_vec()))
        .is_empty());
    let sent = c.send_json(
        &mut a,
        &json!({"type":"history","topic":"t","id":"h","since":{"offset":3,"epoch":epoch},"limit":10}),
    );
    let msg =
        |n: u64| json!({"type":"message","topic":"t","offset":n,"epoch":epoch,"data":{"n":n}});
    assert_eq!(
        reply(&sent),
        &json!({"type":"history","id":"h","topic":"t","offset":6,"epoch":epoch,
        "recovered":true,"capped":false,"publications":[
            msg(4), msg(5),
            {"type":"message","topic":"t","offset":6,"epoch":epoch,"data_base64":"CQg="}
        ]})
    );
    // No position: the last `limit`, not recovered.
    let sent = c.send_json(
        &mut a,
        &json!({"type":"history","topic":"t","id":1,"limit":2}),
    );
    let h = reply(&sent);
    assert_eq!(h["recovered"], false);
    assert_eq!(h["publications"][0], msg(5));
    assert_eq!(h["publications"].as_array().unwrap().len(), 2);
    // Capped by the limit; another epoch; an empty topic.
    let sent = c.send_json(
        &mut a,
        &json!({"type":"history","topic":"t","id":2,"since":{"offset":0,"epoch":epoch},"limit":3}),
    );
    assert_eq!(
        (
            reply(&sent)["recovered"].as_bool(),
            reply(&sent)["capped"].as_bool()
        ),
        (Some(false), Some(true))
    );
    assert_eq!(reply(&sent)["publications"], json!([]));
    let sent = c.send_json(
        &mut a,
        &json!({"type":"history","topic":"t","id":3,"since":{"offset":5,"epoch":"other"}}),
    );
    assert_eq!(reply(&sent)["recovered"], false);
    assert_eq!(reply(&sent)["publications"], json!([]));
    let sent = c.send_json(
        &mut a,
        &json!({"type":"history","topic":"empty","id":4,"since":null}),
    );
    assert_eq!(reply(&sent)["offset"], 0);
    assert_eq!(reply(&sent)["publications"], json!([]));
}

#[test]
fn history_answers_stay_within_their_byte_bound() {
    let hub = crate::render::memory_hub(HubConfig::default());
    let (mut a, mut c) = (app(), Client::new(&hub));
    let big = "x".repeat(60 << 10);
    let mut epoch = String::new();
    for n in 1..=30 {
        let sent = c.send_json(
            &mut a,
            &json!({"type":"publish","topic":"t","data":big,"id":n}),
        );
        epoch = reply(&sent)["epoch"].as_str().unwrap().to_string();
    }
    // A recovery that would not fit: capped, not recovered, nothing.
    let sent = c.send_json(
        &mut a,
        &json!({"type":"history","topic":"t","id":1,"since":{"offset":0,"epoch":epoch}}),
    );
    let h = reply(&sent);
    assert_eq!(
        (h["recovered"].as_bool(), h["capped"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(h["publications"], json!([]));
    // The latest: the newest that fit, up to the top.
    let sent = c.send_json(&mut a, &json!({"type":"history","topic":"t","id":2}));
    let h = reply(&sent);
    let pubs = h["publications"].as_array().unwrap();
    assert_eq!(h["capped"], true);
    assert!(
        !pubs.is_empty() && pubs.len() < 30,
        "{} publications",
        pubs.len()
    );
    assert_eq!(pubs.last().unwrap()["offset"], 30);
    let bytes: usize = pubs.iter().map(|p| p.to_string().len()).sum();
    assert!(bytes <= HISTORY_BYTES, "{bytes} bytes");
    // A recovery that fits is whole.
    let sent = c.send_json(
        &mut a,
        &json!({"type":"history","topic":"t","id":3,"since":{"offset":28,"epoch":epoch}}),
    );
    let h = reply(&sent);
    assert_eq!(h["recovered"], true);
    assert_eq!(h["publications"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_requests_get_error_replies_with_their_id() {
    let hub = crate::render::memory_hub(HubConfig::default());
    let (mut a, mut c) = (PubSub::new(1, 300, client(1)), Client::new(&hub));
    let cases = [
        (
            json!({"type":"publish","topic":"chat:lobby","data":1,"id":1}),
            "reserved_topic",
        ),
        (
            json!({"type":"subscribe","topic":"bad topic!","id":2}),
            "invalid_topic",
        ),
        (
            json!({"type":"unsubscribe","topic":"nope","id":3}),
            "not_subscribed",
        ),
        (json!({"type":"publish","topic":"t","id":4}), "invalid_json"),
        (json!({"type":"nope","id":5}), "unknown_type"),
    ];
    for (req, code) in cases {
        let sent = c.send_json(&mut a, &req);
        let e = reply(&sent);
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{e}"
        );
        assert_eq!(e["id"], req["id"]);
    }
    let sent = c.send(&mut a, Message::text("{nope"));
    let e = reply(&sent);
    assert_eq!(e["code"], "invalid_json");
    assert!(e.get("id").is_none(), "{e}");
    c.send_json(&mut a, &json!({"type":"subscribe","topic":"a"}));
    let sent = c.send_json(&mut a, &json!({"type":"subscribe","topic":"b","id":9}));
    let e = reply(&sent);
    assert_eq!(e["code"], "too_many_subscriptions");
    assert_eq!(e["message"], "at most 1 subscriptions per connection");
}

#[test]
fn closing_leaves_every_topic() {
    let hub = crate::render::memory_hub(HubConfig::default());
    let (mut a, mut c) = (app(), Client::new(&hub));
    for t in ["a", "b", "chat:lobby"] {
        c.send_json(&mut a, &json!({"type":"subscribe","topic":t}));
    }
    assert_eq!(hub.topic_count(), 3);
    let me = a.client.get().to_string();
    assert_eq!(present_in(&hub, "a"), [me.as_str()]);
    assert_eq!(present_in(&hub, "b"), [me.as_str()]);
    assert!(
        present_in(&hub, "chat:lobby").is_empty(),
        "watching a chat room is not being in it"
    );
    a.close(&hub);
    assert_eq!(hub.topic_count(), 0);
    assert!(present_in(&hub, "a").is_empty() && present_in(&hub, "b").is_empty());
    assert_eq!(hub.stream_count(), 0, "nothing keeps their streams");
}

/// Two subscribers, one leaving, asking who is there and how many: the same on an engine
/// whose operations are ready at once and on one whose operations are all futures.
#[test]
fn presence_and_presence_stats_list_the_subscribers() {
    for deferred in [false, true] {
        let (hub, _) = test_hub(deferred);
        let (mut a, mut a_c) = (PubSub::new(8, 300, client(1)), Client::new(&hub));
        let (mut b, mut b_c) = (PubSub::new(8, 300, client(2)), Client::new(&hub));
        for (app, c) in [(&mut a, &mut a_c), (&mut b, &mut b_c)] {
            let sent = c.send_json(app, &json!({"type":"subscribe","topic":"room","id":1}));
            assert_eq!(reply(&sent)["type"], "ack", "{deferred}");
        }
        // Subscribing again adds nobody.
        b_c.send_json(&mut b, &json!({"type":"subscribe","topic":"room"}));
        let sent = a_c.send_json(&mut a, &json!({"type":"presence","topic":"room","id":"p"}));
        assert_eq!(
            reply(&sent),
            &json!({"type":"presence","id":"p","topic":"room","clients":[present(1), present(2)]})
        );
        let sent = b_c.send_json(
            &mut b,
            &json!({"type":"presence_stats","topic":"room","id":2}),
        );
        assert_eq!(
            reply(&sent),
            &json!({"type":"presence_stats","id":2,"topic":"room","clients":2,"users":2})
        );
        // The ack of an unsubscribe comes once the presence is gone.
        let sent = b_c.send_json(&mut b, &json!({"type":"unsubscribe","topic":"room","id":3}));
        assert_eq!(reply(&sent), &json!({"type":"ack","id":3}));
        let sent = a_c.send_json(&mut a, &json!({"type":"presence","topic":"room"}));
        assert_eq!(
            reply(&sent),
            &json!({"type":"presence","id":null,"topic":"room","clients":[present(1)]})
        );
        let sent = a_c.send_json(&mut a, &json!({"type":"presence_stats","topic":"room"}));
        assert_eq!(
            (
                reply(&sent)["clients"].as_u64(),
                reply(&sent)["users"].as_u64()
            ),
            (Some(1), Some(1))
        );
        // Only subscribers may ask; topics are checked first.
        for kind in ["presence", "presence_stats"] {
            let sent = b_c.send_json(&mut b, &json!({"type":kind,"topic":"room","id":4}));
            assert_eq!(reply(&sent)["code"], "not_subscribed", "{kind}");
            assert_eq!(reply(&sent)["id"], 4);
            let sent = b_c.send_json(&mut b, &json!({"type":kind,"topic":"no way","id":5}));
            assert_eq!(reply(&sent)["code"], "invalid_topic", "{kind}");
        }
        with_runtime(|| a.close(&hub));
        assert!(present_in(&hub, "room").is_empty(), "{deferred}");
        assert_eq!(hub.stream_count(), 0);
    }
}

/// A `/ws` client watching a chat room is not one of its members, but may ask who is.
#[test]
fn watchers_of_a_chat_room_see_its_members() {
    for deferred in [false, true] {
        let (hub, _) = test_hub(deferred);
        let mut ada = Chat::new("node01.7".into(), "Ada".into(), "r1".into(), 100);
        Client::new(&hub).open(&mut ada);
        let (mut w, mut c) = (PubSub::new(8, 300, client(8)), Client::new(&hub));
        c.send_json(&mut w, &json!({"type":"subscribe","topic":"chat:r1"}));
        let sent = c.send_json(&mut w, &json!({"type":"presence","topic":"chat:r1","id":1}));
        assert_eq!(
            reply(&sent)["clients"],
            json!([{"client":"node01.7","user":"","name":"Ada"}])
        );
        let sent = c.send_json(
            &mut w,
            &json!({"type":"unsubscribe","topic":"chat:r1","id":2}),
        );
        assert_eq!(reply(&sent)["type"], "ack");
        assert_eq!(present_in(&hub, "chat:r1"), ["node01.7"]);
    }
}

/// Presence failing in the engine: subscribing still works (unlisted), the requests answer
/// `unavailable`, unsubscribing still acks.
#[test]
fn presence_failures_do_not_break_subscriptions() {
    for deferred in [false, true] {
        let (hub, engine) = test_hub(deferred);
        let (mut a, mut c) = (PubSub::new(8, 300, client(1)), Client::new(&hub));
        engine.fail_presence(true);
        let sent = c.send_json(&mut a, &json!({"type":"subscribe","topic":"t","id":1}));
        assert_eq!(reply(&sent)["type"], "ack");
        for kind in ["presence", "presence_stats"] {
            let sent = c.send_json(&mut a, &json!({"type":kind,"topic":"t","id":kind}));
            let e = reply(&sent);
            assert_eq!(
                (e["code"].as_str(), e["id"].as_str()),
                (Some("unavailable"), Some(kind))
            );
        }
        engine.fail_presence(false);
        let sent = c.send_json(&mut a, &json!({"type":"presence","topic":"t","id":2}));
        assert_eq!(
            reply(&sent)["clients"],
            json!([]),
            "its add failed: not listed"
        );
        // Publishing still works on that subscription.
        let (mut b, mut b_c) = (app(), Client::new(&hub));
        b_c.send_json(&mut b, &json!({"type":"publish","topic":"t","data":1}));
        assert_eq!(c.delivered().len(), 1);
        engine.fail_presence(true);
        let sent = c.send_json(&mut a, &json!({"type":"unsubscribe","topic":"t","id":3}));
        assert_eq!(reply(&sent), &json!({"type":"ack","id":3}));
    }
}

/// A crowd larger than one answer holds: the first ones by client id, and `capped`.
#[test]
fn a_presence_answer_stays_within_its_byte_bound() {
    let hub = crate::render::memory_hub(HubConfig::default());
    let (mut a, mut c) = (PubSub::new(8, 300, client(0)), Client::new(&hub));
    c.send_json(&mut a, &json!({"type":"subscribe","topic":"crowd"}));
    let name: Arc<str> = "n".repeat(200).into();
    for i in 1..=6000 {
        let entry = PresenceEntry {
            client: format!("other.{i:05}").into(),
            user: presence::empty(),
            name: Arc::clone(&name),
            info: "".into(),
        };
        hub.presence_add("crowd", entry).now().unwrap().unwrap();
    }
    let sent = c.send_json(&mut a, &json!({"type":"presence","topic":"crowd","id":1}));
    let answer = reply(&sent);
    assert_eq!(answer["capped"], true);
    let listed = answer["clients"].as_array().unwrap();
    assert!(
        listed.len() > 4000 && listed.len() < 6001,
        "{}",
        listed.len()
    );
    // Sorted by name, then client: the `/ws` one (no name) first.
    assert_eq!(listed[0], present(0));
    assert_eq!(listed[1]["client"], "other.00001");
    let bytes: usize = listed.iter().map(|c| c.to_string().len() + 1).sum();
    assert!(bytes <= PRESENCE_BYTES, "{bytes}");
    let sent = c.send_json(
        &mut a,
        &json!({"type":"presence_stats","topic":"crowd","id":2}),
    );
    assert_eq!(reply(&sent)["clients"], 6001);
}
