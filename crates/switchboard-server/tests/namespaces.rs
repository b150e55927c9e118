//! Namespaces end to end: each namespace's history bounds reach the engine (a namespace
//! without history cannot replay, and says so), presence off keeps `/ws` subscribers out of
//! the presence list, and `join`/`leave` events reach a topic's subscribers, on one node and
//! across two nodes on a real `redis-server`.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use switchboard_redis::{RedisConfig, RedisEngine};
use switchboard_server::{Hub, NamespaceRules, Namespaces, Server, ServerConfig};
use switchboard_testkit::redis::RedisServer;
use switchboard_testkit::server::{next_json, send_json, start_server, ws, Running, Ws};

/// `live:` keeps no history and announces joins and leaves; `quiet:` has no presence.
fn config() -> ServerConfig {
    ServerConfig::default().namespaces(
        Namespaces::default()
            .namespace(
                "live",
                NamespaceRules::open().history_size(0).join_leave(true),
            )
            .namespace("quiet", NamespaceRules::open().presence(false)),
    )
}

/// A running server and its hub.
async fn node(engine: Option<Arc<RedisEngine>>) -> (Running, Hub) {
    let server = match engine {
        Some(engine) => Server::with_engine(config(), engine),
        None => Server::new(config()),
    };
    let hub = server.hub().clone();
    (start_server(server).await, hub)
}

async fn request(c: &mut Ws, req: Value) -> Value {
    send_json(c, req).await;
    next_json(c).await
}

async fn subscribe(c: &mut Ws, topic: &str, recover: Option<Value>) -> Value {
    let mut req = json!({"type":"subscribe","topic":topic,"id":"s"});
    if let Some(at) = recover {
        req["recover"] = at;
    }
    let ack = request(c, req).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    ack
}

/// The next message must be a `kind` event of an anonymous connection in `topic`; its
/// client id.
async fn event(c: &mut Ws, kind: &str, topic: &str) -> String {
    let e = next_json(c).await;
    assert_eq!(
        (e["type"].as_str(), e["topic"].as_str(), e["user"].as_str()),
        (Some(kind), Some(topic), Some("")),
        "{e}"
    );
    e["client"].as_str().unwrap_or_default().to_owned()
}

/// The scenario, with the watcher on `first` and the others on `second` (the same node, or
/// another node of the cluster, whose hub is `hub`).
async fn namespaces_shape_topics(first: SocketAddr, second: SocketAddr, hub: &Hub) {
    let mut watcher = ws(first, "/ws").await;
    subscribe(&mut watcher, "live:1", None).await;
    let me = event(&mut watcher, "join", "live:1").await;
    let mut joiner = ws(second, "/ws").await;
    subscribe(&mut joiner, "live:1", None).await;
    let other = event(&mut joiner, "join", "live:1").await;
    assert_eq!(event(&mut watcher, "join", "live:1").await, other);
    assert_ne!(me, other);

    // No history in `live:`: numbered all the same, but nothing to replay.
    let mut publisher = ws(second, "/ws").await;
    for n in 1..=3 {
        let req = json!({"type":"publish","topic":"live:1","data":n,"id":n});
        assert_eq!(request(&mut publisher, req).await["offset"], n);
    }
    for n in 1..=3 {
        assert_eq!(next_json(&mut watcher).await["data"], n);
    }
    let history = request(
        &mut publisher,
        json!({"type":"history","topic":"live:1","id":"h"}),
    )
    .await;
    assert_eq!(history["publications"], json!([]), "{history}");
    let epoch = history["epoch"].clone();
    let mut back = ws(second, "/ws").await;
    let missed = json!({"offset":1,"epoch":epoch});
    let ack = subscribe(&mut back, "live:1", Some(missed)).await;
    assert_eq!(
        (&ack["recovered"], &ack["offset"]),
        (&json!(false), &json!(3))
    );
    event(&mut back, "join", "live:1").await;
    let up_to_date = json!({"offset":3,"epoch":epoch});
    let mut again = ws(second, "/ws").await;
    let ack = subscribe(&mut again, "live:1", Some(up_to_date)).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    // Its own join back here, and at `back`: it went out before anything that follows.
    let again_id = event(&mut again, "join", "live:1").await;
    assert_eq!(event(&mut back, "join", "live:1").await, again_id);
    // `other` topics keep the server's history.
    let req = json!({"type":"publish","topic":"news","data":1,"id":1});
    request(&mut publisher, req).await;
    let history = request(
        &mut publisher,
        json!({"type":"history","topic":"news","id":"h"}),
    )
    .await;
    assert_eq!(history["publications"].as_array().map(Vec::len), Some(1));

    // `back` and `again` joined too: their joins come before the joiner's leave.
    event(&mut watcher, "join", "live:1").await;
    event(&mut watcher, "join", "live:1").await;
    drop(joiner);
    assert_eq!(event(&mut watcher, "leave", "live:1").await, other);
    assert_eq!(event(&mut back, "leave", "live:1").await, other);
    let req = json!({"type":"unsubscribe","topic":"live:1","id":"u"});
    assert_eq!(request(&mut back, req).await["type"], "ack");
    event(&mut watcher, "leave", "live:1").await;

    // Presence off: subscribed, not present.
    let mut q = ws(second, "/ws").await;
    subscribe(&mut q, "quiet:1", None).await;
    subscribe(&mut q, "news", None).await;
    let present = |topic: &'static str| {
        let hub = hub.clone();
        async move { hub.presence(topic).await.unwrap().len() }
    };
    assert_eq!((present("quiet:1").await, present("news").await), (0, 1));
}

#[tokio::test]
async fn on_one_node() {
    let (srv, hub) = node(None).await;
    namespaces_shape_topics(srv.addr, srv.addr, &hub).await;
}

#[tokio::test]
async fn across_two_nodes_on_redis() {
    let redis = RedisServer::start();
    let engine = || async {
        RedisEngine::connect(RedisConfig::new(redis.url()))
            .await
            .expect("the engine connects")
    };
    let (a, _) = node(Some(engine().await)).await;
    let (b, b_hub) = node(Some(engine().await)).await;
    namespaces_shape_topics(a.addr, b.addr, &b_hub).await;
}
