//! The hub under concurrency, presence, history and fan-out.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use switchboard_hub::{Hub, HubConfig, Member, Outbox, OutboxLimits, SlowConsumerPolicy};
use switchboard_proto::Message;

fn outbox() -> Arc<Outbox> {
    Arc::new(Outbox::new(OutboxLimits::default()))
}

fn member(id: &str) -> Option<Member> {
    Some(Member {
        id: id.into(),
        name: format!("name-{id}").into(),
    })
}

fn payloads(o: &Outbox) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    o.drain(usize::MAX, |f| {
        let n = if f[1] & 0x7f == 126 { 4 } else { 2 };
        v.push(f[n..].to_vec())
    });
    v
}

#[test]
fn one_encoding_reaches_a_thousand_subscribers() {
    let hub = Hub::new(HubConfig::default());
    let boxes: Vec<_> = (0..1000).map(|_| outbox()).collect();
    for b in &boxes {
        hub.subscribe("room", Arc::clone(b), None);
    }
    let n = hub.publish("room", Message::text("x".repeat(300))).unwrap();
    assert_eq!(n, Some(1000));
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
fn topics_are_isolated() {
    let hub = Hub::new(HubConfig::default());
    let (a, b) = (outbox(), outbox());
    hub.subscribe("a", Arc::clone(&a), None);
    hub.subscribe("b", Arc::clone(&b), None);
    hub.publish("a", Message::text("for a")).unwrap();
    assert_eq!(payloads(&a), vec![b"for a".to_vec()]);
    assert!(payloads(&b).is_empty());
    assert_eq!(hub.publish("nobody", Message::text("x")).unwrap(), Some(0));
}

#[test]
fn presence_history_and_offsets() {
    let hub = Hub::new(HubConfig::default().history_size(2));
    let a = outbox();
    let ja = hub.subscribe("r", Arc::clone(&a), member("1"));
    assert_eq!(ja.members.len(), 1);
    assert_eq!(ja.position.offset, 0);
    for i in 0..3 {
        let p = hub
            .publish_with("r", |at| Message::text(format!("{i}:{}", at.offset)))
            .unwrap();
        assert_eq!(p.position.offset, i + 1);
        assert_eq!(p.position.epoch, ja.position.epoch);
        assert_eq!(p.delivered, Some(1));
    }
    hub.publish("r", Message::text("not kept")).unwrap();
    let jb = hub.subscribe("r", outbox(), member("2"));
    let ids: Vec<_> = jb.members.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(ids, ["1", "2"]);
    let hist: Vec<_> = jb.history.iter().map(|b| b.to_vec()).collect();
    assert_eq!(hist, vec![b"1:2".to_vec(), b"2:3".to_vec()]);
    assert_eq!(jb.position.offset, 3);
    assert_eq!(payloads(&a).len(), 4);
    let left = hub.unsubscribe(&ja.subscription).unwrap();
    assert_eq!(&*left.id, "1");
    assert_eq!(hub.members("r").len(), 1);
    hub.unsubscribe(&jb.subscription);
    assert_eq!(hub.topic_count(), 0, "no topic has subscribers");
    assert_eq!(hub.stream_count(), 1, "the stream outlives them");
    // Unsubscribing twice is harmless.
    assert!(hub.unsubscribe(&jb.subscription).is_none());
}

#[test]
fn stream_survives_the_last_unsubscribe_and_offsets_continue() {
    let hub = Hub::new(HubConfig::default());
    let j = hub.subscribe("t", outbox(), None);
    let first = hub.publish_with("t", |_| Message::text("1")).unwrap();
    hub.unsubscribe(&j.subscription);
    // Published with nobody listening: still numbered, still kept.
    let second = hub.publish_with("t", |_| Message::text("2")).unwrap();
    assert_eq!(second.delivered, Some(0));
    assert_eq!(second.position.offset, 2);
    assert_eq!(second.position.epoch, first.position.epoch);
    let back = hub.subscribe("t", outbox(), None);
    assert_eq!(back.position, second.position);
    let third = hub.publish_with("t", |_| Message::text("3")).unwrap();
    assert_eq!(third.position.offset, 3, "offsets do not restart");
    let h = hub.history("t", Some(&first.position), 300, Instant::now());
    assert!(h.recovered);
    assert_eq!(h.top, third.position);
    let got: Vec<(u64, Vec<u8>)> = h
        .publications
        .iter()
        .map(|(o, f)| (*o, f.payload().to_vec()))
        .collect();
    assert_eq!(got, vec![(2, b"2".to_vec()), (3, b"3".to_vec())]);
}

#[test]
fn history_requests_are_exact() {
    let hub = Hub::new(HubConfig::default());
    let now = Instant::now();
    let mut positions = Vec::new();
    for i in 1..=10 {
        positions.push(
            hub.publish_with("h", |_| Message::text(format!("m{i}")))
                .unwrap()
                .position,
        );
    }
    let texts = |h: &switchboard_hub::History| -> Vec<String> {
        h.publications
            .iter()
            .map(|(_, f)| String::from_utf8(f.payload().to_vec()).unwrap())
            .collect()
    };
    // Without a position: the last `limit`, not recovered.
    let h = hub.history("h", None, 3, now);
    assert!(!h.recovered);
    assert_eq!(texts(&h), ["m8", "m9", "m10"]);
    assert_eq!(h.top.offset, 10);
    // From offset 7: exactly 8, 9, 10.
    let h = hub.history("h", Some(&positions[6]), 300, now);
    assert!(h.recovered && !h.capped);
    assert_eq!(texts(&h), ["m8", "m9", "m10"]);
    let offsets: Vec<u64> = h.publications.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, [8, 9, 10]);
    // Over the limit: capped, nothing.
    let h = hub.history("h", Some(&positions[0]), 3, now);
    assert!(h.capped && !h.recovered && h.publications.is_empty());
    // Another epoch: nothing.
    let stale = switchboard_hub::StreamPosition {
        offset: 7,
        epoch: "zzzzzzzz".into(),
    };
    let h = hub.history("h", Some(&stale), 300, now);
    assert!(!h.recovered && h.publications.is_empty());
}

#[test]
fn trim_drops_idle_streams_only() {
    let hub = Hub::new(
        HubConfig::default()
            .history_size(10)
            .history_ttl(Duration::from_secs(60)),
    );
    let t0 = Instant::now();
    let old = hub.publish_with("idle", |_| Message::text("x")).unwrap();
    let j = hub.subscribe("busy", outbox(), None);
    hub.publish_with("busy", |_| Message::text("y")).unwrap();
    assert_eq!(hub.stream_count(), 2);
    assert_eq!(hub.trim(t0), 0, "history not expired yet");
    assert_eq!(hub.trim(t0 + Duration::from_secs(61)), 1);
    assert_eq!(hub.stream_count(), 1, "the subscribed topic stays");
    // A dropped stream comes back in a new epoch, from offset 1.
    let new = hub.publish_with("idle", |_| Message::text("x")).unwrap();
    assert_eq!(new.position.offset, 1);
    assert_ne!(new.position.epoch, old.position.epoch);
    hub.unsubscribe(&j.subscription);
    assert_eq!(
        hub.trim(t0 + Duration::from_secs(61)),
        1,
        "busy is idle now"
    );
}

#[test]
fn with_history_off_the_stream_goes_with_the_last_subscriber() {
    let hub = Hub::new(HubConfig::default().history_size(0));
    let j = hub.subscribe("t", outbox(), None);
    let p = hub.publish_with("t", |_| Message::text("x")).unwrap();
    assert_eq!(p.position.offset, 1);
    hub.unsubscribe(&j.subscription);
    assert_eq!(hub.stream_count(), 0);
}

#[test]
fn a_full_outbox_is_cut_off_and_others_keep_receiving() {
    let hub = Hub::new(HubConfig::default());
    let limits = OutboxLimits {
        max_bytes: 1 << 20,
        max_messages: 10,
        policy: SlowConsumerPolicy::Disconnect,
    };
    let slow = Arc::new(Outbox::new(limits));
    let fast = outbox();
    hub.subscribe("t", Arc::clone(&slow), None);
    hub.subscribe("t", Arc::clone(&fast), None);
    for i in 0..100 {
        hub.publish("t", Message::text(format!("{i}"))).unwrap();
        payloads(&fast); // the fast one keeps up
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
    let hub = Hub::new(HubConfig::default());
    let subs: Vec<_> = (0..8).map(|_| outbox()).collect();
    let limits = OutboxLimits {
        max_bytes: usize::MAX,
        max_messages: usize::MAX,
        policy: SlowConsumerPolicy::Disconnect,
    };
    let big: Vec<_> = (0..4).map(|_| Arc::new(Outbox::new(limits))).collect();
    for b in &big {
        hub.subscribe("t", Arc::clone(b), None);
    }
    thread::scope(|s| {
        for p in 0..4 {
            let hub = hub.clone();
            s.spawn(move || {
                for _ in 0..2000 {
                    hub.publish_with("t", |at| Message::text(format!("{p}:{}", at.offset)))
                        .unwrap();
                }
            });
        }
        // Churn on another topic at the same time.
        let hub2 = hub.clone();
        let subs = &subs;
        s.spawn(move || {
            for _ in 0..500 {
                let js: Vec<_> = subs
                    .iter()
                    .map(|o| hub2.subscribe("churn", Arc::clone(o), None))
                    .collect();
                for j in js {
                    hub2.unsubscribe(&j.subscription);
                }
            }
        });
    });
    for b in &big {
        let seqs: Vec<u64> = payloads(b)
            .iter()
            .map(|p| {
                let s = String::from_utf8(p.clone()).unwrap();
                s.split(':').nth(1).unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(
            seqs,
            (1..=8000).collect::<Vec<_>>(),
            "offsets follow delivery order, the same for every subscriber"
        );
    }
    assert_eq!(hub.topic_count(), 1);
}
