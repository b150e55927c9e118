//! `/ws`: generic publish/subscribe for applications (docs/protocol.md), and the message
//! format shared with `POST /api/publish`.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_hub::{Hub, Subscription};
use switchboard_proto::Message;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::echo::Stop;
use crate::session::{App, Ctx};

/// The subprotocol name clients may offer.
pub(crate) const SUBPROTOCOL: &str = "switchboard.pubsub.v1";

/// Topics: 1-128 characters from `A-Z a-z 0-9 _ - . : /`.
pub(crate) fn valid_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 128 {
        return Err("topics are 1-128 characters".into());
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
    {
        return Err("topics use only A-Z, a-z, 0-9, '_', '-', '.', ':' and '/'".into());
    }
    Ok(())
}

/// Why a topic may not be published to from outside the chat.
pub(crate) fn publishable(topic: &str) -> Result<(), (&'static str, String)> {
    valid_topic(topic).map_err(|e| ("invalid_topic", e))?;
    if topic.starts_with("chat:") {
        return Err((
            "reserved_topic",
            "topics starting with \"chat:\" are chat rooms: subscribe to watch them, send with /chat".into(),
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
pub(crate) fn publish_json(hub: &Hub, topic: &str, data: &RawValue) -> Result<usize, String> {
    hub.publish_with(topic, false, |seq| render_delivery(topic, seq, data))
        .map(|n| n.unwrap_or(0))
        .map_err(|e| e.to_string())
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
        outbox: &Arc<switchboard_hub::Outbox>,
        req: &Request<'_>,
    ) -> Result<Option<usize>, (&'static str, String)> {
        let topic = req.topic.as_deref().unwrap_or_default();
        match &*req.kind {
            "subscribe" => {
                valid_topic(topic).map_err(|e| ("invalid_topic", e))?;
                if self.subs.iter().any(|s| s.topic() == topic) {
                    return Ok(None);
                }
                if self.subs.len() >= self.max_subscriptions {
                    return Err((
                        "too_many_subscriptions",
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
                    return Err(("not_subscribed", format!("not subscribed to {topic:?}")));
                };
                hub.unsubscribe(&self.subs.swap_remove(i));
                Ok(None)
            }
            "publish" => {
                publishable(topic)?;
                let data = req
                    .data
                    .ok_or(("invalid_json", "a publish needs \"data\"".to_string()))?;
                publish_json(hub, topic, data)
                    .map(Some)
                    .map_err(|e| ("unavailable", e))
            }
            other => Err((
                "unknown_type",
                format!("unknown message type {other:?}; use subscribe, unsubscribe or publish"),
            )),
        }
    }
}

impl App for PubSub {
    fn open<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        _cx: &mut Ctx<'_, S>,
    ) -> Result<(), Stop> {
        Ok(())
    }

    fn message<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Ctx<'_, S>,
        msg: Message,
    ) -> Result<(), Stop> {
        let text = match msg {
            Message::Binary(b) => {
                let err = match binary_topic(&b) {
                    None => Some((
                        "invalid_binary",
                        "binary messages are: 1 byte N, N bytes of UTF-8 topic, payload"
                            .to_string(),
                    )),
                    Some(topic) => publishable(topic).err(),
                };
                if let Some((code, message)) = err {
                    return cx.reply(&reply(&Reply::Error {
                        id: None,
                        code,
                        message: &message,
                    }));
                }
                let topic = binary_topic(&b).unwrap_or_default().to_string();
                let _ = cx.hub.publish(&topic, Message::Binary(b), false);
                return Ok(());
            }
            Message::Text(t) => t,
        };
        let req: Request<'_> = match serde_json::from_str(text.as_str()) {
            Ok(r) => r,
            Err(e) => {
                let message = format!(
                    "expected a JSON object like {{\"type\":\"subscribe\",\"topic\":\"news\"}}: {e}"
                );
                return cx.reply(&reply(&Reply::Error {
                    id: None,
                    code: "invalid_json",
                    message: &message,
                }));
            }
        };
        match self.handle(cx.hub, cx.outbox, &req) {
            Ok(delivered) => match req.id {
                Some(id) => cx.reply(&reply(&Reply::Ack { id, delivered })),
                None => Ok(()),
            },
            Err((code, message)) => cx.reply(&reply(&Reply::Error {
                id: req.id,
                code,
                message: &message,
            })),
        }
    }

    fn close(&mut self, hub: &Hub) {
        for s in self.subs.drain(..) {
            hub.unsubscribe(&s);
        }
    }
}
