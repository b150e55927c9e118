//! The Redis engine when Redis fails: unreachable at start, down while serving, back, a
//! killed pub/sub connection, a wedged one (found by the probe).

mod common;

use std::time::{Duration, Instant};

use common::{
    body, bounded, config, connect, engine, eventually, offsets, options, proxy::Proxy, Recorder,
};
use switchboard_hub::engine::{Engine, EngineError, HistoryQuery, PresenceEntry};
use switchboard_redis::{RedisConfig, RedisEngine};
use switchboard_testkit::redis::RedisServer;

/// Operations must fail within this when Redis is down (command timeout 5 s, plus slack).
const FAIL_WITHIN: Duration = Duration::from_secs(6);

fn unreachable(err: &EngineError) -> bool {
    matches!(err, EngineError::Unavailable(_) | EngineError::Timeout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_at_start_is_a_clear_error_naming_the_url() {
    bounded(async {
        // A port nobody listens on: a server started and stopped.
        let mut redis = RedisServer::start();
        redis.stop();
        let url = format!("redis://:secret@127.0.0.1:{}/0", redis.port());
        let started = Instant::now();
        let err = RedisEngine::connect(RedisConfig::new(url))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < FAIL_WITHIN,
            "took {:?}",
            started.elapsed()
        );
        let message = err.to_string();
        assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
        assert!(
            message.contains(&format!("redis://***@127.0.0.1:{}/0", redis.port())),
            "names the URL: {message}"
        );
        assert!(!message.contains("secret"), "no password: {message}");

        let err = RedisEngine::connect(RedisConfig::new("not-a-url"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("invalid Redis URL not-a-url"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_operations_in_bounded_time_and_back_resubscribes() {
    bounded(async {
        let mut redis = RedisServer::start();
        // The default command timeout (5 s).
        let mut settings = RedisConfig::new(redis.url());
        settings.presence_refresh = Duration::from_millis(500);
        let (a, b) = (connect(settings.clone()).await, connect(settings).await);
        let on_a = Recorder::attach(&a);
        a.subscribe("news").await.unwrap();
        b.publish("news", body("before"), options()).await.unwrap();
        on_a.wait_for("news", 1).await;

        redis.stop();
        let entry = PresenceEntry {
            client: "c1".into(),
            user: "u1".into(),
            name: "Ann".into(),
            info: "".into(),
        };
        let started = Instant::now();
        let results = [
            b.publish("news", body("lost"), options()).await.err(),
            b.broadcast("news", body("lost")).await.err(),
            b.history(
                "news",
                HistoryQuery {
                    since: Some(0),
                    limit: 10,
                },
            )
            .await
            .err(),
            b.presence_add("news", entry).await.err(),
            b.presence("news").await.err(),
            a.subscribe("other").await.err(),
        ];
        for (i, err) in results.iter().enumerate() {
            let err = err
                .as_ref()
                .unwrap_or_else(|| panic!("operation {i} succeeded with Redis down"));
            assert!(unreachable(err), "operation {i}: {err:?}");
        }
        for _ in 0..3 {
            let one = Instant::now();
            let err = a
                .publish("news", body("lost"), options())
                .await
                .unwrap_err();
            assert!(unreachable(&err), "{err:?}");
            assert!(
                one.elapsed() < FAIL_WITHIN,
                "a publish took {:?}",
                one.elapsed()
            );
        }
        assert!(
            started.elapsed() < FAIL_WITHIN * 9,
            "nine failures took {:?}",
            started.elapsed()
        );
        assert!(b.stats().snapshot().publish_errors >= 2);

        redis.restart();
        // Commands work again by themselves...
        let deadline = Instant::now() + common::WAIT;
        let position = loop {
            match b.publish("news", body("after"), options()).await {
                Ok(published) => break published.position,
                Err(err) => {
                    assert!(Instant::now() < deadline, "publish still failing: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert_eq!(position.offset, 1, "Redis came back empty");
        // ...and the pub/sub connection resubscribed and told the hub.
        eventually("lost(None)", || on_a.lost().contains(&None).then_some(())).await;
        assert!(a.stats().snapshot().pubsub_reconnects >= 1);
        assert!(a.stats().snapshot().pubsub_connected);
        b.publish("news", body("live again"), options())
            .await
            .unwrap();
        eventually("live again", || {
            let got = on_a.of("news");
            got.iter()
                .any(|p| p.body == body("live again"))
                .then_some(())
        })
        .await;
        // The subscribe that failed while Redis was down kept its interest (the hub still
        // counts the topic as subscribed): it is subscribed now, until unsubscribed.
        b.publish("other", body("o"), options()).await.unwrap();
        on_a.wait_for("other", 1).await;
        // The presence entry added while Redis was down is written by the refresher (every
        // 500 ms here) now that it is back.
        let deadline = Instant::now() + common::WAIT;
        while b
            .presence("news")
            .await
            .map_or(true, |present| present.is_empty())
        {
            assert!(
                Instant::now() < deadline,
                "the presence entry never came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a.unsubscribe("other");
        eventually("UNSUBSCRIBE other", || {
            let n = redis
                .command(&["PUBSUB", "NUMSUB", "switchboard.pub.other"])
                .unwrap();
            (n[1] == "0").then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pubsub_connection_is_replaced_and_reported() {
    bounded(async {
        let redis = RedisServer::start();
        let (a, b) = (engine(&redis.url()).await, engine(&redis.url()).await);
        let on_a = Recorder::attach(&a);
        a.subscribe("t").await.unwrap();
        b.publish("t", body("1"), options()).await.unwrap();
        on_a.wait_for("t", 1).await;

        let killed = redis
            .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
            .unwrap();
        assert_eq!(killed, ["2"], "both nodes' pub/sub connections");
        eventually("lost(None)", || on_a.lost().contains(&None).then_some(())).await;
        assert_eq!(on_a.lost(), [None], "one report for one reconnect");
        b.publish("t", body("2"), options()).await.unwrap();
        assert_eq!(offsets(&on_a.wait_for("t", 2).await), vec![1, 2]);
        assert_eq!(a.stats().snapshot().pubsub_reconnects, 1);
    })
    .await;
}

/// The probe: a pub/sub connection that stays open but delivers nothing (through a proxy
/// that stops forwarding Redis' output to it) is found within probe interval + command
/// timeout and replaced; `PUBLISH` to the probe channel still reaches one subscriber in
/// Redis' view, so only the missing echo tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_pubsub_connection_is_found_by_the_probe_and_replaced() {
    bounded(async {
        let redis = RedisServer::start();
        let proxy = Proxy::start(redis.port()).await;
        let mut settings = config(&proxy.url());
        settings.probe_interval = Duration::from_millis(300);
        settings.command_timeout = Duration::from_secs(1);
        let a = connect(settings).await;
        let b = engine(&redis.url()).await;
        let on_a = Recorder::attach(&a);
        a.subscribe("t").await.unwrap();
        b.publish("t", body("1"), options()).await.unwrap();
        on_a.wait_for("t", 1).await;
        // Idle probes come back while the connection is healthy.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(a.stats().snapshot().probes_sent >= 1);
        assert!(on_a.lost().is_empty(), "healthy probes are not losses");

        proxy.freeze_pubsub();
        let frozen_at = Instant::now();
        b.publish("t", body("2"), options()).await.unwrap(); // swallowed by the wedged connection
        eventually("lost(None)", || on_a.lost().contains(&None).then_some(())).await;
        assert!(
            frozen_at.elapsed() < Duration::from_secs(4),
            "found after {:?}",
            frozen_at.elapsed()
        );
        let stats = a.stats().snapshot();
        assert!(stats.wedged_connections >= 1, "{stats:?}");
        assert!(stats.pubsub_reconnects >= 1, "{stats:?}");
        b.publish("t", body("3"), options()).await.unwrap();
        eventually("offset 3 after the reconnect", || {
            offsets(&on_a.of("t")).contains(&3).then_some(())
        })
        .await;
        assert!(
            !offsets(&on_a.of("t")).contains(&2),
            "2 was lost on the wedged connection"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_engine_ends_its_connections() {
    bounded(async {
        let redis = RedisServer::start();
        let a = engine(&redis.url()).await;
        a.subscribe("t").await.unwrap();
        let clients = || {
            let info = redis.command(&["INFO", "clients"]).unwrap();
            info[0]
                .lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
                .unwrap()
        };
        // The command connection, the pub/sub connection and this INFO's own.
        assert_eq!(clients(), 3);
        drop(a);
        eventually("connections closed", || (clients() == 1).then_some(())).await;
    })
    .await;
}

/// Redis hangs (SIGSTOP: connections open, no answers): every operation still ends within
/// the command timeout, and everything works again when it goes on, without losing the
/// pub/sub connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_times_operations_out_and_nothing_hangs() {
    bounded(async {
        let redis = RedisServer::start();
        let a = engine(&redis.url()).await; // command timeout 2 s
        let on_a = Recorder::attach(&a);
        a.subscribe("t").await.unwrap();

        redis.pause();
        let limit = Duration::from_secs(3);
        let started = Instant::now();
        let err = a.publish("t", body("1"), options()).await.unwrap_err();
        assert_eq!(err, EngineError::Timeout);
        assert!(
            started.elapsed() < limit,
            "publish took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let err = a
            .history(
                "t",
                HistoryQuery {
                    since: None,
                    limit: 1,
                },
            )
            .await
            .unwrap_err();
        assert!(unreachable(&err), "{err:?}");
        assert!(
            started.elapsed() < limit,
            "history took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let err = a.subscribe("u").await.unwrap_err();
        assert!(unreachable(&err), "{err:?}");
        assert!(
            started.elapsed() < limit,
            "subscribe took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert!(a.presence("t").await.is_err());
        assert!(
            started.elapsed() < limit,
            "presence took {:?}",
            started.elapsed()
        );

        redis.resume();
        // Publications sent before the pub/sub connection is back in shape may be lost
        // (at most once), but never silently: then the hub was told.
        let deadline = Instant::now() + common::WAIT;
        let mut missed = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "no delivery after resume; missed {missed:?}"
            );
            let Ok(published) = a.publish("t", body("after"), options()).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let offset = published.position.offset;
            let arrived = tokio::time::timeout(Duration::from_secs(1), async {
                while !offsets(&on_a.of("t")).contains(&offset) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            if arrived.is_ok() {
                break;
            }
            missed.push(offset);
        }
        if !missed.is_empty() {
            assert!(
                on_a.lost().contains(&None),
                "publications {missed:?} missed without a lost() report"
            );
        }
    })
    .await;
}
