//! `/ws` end to end: subscriptions, acks and errors, binary publishes, slow consumers.

use std::time::Duration;

use serde_json::Value;
use switchboard_proto::Message;
use switchboard_server::{Limits, OutboxLimits, ServerConfig, SlowConsumerPolicy};
mod common;

use switchboard_testkit::server::{close_code, http, next_json, next_of, send_json, start, ws};

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
    let ack = next_json(&mut a).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    assert_eq!(
        ack,
        serde_json::json!({"type":"ack","id":"s1","offset":0,"epoch":epoch,"recovered":false})
    );
    send_json(
        &mut b,
        serde_json::json!({"type":"publish","topic":"news","data":{"n":[1,2]},"id":7}),
    )
    .await;
    let ack = next_json(&mut b).await;
    assert_eq!(epoch.len(), 8);
    assert_eq!(
        ack,
        serde_json::json!({"type":"ack","id":7,"delivered":1,"offset":1,"epoch":epoch})
    );
    assert_eq!(
        next_json(&mut a).await,
        serde_json::json!({"type":"message","topic":"news","offset":1,"epoch":epoch,"data":{"n":[1,2]}})
    );
    // Binary: [N][topic][payload] in, [N][topic][offset][M][epoch][payload] out.
    let mut bin = vec![4u8];
    bin.extend_from_slice(b"news");
    bin.extend_from_slice(&[0, 255, 7]);
    b.send(&Message::binary(bin)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut want = vec![4u8];
    want.extend_from_slice(b"news");
    want.extend_from_slice(&2u64.to_be_bytes());
    want.push(8);
    want.extend_from_slice(epoch.as_bytes());
    want.extend_from_slice(&[0, 255, 7]);
    assert_eq!(got, Message::binary(want));
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
        for offset in 1..=1000u64 {
            let m = next_of(&mut reader, "message").await;
            assert_eq!(m["offset"], offset);
        }
        reader
    });
    for _ in 0..1000 {
        let body =
            switchboard_server::publication_json(&serde_json::json!(data).to_string()).unwrap();
        srv.hub.publish("firehose", body).await.unwrap();
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
        let body = switchboard_server::publication_json(&big.to_string()).unwrap();
        srv.hub.publish("t", body).await.unwrap();
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

/// A subscriber that comes back with its last position gets exactly what it missed, in
/// order, right after the ack and before anything live; one whose position the stream no
/// longer has (another epoch) is told `recovered: false` and gets nothing replayed.
#[tokio::test]
async fn a_resubscribe_with_a_position_recovers_what_was_missed() {
    let srv = start(ServerConfig::default()).await;
    common::resubscribe_recovers(srv.addr, srv.addr).await;
    srv.stop().await;
}
