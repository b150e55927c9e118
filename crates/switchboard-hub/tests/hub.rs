//! The hub and the in-memory engine under concurrency: fan-out, presence, history, the
//! two-step subscribe that joins history and live stream, and gap detection.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use switchboard_hub::engine::{PresenceEntry, PresenceStats};
use switchboard_hub::recovery::{decide, query};
use switchboard_hub::{
    Body, Deliver, Engine, EngineError, HistoryPage, HistoryQuery, Hub, HubConfig, Op, Outbox,
    OutboxLimits, Publication, Published, Render, SlowConsumerPolicy, StreamOptions,
    StreamPosition, Subscription,
};
use switchboard_proto::frame::{encode_shared_text, SharedFrame};

fn outbox() -> Arc<Outbox> {
    Arc::new(Outbox::new(OutboxLimits::default()))
}

fn entry(client: &str, user: &str) -> PresenceEntry {
    PresenceEntry {
        client: client.into(),
        user: user.into(),
        name: format!("name-{client}").into(),
        info: "".into(),
    }
}

fn text(s: impl Into<String>) -> Body {
    Body {
        kind: 0,
        data: s.into().into(),
    }
}

fn payloads(o: &Outbox) -> Vec<String> {
    let mut v = Vec::new();
    o.drain(usize::MAX, |f| v.push(payload(&f)));
    v
}

fn payload(f: &SharedFrame) -> String {
    String::from_utf8(f.payload().to_vec()).unwrap()
}

/// Renders a publication as `offset:data` (`-:data` when it has no position).
struct WithOffset;
impl Render for WithOffset {
    fn render(&self, p: &Publication) -> SharedFrame {
        let at = p
            .position
            .as_ref()
            .map_or("-".into(), |a| a.offset.to_string());
        let data = std::str::from_utf8(&p.body.data).unwrap();
        encode_shared_text(&[&at, ":", data])
    }
}

fn hub_with(config: HubConfig) -> Hub {
    Hub::with_options(
        Arc::new(switchboard_hub::MemoryEngine::new()),
        Arc::new(WithOffset),
        StreamOptions::new(config.limits()),
    )
}

/// Subscribes and goes live at once (no recovery), as the in-memory engine allows.
fn join(hub: &Hub, topic: &str, o: &Arc<Outbox>) -> Subscription {
    let s = hub.subscribe(
        topic,
        Arc::clone(o),
        HistoryQuery {
            since: None,
            limit: 0,
        },
    );
    let page = s.page.now().unwrap().unwrap();
    assert!(hub
        .go_live(&s.subscription, &page.top, Vec::new())
        .is_empty());
    s.subscription
}

fn publish(hub: &Hub, topic: &str, data: &str) -> Published {
    hub.publish(topic, text(data)).now().unwrap().unwrap()
}

fn history(hub: &Hub, topic: &str, since: Option<u64>, limit: usize) -> HistoryPage {
    hub.history(topic, HistoryQuery { since, limit })
        .now()
        .unwrap()
        .unwrap()
}

#[test]
fn one_encoding_reaches_a_thousand_subscribers() {
    let hub = hub_with(HubConfig::default());
    let boxes: Vec<_> = (0..1000).map(|_| outbox()).collect();
    for b in &boxes {
        join(&hub, "room", b);
    }
    let p = publish(&hub, "room", &"x".repeat(300));
    assert_eq!(p.delivered, Some(1000));
    let mut first = None;
    for b in &boxes {
        b.drain(usize::MAX, |f| {
            let p = f.as_ptr();
            assert_eq!(
                *first.get_or_insert(p),
                p,
                "every subscriber shares one buffer"
            );
        });
    }
    assert_eq!(
        hub.stats()
            .deliveries
            .load(std::sync::atomic::Ordering::Relaxed),
        1000
    );
}

#[test]
fn topics_are_isolated_and_broadcasts_are_not_numbered() {
    let hub = hub_with(HubConfig::default());
    let (a, b) = (outbox(), outbox());
    join(&hub, "a", &a);
    join(&hub, "b", &b);
    publish(&hub, "a", "for a");
    hub.broadcast("a", text("event")).now().unwrap().unwrap();
    assert_eq!(payloads(&a), ["1:for a", "-:event"]);
    assert!(payloads(&b).is_empty());
    assert_eq!(publish(&hub, "nobody", "x").delivered, Some(0));
    assert_eq!(
        history(&hub, "a", None, 10).publications.len(),
        1,
        "a broadcast is not kept"
    );
}

#[test]
fn offsets_and_the_stream_outliving_its_subscribers() {
    let hub = hub_with(HubConfig::default().history_size(2));
    let a = outbox();
    let sa = join(&hub, "r", &a);
    let epoch = history(&hub, "r", None, 0).top.epoch;
    for i in 1..=3 {
        let p = publish(&hub, "r", &format!("m{i}"));
        assert_eq!((p.position.offset, p.delivered), (i, Some(1)));
        assert_eq!(p.position.epoch, epoch);
    }
    let b = outbox();
    let sb = join(&hub, "r", &b);
    let page = history(&hub, "r", None, 10);
    let kept: Vec<_> = page
        .publications
        .iter()
        .map(|p| payload(&hub.render(p)))
        .collect();
    assert_eq!(kept, ["2:m2", "3:m3"], "history keeps its size");
    assert!(hub.unsubscribe(&sa));
    assert_eq!(hub.subscriber_count("r"), 1);
    assert!(hub.unsubscribe(&sb));
    assert_eq!(hub.topic_count(), 0, "no topic has subscribers");
    assert_eq!(hub.stream_count(), 1, "the stream outlives them");
    assert!(!hub.unsubscribe(&sb), "twice is harmless");
    // Published with nobody listening: still numbered, still kept, same epoch.
    let p = publish(&hub, "r", "m4");
    assert_eq!((p.position.offset, p.delivered), (4, Some(0)));
    assert_eq!(p.position.epoch, epoch);
}

fn present(hub: &Hub, topic: &str) -> Vec<String> {
    let mut v: Vec<_> = hub
        .presence(topic)
        .now()
        .unwrap()
        .unwrap()
        .iter()
        .map(|e| format!("{}/{}/{}", e.client, e.user, e.name))
        .collect();
    v.sort();
    v
}

fn stats(hub: &Hub, topic: &str) -> PresenceStats {
    hub.presence_stats(topic).now().unwrap().unwrap()
}

/// Presence is the engine's, apart from subscriptions: added and removed by client, counted
/// by connection and by user; a topic's stream stays while anyone is present and goes with
/// the last one when nothing else keeps it.
#[test]
fn presence_lives_in_the_engine_by_client() {
    let hub = hub_with(HubConfig::default());
    let o = outbox();
    let sub = join(&hub, "p", &o);
    let add = |e| hub.presence_add("p", e).now().unwrap().unwrap();
    add(entry("n.1", ""));
    add(entry("n.2", "ada"));
    add(entry("n.3", "ada"));
    add(entry("n.4", ""));
    assert_eq!(
        present(&hub, "p"),
        [
            "n.1//name-n.1",
            "n.2/ada/name-n.2",
            "n.3/ada/name-n.3",
            "n.4//name-n.4"
        ]
    );
    // Two anonymous connections count as two users; ada's two connections as one.
    assert_eq!(
        stats(&hub, "p"),
        PresenceStats {
            clients: 4,
            users: 3
        }
    );
    add(PresenceEntry {
        name: "renamed".into(),
        ..entry("n.1", "")
    });
    assert_eq!(
        stats(&hub, "p").clients,
        4,
        "an add of the same client replaces"
    );
    assert!(present(&hub, "p").contains(&"n.1//renamed".to_string()));
    assert!(present(&hub, "other").is_empty());
    assert_eq!(stats(&hub, "other"), PresenceStats::default());

    // Unsubscribing leaves presence alone: the stream stays while anyone is present.
    assert!(hub.unsubscribe(&sub));
    assert_eq!(hub.stream_count(), 1);
    for c in ["n.1", "n.2", "n.3"] {
        hub.presence_remove("p", c).now().unwrap().unwrap();
    }
    hub.presence_remove("p", "n.9").now().unwrap().unwrap();
    assert_eq!(present(&hub, "p"), ["n.4//name-n.4"]);
    assert_eq!(hub.stream_count(), 1);
    hub.presence_remove("p", "n.4").now().unwrap().unwrap();
    assert!(present(&hub, "p").is_empty());
    assert_eq!(hub.stream_count(), 0, "nothing keeps the stream");

    // Present without a subscriber, then subscribed and gone: the last one out drops it.
    add(entry("n.5", ""));
    let sub = join(&hub, "p", &o);
    hub.presence_remove("p", "n.5").now().unwrap().unwrap();
    assert_eq!(hub.stream_count(), 1, "still subscribed");
    hub.unsubscribe(&sub);
    assert_eq!(hub.stream_count(), 0);
}

/// Many present in one topic (past the short list), from several threads, then all gone.
#[test]
fn presence_of_many_from_several_threads() {
    let hub = hub_with(HubConfig::default());
    thread::scope(|s| {
        for t in 0..4 {
            let hub = &hub;
            s.spawn(move || {
                for i in 0..250 {
                    let e = entry(&format!("n.{t}.{i}"), &format!("u{}", i % 10));
                    hub.presence_add("big", e).now().unwrap().unwrap();
                }
            });
        }
    });
    assert_eq!(
        stats(&hub, "big"),
        PresenceStats {
            clients: 1000,
            users: 10
        }
    );
    assert_eq!(present(&hub, "big").len(), 1000);
    thread::scope(|s| {
        for t in 0..4 {
            let hub = &hub;
            s.spawn(move || {
                for i in 0..250 {
                    hub.presence_remove("big", &format!("n.{t}.{i}"))
                        .now()
                        .unwrap()
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(stats(&hub, "big"), PresenceStats::default());
    assert_eq!(hub.stream_count(), 0);
}

#[test]
fn history_reads_are_exact_and_recovery_is_all_or_nothing() {
    let hub = hub_with(HubConfig::default());
    let positions: Vec<_> = (1..=10)
        .map(|i| publish(&hub, "h", &format!("m{i}")).position)
        .collect();
    let offsets = |p: &HistoryPage| -> Vec<u64> {
        p.publications
            .iter()
            .map(|p| p.position.as_ref().unwrap().offset)
            .collect()
    };
    assert_eq!(offsets(&history(&hub, "h", None, 3)), [8, 9, 10]);
    assert_eq!(offsets(&history(&hub, "h", Some(7), 300)), [8, 9, 10]);
    assert_eq!(offsets(&history(&hub, "h", Some(2), 3)), [3, 4, 5]);
    let from = &positions[6];
    assert!(decide(from, &history(&hub, "h", Some(7), 300), 300).recovered);
    let capped = decide(
        &positions[0],
        &hub.history("h", query(&positions[0], 3))
            .now()
            .unwrap()
            .unwrap(),
        3,
    );
    assert!(capped.capped && !capped.recovered);
    let stale = StreamPosition {
        offset: 7,
        epoch: "zzzzzzzz".into(),
    };
    assert!(!decide(&stale, &history(&hub, "h", Some(7), 300), 300).recovered);
    // A topic with no stream: offset 0, and nothing is kept for asking.
    assert_eq!(history(&hub, "nothing", None, 10).top.offset, 0);
    assert_eq!(hub.stream_count(), 1);
}

#[test]
fn a_subscriber_recovering_gets_the_replay_then_what_came_meanwhile_once_each() {
    let hub = hub_with(HubConfig::default());
    for i in 1..=3 {
        publish(&hub, "t", &format!("m{i}"));
    }
    let seen = history(&hub, "t", None, 0).top; // offset 3
    let from = StreamPosition {
        offset: 1,
        epoch: seen.epoch,
    };
    let o = outbox();
    let s = hub.subscribe("t", Arc::clone(&o), query(&from, 300));
    // Published after the subscriber was added, before its history is handed over.
    publish(&hub, "t", "m4");
    assert!(
        payloads(&o).is_empty(),
        "nothing reaches it before it goes live"
    );
    let page = s.page.now().unwrap().unwrap();
    assert!(decide(&from, &page, 300).recovered);
    let replay = page.publications.iter().map(|p| hub.render(p)).collect();
    let frames = hub.go_live(&s.subscription, &page.top, replay);
    let got: Vec<_> = frames.iter().map(payload).collect();
    publish(&hub, "t", "m5");
    assert_eq!(got, ["2:m2", "3:m3", "4:m4"]);
    assert_eq!(payloads(&o), ["5:m5"]);
}

#[test]
fn history_read_after_a_publication_does_not_repeat_it() {
    // The page already holds what was buffered (read after it was published).
    let hub = hub_with(HubConfig::default());
    publish(&hub, "t", "m1");
    let from = history(&hub, "t", None, 0).top;
    let o = outbox();
    let s = hub.subscribe("t", Arc::clone(&o), query(&from, 300));
    let Op::Ready(_) = &s.page else {
        panic!("memory is ready at once")
    };
    publish(&hub, "t", "m2");
    // A page read now includes m2; the buffered m2 must not come twice.
    let page = hub.history("t", query(&from, 300)).now().unwrap().unwrap();
    let replay = page.publications.iter().map(|p| hub.render(p)).collect();
    let frames = hub.go_live(&s.subscription, &page.top, replay);
    assert_eq!(frames.iter().map(payload).collect::<Vec<_>>(), ["2:m2"]);
}

#[test]
fn trim_drops_idle_streams_only() {
    let hub = hub_with(
        HubConfig::default()
            .history_size(10)
            .history_ttl(Duration::from_secs(60)),
    );
    let t0 = Instant::now();
    let old = publish(&hub, "idle", "x");
    let s = join(&hub, "busy", &outbox());
    publish(&hub, "busy", "y");
    assert_eq!(hub.stream_count(), 2);
    hub.trim(t0);
    assert_eq!(hub.stream_count(), 2, "history not expired yet");
    hub.trim(t0 + Duration::from_secs(61));
    assert_eq!(hub.stream_count(), 1, "the subscribed topic stays");
    let new = publish(&hub, "idle", "x");
    assert_eq!(new.position.offset, 1, "a dropped stream starts again");
    assert_ne!(new.position.epoch, old.position.epoch, "in a new epoch");
    hub.unsubscribe(&s);
    hub.trim(t0 + Duration::from_secs(122));
    assert_eq!(hub.stream_count(), 0);
}

/// Each topic's history keeps to the options the hub's `TopicOptions` gives it: here
/// `live:` keeps none, `short:` keeps 2, the rest the defaults; a client that missed
/// something in a topic without history is not recovered, one that missed nothing is.
#[test]
fn each_topic_keeps_its_own_history_bounds() {
    let options = |topic: &str| {
        let size = match topic.split_once(':').map(|(ns, _)| ns) {
            Some("live") => 0,
            Some("short") => 2,
            _ => 100,
        };
        StreamOptions::new(switchboard_hub::HistoryLimits {
            size,
            ttl: Duration::from_secs(60),
        })
    };
    let hub = Hub::with_options(
        Arc::new(switchboard_hub::MemoryEngine::new()),
        Arc::new(WithOffset),
        options,
    );
    for topic in ["live:a", "short:a", "plain"] {
        for i in 1..=5 {
            assert_eq!(publish(&hub, topic, &format!("m{i}")).position.offset, i);
        }
    }
    let kept = |topic| history(&hub, topic, None, 100).publications.len();
    assert_eq!((kept("live:a"), kept("short:a"), kept("plain")), (0, 2, 5));

    // Recovery in the topic without history: all or nothing still.
    let top = history(&hub, "live:a", None, 0).top;
    let missed_one = StreamPosition {
        offset: 4,
        epoch: top.epoch.clone(),
    };
    let o = outbox();
    let s = hub.subscribe("live:a", Arc::clone(&o), query(&missed_one, 300));
    let page = s.page.now().unwrap().unwrap();
    let d = decide(&missed_one, &page, 300);
    assert!(!d.recovered && !d.capped, "nothing kept to replay");
    assert!(hub
        .go_live(&s.subscription, &page.top, Vec::new())
        .is_empty());
    assert!(decide(&top, &page, 300).recovered, "missed nothing");
    publish(&hub, "live:a", "m6");
    assert_eq!(payloads(&o), ["6:m6"], "live delivery goes on");
    assert_eq!(kept("live:a"), 0);
}

#[test]
fn with_history_off_the_stream_goes_with_the_last_subscriber() {
    let hub = hub_with(HubConfig::default().history_size(0));
    let s = join(&hub, "t", &outbox());
    assert_eq!(publish(&hub, "t", "x").position.offset, 1);
    hub.unsubscribe(&s);
    assert_eq!(hub.stream_count(), 0);
}

#[test]
fn a_full_outbox_is_cut_off_and_others_keep_receiving() {
    let hub = hub_with(HubConfig::default());
    let limits = OutboxLimits {
        max_bytes: 1 << 20,
        max_messages: 10,
        policy: SlowConsumerPolicy::Disconnect,
    };
    let slow = Arc::new(Outbox::new(limits));
    let fast = outbox();
    join(&hub, "t", &slow);
    join(&hub, "t", &fast);
    for i in 0..100 {
        publish(&hub, "t", &i.to_string());
        payloads(&fast);
    }
    assert!(slow.is_overflowed());
    assert_eq!(payloads(&slow).len(), 10);
    assert_eq!(
        hub.stats()
            .overflowed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn concurrent_publishers_keep_per_topic_order() {
    let hub = hub_with(HubConfig::default());
    let subs: Vec<_> = (0..8).map(|_| outbox()).collect();
    let limits = OutboxLimits {
        max_bytes: usize::MAX,
        max_messages: usize::MAX,
        policy: SlowConsumerPolicy::Disconnect,
    };
    let big: Vec<_> = (0..4).map(|_| Arc::new(Outbox::new(limits))).collect();
    for b in &big {
        join(&hub, "t", b);
    }
    thread::scope(|s| {
        for p in 0..4 {
            let hub = hub.clone();
            s.spawn(move || {
                for _ in 0..2000 {
                    publish(&hub, "t", &p.to_string());
                }
            });
        }
        // Churn on another topic at the same time.
        let hub2 = hub.clone();
        let subs = &subs;
        s.spawn(move || {
            for _ in 0..500 {
                let js: Vec<_> = subs.iter().map(|o| join(&hub2, "churn", o)).collect();
                for j in js {
                    hub2.unsubscribe(&j);
                }
            }
        });
    });
    for b in &big {
        let offsets: Vec<u64> = payloads(b)
            .iter()
            .map(|p| p.split(':').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            offsets,
            (1..=8000).collect::<Vec<_>>(),
            "offsets follow delivery order, the same for every subscriber"
        );
    }
    assert_eq!(hub.topic_count(), 1);
}

/// An engine whose deliveries the test makes, to show what the hub does with a gap.
#[derive(Debug, Default)]
struct Hand {
    hub: OnceLock<Weak<dyn Deliver>>,
    top: Mutex<u64>,
}

impl Hand {
    fn deliver(&self, offset: u64, epoch: &str) -> usize {
        let hub = self.hub.get().unwrap().upgrade().unwrap();
        hub.deliver(&Publication {
            topic: "t".into(),
            position: Some(StreamPosition {
                offset,
                epoch: epoch.into(),
            }),
            body: text("x"),
        })
    }
}

impl Engine for Hand {
    fn attach(&self, hub: Weak<dyn Deliver>) {
        self.hub.set(hub).unwrap();
    }
    fn publish(&self, _: &str, _: Body, _: StreamOptions) -> Op<Result<Published, EngineError>> {
        unimplemented!()
    }
    fn broadcast(&self, _: &str, _: Body) -> Op<Result<(), EngineError>> {
        unimplemented!()
    }
    fn history(&self, _: &str, _: HistoryQuery) -> Op<Result<HistoryPage, EngineError>> {
        Op::ready(Ok(HistoryPage {
            top: StreamPosition {
                offset: *self.top.lock().unwrap(),
                epoch: "e1".into(),
            },
            publications: Vec::new(),
        }))
    }
    fn subscribe(&self, _: &str) -> Op<Result<(), EngineError>> {
        Op::ready(Ok(()))
    }
    fn unsubscribe(&self, _: &str) {}
    fn presence_add(&self, _: &str, _: PresenceEntry) -> Op<Result<(), EngineError>> {
        unimplemented!()
    }
    fn presence_remove(&self, _: &str, _: &str) -> Op<Result<(), EngineError>> {
        unimplemented!()
    }
    fn presence(&self, _: &str) -> Op<Result<Vec<PresenceEntry>, EngineError>> {
        unimplemented!()
    }
    fn presence_stats(&self, _: &str) -> Op<Result<PresenceStats, EngineError>> {
        unimplemented!()
    }
}

#[test]
fn a_gap_or_a_new_epoch_tells_subscribers_to_recover_and_a_repeat_is_dropped() {
    let engine = Arc::new(Hand::default());
    *engine.top.lock().unwrap() = 5;
    let hub = Hub::with_engine(Arc::clone(&engine) as Arc<dyn Engine>, Arc::new(WithOffset));
    let o = outbox();
    join(&hub, "t", &o);
    assert_eq!(engine.deliver(6, "e1"), 1);
    assert_eq!(engine.deliver(6, "e1"), 0, "seen already");
    assert_eq!(payloads(&o), ["6:x"]);
    assert!(!o.is_lost());
    assert_eq!(engine.deliver(8, "e1"), 0, "7 is missing");
    assert!(o.is_lost(), "told to reconnect and recover");

    let o2 = outbox();
    *engine.top.lock().unwrap() = 8;
    join(&hub, "t", &o2);
    engine.deliver(9, "e1");
    engine.deliver(1, "e2");
    assert!(o2.is_lost(), "another epoch: the stream was lost");
    assert_eq!(
        hub.stats().lost.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

/// With an engine that delivers later (Redis), publications up to a newcomer's read may
/// still be on their way when it goes live: they reach the subscribers that were there
/// before, and not the newcomer (its read had them).
#[test]
fn publications_still_on_their_way_reach_the_others_once_and_the_newcomer_not_again() {
    let engine = Arc::new(Hand::default());
    *engine.top.lock().unwrap() = 10;
    let hub = Hub::with_engine(Arc::clone(&engine) as Arc<dyn Engine>, Arc::new(WithOffset));
    let old = outbox();
    join(&hub, "t", &old);
    // 11 and 12 are published; the newcomer's read sees them before they arrive here.
    *engine.top.lock().unwrap() = 12;
    let new = outbox();
    join(&hub, "t", &new);
    engine.deliver(11, "e1");
    engine
        .hub
        .get()
        .unwrap()
        .upgrade()
        .unwrap()
        .deliver(&Publication {
            topic: "t".into(),
            position: None,
            body: text("event"),
        });
    engine.deliver(12, "e1");
    engine.deliver(13, "e1");
    assert_eq!(payloads(&old), ["11:x", "-:event", "12:x", "13:x"]);
    assert_eq!(payloads(&new), ["-:event", "13:x"]);
    assert!(!old.is_lost() && !new.is_lost());
}
