//! The Redis engine against a real `redis-server`: positions, delivery to every node,
//! history, broadcast, presence.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::{body, bounded, config, connect, engine, eventually, offsets, options, Recorder};
use switchboard_hub::engine::{
    Body, Engine, HistoryQuery, PresenceEntry, PresenceStats, StreamOptions,
};
use switchboard_hub::HistoryLimits;
use switchboard_testkit::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_are_numbered_contiguously_and_reach_every_node_in_order() {
    bounded(async {
        let redis = RedisServer::start();
        let (a, b) = (engine(&redis.url()).await, engine(&redis.url()).await);
        let (on_a, on_b) = (Recorder::attach(&a), Recorder::attach(&b));
        a.subscribe("room").await.unwrap();
        b.subscribe("room").await.unwrap();

        // 1, 2, 3 from alternating nodes, then 40 at once from both.
        let mut epochs = HashSet::new();
        for (i, node) in [&a, &b, &a].into_iter().enumerate() {
            let published = node
                .publish("room", body(&format!("m{}", i + 1)), options())
                .await
                .unwrap();
            assert_eq!(published.position.offset, i as u64 + 1);
            assert_eq!(published.delivered, None);
            epochs.insert(published.position.epoch);
        }
        let mut tasks = Vec::new();
        for i in 0..40 {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                node.publish("room", body("burst"), options())
                    .await
                    .unwrap()
                    .position
            }));
        }
        let mut burst = Vec::new();
        for task in tasks {
            let position = task.await.unwrap();
            epochs.insert(position.epoch.clone());
            burst.push(position.offset);
        }
        burst.sort_unstable();
        assert_eq!(
            burst,
            (4..=43).collect::<Vec<u64>>(),
            "offsets are contiguous"
        );
        assert_eq!(epochs.len(), 1, "one epoch: {epochs:?}");

        for recorder in [&on_a, &on_b] {
            let got = recorder.wait_for("room", 43).await;
            assert_eq!(
                offsets(&got),
                (1..=43).collect::<Vec<u64>>(),
                "in order, each once"
            );
            assert!(got
                .iter()
                .all(|p| p.position.as_ref().unwrap().epoch == *epochs.iter().next().unwrap()));
            assert_eq!(got[0].body, body("m1"));
            assert_eq!(got[2].body, body("m3"));
        }
        assert!(on_a.lost().is_empty() && on_b.lost().is_empty());
        let stats = a.stats().snapshot();
        assert_eq!(stats.publishes, 22);
        assert!(stats.messages_received >= 43);
        assert!(stats.pubsub_connected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_data_and_kind_cross_unchanged() {
    bounded(async {
        let redis = RedisServer::start();
        let a = engine(&redis.url()).await;
        let on_a = Recorder::attach(&a);
        a.subscribe("bin").await.unwrap();
        let data = Body {
            kind: 255,
            data: Bytes::from_static(b"p1:9:x:0:\0\xff\r\n:"),
        };
        a.publish("bin", data.clone(), options()).await.unwrap();
        a.broadcast("bin", data.clone()).await.unwrap();
        let got = on_a.wait_for("bin", 2).await;
        assert_eq!(got[0].body, data);
        assert_eq!(got[1].body, data);
        let page = a
            .history(
                "bin",
                HistoryQuery {
                    since: Some(0),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.publications.len(), 1);
        assert_eq!(page.publications[0].body, data);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_is_stable_until_redis_restarts_empty() {
    bounded(async {
        let mut redis = RedisServer::start();
        let a = engine(&redis.url()).await;
        // A position read before the first publication stays valid.
        let before = a
            .history(
                "t",
                HistoryQuery {
                    since: None,
                    limit: 0,
                },
            )
            .await
            .unwrap();
        assert_eq!(before.top.offset, 0);
        let first = a.publish("t", body("1"), options()).await.unwrap().position;
        let second = a.publish("t", body("2"), options()).await.unwrap().position;
        assert_eq!(first.epoch, before.top.epoch);
        assert_eq!(second.epoch, first.epoch);
        assert_eq!(second.offset, 2);

        redis.restart();
        let after = eventually_ok(|| a.publish("t", body("3"), options()))
            .await
            .position;
        assert_eq!(after.offset, 1, "a new stream starts at 1");
        assert_ne!(
            after.epoch, first.epoch,
            "a new epoch after Redis lost the stream"
        );
        let page = a
            .history(
                "t",
                HistoryQuery {
                    since: Some(0),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.top, after);
        assert_eq!(offsets(&page.publications), vec![1]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_after_an_offset_and_the_newest_within_its_size() {
    bounded(async {
        let redis = RedisServer::start();
        let settings = config(&redis.url());
        // This topic's bounds, passed with each publication.
        let options = || {
            StreamOptions::new(HistoryLimits {
                size: 5,
                ttl: Duration::from_secs(60),
            })
        };
        let a = connect(settings).await;
        for i in 1..=8 {
            a.publish("h", body(&i.to_string()), options())
                .await
                .unwrap();
        }
        let read = |since, limit| a.history("h", HistoryQuery { since, limit });

        let recovery = read(Some(5), 100).await.unwrap();
        assert_eq!(recovery.top.offset, 8);
        assert_eq!(offsets(&recovery.publications), vec![6, 7, 8]);
        assert_eq!(recovery.publications[0].body, body("6"));
        assert_eq!(&*recovery.publications[0].topic, "h");

        // Size 5 keeps 4..=8: a position older than that cannot be recovered (the first
        // publication is not since + 1).
        assert_eq!(
            offsets(&read(Some(1), 100).await.unwrap().publications),
            vec![4, 5, 6, 7, 8]
        );
        assert_eq!(
            offsets(&read(Some(5), 2).await.unwrap().publications),
            vec![6, 7]
        );
        assert!(read(Some(8), 100).await.unwrap().publications.is_empty());
        assert!(read(Some(80), 100).await.unwrap().publications.is_empty());

        let newest = read(None, 3).await.unwrap();
        assert_eq!(offsets(&newest.publications), vec![6, 7, 8], "oldest first");
        assert_eq!(
            offsets(&read(None, 100).await.unwrap().publications),
            vec![4, 5, 6, 7, 8]
        );

        let position_only = read(Some(2), 0).await.unwrap();
        assert!(position_only.publications.is_empty());
        assert_eq!(position_only.top, newest.top);

        let unknown = a
            .history(
                "never",
                HistoryQuery {
                    since: None,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(unknown.top.offset, 0);
        assert!(unknown.publications.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_drops_publications_older_than_its_ttl_and_can_be_off() {
    bounded(async {
        let redis = RedisServer::start();
        let settings = config(&redis.url());
        let options = || {
            StreamOptions::new(HistoryLimits {
                size: 100,
                ttl: Duration::from_secs(1),
            })
        };
        let a = connect(settings.clone()).await;
        a.publish("aging", body("1"), options()).await.unwrap();
        a.publish("aging", body("2"), options()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let page = a
            .history(
                "aging",
                HistoryQuery {
                    since: Some(0),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert!(page.publications.is_empty(), "aged out");
        assert_eq!(page.top.offset, 2, "the position outlives the history");
        let third = a
            .publish("aging", body("3"), options())
            .await
            .unwrap()
            .position;
        assert_eq!((third.offset, &third.epoch), (3, &page.top.epoch));
        let page = a
            .history(
                "aging",
                HistoryQuery {
                    since: Some(0),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(offsets(&page.publications), vec![3]);
        // A client's made-up position past any offset: the position, nothing else.
        let page = a
            .history(
                "aging",
                HistoryQuery {
                    since: Some(u64::MAX),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert!(page.publications.is_empty());
        assert_eq!(page.top.offset, 3);

        let options = || StreamOptions::new(HistoryLimits::OFF);
        let off = connect(settings).await;
        let on_off = Recorder::attach(&off);
        off.subscribe("quiet").await.unwrap();
        for i in 1..=3 {
            let at = off
                .publish("quiet", body("x"), options())
                .await
                .unwrap()
                .position;
            assert_eq!(at.offset, i, "numbered without history");
        }
        let page = off
            .history(
                "quiet",
                HistoryQuery {
                    since: Some(0),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert!(page.publications.is_empty());
        assert_eq!(page.top.offset, 3);
        assert_eq!(offsets(&on_off.wait_for("quiet", 3).await), vec![1, 2, 3]);
        assert_eq!(
            redis
                .command(&["EXISTS", "switchboard.stream.quiet"])
                .unwrap(),
            ["0"]
        );
    })
    .await;
}

/// Each topic keeps to the bounds of its own publications, on one engine and across nodes:
/// a size, an age (applied by every node's reads: the TTL is kept with the position), none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_topic_keeps_to_the_bounds_it_was_published_with() {
    bounded(async {
        let redis = RedisServer::start();
        let (a, b) = (engine(&redis.url()).await, engine(&redis.url()).await);
        let bounds = |size, ttl_ms| {
            StreamOptions::new(HistoryLimits {
                size,
                ttl: Duration::from_millis(ttl_ms),
            })
        };
        let (small, brief, none) = (bounds(2, 60_000), bounds(100, 800), bounds(0, 60_000));
        for i in 1..=4 {
            let n = i.to_string();
            a.publish("ns1:small", body(&n), small).await.unwrap();
            a.publish("ns2:brief", body(&n), brief).await.unwrap();
            a.publish("ns3:none", body(&n), none).await.unwrap();
            a.publish("plain", body(&n), options()).await.unwrap();
        }
        let all = |topic: &'static str| {
            let b = b.clone();
            async move {
                b.history(
                    topic,
                    HistoryQuery {
                        since: Some(0),
                        limit: 100,
                    },
                )
                .await
                .unwrap()
            }
        };
        assert_eq!(offsets(&all("ns1:small").await.publications), vec![3, 4]);
        assert_eq!(
            offsets(&all("ns2:brief").await.publications),
            vec![1, 2, 3, 4]
        );
        assert!(all("ns3:none").await.publications.is_empty());
        assert_eq!(all("ns3:none").await.top.offset, 4, "numbered all the same");
        assert_eq!(offsets(&all("plain").await.publications), vec![1, 2, 3, 4]);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(
            all("ns2:brief").await.publications.is_empty(),
            "another node's read ages the history by the topic's own TTL"
        );
        assert_eq!(offsets(&all("plain").await.publications), vec![1, 2, 3, 4]);
        // A topic whose bounds change keeps to the new ones from its next publication.
        a.publish("plain", body("5"), small).await.unwrap();
        assert_eq!(offsets(&all("plain").await.publications), vec![4, 5]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_node_unnumbered() {
    bounded(async {
        let redis = RedisServer::start();
        let (a, b) = (engine(&redis.url()).await, engine(&redis.url()).await);
        let (on_a, on_b) = (Recorder::attach(&a), Recorder::attach(&b));
        a.subscribe("typing").await.unwrap();
        b.subscribe("typing").await.unwrap();
        a.broadcast("typing", body("ann is typing")).await.unwrap();
        for recorder in [&on_a, &on_b] {
            let got = recorder.wait_for("typing", 1).await;
            assert_eq!(got[0].position, None);
            assert_eq!(got[0].body, body("ann is typing"));
        }
        let page = a
            .history(
                "typing",
                HistoryQuery {
                    since: Some(0),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.top.offset, 0, "not numbered, not kept");
        assert_eq!(a.stats().snapshot().broadcasts, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_batched_and_unsubscribe_stops_delivery() {
    bounded(async {
        let redis = RedisServer::start();
        let a = engine(&redis.url()).await;
        let on_a = Recorder::attach(&a);
        let topics: Vec<String> = (0..300).map(|i| format!("topic-{i}")).collect();
        let ops: Vec<_> = topics.iter().map(|t| a.subscribe(t)).collect();
        for op in ops {
            op.await.unwrap();
        }
        let numsub = redis
            .command(&[
                "PUBSUB",
                "NUMSUB",
                "switchboard.pub.topic-0",
                "switchboard.pub.topic-299",
            ])
            .unwrap();
        assert_eq!(
            numsub,
            [
                "switchboard.pub.topic-0",
                "1",
                "switchboard.pub.topic-299",
                "1"
            ]
        );
        a.publish("topic-299", body("x"), options()).await.unwrap();
        on_a.wait_for("topic-299", 1).await;

        a.unsubscribe("topic-299");
        eventually("UNSUBSCRIBE", || {
            let n = redis
                .command(&["PUBSUB", "NUMSUB", "switchboard.pub.topic-299"])
                .unwrap();
            (n[1] == "0").then_some(())
        })
        .await;
        a.publish("topic-299", body("y"), options()).await.unwrap();
        a.publish("topic-0", body("z"), options()).await.unwrap();
        on_a.wait_for("topic-0", 1).await;
        assert_eq!(on_a.of("topic-299").len(), 1, "nothing after unsubscribe");

        // Subscribe, unsubscribe and subscribe again in a row: subscribed at the end.
        let again = a.subscribe("flip");
        a.unsubscribe("flip");
        let last = a.subscribe("flip");
        again.await.unwrap();
        last.await.unwrap();
        a.publish("flip", body("f"), options()).await.unwrap();
        on_a.wait_for("flip", 1).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_and_a_dropped_nodes_entries_expire() {
    bounded(async {
        let redis = RedisServer::start();
        let (a, b) = (engine(&redis.url()).await, engine(&redis.url()).await);
        let entry = |client: &str, user: &str, name: &str| PresenceEntry {
            client: client.into(),
            user: user.into(),
            name: name.into(),
            info: "".into(),
        };
        a.presence_add("lobby", entry("c1", "u1", "Ann"))
            .await
            .unwrap();
        a.presence_add("lobby", entry("c2", "u1", "Ann (phone)"))
            .await
            .unwrap();
        b.presence_add("lobby", entry("c3", "", "guest"))
            .await
            .unwrap();
        b.presence_add("lobby", entry("c4", "", "guest"))
            .await
            .unwrap();
        b.presence_add("lobby", entry("c5", "u2", "Bob"))
            .await
            .unwrap();

        let mut seen = b.presence("lobby").await.unwrap();
        seen.sort_by(|x, y| x.client.cmp(&y.client));
        assert_eq!(seen[0], entry("c1", "u1", "Ann"));
        assert_eq!(seen.len(), 5);
        assert_eq!(
            a.presence_stats("lobby").await.unwrap(),
            PresenceStats {
                clients: 5,
                users: 4
            },
            "u1, u2 and two anonymous"
        );
        a.presence_remove("lobby", "c2").await.unwrap();
        b.presence_remove("lobby", "c5").await.unwrap();
        assert_eq!(
            b.presence_stats("lobby").await.unwrap(),
            PresenceStats {
                clients: 3,
                users: 3
            }
        );

        // a dies: nothing refreshes c1 any more; b keeps refreshing c3 and c4.
        let probe_channel = format!("switchboard.probe.{}", a.node_id());
        drop(a);
        eventually("the dropped engine's pub/sub connection closed", || {
            let n = redis
                .command(&["PUBSUB", "NUMSUB", &probe_channel])
                .unwrap();
            (n[1] == "0").then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(3200)).await; // past the 2 s TTL
        let mut left: Vec<String> = b
            .presence("lobby")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.client.to_string())
            .collect();
        left.sort();
        assert_eq!(left, ["c3", "c4"], "c1 expired, b's entries were refreshed");
        assert_eq!(
            b.presence_stats("empty").await.unwrap(),
            PresenceStats::default()
        );
    })
    .await;
}

/// Retries `op` until it succeeds (Redis coming back), within the wait bound.
async fn eventually_ok<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, switchboard_hub::engine::EngineError>>,
{
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(err) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still failing: {err}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
