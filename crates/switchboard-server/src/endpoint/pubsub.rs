//! `/ws`: generic publish/subscribe for applications (docs/protocol.md), and the message
//! format shared with `POST /api/publish`.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_hub::{Hub, Outbox, PublishError, Subscription};
use switchboard_proto::Message;

use crate::error::{AppError, ErrorCode};
use crate::session::{App, Ctx};

/// The subprotocol name clients may offer.
pub(crate) const SUBPROTOCOL: &str = "switchboard.pubsub.v1";

/// Topics: 1-128 characters from `A-Z a-z 0-9 _ - . : /`.
pub(crate) fn valid_topic(topic: &str) -> Result<(), AppError> {
    let invalid = |why: &str| Err(AppError::new(ErrorCode::InvalidTopic, why));
    if topic.is_empty() || topic.len() > 128 {
        return invalid("topics are 1-128 characters");
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
    {
        return invalid("topics use only A-Z, a-z, 0-9, '_', '-', '.', ':' and '/'");
    }
    Ok(())
}

/// Why a topic may not be published to from outside the chat.
pub(crate) fn publishable(topic: &str) -> Result<(), AppError> {
    valid_topic(topic)?;
    if topic.starts_with("chat:") {
        return Err(AppError::new(
            ErrorCode::ReservedTopic,
            format!(
                "topics starting with \"chat:\" are chat rooms: subscribe to watch them, send with {}",
                crate::routes::path(crate::routes::Endpoint::Chat)
            ),
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct Delivery<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    topic: &'a str,
    seq: u64,
    data: &'a RawValue,
}

/// The text message subscribers receive for a JSON publish.
pub(crate) fn render_delivery(topic: &str, seq: u64, data: &RawValue) -> Message {
    let d = Delivery {
        kind: "message",
        topic,
        seq,
        data,
    };
    Message::text(serde_json::to_string(&d).unwrap_or_default())
}

/// Publishes JSON `data` to `topic`; returns the local subscribers reached.
pub(crate) fn publish_json(hub: &Hub, topic: &str, data: &RawValue) -> Result<usize, PublishError> {
    hub.publish_with(topic, false, |seq| render_delivery(topic, seq, data))
        .map(|n| n.unwrap_or(0))
}

/// The binary layout: one byte N, N bytes of topic, the payload.
pub(crate) fn binary_message(topic: &str, payload: &[u8]) -> Option<Message> {
    let n = u8::try_from(topic.len()).ok()?;
    let mut b = Vec::with_capacity(1 + topic.len() + payload.len());
    b.push(n);
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(payload);
    Some(Message::binary(b))
}

/// Splits a binary publish into its topic.
fn binary_topic(b: &Bytes) -> Option<&str> {
    let n = usize::from(*b.first()?);
    std::str::from_utf8(b.get(1..1 + n)?).ok()
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Reply<'a> {
    Ack {
        id: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        delivered: Option<usize>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        code: &'a str,
        message: &'a str,
    },
}

fn reply(r: &Reply<'_>) -> Message {
    Message::text(serde_json::to_string(r).unwrap_or_default())
}

/// The `error` event for `e`, answering the request `id` if it had one.
fn error(id: Option<&RawValue>, e: &AppError) -> Message {
    reply(&Reply::Error {
        id,
        code: e.code.as_str(),
        message: &e.message,
    })
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// One `/ws` connection.
pub(crate) struct PubSub {
    subs: Vec<Subscription>,
    max_subscriptions: usize,
}

impl PubSub {
    pub(crate) fn new(max_subscriptions: usize) -> Self {
        Self {
            subs: Vec::new(),
            max_subscriptions,
        }
    }

    fn handle(
        &mut self,
        hub: &Hub,
        outbox: &Arc<Outbox>,
        req: &Request<'_>,
    ) -> Result<Option<usize>, AppError> {
        let topic = req.topic.as_deref().unwrap_or_default();
        match &*req.kind {
            "subscribe" => {
                valid_topic(topic)?;
                if self.subs.iter().any(|s| s.topic() == topic) {
                    return Ok(None);
                }
                if self.subs.len() >= self.max_subscriptions {
                    return Err(AppError::new(
                        ErrorCode::TooManySubscriptions,
                        format!(
                            "at most {} subscriptions per connection",
                            self.max_subscriptions
                        ),
                    ));
                }
                let joined = hub.subscribe(topic, Arc::clone(outbox), None);
                self.subs.push(joined.subscription);
                Ok(None)
            }
            "unsubscribe" => {
                let Some(i) = self.subs.iter().position(|s| s.topic() == topic) else {
                    return Err(AppError::new(
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to {topic:?}"),
                    ));
                };
                hub.unsubscribe(&self.subs.swap_remove(i));
                Ok(None)
            }
            "publish" => {
                publishable(topic)?;
                let data = req.data.ok_or_else(|| {
                    AppError::new(ErrorCode::InvalidJson, "a publish needs \"data\"")
                })?;
                publish_json(hub, topic, data)
                    .map(Some)
                    .map_err(|e| AppError::new(ErrorCode::Unavailable, e.to_string()))
            }
            other => Err(AppError::new(
                ErrorCode::UnknownType,
                format!("unknown message type {other:?}; use subscribe, unsubscribe or publish"),
            )),
        }
    }

    /// A binary publish: `[N][topic][payload]`, delivered as it came.
    fn publish_binary(hub: &Hub, b: Bytes) -> Result<(), AppError> {
        let topic = binary_topic(&b).ok_or_else(|| {
            AppError::new(
                ErrorCode::InvalidBinary,
                "binary messages are: 1 byte N, N bytes of UTF-8 topic, payload",
            )
        })?;
        publishable(topic)?;
        let topic = topic.to_string();
        let _ = hub.publish(&topic, Message::Binary(b), false);
        Ok(())
    }
}

impl App for PubSub {
    fn open(&mut self, _cx: &mut Ctx<'_>) {}

    fn message(&mut self, cx: &mut Ctx<'_>, msg: Message) {
        let text = match msg {
            Message::Binary(b) => {
                if let Err(e) = Self::publish_binary(cx.hub, b) {
                    cx.reply(error(None, &e));
                }
                return;
            }
            Message::Text(t) => t,
        };
        let req: Request<'_> = match serde_json::from_str(text.as_str()) {
            Ok(r) => r,
            Err(e) => {
                let e = AppError::new(
                    ErrorCode::InvalidJson,
                    format!(
                        "expected a JSON object like {{\"type\":\"subscribe\",\"topic\":\"news\"}}: {e}"
                    ),
                );
                return cx.reply(error(None, &e));
            }
        };
        match self.handle(cx.hub, cx.outbox, &req) {
            Ok(delivered) => {
                if let Some(id) = req.id {
                    cx.reply(reply(&Reply::Ack { id, delivered }));
                }
            }
            Err(e) => cx.reply(error(req.id, &e)),
        }
    }

    fn close(&mut self, hub: &Hub) {
        for s in self.subs.drain(..) {
            hub.unsubscribe(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_hub::HubConfig;

    use super::*;
    use crate::endpoint::testing::{Client, Sent};

    fn reply(sent: &[Sent]) -> &Value {
        match sent {
            [Sent::Reply(v)] => v,
            other => panic!("not one reply: {other:?}"),
        }
    }

    use serde_json::Value;

    #[test]
    fn subscribe_publish_ack_and_delivery() {
        let hub = Hub::new(HubConfig::default());
        let (mut a, mut a_c) = (PubSub::new(8), Client::new(&hub));
        let (mut b, mut b_c) = (PubSub::new(8), Client::new(&hub));
        assert!(a_c.open(&mut a).is_empty());
        let sent = a_c.send_json(
            &mut a,
            &json!({"type":"subscribe","topic":"news","id":"s1"}),
        );
        assert_eq!(reply(&sent), &json!({"type":"ack","id":"s1"}));
        // Without an id there is no ack; subscribing twice is fine.
        assert!(a_c
            .send_json(&mut a, &json!({"type":"subscribe","topic":"news"}))
            .is_empty());
        assert_eq!(hub.subscriber_count("news"), 1);
        let publish = json!({"type":"publish","topic":"news","data":{"n":[1,2]},"id":7});
        let sent = b_c.send_json(&mut b, &publish);
        assert_eq!(reply(&sent), &json!({"type":"ack","id":7,"delivered":1}));
        assert_eq!(
            a_c.delivered(),
            [Sent::Frame(
                json!({"type":"message","topic":"news","seq":1,"data":{"n":[1,2]}})
            )]
        );
        assert!(b_c.delivered().is_empty());
        let sent = a_c.send_json(&mut a, &json!({"type":"unsubscribe","topic":"news","id":2}));
        assert_eq!(reply(&sent)["type"], "ack");
        let sent = b_c.send_json(
            &mut b,
            &json!({"type":"publish","topic":"news","data":2,"id":8}),
        );
        assert_eq!(reply(&sent)["delivered"], 0);
        assert!(a_c.delivered().is_empty());
    }

    #[test]
    fn binary_publishes_are_delivered_as_they_came() {
        let hub = Hub::new(HubConfig::default());
        let (mut a, mut a_c) = (PubSub::new(8), Client::new(&hub));
        let (mut b, mut b_c) = (PubSub::new(8), Client::new(&hub));
        a_c.send_json(&mut a, &json!({"type":"subscribe","topic":"news"}));
        let bin = b"\x04news\x00\xff\x07".to_vec();
        assert!(b_c.send(&mut b, Message::binary(bin.clone())).is_empty());
        assert_eq!(a_c.delivered(), [Sent::BinaryFrame(bin)]);
        let sent = b_c.send(&mut b, Message::binary(vec![200, 1]));
        assert_eq!(reply(&sent)["code"], "invalid_binary");
        let sent = b_c.send(&mut b, Message::binary(b"\x06chat:x!".to_vec()));
        assert_eq!(reply(&sent)["code"], "reserved_topic");
        assert_eq!(
            binary_message("news", b"\x01"),
            Some(Message::binary(b"\x04news\x01".to_vec()))
        );
    }

    #[test]
    fn bad_requests_get_error_replies_with_their_id() {
        let hub = Hub::new(HubConfig::default());
        let (mut a, mut c) = (PubSub::new(1), Client::new(&hub));
        let cases = [
            (
                json!({"type":"publish","topic":"chat:lobby","data":1,"id":1}),
                "reserved_topic",
            ),
            (
                json!({"type":"subscribe","topic":"bad topic!","id":2}),
                "invalid_topic",
            ),
            (
                json!({"type":"unsubscribe","topic":"nope","id":3}),
                "not_subscribed",
            ),
            (json!({"type":"publish","topic":"t","id":4}), "invalid_json"),
            (json!({"type":"nope","id":5}), "unknown_type"),
        ];
        for (req, code) in cases {
            let sent = c.send_json(&mut a, &req);
            let e = reply(&sent);
            assert_eq!(
                (e["type"].as_str(), e["code"].as_str()),
                (Some("error"), Some(code)),
                "{e}"
            );
            assert_eq!(e["id"], req["id"]);
        }
        let sent = c.send(&mut a, Message::text("{nope"));
        let e = reply(&sent);
        assert_eq!(e["code"], "invalid_json");
        assert!(e.get("id").is_none(), "{e}");
        c.send_json(&mut a, &json!({"type":"subscribe","topic":"a"}));
        let sent = c.send_json(&mut a, &json!({"type":"subscribe","topic":"b","id":9}));
        let e = reply(&sent);
        assert_eq!(e["code"], "too_many_subscriptions");
        assert_eq!(e["message"], "at most 1 subscriptions per connection");
    }

    #[test]
    fn closing_leaves_every_topic() {
        let hub = Hub::new(HubConfig::default());
        let (mut a, mut c) = (PubSub::new(8), Client::new(&hub));
        for t in ["a", "b", "chat:lobby"] {
            c.send_json(&mut a, &json!({"type":"subscribe","topic":t}));
        }
        assert_eq!(hub.topic_count(), 3);
        a.close(&hub);
        assert_eq!(hub.topic_count(), 0);
    }
}
