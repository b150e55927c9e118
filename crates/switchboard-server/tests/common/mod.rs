//! Scenarios the tests run on one node (the in-memory engine) and on several (Redis): the
//! same assertions for both engines.
#![allow(dead_code)]

use std::net::SocketAddr;

use switchboard_testkit::server::{http, next_json, next_of, send_json, ws};

/// A subscriber that comes back with its last position gets exactly what it missed, in
/// order, right after the ack and before anything live; one whose position the stream no
/// longer has (another epoch) is told `recovered: false` and gets nothing replayed. The
/// publisher and the first subscriber are on `first`; the comeback on `second` (the same
/// node, or another one of the cluster), whose metrics count the recoveries.
pub(crate) async fn resubscribe_recovers(first: SocketAddr, second: SocketAddr) {
    let mut publisher = ws(first, "/ws").await;
    let publish =
        |n: u64| serde_json::json!({"type":"publish","topic":"feed","data":{"n":n},"id":n});
    let mut a = ws(first, "/ws").await;
    send_json(
        &mut a,
        serde_json::json!({"type":"subscribe","topic":"feed","id":"s"}),
    )
    .await;
    let ack = next_of(&mut a, "ack").await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    for n in 1..=3 {
        send_json(&mut publisher, publish(n)).await;
        next_of(&mut publisher, "ack").await;
    }
    let mut last = 0;
    for n in 1..=3 {
        let m = next_of(&mut a, "message").await;
        assert_eq!(m["data"]["n"], n);
        last = m["offset"].as_u64().unwrap();
    }
    drop(a);
    // Published while it is away.
    for n in 4..=8 {
        send_json(&mut publisher, publish(n)).await;
        next_of(&mut publisher, "ack").await;
    }
    let mut back = ws(second, "/ws").await;
    send_json(
        &mut back,
        serde_json::json!({"type":"subscribe","topic":"feed","id":"r","recover":{"offset":last,"epoch":epoch}}),
    )
    .await;
    // Published right after the resubscribe: comes after the replay, once.
    send_json(&mut publisher, publish(9)).await;
    let ack = next_json(&mut back).await;
    assert_eq!(
        ack,
        serde_json::json!({"type":"ack","id":"r","offset":ack["offset"],"epoch":epoch,"recovered":true})
    );
    let top = ack["offset"].as_u64().unwrap();
    assert!(top == 8 || top == 9, "{ack}");
    for n in 4..=9 {
        let m = next_json(&mut back).await;
        assert_eq!(
            (m["type"].as_str(), m["offset"].as_u64()),
            (Some("message"), Some(n)),
            "{m}"
        );
        assert_eq!(m["data"]["n"], n);
    }
    // Another epoch: not recovered, nothing replayed, live from the top.
    let mut stale = ws(second, "/ws").await;
    send_json(
        &mut stale,
        serde_json::json!({"type":"subscribe","topic":"feed","id":1,"recover":{"offset":2,"epoch":"elsewhere"}}),
    )
    .await;
    let ack = next_json(&mut stale).await;
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(false), Some(9)),
        "{ack}"
    );
    send_json(&mut publisher, publish(10)).await;
    assert_eq!(next_json(&mut stale).await["offset"], 10);
    let (_, metrics) = http(second, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        metrics.contains("switchboard_recovered_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_not_recovered_total 1"),
        "{metrics}"
    );
}
