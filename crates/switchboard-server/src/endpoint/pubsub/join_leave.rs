//! `/ws` `join` and `leave` events (docs/protocol.md): in a namespace with `join_leave`,
//! the subscribers of a topic are told when a connection that is present in it subscribes
//! and when it unsubscribes or goes.
//!
//! An event is a broadcast (not numbered, not kept in the history) of a text body the
//! server's `Render` passes on as it is: made once here, rendered once per node.

use serde::Serialize;
use serde_json::value::RawValue;
use switchboard_hub::{Body, EngineError, Op};

use crate::auth::Identity;
use crate::render;

/// Which event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Join,
    Leave,
}

/// Who a connection is in its events.
#[derive(Serialize)]
struct Who<'a> {
    client: &'a str,
    /// Empty: anonymous (as in `presence` answers).
    user: &'a str,
    /// The identity's `info` (JSON the authenticator checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a RawValue>,
}

/// Who `client` of `identity` is, as the members of a JSON object:
/// `"client":…,"user":…[,"info":…]`.
pub(super) fn who(client: &str, identity: &Identity) -> String {
    let info = identity
        .info
        .as_deref()
        .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
    let json = serde_json::to_string(&Who {
        client,
        user: identity.user.as_deref().unwrap_or_default(),
        info,
    })
    .unwrap_or_default();
    // Without its braces.
    json.get(1..json.len().saturating_sub(1))
        .unwrap_or_default()
        .to_owned()
}

/// The body of a `join` or `leave` of `who` (see [`who`]) in `topic`.
pub(super) fn event(kind: Kind, topic: &str, who: &str) -> Body {
    let kind = match kind {
        Kind::Join => "join",
        Kind::Leave => "leave",
    };
    let topic = serde_json::to_string(topic).unwrap_or_default();
    render::body(
        render::TEXT,
        format!(r#"{{"type":"{kind}","topic":{topic},{who}}}"#),
    )
}

/// Sends a broadcast without waiting for it: at once when it is ready, else on a task of
/// its own; a failure is logged (the others miss one event).
pub(super) fn send(op: Op<Result<(), EngineError>>) {
    let log = |result: Result<(), EngineError>| {
        if let Err(e) = result {
            tracing::debug!(error = %e, "join/leave event not sent");
        }
    };
    match op.now() {
        Ok(result) => log(result),
        Err(pending) => {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { log(pending.await) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &Body) -> &str {
        std::str::from_utf8(&body.data).unwrap()
    }

    #[test]
    fn events_are_json_with_who_and_their_info() {
        let anon = who("n.1", &Identity::anonymous());
        assert_eq!(&*anon, r#""client":"n.1","user":"""#);
        let b = event(Kind::Join, "room:1", &anon);
        assert_eq!(b.kind, render::TEXT);
        assert_eq!(
            text(&b),
            r#"{"type":"join","topic":"room:1","client":"n.1","user":""}"#
        );
        let mut ada = Identity::user("ada \"the\" first");
        ada.info = Some(r#"{"role": "admin"}"#.into());
        let b = event(Kind::Leave, "room:1", &who("n.2", &ada));
        let v: serde_json::Value = serde_json::from_str(text(&b)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"leave","topic":"room:1","client":"n.2",
                "user":"ada \"the\" first","info":{"role":"admin"}})
        );
        // Info that is not JSON (an authenticator's bug) is left out, not sent broken.
        ada.info = Some("{nope".into());
        let b = event(Kind::Join, "t", &who("n.2", &ada));
        assert!(serde_json::from_str::<serde_json::Value>(text(&b)).is_ok());
        assert!(!text(&b).contains("info"));
    }

    use crate::endpoint::presence::ClientId;
    use crate::endpoint::pubsub::PubSub;
    use crate::endpoint::testing::{present_in, test_hub, with_runtime, Client, Sent};
    use crate::namespace::{NamespaceRules, Namespaces};
    use crate::session::App;
    use serde_json::{json, Value};

    /// `room:` with join/leave events, `quiet:` with them but no presence.
    fn namespaces() -> Namespaces {
        Namespaces::default()
            .namespace("room", NamespaceRules::open().join_leave(true))
            .namespace(
                "quiet",
                NamespaceRules::open().join_leave(true).presence(false),
            )
            .namespace("plain", NamespaceRules::open())
    }

    fn app(n: u64) -> PubSub {
        PubSub::new(8, 300, ClientId::new("node01".into(), n)).namespaces(namespaces())
    }

    fn subscribe(app: &mut PubSub, c: &mut Client, topic: &str) {
        let sent = c.send_json(app, &json!({"type":"subscribe","topic":topic,"id":1}));
        assert!(
            matches!(&sent[..], [Sent::Reply(v)] if v["type"] == "ack"),
            "{sent:?}"
        );
    }

    /// The JSON of the text frames delivered (join and leave events are text as is).
    fn events(c: &Client) -> Vec<Value> {
        c.delivered()
            .into_iter()
            .map(|s| match s {
                Sent::Frame(v) => v,
                other => panic!("not a text frame: {other:?}"),
            })
            .collect()
    }

    /// A connection that subscribes is announced to the topic's subscribers (itself too,
    /// after its ack), with its user and info; unsubscribing and closing announce its
    /// leave. The same on an engine whose operations are all futures.
    #[test]
    fn subscribers_see_who_joins_and_leaves() {
        for deferred in [false, true] {
            let (hub, _) = test_hub(deferred);
            let (mut b, mut b_c) = (app(2), Client::new(&hub));
            subscribe(&mut b, &mut b_c, "room:1");
            let joined_b = json!({"type":"join","topic":"room:1","client":"node01.2","user":""});
            assert_eq!(events(&b_c), [joined_b], "{deferred}: its own join");

            let mut ada = Identity::user("ada");
            ada.info = Some(r#"{"color":"teal"}"#.into());
            let (mut a, mut a_c) = (app(1), Client::new(&hub).with_identity(ada));
            subscribe(&mut a, &mut a_c, "room:1");
            let who = json!({"client":"node01.1","user":"ada","info":{"color":"teal"}});
            let with = |kind: &str| {
                let mut v = json!({"type":kind,"topic":"room:1"});
                v.as_object_mut()
                    .unwrap()
                    .extend(who.as_object().unwrap().clone());
                v
            };
            assert_eq!(events(&b_c), [with("join")], "{deferred}");
            assert_eq!(events(&a_c), [with("join")]);
            let sent = a_c.send_json(&mut a, &json!({"type":"unsubscribe","topic":"room:1"}));
            assert!(sent.is_empty());
            assert_eq!(events(&b_c), [with("leave")], "{deferred}");
            assert!(events(&a_c).is_empty(), "gone before its leave");

            subscribe(&mut a, &mut a_c, "room:1");
            assert_eq!(events(&b_c), [with("join")]);
            with_runtime(|| a.close(&hub));
            assert_eq!(events(&b_c), [with("leave")], "{deferred}: closed");
            assert!(present_in(&hub, "room:1").iter().all(|c| c != "node01.1"));
        }
    }

    /// No events where the namespace has none, where presence is off (the connection is
    /// not present, nor announced), nor in chat rooms' topics.
    #[test]
    fn only_join_leave_namespaces_with_presence_announce() {
        let (hub, _) = test_hub(false);
        for topic in ["plain:1", "news", "quiet:1", "chat:lobby"] {
            let (mut b, mut b_c) = (app(2), Client::new(&hub));
            let (mut a, mut a_c) = (app(1), Client::new(&hub));
            subscribe(&mut b, &mut b_c, topic);
            subscribe(&mut a, &mut a_c, topic);
            a_c.send_json(&mut a, &json!({"type":"unsubscribe","topic":topic}));
            with_runtime(|| a.close(&hub));
            assert!(events(&b_c).is_empty(), "{topic}");
            let present = present_in(&hub, topic);
            match topic {
                "quiet:1" | "chat:lobby" => assert!(present.is_empty(), "{topic}: {present:?}"),
                _ => assert_eq!(present, ["node01.2"], "{topic}"),
            }
            with_runtime(|| b.close(&hub));
        }
    }
}
