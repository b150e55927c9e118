//! The hub under concurrency, presence, history and fan-out.

use std::sync::Arc;
use std::thread;

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
    let n = hub
        .publish("room", Message::text("x".repeat(300)), false)
        .unwrap();
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
    hub.publish("a", Message::text("for a"), false).unwrap();
    assert_eq!(payloads(&a), vec![b"for a".to_vec()]);
    assert!(payloads(&b).is_empty());
    assert_eq!(
        hub.publish("nobody", Message::text("x"), false).unwrap(),
        Some(0)
    );
}

#[test]
fn presence_history_and_sequence_numbers() {
    let hub = Hub::new(HubConfig::default().history(2));
    let a = outbox();
    let ja = hub.subscribe("r", Arc::clone(&a), member("1"));
    assert_eq!(ja.members.len(), 1);
    for i in 0..3 {
        hub.publish_with("r", true, |seq| Message::text(format!("{i}:{seq}")))
            .unwrap();
    }
    hub.publish("r", Message::text("not kept"), false).unwrap();
    let jb = hub.subscribe("r", outbox(), member("2"));
    let ids: Vec<_> = jb.members.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(ids, ["1", "2"]);
    let hist: Vec<_> = jb.history.iter().map(|b| b.to_vec()).collect();
    assert_eq!(hist, vec![b"1:2".to_vec(), b"2:3".to_vec()]);
    assert_eq!(payloads(&a).len(), 4);
    let left = hub.unsubscribe(&ja.subscription).unwrap();
    assert_eq!(&*left.id, "1");
    assert_eq!(hub.members("r").len(), 1);
    hub.unsubscribe(&jb.subscription);
    assert_eq!(hub.topic_count(), 0, "an empty topic is removed");
    // Unsubscribing twice is harmless.
    assert!(hub.unsubscribe(&jb.subscription).is_none());
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
        hub.publish("t", Message::text(format!("{i}")), false)
            .unwrap();
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
                    hub.publish_with("t", false, |seq| Message::text(format!("{p}:{seq}")))
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
            "sequence follows delivery order"
        );
    }
    assert_eq!(hub.topic_count(), 1);
}
