//! `/ws`: generic publish/subscribe for applications (docs/protocol.md), and the message
//! format shared with `POST /api/publish`.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_hub::recovery;
use switchboard_hub::{
    Body, EngineError, HistoryPage, HistoryQuery, Hub, Publication, Published, StreamPosition,
    Subscription,
};
use switchboard_proto::Message;

use crate::error::{AppError, ErrorCode};
use crate::render;
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

/// The body of a JSON publish: the `data` value's JSON text.
pub(crate) fn json_body(data: &RawValue) -> Body {
    render::body(render::JSON, data.get().to_owned())
}

/// The body of a binary publish to `topic`; `None` when the topic is too long for the
/// binary delivery layout (one byte of length).
pub(crate) fn binary_body(topic: &str, payload: impl Into<Bytes>) -> Option<Body> {
    u8::try_from(topic.len()).ok()?;
    Some(render::body(render::BINARY, payload))
}

/// A publication as the `history` answer lists it: a JSON one as it is delivered, a binary
/// one as a `message` event with `data_base64`.
fn history_entry(hub: &Hub, p: &Publication) -> Box<RawValue> {
    let json = if p.body.kind == render::BINARY {
        let at = p.position.as_ref();
        serde_json::to_string(&Delivery {
            kind: "message",
            topic: &p.topic,
            offset: at.map_or(0, |a| a.offset),
            epoch: at.map_or("", |a| &a.epoch),
            data: None,
            data_base64: Some(base64::engine::general_purpose::STANDARD.encode(&p.body.data)),
        })
        .unwrap_or_default()
    } else {
        String::from_utf8_lossy(&hub.render(p).payload()).into_owned()
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
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        capped: Option<bool>,
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
    /// A `history` request's position.
    #[serde(default)]
    since: Option<Position>,
    /// A `subscribe` request's position to recover from.
    #[serde(default)]
    recover: Option<Position>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A position in a request.
#[derive(Deserialize)]
struct Position {
    offset: u64,
    epoch: String,
}

impl Position {
    fn get(&self) -> StreamPosition {
        StreamPosition {
            offset: self.offset,
            epoch: self.epoch.as_str().into(),
        }
    }
}

/// What a `/ws` connection waits for from the engine (see [`App::done`]).
pub(crate) enum Waited {
    Subscribed {
        id: Option<Box<RawValue>>,
        sub: Subscription,
        from: Option<StreamPosition>,
        page: Result<HistoryPage, EngineError>,
    },
    Published {
        id: Option<Box<RawValue>>,
        result: Result<Published, EngineError>,
    },
    History {
        id: Option<Box<RawValue>>,
        topic: String,
        from: Option<StreamPosition>,
        limit: usize,
        page: Result<HistoryPage, EngineError>,
    },
}

/// The request's id, owned, for an answer that comes later.
fn owned(id: Option<&RawValue>) -> Option<Box<RawValue>> {
    id.map(RawValue::to_owned)
}

fn unavailable(e: &EngineError) -> AppError {
    AppError::new(ErrorCode::Unavailable, e.to_string())
}

/// One `/ws` connection.
pub(crate) struct PubSub {
    subs: Vec<Subscription>,
    max_subscriptions: usize,
    /// Publications replayed at most per recovery (more missed: `capped`, not recovered).
    recovery_max: usize,
}

impl PubSub {
    pub(crate) fn new(max_subscriptions: usize, recovery_max: usize) -> Self {
        Self {
            subs: Vec::new(),
            max_subscriptions,
            recovery_max,
        }
    }

    fn handle(&mut self, cx: &mut Ctx<'_, Waited>, req: &Request<'_>) -> Result<(), AppError> {
        let topic = req.topic.as_deref().unwrap_or_default();
        match &*req.kind {
            "subscribe" => {
                valid_topic(topic)?;
                if self.subs.iter().any(|s| s.topic() == topic) {
                    ack(cx, req.id);
                    return Ok(());
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
                let from = req.recover.as_ref().map(Position::get);
                let query = match &from {
                    Some(from) => recovery::query(from, self.recovery_max),
                    None => HistoryQuery {
                        since: None,
                        limit: 0,
                    },
                };
                let s = cx.hub.subscribe(topic, Arc::clone(cx.outbox), None, query);
                self.subs.push(s.subscription.clone());
                match s.page.now() {
                    Ok(page) => self.subscribed(cx, req.id, &s.subscription, from.as_ref(), page),
                    Err(op) => {
                        let (id, sub) = (owned(req.id), s.subscription);
                        cx.wait(async move {
                            Waited::Subscribed {
                                id,
                                sub,
                                from,
                                page: op.await,
                            }
                        });
                    }
                }
                Ok(())
            }
            "unsubscribe" => {
                let Some(i) = self.subs.iter().position(|s| s.topic() == topic) else {
                    return Err(AppError::new(
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to {topic:?}"),
                    ));
                };
                cx.hub.unsubscribe(&self.subs.swap_remove(i));
                ack(cx, req.id);
                Ok(())
            }
            "publish" => {
                publishable(topic)?;
                let data = req.data.ok_or_else(|| {
                    AppError::new(ErrorCode::InvalidJson, "a publish needs \"data\"")
                })?;
                match cx.hub.publish(topic, json_body(data)).now() {
                    Ok(result) => published(cx, req.id, result),
                    Err(op) => {
                        let id = owned(req.id);
                        cx.wait(async move {
                            Waited::Published {
                                id,
                                result: op.await,
                            }
                        });
                    }
                }
                Ok(())
            }
            "history" => {
                valid_topic(topic)?;
                let from = req.since.as_ref().map(Position::get);
                let limit = req.limit.unwrap_or(HISTORY_LIMIT).min(HISTORY_LIMIT);
                let query = HistoryQuery {
                    since: from.as_ref().map(|f| f.offset),
                    limit,
                };
                match cx.hub.history(topic, query).now() {
                    Ok(page) => history(cx, req.id, topic, from.as_ref(), limit, page),
                    Err(op) => {
                        let (id, topic) = (owned(req.id), topic.to_owned());
                        cx.wait(async move {
                            Waited::History {
                                id,
                                topic,
                                from,
                                limit,
                                page: op.await,
                            }
                        });
                    }
                }
                Ok(())
            }
            other => Err(AppError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown message type {other:?}; use subscribe, unsubscribe, publish or history"
                ),
            )),
        }
    }

    /// A subscription's history read is done: the ack (with the position and whether it
    /// recovered), then the replay, then what came meanwhile; from then on, live.
    fn subscribed(
        &mut self,
        cx: &mut Ctx<'_, Waited>,
        id: Option<&RawValue>,
        sub: &Subscription,
        from: Option<&StreamPosition>,
        page: Result<HistoryPage, EngineError>,
    ) {
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                cx.hub.unsubscribe(sub);
                self.subs.retain(|s| s != sub);
                return cx.reply(error(id, &unavailable(&e)));
            }
        };
        let mut decision = from.map(|f| recovery::decide(f, &page, self.recovery_max));
        let mut replay = Vec::new();
        if let Some(d) = decision.as_mut().filter(|d| d.recovered) {
            replay = page.publications.iter().map(|p| cx.hub.render(p)).collect();
            if replay.iter().map(|f| f.len()).sum::<usize>() > HISTORY_BYTES {
                // Too much to send at once: like more than the cap.
                replay.clear();
                *d = recovery::Decision {
                    recovered: false,
                    capped: true,
                };
            }
        }
        if let Some(d) = decision {
            cx.count_recovery(d.recovered);
        }
        let frames = cx.hub.go_live(sub, &page.top, replay);
        if let Some(id) = id {
            cx.reply(reply(&Reply::Ack {
                id,
                delivered: None,
                offset: Some(page.top.offset),
                epoch: Some(&page.top.epoch),
                recovered: Some(decision.is_some_and(|d| d.recovered)),
                capped: decision.and_then(|d| d.capped.then_some(true)),
            }));
        }
        for f in frames {
            cx.frame(f);
        }
    }

    /// A binary publish: `[N][topic][payload]`, delivered with its position.
    fn publish_binary(cx: &mut Ctx<'_, Waited>, b: &Bytes) -> Result<(), AppError> {
        let bad = || {
            AppError::new(
                ErrorCode::InvalidBinary,
                "binary messages are: 1 byte N, N bytes of UTF-8 topic, payload",
            )
        };
        let (topic, payload) = binary_topic(b).ok_or_else(bad)?;
        publishable(topic)?;
        let body = binary_body(topic, b.slice_ref(payload)).ok_or_else(bad)?;
        match cx.hub.publish(topic, body).now() {
            Ok(Err(e)) => Err(unavailable(&e)),
            Ok(Ok(_)) => Ok(()),
            Err(op) => {
                cx.wait(async move {
                    Waited::Published {
                        id: None,
                        result: op.await,
                    }
                });
                Ok(())
            }
        }
    }
}

/// The plain ack of a request with an id.
fn ack(cx: &mut Ctx<'_, Waited>, id: Option<&RawValue>) {
    if let Some(id) = id {
        cx.reply(reply(&Reply::Ack {
            id,
            delivered: None,
            offset: None,
            epoch: None,
            recovered: None,
            capped: None,
        }));
    }
}

/// A publish is done: its ack (position, and local subscribers reached when known), or an
/// error event.
fn published(
    cx: &mut Ctx<'_, Waited>,
    id: Option<&RawValue>,
    result: Result<Published, EngineError>,
) {
    match result {
        Ok(p) => {
            if let Some(id) = id {
                cx.reply(reply(&Reply::Ack {
                    id,
                    delivered: p.delivered,
                    offset: Some(p.position.offset),
                    epoch: Some(&p.position.epoch),
                    recovered: None,
                    capped: None,
                }));
            }
        }
        Err(e) => cx.reply(error(id, &unavailable(&e))),
    }
}

/// Answers a `history` request from the page read.
fn history(
    cx: &mut Ctx<'_, Waited>,
    id: Option<&RawValue>,
    topic: &str,
    from: Option<&StreamPosition>,
    limit: usize,
    page: Result<HistoryPage, EngineError>,
) {
    let page = match page {
        Ok(page) => page,
        Err(e) => return cx.reply(error(id, &unavailable(&e))),
    };
    let decision = from.map_or_else(recovery::Decision::default, |f| {
        recovery::decide(f, &page, limit)
    });
    let (mut recovered, mut capped) = (decision.recovered, decision.capped);
    let mut publications: Vec<Box<RawValue>> = if from.is_some() && !recovered {
        // A recovery is all or nothing.
        Vec::new()
    } else {
        page.publications
            .iter()
            .map(|p| history_entry(cx.hub, p))
            .collect()
    };
    if publications.iter().map(|p| p.get().len()).sum::<usize>() > HISTORY_BYTES {
        capped = true;
        if from.is_some() {
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
    cx.reply(reply(&Reply::History {
        id,
        topic,
        offset: page.top.offset,
        epoch: &page.top.epoch,
        recovered,
        capped,
        publications,
    }));
}

impl App for PubSub {
    type Waited = Waited;

    fn open(&mut self, _cx: &mut Ctx<'_, Waited>) {}

    fn message(&mut self, cx: &mut Ctx<'_, Waited>, msg: Message) {
        let text = match msg {
            Message::Binary(b) => {
                if let Err(e) = Self::publish_binary(cx, &b) {
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
        if let Err(e) = self.handle(cx, &req) {
            cx.reply(error(req.id, &e));
        }
    }

    fn done(&mut self, cx: &mut Ctx<'_, Waited>, waited: Waited) {
        match waited {
            Waited::Subscribed {
                id,
                sub,
                from,
                page,
            } => {
                if self.subs.contains(&sub) {
                    self.subscribed(cx, id.as_deref(), &sub, from.as_ref(), page);
                } else {
                    // Unsubscribed before its history came: the subscribe still gets its
                    // answer, and nothing is replayed.
                    match page {
                        Ok(_) => ack(cx, id.as_deref()),
                        Err(e) => cx.reply(error(id.as_deref(), &unavailable(&e))),
                    }
                }
            }
            Waited::Published { id, result } => published(cx, id.as_deref(), result),
            Waited::History {
                id,
                topic,
                from,
                limit,
                page,
            } => history(cx, id.as_deref(), &topic, from.as_ref(), limit, page),
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
        let hub = crate::render::memory_hub(HubConfig::default());
        let (mut a, mut a_c) = (PubSub::new(8, 300), Client::new(&hub));
        let (mut b, mut b_c) = (PubSub::new(8, 300), Client::new(&hub));
        assert!(a_c.open(&mut a).is_empty());
        let sent = a_c.send_json(
            &mut a,
            &json!({"type":"subscribe","topic":"news","id":"s1"}),
        );
        let ack = reply(&sent);
        let epoch0 = ack["epoch"].as_str().unwrap().to_string();
        assert_eq!(
            ack,
            &json!({"type":"ack","id":"s1","offset":0,"epoch":epoch0,"recovered":false})
        );
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

    #[test]
    fn binary_publishes_are_delivered_with_their_position() {
        let hub = crate::render::memory_hub(HubConfig::default());
        let (mut a, mut a_c) = (PubSub::new(8, 300), Client::new(&hub));
        let (mut b, mut b_c) = (PubSub::new(8, 300), Client::new(&hub));
        a_c.send_json(&mut a, &json!({"type":"subscribe","topic":"news"}));
        let bin = b"\x04news\x00\xff\x07".to_vec();
        assert!(b_c.send(&mut b, Message::binary(bin)).is_empty());
        let top = hub
            .history(
                "news",
                HistoryQuery {
                    since: None,
                    limit: 0,
                },
            )
            .now()
            .unwrap()
            .unwrap()
            .top;
        assert_eq!(top.offset, 1);
        let mut want = b"\x04news\x00\x00\x00\x00\x00\x00\x00\x01\x08".to_vec();
        want.extend_from_slice(top.epoch.as_bytes());
        want.extend_from_slice(b"\x00\xff\x07");
        assert_eq!(a_c.delivered(), [Sent::BinaryFrame(want)]);
        let sent = b_c.send(&mut b, Message::binary(vec![200, 1]));
        assert_eq!(reply(&sent)["code"], "invalid_binary");
        let sent = b_c.send(&mut b, Message::binary(b"\x06chat:x!".to_vec()));
        assert_eq!(reply(&sent)["code"], "reserved_topic");
        assert!(binary_body(&"t".repeat(256), vec![]).is_none());
    }

    #[test]
    fn history_requests_answer_what_the_stream_holds() {
        let hub = crate::render::memory_hub(HubConfig::default());
        let (mut a, mut c) = (PubSub::new(8, 300), Client::new(&hub));
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
        let hub = crate::render::memory_hub(HubConfig::default());
        let (mut a, mut c) = (PubSub::new(8, 300), Client::new(&hub));
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
        let hub = crate::render::memory_hub(HubConfig::default());
        let (mut a, mut c) = (PubSub::new(1, 300), Client::new(&hub));
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
        let hub = crate::render::memory_hub(HubConfig::default());
        let (mut a, mut c) = (PubSub::new(8, 300), Client::new(&hub));
        for t in ["a", "b", "chat:lobby"] {
            c.send_json(&mut a, &json!({"type":"subscribe","topic":t}));
        }
        assert_eq!(hub.topic_count(), 3);
        a.close(&hub);
        assert_eq!(hub.topic_count(), 0);
    }
}
