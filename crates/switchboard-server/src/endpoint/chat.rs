//! `/chat`: rooms with presence and history (docs/protocol.md).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_hub::recovery;
use switchboard_hub::{
    EngineError, HistoryPage, HistoryQuery, Hub, Member, Op, Published, StreamPosition,
    Subscription,
};
use switchboard_proto::Message;

use crate::error::{AppError, ErrorCode, Rejection};
use crate::http::query_param;
use crate::render;
use crate::session::{App, Ctx};

/// The subprotocol name clients may offer.
pub(crate) const SUBPROTOCOL: &str = "switchboard.chat.v1";
/// The room a client lands in without `?room=`.
pub(crate) const DEFAULT_ROOM: &str = "lobby";

/// A connection's `typing` notices go to its room at most this often; the ones in between
/// are dropped (docs/protocol.md).
pub(crate) const TYPING_EVERY_MS: u64 = 2_000;

/// Server-wide message numbers.
static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Room names: 1-64 characters from `A-Z a-z 0-9 _ - .`.
pub(crate) fn valid_room(room: &str) -> Result<(), AppError> {
    let invalid = |why: &str| Err(AppError::new(ErrorCode::InvalidRoom, why));
    if room.is_empty() || room.len() > 64 {
        return invalid("room names are 1-64 characters");
    }
    if !room
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return invalid("room names use only A-Z, a-z, 0-9, '_', '-' and '.'");
    }
    Ok(())
}

/// Names: 1-32 characters after trimming, no control characters.
pub(crate) fn clean_name(name: &str) -> Result<String, AppError> {
    let invalid = |why: &str| Err(AppError::new(ErrorCode::InvalidName, why));
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > 32 {
        return invalid("names are 1-32 characters");
    }
    if name.chars().any(char::is_control) {
        return invalid("names may not contain control characters");
    }
    Ok(name.to_string())
}

#[derive(Serialize)]
struct MemberJson<'a> {
    id: &'a str,
    name: &'a str,
}

impl<'a> From<&'a Member> for MemberJson<'a> {
    fn from(m: &'a Member) -> Self {
        Self {
            id: &m.id,
            name: &m.name,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Out<'a> {
    Welcome {
        you: MemberJson<'a>,
        room: &'a str,
        members: Vec<MemberJson<'a>>,
        history: Vec<&'a RawValue>,
        /// The room's position when this connection joined: the offset of the last message
        /// it did not receive live (the last one in `history`, if any).
        offset: u64,
        epoch: &'a str,
        /// The client gave its last position and gets everything after it (right after
        /// this welcome, as `message` events); `history` is then empty.
        recovered: bool,
        /// It gave one, but missed more than the replay cap.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        capped: bool,
    },
    Join {
        room: &'a str,
        member: MemberJson<'a>,
        time: u64,
    },
    Leave {
        room: &'a str,
        member: MemberJson<'a>,
        time: u64,
    },
    Typing {
        room: &'a str,
        member: MemberJson<'a>,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

/// A chat message's fields, as the engine carries them (the frame adds `type`, `offset`
/// and `epoch`: [`render::CHAT`]).
#[derive(Serialize)]
struct Said<'a> {
    id: u64,
    room: &'a str,
    from: MemberJson<'a>,
    text: &'a str,
    time: u64,
}

/// Messages in a welcome's `history` (the newest).
pub(crate) const WELCOME_HISTORY: usize = 100;

/// Runs a fire-and-forget engine operation (join, leave, typing notices): at once when it
/// is ready, else on its own task.
fn fire(op: Op<Result<(), EngineError>>) {
    if let Err(pending) = op.now() {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(pending);
        }
    }
}

/// What a chat connection waits for from the engine.
pub(crate) enum Waited {
    Joined {
        sub: Subscription,
        members: Vec<Member>,
        from: Option<StreamPosition>,
        page: Result<HistoryPage, EngineError>,
    },
    Said(Result<Published, EngineError>),
}

/// A broadcast of an event rendered here (join, leave, typing).
fn text_body(msg: Message) -> switchboard_hub::Body {
    let data = match msg {
        Message::Text(t) => t.as_bytes().clone(),
        Message::Binary(b) => b,
    };
    render::body(render::TEXT, data)
}

fn render(out: &Out<'_>) -> Message {
    // Serializing these structs cannot fail (string keys, no maps with other keys).
    Message::text(serde_json::to_string(out).unwrap_or_default())
}

/// The `error` event for `e`.
fn error(e: &AppError) -> Message {
    render(&Out::Error {
        code: e.code.as_str(),
        message: &e.message,
    })
}

#[derive(Deserialize)]
struct In<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
}

/// One chat connection.
pub(crate) struct Chat {
    me: Member,
    room: String,
    sub: Option<Subscription>,
    max_text: usize,
    /// When this connection's last `typing` notice went out (ms since the epoch; 0: none
    /// since its last message).
    last_typing: u64,
    /// The position to recover from when joining (`?since=N&epoch=E`; taken by the join).
    recover: Option<StreamPosition>,
    /// Messages replayed at most per recovery.
    recovery_max: usize,
}

impl Chat {
    pub(crate) fn new(id: u64, name: String, room: String, max_text: usize) -> Self {
        Self {
            me: Member {
                id: Arc::from(format!("u{id}")),
                name: Arc::from(name),
            },
            room,
            sub: None,
            max_text,
            last_typing: 0,
            recover: None,
            recovery_max: crate::config::RECOVERY_MAX,
        }
    }

    /// Joins with a position to recover from.
    pub(crate) fn recovering(mut self, from: Option<StreamPosition>) -> Self {
        self.recover = from;
        self
    }

    /// Replays at most `max` messages in a recovery.
    pub(crate) fn recovery_max(mut self, max: usize) -> Self {
        self.recovery_max = max;
        self
    }

    /// The connection `id` asking for `?room=R&name=N` (the lobby and a guest name when
    /// left out), or why the handshake is refused.
    pub(crate) fn from_query(
        query: Option<&str>,
        id: u64,
        max_text: usize,
    ) -> Result<Self, Rejection> {
        let refused = |e: &dyn std::error::Error| Rejection::bad_request(e.to_string());
        let room = match query_param(query, "room") {
            None => DEFAULT_ROOM.to_string(),
            Some(r) => {
                let r = r.map_err(|e| refused(&e))?;
                valid_room(&r).map_err(|e| refused(&e))?;
                r
            }
        };
        let name = match query_param(query, "name") {
            None => format!("guest-{:04x}", (id.wrapping_mul(0x9e37_79b9)) & 0xffff),
            Some(n) => {
                let n = n.map_err(|e| refused(&e))?;
                clean_name(&n).map_err(|e| refused(&e))?
            }
        };
        let since = query_param(query, "since")
            .transpose()
            .map_err(|e| refused(&e))?;
        let epoch = query_param(query, "epoch")
            .transpose()
            .map_err(|e| refused(&e))?;
        let from = match (since, epoch) {
            (None, None) => None,
            (Some(offset), Some(epoch)) => Some(StreamPosition {
                offset: offset.parse().map_err(|_| {
                    Rejection::bad_request("since is an offset: a whole number".to_string())
                })?,
                epoch: epoch.as_str().into(),
            }),
            _ => {
                return Err(Rejection::bad_request(
                    "give since and epoch together (the last message's position)".to_string(),
                ))
            }
        };
        Ok(Self::new(id, name, room, max_text).recovering(from))
    }

    /// The room this connection is in.
    pub(crate) fn room(&self) -> &str {
        &self.room
    }

    /// This connection's name.
    pub(crate) fn name(&self) -> &str {
        &self.me.name
    }

    fn topic(room: &str) -> String {
        format!("chat:{room}")
    }

    /// Joins the room: subscribes, reads what to welcome with (the newest messages, which
    /// also serve a recovery), then [`joined`](Self::joined).
    fn join(&mut self, cx: &mut Ctx<'_, Waited>) {
        let topic = Self::topic(&self.room);
        let from = self.recover.take();
        let query = HistoryQuery {
            since: None,
            limit: self.recovery_max.max(WELCOME_HISTORY),
        };
        let s = cx
            .hub
            .subscribe(&topic, Arc::clone(cx.outbox), Some(self.me.clone()), query);
        self.sub = Some(s.subscription.clone());
        match s.page.now() {
            Ok(page) => self.joined(cx, &s.subscription, &s.members, from.as_ref(), page),
            Err(op) => {
                let (sub, members) = (s.subscription, s.members);
                cx.wait(async move {
                    Waited::Joined {
                        sub,
                        members,
                        from,
                        page: op.await,
                    }
                });
            }
        }
    }

    /// The join's history read is done: the welcome (with the newest messages, or empty
    /// when the client recovers), the replay, then what came meanwhile; the room hears of
    /// the newcomer.
    fn joined(
        &mut self,
        cx: &mut Ctx<'_, Waited>,
        sub: &Subscription,
        members: &[Member],
        from: Option<&StreamPosition>,
        page: Result<HistoryPage, EngineError>,
    ) {
        let mut page = match page {
            Ok(page) => page,
            Err(e) => {
                cx.hub.unsubscribe(sub);
                self.sub = None;
                return cx.reply(error(&AppError::new(ErrorCode::Unavailable, e.to_string())));
            }
        };
        // The newest messages serve a recovery too: those after the client's position.
        let decision = from.map(|from| {
            let mut after = page.clone();
            after.publications.retain(|p| {
                p.position
                    .as_ref()
                    .is_some_and(|at| at.offset > from.offset)
            });
            recovery::decide(from, &after, self.recovery_max)
        });
        let recovered = decision.is_some_and(|d| d.recovered);
        if decision.is_some() {
            cx.count_recovery(recovered);
        }
        let mut replay = Vec::new();
        if recovered {
            let after = from.map_or(0, |f| f.offset);
            page.publications
                .retain(|p| p.position.as_ref().is_some_and(|at| at.offset > after));
            replay = page.publications.iter().map(|p| cx.hub.render(p)).collect();
            page.publications.clear();
        } else {
            let skip = page.publications.len().saturating_sub(WELCOME_HISTORY);
            page.publications.drain(..skip);
        }
        let rendered: Vec<_> = page
            .publications
            .iter()
            .map(|p| cx.hub.render(p).payload())
            .collect();
        let history: Vec<&RawValue> = rendered
            .iter()
            .filter_map(|b| std::str::from_utf8(b).ok())
            .filter_map(|s| serde_json::from_str::<&RawValue>(s).ok())
            .collect();
        let welcome = render(&Out::Welcome {
            you: (&self.me).into(),
            room: &self.room,
            members: members.iter().map(Into::into).collect(),
            history,
            offset: page.top.offset,
            epoch: &page.top.epoch,
            recovered,
            capped: decision.is_some_and(|d| d.capped),
        });
        cx.reply(welcome);
        for f in cx.hub.go_live(sub, &page.top, replay) {
            cx.frame(f);
        }
        let join = render(&Out::Join {
            room: &self.room,
            member: (&self.me).into(),
            time: now_ms(),
        });
        fire(cx.hub.broadcast(sub.topic(), text_body(join)));
    }

    /// Says `text` in the room (a `message` event, numbered and kept in the history).
    fn say(&mut self, cx: &mut Ctx<'_, Waited>, text: &str) -> Result<(), AppError> {
        let chars = text.chars().count();
        if text.trim().is_empty() || chars > self.max_text {
            return Err(AppError::new(
                ErrorCode::InvalidText,
                format!("text must be 1-{} characters and not blank", self.max_text),
            ));
        }
        // The next keystroke may announce itself again right away.
        self.last_typing = 0;
        let topic = Self::topic(&self.room);
        let fields = serde_json::to_string(&Said {
            id: NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed),
            room: &self.room,
            from: (&self.me).into(),
            text,
            time: now_ms(),
        })
        .unwrap_or_default();
        match cx
            .hub
            .publish(&topic, render::body(render::CHAT, fields))
            .now()
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(AppError::new(ErrorCode::Unavailable, e.to_string())),
            Err(op) => {
                cx.wait(async move { Waited::Said(op.await) });
                Ok(())
            }
        }
    }

    /// Tells the room this member is typing, at most once per [`TYPING_EVERY_MS`]; not
    /// kept in the history.
    fn typing(&mut self, hub: &Hub) {
        let now = now_ms();
        if self.sub.is_none() || now.saturating_sub(self.last_typing) < TYPING_EVERY_MS {
            return;
        }
        self.last_typing = now;
        let notice = render(&Out::Typing {
            room: &self.room,
            member: (&self.me).into(),
        });
        fire(hub.broadcast(&Self::topic(&self.room), text_body(notice)));
    }

    /// Moves to `room`: leaves the current one, then joins (a welcome, a join notice).
    fn switch_room(&mut self, cx: &mut Ctx<'_, Waited>, room: &str) -> Result<(), AppError> {
        valid_room(room)?;
        if room == self.room && self.sub.is_some() {
            return Ok(());
        }
        self.leave(cx.hub);
        // Frames of the old room go out before the new room's welcome.
        cx.outbox_first();
        self.room = room.to_string();
        self.join(cx);
        Ok(())
    }

    fn leave(&mut self, hub: &Hub) {
        if let Some(sub) = self.sub.take() {
            hub.unsubscribe(&sub);
            let leave = render(&Out::Leave {
                room: &self.room,
                member: (&self.me).into(),
                time: now_ms(),
            });
            fire(hub.broadcast(sub.topic(), text_body(leave)));
        }
    }

    /// Handles one client message; an error is answered with an `error` event.
    fn handle(&mut self, cx: &mut Ctx<'_, Waited>, msg: &Message) -> Result<(), AppError> {
        let Message::Text(t) = msg else {
            return Err(AppError::new(
                ErrorCode::BinaryUnsupported,
                "chat messages are JSON text, see docs/protocol.md",
            ));
        };
        // Text that does not start with `{` is what someone typed (`switchboard connect`,
        // websocat): a chat message as it stands.
        if !t.as_str().trim_start().starts_with('{') {
            return self.say(cx, t.as_str());
        }
        let req: In<'_> = serde_json::from_str(t.as_str()).map_err(|e| {
            AppError::new(
                ErrorCode::InvalidJson,
                format!(
                    "text starting with '{{' must be a JSON object like {{\"type\":\"message\",\"text\":\"hi\"}} (other text is sent as a message): {e}"
                ),
            )
        })?;
        match &*req.kind {
            "message" => self.say(cx, req.text.as_deref().unwrap_or_default()),
            "typing" => {
                self.typing(cx.hub);
                Ok(())
            }
            "join" => self.switch_room(cx, req.room.as_deref().unwrap_or_default()),
            other => Err(AppError::new(
                ErrorCode::UnknownType,
                format!("unknown message type {other:?}; use \"message\", \"join\" or \"typing\""),
            )),
        }
    }
}

impl App for Chat {
    type Waited = Waited;

    fn open(&mut self, cx: &mut Ctx<'_, Waited>) {
        self.join(cx);
    }

    fn message(&mut self, cx: &mut Ctx<'_, Waited>, msg: Message) {
        if let Err(e) = self.handle(cx, &msg) {
            cx.reply(error(&e));
        }
    }

    fn done(&mut self, cx: &mut Ctx<'_, Waited>, waited: Waited) {
        match waited {
            Waited::Joined {
                sub,
                members,
                from,
                page,
            } => {
                // Still in that room (not switched away meanwhile).
                if self.sub.as_ref() == Some(&sub) {
                    self.joined(cx, &sub, &members, from.as_ref(), page);
                }
            }
            Waited::Said(Err(e)) => {
                cx.reply(error(&AppError::new(ErrorCode::Unavailable, e.to_string())));
            }
            Waited::Said(Ok(_)) => {}
        }
    }

    fn close(&mut self, hub: &Hub) {
        self.leave(hub);
    }

    fn shutdown(&mut self, hub: &Hub) {
        if let Some(sub) = self.sub.take() {
            hub.unsubscribe(&sub);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_hub::HubConfig;

    use super::*;
    use crate::endpoint::testing::{Client, Sent};

    fn hub() -> Hub {
        crate::render::memory_hub(HubConfig::default())
    }

    /// A member of `room` who has opened and taken their welcome and own join.
    fn member(hub: &Hub, id: u64, name: &str, room: &str) -> (Chat, Client) {
        let mut chat = Chat::new(id, name.into(), room.into(), 100);
        let mut c = Client::new(hub);
        let welcome = c.open(&mut chat);
        assert_eq!(welcome.len(), 1);
        assert_eq!(welcome[0].kind(), "welcome");
        assert_eq!(c.delivered_kinds(), ["join"]);
        (chat, c)
    }

    fn error_code(sent: &[Sent]) -> &str {
        match sent {
            [s @ Sent::Reply(_)] if s.kind() == "error" => s.json()["code"].as_str().unwrap(),
            other => panic!("not one error reply: {other:?}"),
        }
    }

    #[test]
    fn joining_welcomes_with_members_and_tells_the_room() {
        let hub = hub();
        let (_ada, ada_c) = member(&hub, 1, "Ada", "r1");
        let mut bob = Chat::new(2, "Bob".into(), "r1".into(), 100);
        let mut bob_c = Client::new(&hub);
        let sent = bob_c.open(&mut bob);
        let w = sent[0].json();
        assert_eq!(w["you"], json!({"id":"u2","name":"Bob"}));
        assert_eq!(w["room"], "r1");
        assert_eq!(
            w["members"],
            json!([{"id":"u1","name":"Ada"},{"id":"u2","name":"Bob"}])
        );
        assert_eq!(w["history"], json!([]));
        assert_eq!(w["offset"], 0);
        assert_eq!(w["epoch"].as_str().unwrap().len(), 8);
        // The welcome is a reply; the join is a broadcast, to the newcomer too.
        assert!(matches!(sent[0], Sent::Reply(_)));
        let joined = ada_c.delivered();
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].json()["member"]["name"], "Bob");
        assert_eq!(bob_c.delivered_kinds(), ["join"]);
    }

    #[test]
    fn saying_reaches_the_room_numbered_and_kept_for_newcomers() {
        let hub = hub();
        let (mut ada, mut ada_c) = member(&hub, 1, "Ada", "r1");
        let (_bob, bob_c) = member(&hub, 2, "Bob", "r1");
        let (_cy, cy_c) = member(&hub, 3, "Cy", "r2");
        ada_c.delivered();
        assert!(ada_c
            .send_json(&mut ada, &json!({"type":"message","text":"hi"}))
            .is_empty());
        // Typed text (not starting with `{`) is a message too.
        assert!(ada_c.send(&mut ada, Message::text("  plain")).is_empty());
        let mut epochs = Vec::new();
        for c in [&ada_c, &bob_c] {
            let got = c.delivered();
            let texts: Vec<_> = got.iter().map(|s| s.json()["text"].clone()).collect();
            assert_eq!(texts, [json!("hi"), json!("  plain")]);
            assert_eq!(got[0].json()["offset"], 1);
            assert_eq!(got[1].json()["offset"], 2);
            assert_eq!(got[0].json()["epoch"], got[1].json()["epoch"]);
            epochs.push(got[0].json()["epoch"].clone());
            assert_eq!(got[0].json()["from"], json!({"id":"u1","name":"Ada"}));
        }
        assert!(cy_c.delivered().is_empty(), "another room heard it");
        let mut dan = Chat::new(4, "Dan".into(), "r1".into(), 100);
        let welcome = Client::new(&hub).open(&mut dan);
        assert_eq!(epochs[0], epochs[1], "one epoch for the room");
        assert_eq!(welcome[0].json()["offset"], 2);
        assert_eq!(welcome[0].json()["epoch"], epochs[0]);
        let history = &welcome[0].json()["history"];
        assert_eq!(history[0]["text"], "hi");
        assert_eq!(history[1]["text"], "  plain");
    }

    #[test]
    fn typing_notices_are_throttled_until_the_next_message() {
        let hub = hub();
        let (mut ada, mut ada_c) = member(&hub, 1, "Ada", "t");
        let (_bob, bob_c) = member(&hub, 2, "Bob", "t");
        bob_c.delivered();
        for _ in 0..3 {
            assert!(ada_c
                .send_json(&mut ada, &json!({"type":"typing"}))
                .is_empty());
        }
        assert_eq!(bob_c.delivered_kinds(), ["typing"]);
        ada_c.send_json(&mut ada, &json!({"type":"message","text":"done"}));
        ada_c.send_json(&mut ada, &json!({"type":"typing"}));
        assert_eq!(bob_c.delivered_kinds(), ["message", "typing"]);
    }

    /// The old room's frames still waiting go out before the new room's welcome; the
    /// new room's own join comes after it.
    #[test]
    fn a_room_switch_sends_what_the_old_room_said_first() {
        let hub = hub();
        let (mut ada, mut ada_c) = member(&hub, 1, "Ada", "r1");
        let (mut bob, mut bob_c) = member(&hub, 2, "Bob", "r1");
        let (_cy, cy_c) = member(&hub, 3, "Cy", "r2");
        bob_c.send_json(&mut bob, &json!({"type":"message","text":"before"}));
        let sent = ada_c.send_json(&mut ada, &json!({"type":"join","room":"r2"}));
        let order: Vec<_> = sent
            .iter()
            .map(|s| match s {
                Sent::Reply(v) => format!("reply {}", v["type"].as_str().unwrap()),
                Sent::Frame(v) => format!("frame {}", v["type"].as_str().unwrap()),
                Sent::BinaryFrame(_) => "binary".into(),
            })
            .collect();
        // Bob's join and message in r1, then the r2 welcome; her join to r2 after it.
        assert_eq!(order, ["frame join", "frame message", "reply welcome"]);
        assert_eq!(sent[2].json()["room"], "r2");
        assert_eq!(ada_c.delivered_kinds(), ["join"]);
        assert_eq!(cy_c.delivered_kinds(), ["join"]);
        let left = bob_c.delivered();
        assert_eq!(left.last().unwrap().kind(), "leave");
        // Joining the room one is in does nothing.
        assert!(ada_c
            .send_json(&mut ada, &json!({"type":"join","room":"r2"}))
            .is_empty());
        assert_eq!(hub.subscriber_count("chat:r1"), 1);
        assert_eq!(hub.subscriber_count("chat:r2"), 2);
    }

    #[test]
    fn bad_requests_get_error_events_with_their_codes() {
        let hub = hub();
        let (mut ada, mut c) = member(&hub, 1, "Ada", "r1");
        let cases = [
            (json!({"type":"message","text":"   "}), "invalid_text"),
            (
                json!({"type":"message","text":"x".repeat(101)}),
                "invalid_text",
            ),
            (json!({"type":"join","room":"bad room"}), "invalid_room"),
            (json!({"type":"dance"}), "unknown_type"),
        ];
        for (req, code) in cases {
            assert_eq!(error_code(&c.send_json(&mut ada, &req)), code, "{req}");
        }
        let sent = c.send(&mut ada, Message::text(" {not json"));
        assert_eq!(error_code(&sent), "invalid_json");
        let sent = c.send(&mut ada, Message::binary(vec![1, 2]));
        assert_eq!(error_code(&sent), "binary_unsupported");
        assert_eq!(
            sent[0].json()["message"],
            "chat messages are JSON text, see docs/protocol.md"
        );
        assert!(c.delivered().is_empty(), "something was broadcast");
    }

    #[test]
    fn leaving_says_goodbye_but_a_shutdown_does_not() {
        let hub = hub();
        let (mut ada, _) = member(&hub, 1, "Ada", "r1");
        let (mut bob, _) = member(&hub, 2, "Bob", "r1");
        let (_cy, cy_c) = member(&hub, 3, "Cy", "r1");
        cy_c.delivered();
        ada.close(&hub);
        bob.shutdown(&hub);
        let got = cy_c.delivered();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind(), "leave");
        assert_eq!(got[0].json()["member"]["name"], "Ada");
        assert_eq!(hub.subscriber_count("chat:r1"), 1);
    }

    #[test]
    fn the_handshake_query_names_room_and_member() {
        let chat = Chat::from_query(None, 7, 100).unwrap();
        assert_eq!(chat.room(), DEFAULT_ROOM);
        assert!(chat.name().starts_with("guest-"), "{}", chat.name());
        let chat = Chat::from_query(Some("room=r.1&name=+Ada+L%C3%B6+"), 7, 100).unwrap();
        assert_eq!((chat.room(), chat.name()), ("r.1", "Ada Lö"));
        let refused = |q: &str| Chat::from_query(Some(q), 7, 100).err().unwrap();
        let r = refused("room=no%20spaces");
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.body,
            "room names use only A-Z, a-z, 0-9, '_', '-' and '.'"
        );
        assert_eq!(refused("name=").body, "names are 1-32 characters");
        assert_eq!(
            refused("room=%ZZ&name=").body,
            "room is not valid percent-encoded UTF-8"
        );
        assert_eq!(
            refused("name=a%01b").body,
            "names may not contain control characters"
        );
    }
}
