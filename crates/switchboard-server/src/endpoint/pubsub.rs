//! `/ws`: generic publish/subscribe for applications (docs/protocol.md), and the message
//! format shared with `POST /api/publish`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_hub::{Hub, Outbox, PublishError, StreamPosition, Subscription};
use switchboard_proto::frame::SharedFrame;
use switchboard_proto::{Message, OpCode};

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
    offset: u64,
    epoch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

/// The text message subscribers receive for a JSON publish.
pub(crate) fn render_delivery(topic: &str, at: &StreamPosition, data: &RawValue) -> Message {
    let d = Delivery {
        kind: "message",
        topic,
        offset: at.offset,
        epoch: &at.epoch,
        data: Some(data),
        data_base64: None,
    };
    Message::text(serde_json::to_string(&d).unwrap_or_default())
}

/// Publishes JSON `data` to `topic`; returns its position and the local subscribers reached.
pub(crate) fn publish_json(
    hub: &Hub,
    topic: &str,
    data: &RawValue,
) -> Result<(StreamPosition, usize), PublishError> {
    hub.publish_with(topic, |at| render_delivery(topic, at, data))
        .map(|p| (p.position, p.delivered.unwrap_or(0)))
}

/// Publishes raw bytes to `topic` (delivered in the binary layout); returns its position
/// and the local subscribers reached. `None` when the topic is too long for the layout.
pub(crate) fn publish_binary(
    hub: &Hub,
    topic: &str,
    payload: &[u8],
) -> Option<Result<(StreamPosition, usize), PublishError>> {
    u8::try_from(topic.len()).ok()?;
    Some(
        hub.publish_with(topic, |at| {
            binary_delivery(topic, at, payload).unwrap_or_else(|| Message::binary(Vec::new()))
        })
        .map(|p| (p.position, p.delivered.unwrap_or(0))),
    )
}

/// The length of a binary delivery's header: what comes before the payload.
fn delivery_header_len(topic: &str, epoch: &str) -> usize {
    1 + topic.len() + 8 + 1 + epoch.len()
}

/// The binary delivery layout (docs/protocol.md): one byte N, N bytes of topic, the offset
/// (8 bytes, big-endian), one byte M, M bytes of epoch, the payload.
pub(crate) fn binary_delivery(topic: &str, at: &StreamPosition, payload: &[u8]) -> Option<Message> {
    let n = u8::try_from(topic.len()).ok()?;
    let m = u8::try_from(at.epoch.len()).ok()?;
    let mut b = Vec::with_capacity(delivery_header_len(topic, &at.epoch) + payload.len());
    b.push(n);
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(&at.offset.to_be_bytes());
    b.push(m);
    b.extend_from_slice(at.epoch.as_bytes());
    b.extend_from_slice(payload);
    Some(Message::binary(b))
}

/// A publication as the `history` answer lists it: a text one as it was delivered, a
/// binary one as a `message` event with `data_base64` (the payload after the layout's
/// header).
fn history_entry(topic: &str, epoch: &str, offset: u64, frame: &SharedFrame) -> Box<RawValue> {
    let payload = frame.payload();
    let json = if frame.opcode() == OpCode::Text {
        String::from_utf8_lossy(&payload).into_owned()
    } else {
        let data = payload
            .get(delivery_header_len(topic, epoch)..)
            .unwrap_or_default();
        serde_json::to_string(&Delivery {
            kind: "message",
            topic,
            offset,
            epoch,
            data: None,
            data_base64: Some(base64::engine::general_purpose::STANDARD.encode(data)),
        })
        .unwrap_or_default()
    };
    RawValue::from_string(json).unwrap_or_else(|_| Box::<RawValue>::default())
}

/// At most this many publications per `history` request.
pub(crate) const HISTORY_LIMIT: usize = 300;
/// At most this many bytes of publications per `history` answer. The answer is one message,
/// queued whole on the connection: without a bound, a topic of large publications (100 of
/// 64 KiB) makes an answer larger than the connection's write buffer (4 MiB), and the
/// connection ends instead of answering.
pub(crate) const HISTORY_BYTES: usize = 1 << 20;

/// Splits a binary publish into its topic and payload.
fn binary_topic(b: &Bytes) -> Option<(&str, &[u8])> {
    let n = usize::from(*b.first()?);
    let topic = std::str::from_utf8(b.get(1..1 + n)?).ok()?;
    Some((topic, b.get(1 + n..)?))
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Reply<'a> {
    Ack {
        id: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        delivered: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    History {
        id: Option<&'a RawValue>,
        topic: &'a str,
        offset: u64,
        epoch: &'a str,
        recovered: bool,
        capped: bool,
        publications: Vec<Box<RawValue>>,
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
    #[serde(default)]
    since: Option<Since>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A position in a `history` request.
#[derive(Deserialize)]
struct Since {
    offset: u64,
    epoch: String,
}

/// What a request did, for its answer.
enum Done {
    /// Nothing to tell but the ack.
    Nothing,
    /// A publish: its position and the local subscribers reached.
    Published(StreamPosition, usize),
    /// A history request, answered in full.
    Answer(Message),
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
    ) -> Result<Done, AppError> {
        let topic = req.topic.as_deref().unwrap_or_default();
        match &*req.kind {
            "subscribe" => {
                valid_topic(topic)?;
                if self.subs.iter().any(|s| s.topic() == topic) {
                    return Ok(Done::Nothing);
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
                Ok(Done::Nothing)
            }
            "unsubscribe" => {
                let Some(i) = self.subs.iter().position(|s| s.topic() == topic) else {
                    return Err(AppError::new(
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to {topic:?}"),
                    ));
                };
                hub.unsubscribe(&self.subs.swap_remove(i));
                Ok(Done::Nothing)
            }
            "publish" => {
                publishable(topic)?;
                let data = req.data.ok_or_else(|| {
                    AppError::new(ErrorCode::InvalidJson, "a publish needs \"data\"")
                })?;
                publish_json(hub, topic, data)
                    .map(|(at, n)| Done::Published(at, n))
                    .map_err(|e| AppError::new(ErrorCode::Unavailable, e.to_string()))
            }
            "history" => {
                valid_topic(topic)?;
                Ok(Done::Answer(history(hub, topic, req)))
            }
            other => Err(AppError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown message type {other:?}; use subscribe, unsubscribe, publish or history"
                ),
            )),
        }
    }

    /// A binary publish: `[N][topic][payload]`, delivered with its position.
    fn publish_binary(hub: &Hub, b: &Bytes) -> Result<(), AppError> {
        let (topic, payload) = binary_topic(b).ok_or_else(|| {
            AppError::new(
                ErrorCode::InvalidBinary,
                "binary messages are: 1 byte N, N bytes of UTF-8 topic, payload",
            )
        })?;
        publishable(topic)?;
        let _ = publish_binary(hub, topic, payload);
        Ok(())
    }
}

/// The answer to a `history` request.
fn history(hub: &Hub, topic: &str, req: &Request<'_>) -> Message {
    let since = req.since.as_ref().map(|s| StreamPosition {
        offset: s.offset,
        epoch: s.epoch.as_str().into(),
    });
    let limit = req.limit.unwrap_or(HISTORY_LIMIT).min(HISTORY_LIMIT);
    let h = hub.history(topic, since.as_ref(), limit, Instant::now());
    let mut publications: Vec<Box<RawValue>> = h
        .publications
        .iter()
        .map(|(offset, frame)| history_entry(topic, &h.top.epoch, *offset, frame))
        .collect();
    let (mut recovered, mut capped) = (h.recovered, h.capped);
    if publications.iter().map(|p| p.get().len()).sum::<usize>() > HISTORY_BYTES {
        capped = true;
        if since.is_some() {
            // A recovery is all or nothing.
            recovered = false;
            publications.clear();
        } else {
            // The newest that fit.
            let mut bytes = 0;
            let fit = publications
                .iter()
                .rev()
                .take_while(|p| {
                    bytes += p.get().len();
                    bytes <= HISTORY_BYTES
                })
                .count();
            publications.drain(..publications.len() - fit);
        }
    }
    reply(&Reply::History {
        id: req.id,
        topic,
        offset: h.top.offset,
        epoch: &h.top.epoch,
        recovered,
        capped,
        publications,
    })
}

impl App for PubSub {
    fn open(&mut self, _cx: &mut Ctx<'_>) {}

    fn message(&mut self, cx: &mut Ctx<'_>, msg: Message) {
        let text = match msg {
            Message::Binary(b) => {
                if let Err(e) = Self::publish_binary(cx.hub, &b) {
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
            Ok(Done::Answer(m)) => cx.reply(m),
            Ok(done) => {
                let Some(id) = req.id else { return };
                let (delivered, at) = match done {
                    Done::Published(at, n) => (Some(n), Some(at)),
                    _ => (None, None),
                };
                cx.reply(reply(&Reply::Ack {
                    id,
                    delivered,
                    offset: at.as_ref().map(|a| a.offset),
                    epoch: at.as_ref().map(|a| &*a.epoch),
                }));
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
        let epoch = reply(&sent)["epoch"].as_str().unwrap().to_string();
        assert_eq!(
            reply(&sent),
            &json!({"type":"ack","id":7,"delivered":1,"offset":1,"epoch":epoch})
        );
        assert_eq!(
            a_c.delivered(),
            [Sent::Frame(
                json!({"type":"message","topic":"news","offset":1,"epoch":epoch,"data":{"n":[1,2]}})
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

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn binary_publishes_are_delivered_with_their_position() {
        let hub = Hub::new(HubConfig::default());
        let (mut a, mut a_c) = (PubSub::new(8), Client::new(&hub));
        let (mut b, mut b_c) = (PubSub::new(8), Client::new(&hub));
        a_c.send_json(&mut a, &json!({"type":"subscribe","topic":"news"}));
        let bin = b"\x04news\x00\xff\x07".to_vec();
        assert!(b_c.send(&mut b, Message::binary(bin)).is_empty());
        let top = hub.history("news", None, 0, Instant::now()).top;
        assert_eq!(top.offset, 1);
        let mut want = b"\x04news\x00\x00\x00\x00\x00\x00\x00\x01\x08".to_vec();
        want.extend_from_slice(top.epoch.as_bytes());
        want.extend_from_slice(b"\x00\xff\x07");
        assert_eq!(a_c.delivered(), [Sent::BinaryFrame(want)]);
        let sent = b_c.send(&mut b, Message::binary(vec![200, 1]));
        assert_eq!(reply(&sent)["code"], "invalid_binary");
        let sent = b_c.send(&mut b, Message::binary(b"\x06chat:x!".to_vec()));
        assert_eq!(reply(&sent)["code"], "reserved_topic");
        assert_eq!(
            binary_delivery("news", &at(258, "ab"), b"\x01"),
            Some(Message::binary(
                b"\x04news\x00\x00\x00\x00\x00\x00\x01\x02\x02ab\x01".to_vec()
            ))
        );
        assert_eq!(binary_delivery(&"t".repeat(256), &at(1, "ab"), b""), None);
    }

    #[test]
    fn history_requests_answer_what_the_stream_holds() {
        let hub = Hub::new(HubConfig::default());
        let (mut a, mut c) = (PubSub::new(8), Client::new(&hub));
        let mut epoch = String::new();
        for n in 1..=5 {
            let sent = c.send_json(
                &mut a,
                &json!({"type":"publish","topic":"t","data":{"n":n},"id":n}),
            );
            epoch = reply(&sent)["epoch"].as_str().unwrap().to_string();
        }
        assert!(c
            .send(&mut a, Message::binary(b"\x01t\x09\x08".to_vec()))
            .is_empty());
        let sent = c.send_json(
            &mut a,
            &json!({"type":"history","topic":"t","id":"h","since":{"offset":3,"epoch":epoch},"limit":10}),
        );
        let msg =
            |n: u64| json!({"type":"message","topic":"t","offset":n,"epoch":epoch,"data":{"n":n}});
        assert_eq!(
            reply(&sent),
            &json!({"type":"history","id":"h","topic":"t","offset":6,"epoch":epoch,
            "recovered":true,"capped":false,"publications":[
                msg(4), msg(5),
                {"type":"message","topic":"t","offset":6,"epoch":epoch,"data_base64":"CQg="}
            ]})
        );
        // No position: the last `limit`, not recovered.
        let sent = c.send_json(
            &mut a,
            &json!({"type":"history","topic":"t","id":1,"limit":2}),
        );
        let h = reply(&sent);
        assert_eq!(h["recovered"], false);
        assert_eq!(h["publications"][0], msg(5));
        assert_eq!(h["publications"].as_array().unwrap().len(), 2);
        // Capped by the limit; another epoch; an empty topic.
        let sent = c.send_json(
            &mut a,
            &json!({"type":"history","topic":"t","id":2,"since":{"offset":0,"epoch":epoch},"limit":3}),
        );
        assert_eq!(
            (
                reply(&sent)["recovered"].as_bool(),
                reply(&sent)["capped"].as_bool()
            ),
            (Some(false), Some(true))
        );
        assert_eq!(reply(&sent)["publications"], json!([]));
        let sent = c.send_json(
            &mut a,
            &json!({"type":"history","topic":"t","id":3,"since":{"offset":5,"epoch":"other"}}),
        );
        assert_eq!(reply(&sent)["recovered"], false);
        assert_eq!(reply(&sent)["publications"], json!([]));
        let sent = c.send_json(
            &mut a,
            &json!({"type":"history","topic":"empty","id":4,"since":null}),
        );
        assert_eq!(reply(&sent)["offset"], 0);
        assert_eq!(reply(&sent)["publications"], json!([]));
    }

    #[test]
    fn history_answers_stay_within_their_byte_bound() {
        let hub = Hub::new(HubConfig::default());
        let (mut a, mut c) = (PubSub::new(8), Client::new(&hub));
        let big = "x".repeat(60 << 10);
        let mut epoch = String::new();
        for n in 1..=30 {
            let sent = c.send_json(
                &mut a,
                &json!({"type":"publish","topic":"t","data":big,"id":n}),
            );
            epoch = reply(&sent)["epoch"].as_str().unwrap().to_string();
        }
        // A recovery that would not fit: capped, not recovered, nothing.
        let sent = c.send_json(
            &mut a,
            &json!({"type":"history","topic":"t","id":1,"since":{"offset":0,"epoch":epoch}}),
        );
        let h = reply(&sent);
        assert_eq!(
            (h["recovered"].as_bool(), h["capped"].as_bool()),
            (Some(false), Some(true))
        );
        assert_eq!(h["publications"], json!([]));
        // The latest: the newest that fit, up to the top.
        let sent = c.send_json(&mut a, &json!({"type":"history","topic":"t","id":2}));
        let h = reply(&sent);
        let pubs = h["publications"].as_array().unwrap();
        assert_eq!(h["capped"], true);
        assert!(
            !pubs.is_empty() && pubs.len() < 30,
            "{} publications",
            pubs.len()
        );
        assert_eq!(pubs.last().unwrap()["offset"], 30);
        let bytes: usize = pubs.iter().map(|p| p.to_string().len()).sum();
        assert!(bytes <= HISTORY_BYTES, "{bytes} bytes");
        // A recovery that fits is whole.
        let sent = c.send_json(
            &mut a,
            &json!({"type":"history","topic":"t","id":3,"since":{"offset":28,"epoch":epoch}}),
        );
        let h = reply(&sent);
        assert_eq!(h["recovered"], true);
        assert_eq!(h["publications"].as_array().unwrap().len(), 2);
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
