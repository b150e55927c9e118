//! Presence end to end: `/ws` `presence` and `presence_stats` with subscribers coming and
//! going, and the chat welcome's members (docs/protocol.md); on one node, and on two nodes
//! of a real `redis-server`.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_proto::CloseCode;
use switchboard_redis::{RedisConfig, RedisEngine};
use switchboard_server::{Server, ServerConfig};
use switchboard_testkit::redis::RedisServer;
use switchboard_testkit::server::{next_of, send_json, start, start_server, ws, Running, Ws};

/// Asks `topic`'s presence; the answer.
async fn presence(c: &mut Ws, topic: &str, id: u64) -> Value {
    send_json(c, json!({"type":"presence","topic":topic,"id":id})).await;
    let p = next_of(c, "presence").await;
    assert_eq!(
        (p["id"].as_u64(), p["topic"].as_str()),
        (Some(id), Some(topic))
    );
    p
}

/// The client ids of a presence answer, in its order.
fn ids(p: &Value) -> Vec<String> {
    p["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!((&c["user"], &c["name"]), (&json!(""), &json!("")), "{c}");
            c["client"].as_str().unwrap().to_string()
        })
        .collect()
}

/// `{node}.{n}`: 6 letters and digits, a dot, a number.
fn node_of(id: &str) -> &str {
    let (node, n) = id.split_once('.').unwrap_or_else(|| panic!("{id}"));
    assert!(
        node.len() == 6 && node.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{id}"
    );
    assert!(n.parse::<u64>().is_ok(), "{id}");
    node
}

async fn subscribe(c: &mut Ws, topic: &str) {
    send_json(c, json!({"type":"subscribe","topic":topic,"id":"s"})).await;
    assert_eq!(next_of(c, "ack").await["id"], "s");
}

#[tokio::test]
async fn ws_presence_with_two_subscribers_and_one_leaving() {
    let srv = start(ServerConfig::default()).await;
    let (mut a, mut b) = (ws(srv.addr, "/ws").await, ws(srv.addr, "/ws").await);
    subscribe(&mut a, "room").await;
    subscribe(&mut b, "room").await;
    let both = ids(&presence(&mut a, "room", 1).await);
    assert_eq!(both.len(), 2, "{both:?}");
    assert_ne!(both[0], both[1]);
    assert!(
        both[0] < both[1],
        "sorted by client id (no names): {both:?}"
    );
    assert_eq!(node_of(&both[0]), node_of(&both[1]), "one node");
    send_json(
        &mut b,
        json!({"type":"presence_stats","topic":"room","id":2}),
    )
    .await;
    assert_eq!(
        next_of(&mut b, "presence_stats").await,
        json!({"type":"presence_stats","id":2,"topic":"room","clients":2,"users":2})
    );

    // b leaves the topic: after its ack, it is not listed; it may no longer ask.
    send_json(&mut b, json!({"type":"unsubscribe","topic":"room","id":3})).await;
    assert_eq!(next_of(&mut b, "ack").await["id"], 3);
    let left = ids(&presence(&mut a, "room", 4).await);
    assert_eq!(left.len(), 1);
    assert!(both.contains(&left[0]));
    let a_id = left[0].clone();
    send_json(&mut b, json!({"type":"presence","topic":"room","id":5})).await;
    let e = next_of(&mut b, "error").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_u64()),
        (Some("not_subscribed"), Some(5))
    );
    send_json(
        &mut a,
        json!({"type":"presence_stats","topic":"room","id":6}),
    )
    .await;
    let s = next_of(&mut a, "presence_stats").await;
    assert_eq!(
        (s["clients"].as_u64(), s["users"].as_u64()),
        (Some(1), Some(1))
    );

    // a's connection ends: a newcomer finds only itself.
    a.close(CloseCode::NORMAL, "bye").await.unwrap();
    drop(a);
    let mut c = ws(srv.addr, "/ws").await;
    subscribe(&mut c, "room").await;
    let mut alone = Vec::new();
    for i in 0..100 {
        alone = ids(&presence(&mut c, "room", 10 + i).await);
        if !alone.contains(&a_id) {
            break;
        }
        // The server handles a's close on its own task: give it a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(alone.len(), 1, "{alone:?}");
    assert!(!both.contains(&alone[0]), "ids are not reused");
    drop((b, c));
    srv.stop().await;
}

#[tokio::test]
async fn chat_welcome_members_and_watchers() {
    let srv = start(ServerConfig::default()).await;
    let mut ada = ws(srv.addr, "/chat?room=r1&name=Zoe%20Ada").await;
    let w = next_of(&mut ada, "welcome").await;
    let ada_id = w["you"]["id"].as_str().unwrap().to_string();
    assert_eq!(w["members"], json!([{"id":ada_id,"name":"Zoe Ada"}]));
    let mut bob = ws(srv.addr, "/chat?room=r1&name=Bob").await;
    let w = next_of(&mut bob, "welcome").await;
    let bob_id = w["you"]["id"].as_str().unwrap().to_string();
    assert_eq!(node_of(&ada_id), node_of(&bob_id));
    assert_eq!(
        w["members"],
        json!([{"id":bob_id,"name":"Bob"},{"id":ada_id,"name":"Zoe Ada"}]),
        "by name"
    );
    // A /ws client watching the room sees its members and is not one of them.
    let mut watcher = ws(srv.addr, "/ws").await;
    subscribe(&mut watcher, "chat:r1").await;
    let p = presence(&mut watcher, "chat:r1", 1).await;
    assert_eq!(
        p["clients"],
        json!([{"client":bob_id,"user":"","name":"Bob"},{"client":ada_id,"user":"","name":"Zoe Ada"}])
    );
    assert_eq!(node_of(&ada_id), node_of(&ids_of_ws(&mut watcher).await));
    // Bob switches rooms, Ada leaves: the room's presence follows.
    send_json(&mut bob, json!({"type":"join","room":"r2"})).await;
    assert_eq!(
        next_of(&mut bob, "welcome").await["members"],
        json!([{"id":bob_id,"name":"Bob"}])
    );
    let l = next_of(&mut watcher, "leave").await;
    assert_eq!(l["member"]["id"], bob_id.as_str());
    ada.close(CloseCode::NORMAL, "bye").await.unwrap();
    let l = next_of(&mut watcher, "leave").await;
    assert_eq!(l["member"]["id"], ada_id.as_str());
    let p = presence(&mut watcher, "chat:r1", 2).await;
    assert_eq!(p["clients"], json!([]));
    drop((ada, bob, watcher));
    srv.stop().await;
}

/// The watcher's own id, from a topic of its own.
async fn ids_of_ws(c: &mut Ws) -> String {
    subscribe(c, "mine").await;
    let id = ids(&presence(c, "mine", 99).await);
    assert_eq!(id.len(), 1);
    id[0].clone()
}

/// A node on `redis`, and its id.
async fn node(redis: &RedisServer) -> (Running, String) {
    let engine = RedisEngine::connect(RedisConfig::new(redis.url()))
        .await
        .expect("the engine connects");
    let server = Server::with_engine(ServerConfig::default(), engine);
    let id = server.node().to_string();
    (start_server(server).await, id)
}

/// Asks `topic`'s presence until `done` says yes (removals on another node take a moment
/// to show); the last answer's client ids.
async fn presence_until(c: &mut Ws, topic: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut got = Vec::new();
    for i in 0..100 {
        let p = presence(c, topic, 1000 + i).await;
        got = p["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["client"].as_str().unwrap().to_string())
            .collect();
        if done(&got) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    got
}

/// Two nodes on one Redis: `/ws` presence lists the subscribers of both, by their node's
/// id; one leaving is gone from both; chat members span the nodes.
#[tokio::test]
async fn presence_spans_the_nodes_of_a_cluster() {
    let redis = RedisServer::start();
    let ((a, node_a), (b, node_b)) = (node(&redis).await, node(&redis).await);
    assert_ne!(node_a, node_b, "every node makes its own id");
    let (mut x, mut y) = (ws(a.addr, "/ws").await, ws(b.addr, "/ws").await);
    subscribe(&mut x, "room").await;
    subscribe(&mut y, "room").await;
    let both = ids(&presence(&mut x, "room", 1).await);
    let mut nodes: Vec<_> = both.iter().map(|id| node_of(id).to_string()).collect();
    nodes.sort();
    let mut want = vec![node_a.clone(), node_b.clone()];
    want.sort();
    assert_eq!(nodes, want, "{both:?}");
    send_json(
        &mut y,
        json!({"type":"presence_stats","topic":"room","id":2}),
    )
    .await;
    let s = next_of(&mut y, "presence_stats").await;
    assert_eq!(
        (s["clients"].as_u64(), s["users"].as_u64()),
        (Some(2), Some(2))
    );
    send_json(&mut y, json!({"type":"unsubscribe","topic":"room","id":3})).await;
    assert_eq!(next_of(&mut y, "ack").await["id"], 3);
    // The ack came once the entry was gone from Redis: the other node sees it at once.
    let left = ids(&presence(&mut x, "room", 4).await);
    assert_eq!(left.len(), 1);
    assert_eq!(node_of(&left[0]), node_a);

    let mut ada = ws(a.addr, "/chat?room=r1&name=Ada").await;
    let ada_id = next_of(&mut ada, "welcome").await["you"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bob = ws(b.addr, "/chat?room=r1&name=Bob").await;
    let w = next_of(&mut bob, "welcome").await;
    let bob_id = w["you"]["id"].as_str().unwrap().to_string();
    assert_eq!((node_of(&ada_id), node_of(&bob_id)), (&*node_a, &*node_b));
    assert_eq!(
        w["members"],
        json!([{"id":ada_id,"name":"Ada"},{"id":bob_id,"name":"Bob"}])
    );
    ada.close(CloseCode::NORMAL, "bye").await.unwrap();
    let l = next_of(&mut bob, "leave").await;
    assert_eq!(l["member"]["id"], ada_id.as_str());
    subscribe(&mut y, "chat:r1").await;
    let now = presence_until(&mut y, "chat:r1", |ids| ids.len() == 1).await;
    assert_eq!(now, [bob_id]);
    drop((x, y, ada, bob));
    a.stop().await;
    b.stop().await;
}
