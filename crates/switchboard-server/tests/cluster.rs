//! Several nodes on one real `redis-server` (the Redis engine, `switchboard-redis`): shared
//! positions and history, recovery on another node, and what clients see when Redis goes
//! away, comes back, or comes back empty. No mock: `scripts/test.sh` installs redis-server.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_redis::{RedisConfig, RedisEngine};
use switchboard_server::{Server, ServerConfig};
use switchboard_testkit::redis::RedisServer;
use switchboard_testkit::server::{
    close_code, http, metrics, next_json, next_of, publish_request, send_json, start_server, ws,
    Running, Ws,
};

const KEY: &str = "cluster-key";

async fn node(redis: &RedisServer) -> Running {
    let engine = RedisEngine::connect(RedisConfig::new(redis.url()))
        .await
        .expect("the engine connects");
    start_server(Server::with_engine(
        ServerConfig::default().api_key(KEY),
        engine,
    ))
    .await
}

async fn subscribe(c: &mut Ws, topic: &str, recover: Option<&Value>) -> Value {
    let mut req = json!({"type":"subscribe","topic":topic,"id":"sub"});
    if let Some(at) = recover {
        req["recover"] = at.clone();
    }
    send_json(c, req).await;
    let ack = next_json(c).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    ack
}

async fn publish_ws(c: &mut Ws, topic: &str, n: u64) -> Value {
    send_json(
        c,
        json!({"type":"publish","topic":topic,"data":{"n":n},"id":n}),
    )
    .await;
    next_json(c).await
}

async fn api_publish(addr: std::net::SocketAddr, topic: &str, n: u64) -> (u16, String) {
    let body = json!({"topic":topic,"data":{"n":n}}).to_string();
    http(addr, &publish_request(Some(KEY), &body)).await
}

/// Publications through one node reach subscribers on another, numbered in one stream; a
/// client that comes back on the other node recovers what it missed from Redis's history;
/// chat rooms span nodes.
#[tokio::test]
async fn nodes_share_positions_history_and_rooms() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut sub = ws(a.addr, "/ws").await;
    let ack = subscribe(&mut sub, "news", None).await;
    let epoch = ack["epoch"].clone();
    let mut publisher = ws(b.addr, "/ws").await;
    for n in 1..=3 {
        let ack = publish_ws(&mut publisher, "news", n).await;
        assert_eq!(
            (ack["type"].as_str(), ack["offset"].as_u64()),
            (Some("ack"), Some(n)),
            "{ack}"
        );
        assert_eq!(ack["epoch"], epoch);
        assert!(
            ack.get("delivered").is_none(),
            "not known across nodes: {ack}"
        );
    }
    for n in 1..=3 {
        let m = next_of(&mut sub, "message").await;
        assert_eq!(
            (m["offset"].as_u64(), &m["data"]["n"]),
            (Some(n), &json!(n))
        );
    }
    // The subscriber's node measured how long publications took through Redis.
    let text = metrics(a.addr).await;
    let lag: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_engine_pubsub_lag_seconds "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no pub/sub lag in\n{text}"));
    assert!((0.0..2.0).contains(&lag), "lag {lag} s");
    drop(sub);
    for n in 4..=6 {
        let (status, body) = api_publish(b.addr, "news", n).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("\"offset\":{n}")), "{body}");
    }
    // Back, on the other node, from offset 3.
    let mut back = ws(b.addr, "/ws").await;
    let ack = subscribe(&mut back, "news", Some(&json!({"offset":3,"epoch":epoch}))).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["offset"], 6);
    for n in 4..=6 {
        assert_eq!(next_json(&mut back).await["offset"], n);
    }
    let ack = publish_ws(&mut publisher, "news", 7).await;
    assert_eq!(ack["offset"], 7);
    assert_eq!(next_json(&mut back).await["data"]["n"], 7);

    // A chat room across nodes: one order, one stream.
    let mut ada = ws(a.addr, "/chat?room=x&name=Ada").await;
    next_of(&mut ada, "welcome").await;
    let mut bob = ws(b.addr, "/chat?room=x&name=Bob").await;
    let welcome = next_of(&mut bob, "welcome").await;
    send_json(&mut ada, json!({"type":"message","text":"from a"})).await;
    let m = next_of(&mut bob, "message").await;
    assert_eq!(
        (m["text"].as_str(), m["offset"].as_u64()),
        (Some("from a"), Some(1))
    );
    assert_eq!(m["epoch"], welcome["epoch"]);
    send_json(&mut bob, json!({"type":"message","text":"from b"})).await;
    let m = next_of(&mut ada, "message").await;
    let m = if m["text"] == "from a" {
        next_of(&mut ada, "message").await
    } else {
        m
    };
    assert_eq!(
        (m["text"].as_str(), m["offset"].as_u64()),
        (Some("from b"), Some(2))
    );
    a.stop().await;
    b.stop().await;
}

/// Redis restarted empty: the stream is gone. Subscribers are told to reconnect and recover
/// (4010) once the node is subscribed again; their recovery says `recovered: false` in the
/// new epoch, and they go on from there.
#[tokio::test]
async fn redis_restarted_empty_means_reconnect_and_a_new_epoch() {
    let mut redis = RedisServer::start();
    let a = node(&redis).await;
    let mut sub = ws(a.addr, "/ws").await;
    let ack = subscribe(&mut sub, "t", None).await;
    let old = ack["epoch"].clone();
    let (status, _) = api_publish(a.addr, "t", 1).await;
    assert_eq!(status, 200);
    let m = next_of(&mut sub, "message").await;
    redis.restart();
    let started = Instant::now();
    assert_eq!(
        close_code(&mut sub).await,
        Some(4010),
        "reconnect and recover"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let mut back = ws(a.addr, "/ws").await;
    let ack = subscribe(
        &mut back,
        "t",
        Some(&json!({"offset":m["offset"],"epoch":old})),
    )
    .await;
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(ack["epoch"], old, "a new epoch");
    let (status, body) = api_publish(a.addr, "t", 2).await;
    assert_eq!(status, 200, "{body}");
    let m = next_of(&mut back, "message").await;
    assert_eq!(
        (m["offset"].as_u64(), &m["epoch"]),
        (Some(1), &ack["epoch"])
    );
    let text = metrics(a.addr).await;
    assert!(
        text.contains("switchboard_recover_disconnects_total 1"),
        "{text}"
    );
    assert!(text.contains("switchboard_not_recovered_total 1"), "{text}");
    assert!(
        text.contains("switchboard_engine_pubsub_reconnects_total 1"),
        "{text}"
    );
    a.stop().await;
}

/// Redis down while serving: publishes fail within the command timeout (5 s) with 503 or an
/// error event, WebSocket clients stay connected, nothing hangs; when it is back, publishing
/// works again and subscribers (told to recover) get new publications.
#[tokio::test]
async fn redis_down_fails_publishes_fast_and_keeps_clients() {
    let mut redis = RedisServer::start();
    let a = node(&redis).await;
    let mut sub = ws(a.addr, "/ws").await;
    subscribe(&mut sub, "t", None).await;
    let mut publisher = ws(a.addr, "/ws").await;
    redis.stop();
    let t = Instant::now();
    let (status, body) = api_publish(a.addr, "t", 1).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "API answered after {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let e = publish_ws(&mut publisher, "t", 2).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "error after {:?}",
        t.elapsed()
    );
    // Still connected: the connection answers a request (the history read fails too).
    send_json(&mut sub, json!({"type":"history","topic":"t","id":"h"})).await;
    let h = next_json(&mut sub).await;
    assert_eq!(h["code"], "unavailable", "{h}");
    assert!(metrics(a.addr)
        .await
        .contains("switchboard_engine_redis_up 0"));

    redis.restart();
    // The subscriber is told to recover once the node resubscribed; it comes back.
    assert_eq!(close_code(&mut sub).await, Some(4010));
    let mut sub = ws(a.addr, "/ws").await;
    subscribe(&mut sub, "t", None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = api_publish(a.addr, "t", 3).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing never worked again: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(next_of(&mut sub, "message").await["data"]["n"], 3);
    a.stop().await;
}

/// One client's publishes go to Redis without waiting for each answer (up to 64 at once),
/// yet are numbered in the order sent and acknowledged in that order.
#[tokio::test]
async fn a_clients_publishes_are_pipelined_in_order() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let mut sub = ws(a.addr, "/ws").await;
    subscribe(&mut sub, "p", None).await;
    let mut publisher = ws(a.addr, "/ws").await;
    for n in 1..=300u64 {
        send_json(
            &mut publisher,
            json!({"type":"publish","topic":"p","data":{"n":n},"id":n}),
        )
        .await;
    }
    for n in 1..=300u64 {
        let ack = next_json(&mut publisher).await;
        assert_eq!(
            (ack["id"].as_u64(), ack["offset"].as_u64()),
            (Some(n), Some(n)),
            "{ack}"
        );
    }
    for n in 1..=300u64 {
        let m = next_json(&mut sub).await;
        assert_eq!(
            (m["offset"].as_u64(), m["data"]["n"].as_u64()),
            (Some(n), Some(n)),
            "{m}"
        );
    }
    a.stop().await;
}

/// A client that publishes and closes at once: what it sent is still published (the
/// operations in flight complete after the connection ends).
#[tokio::test]
async fn publishes_in_flight_complete_after_the_publisher_closes() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let mut sub = ws(a.addr, "/ws").await;
    subscribe(&mut sub, "last", None).await;
    let mut publisher = ws(a.addr, "/ws").await;
    for n in 1..=50u64 {
        send_json(
            &mut publisher,
            json!({"type":"publish","topic":"last","data":{"n":n}}),
        )
        .await;
    }
    publisher
        .close(switchboard_proto::CloseCode::NORMAL, "done")
        .await
        .unwrap();
    for n in 1..=50u64 {
        assert_eq!(next_json(&mut sub).await["data"]["n"], n);
    }
    a.stop().await;
}

/// The recovery scenario the in-memory engine passes (tests/pubsub.rs), on Redis, with the
/// comeback on another node.
#[tokio::test]
async fn the_memory_engines_recovery_scenario_passes_across_nodes() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    common::resubscribe_recovers(a.addr, b.addr).await;
    a.stop().await;
    b.stop().await;
}
