//! What `/ws` answers, as JSON: acks, errors, `history`, `presence` and `presence_stats`
//! (docs/protocol.md).

use base64::Engine as _;
use serde::Serialize;
use serde_json::value::RawValue;
use switchboard_hub::recovery;
use switchboard_hub::{
    EngineError, HistoryPage, Hub, PresenceEntry, PresenceStats, Publication, Published,
    StreamPosition,
};
use switchboard_proto::Message;

use super::{Waited, HISTORY_BYTES, PRESENCE_BYTES};
use crate::endpoint::presence;
use crate::error::{AppError, ErrorCode};
use crate::render;
use crate::session::Ctx;

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
    Presence {
        id: Option<&'a RawValue>,
        topic: &'a str,
        clients: Vec<Box<RawValue>>,
        /// More were present than fit in [`PRESENCE_BYTES`].
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        capped: bool,
    },
    #[serde(rename = "presence_stats")]
    PresenceStats {
        id: Option<&'a RawValue>,
        topic: &'a str,
        clients: usize,
        users: usize,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        /// The server-made subscription the error is about.
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<&'a str>,
        code: &'a str,
        message: &'a str,
    },
    /// A subscription the server made (a token's `channels`) is live.
    Subscribed {
        topic: &'a str,
        offset: u64,
        epoch: &'a str,
        recovered: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        capped: Option<bool>,
    },
}

/// One connection in a `presence` answer.
#[derive(Serialize)]
struct ClientJson<'a> {
    client: &'a str,
    user: &'a str,
    name: &'a str,
    /// The token's `info`, as the application gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a RawValue>,
}

fn reply(r: &Reply<'_>) -> Message {
    Message::text(serde_json::to_string(r).unwrap_or_default())
}

/// The `error` event for `e`, answering the request `id` if it had one.
pub(super) fn error(id: Option<&RawValue>, e: &AppError) -> Message {
    reply(&Reply::Error {
        id,
        topic: None,
        code: e.code.as_str(),
        message: &e.message,
    })
}

/// The `error` event of a subscription the server could not make (a token's `channels`).
pub(super) fn topic_error(topic: &str, e: &AppError) -> Message {
    reply(&Reply::Error {
        id: None,
        topic: Some(topic),
        code: e.code.as_str(),
        message: &e.message,
    })
}

/// The `subscribed` event of a subscription the server made: like a subscribe's ack.
pub(super) fn subscribed_event(
    cx: &mut Ctx<'_, Waited>,
    topic: &str,
    top: &StreamPosition,
    decision: Option<recovery::Decision>,
) {
    cx.reply(reply(&Reply::Subscribed {
        topic,
        offset: top.offset,
        epoch: &top.epoch,
        recovered: decision.is_some_and(|d| d.recovered),
        capped: decision.and_then(|d| d.capped.then_some(true)),
    }));
}

pub(super) fn unavailable(e: &EngineError) -> AppError {
    AppError::new(ErrorCode::Unavailable, e.to_string())
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

/// The plain ack of a request with an id.
pub(super) fn ack(cx: &mut Ctx<'_, Waited>, id: Option<&RawValue>) {
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

/// The ack of a subscription (with an id): its topic's position when it went live, and
/// whether it recovered (`capped`: it missed more than can be replayed).
pub(super) fn subscribed_ack(
    cx: &mut Ctx<'_, Waited>,
    id: &RawValue,
    top: &StreamPosition,
    decision: Option<recovery::Decision>,
) {
    cx.reply(reply(&Reply::Ack {
        id,
        delivered: None,
        offset: Some(top.offset),
        epoch: Some(&top.epoch),
        recovered: Some(decision.is_some_and(|d| d.recovered)),
        capped: decision.and_then(|d| d.capped.then_some(true)),
    }));
}

/// A publish is done: its ack (position, and local subscribers reached when known), or an
/// error event.
pub(super) fn published(
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

/// Answers a `presence` request: the clients by name, then client id, as many as fit in
/// [`PRESENCE_BYTES`].
pub(super) fn presence_answer(
    cx: &mut Ctx<'_, Waited>,
    id: Option<&RawValue>,
    topic: &str,
    result: Result<Vec<PresenceEntry>, EngineError>,
) {
    let mut entries = match result {
        Ok(entries) => entries,
        Err(e) => return cx.reply(error(id, &unavailable(&e))),
    };
    presence::sort(&mut entries);
    let (mut clients, mut bytes) = (Vec::with_capacity(entries.len()), 0);
    for e in &entries {
        let json = serde_json::to_string(&ClientJson {
            client: &e.client,
            user: &e.user,
            name: &e.name,
            info: (!e.info.is_empty())
                .then(|| serde_json::from_str::<&RawValue>(&e.info).ok())
                .flatten(),
        })
        .unwrap_or_default();
        bytes += json.len() + 1;
        if bytes > PRESENCE_BYTES {
            break;
        }
        if let Ok(raw) = RawValue::from_string(json) {
            clients.push(raw);
        }
    }
    let capped = clients.len() < entries.len();
    cx.reply(reply(&Reply::Presence {
        id,
        topic,
        clients,
        capped,
    }));
}

/// Answers a `presence_stats` request.
pub(super) fn stats_answer(
    cx: &mut Ctx<'_, Waited>,
    id: Option<&RawValue>,
    topic: &str,
    result: Result<PresenceStats, EngineError>,
) {
    match result {
        Ok(stats) => cx.reply(reply(&Reply::PresenceStats {
            id,
            topic,
            clients: stats.clients,
            users: stats.users,
        })),
        Err(e) => cx.reply(error(id, &unavailable(&e))),
    }
}

/// Answers a `history` request from the page read.
pub(super) fn history(
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
