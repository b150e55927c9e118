//! `/chat`: rooms with presence and history (docs/protocol.md).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_hub::recovery;
use switchboard_hub::{
    EngineError, HistoryPage, HistoryQuery, Hub, Op, PresenceEntry, Published, StreamPosition,
    Subscription,
};
use switchboard_proto::Message;

use crate::auth::Identity;
use crate::endpoint::presence;
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
    /// The signed-in user (from a token); left out for guests.
    #[serde(skip_serializing_if = "str::is_empty")]
    user: &'a str,
}

impl<'a> From<&'a PresenceEntry> for MemberJson<'a> {
    fn from(m: &'a PresenceEntry) -> Self {
        Self {
            id: &m.client,
            name: &m.name,
            user: &m.user,
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
        from: Option<StreamPosition>,
        members: Result<Vec<PresenceEntry>, EngineError>,
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
    /// A `refresh`'s new token.
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
}

/// One chat connection.
pub(crate) struct Chat {
    /// Who this connection is: its presence entry in its room (`client` is the member id).
    me: PresenceEntry,
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
    /// A member with the cluster-wide id `client` (anonymous: no user yet).
    pub(crate) fn new(client: Arc<str>, name: String, room: String, max_text: usize) -> Self {
        Self {
            me: PresenceEntry {
                client,
                user: presence::empty(),
                name: Arc::from(name),
                info: presence::empty(),
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

    /// The connection `id` of `node` asking for `?room=R&name=N` (the lobby and a guest
    /// name when left out), or why the handshake is refused.
    pub(crate) fn from_query(
        query: Option<&str>,
        identity: &Identity,
        node: &str,
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
        // A signed-in user is who the token says (its `name`, else its user id); `?name=`
        // is for guests.
        let token_name = identity.name.as_ref().or(identity.user.as_ref());
        let name = match (token_name, query_param(query, "name")) {
            (Some(n), _) => clean_name(n).map_err(|e| {
                Rejection::bad_request(format!("the token's name is not a chat name: {e}"))
            })?,
            (None, None) => format!("guest-{:04x}", (id.wrapping_mul(0x9e37_79b9)) & 0xffff),
            (None, Some(n)) => {
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
        let client = presence::client_id(node, id);
        let mut chat = Self::new(client, name, room, max_text).recovering(from);
        if let Some(user) = &identity.user {
            chat.me.user = Arc::from(user.as_str());
        }
        if let Some(info) = &identity.info {
            chat.me.info = Arc::from(info.as_str());
        }
        Ok(chat)
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

    /// Joins the room: subscribes, adds this member's presence, reads who is there (after
    /// the add, so the list has the newcomer) and what to welcome with (the newest
    /// messages, which also serve a recovery), then [`joined`](Self::joined). `left` is the
    /// previous room's presence removal, waited for with the rest so that it is done before
    /// the client's next message.
    fn join(&mut self, cx: &mut Ctx<'_, Waited>, left: Op<()>) {
        let topic = Self::topic(&self.room);
        let from = self.recover.take();
        let query = HistoryQuery {
            since: None,
            limit: self.recovery_max.max(WELCOME_HISTORY),
        };
        let s = cx.hub.subscribe(&topic, Arc::clone(cx.outbox), query);
        self.sub = Some(s.subscription.clone());
        let added = cx.hub.presence_add(&topic, self.me.clone());
        let members = presence::after_add(cx.hub, &topic, added);
        let all = presence::both(left, presence::both(members, s.page));
        match all.now() {
            Ok(((), (members, page))) => {
                self.joined(cx, &s.subscription, from.as_ref(), members, page);
            }
            Err(op) => {
                let sub = s.subscription;
                cx.wait(async move {
                    let ((), (members, page)) = op.await;
                    Waited::Joined {
                        sub,
                        from,
                        members,
                        page,
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
        from: Option<&StreamPosition>,
        members: Result<Vec<PresenceEntry>, EngineError>,
        page: Result<HistoryPage, EngineError>,
    ) {
        let mut page = match page {
            Ok(page) => page,
            Err(e) => {
                cx.hub.unsubscribe(sub);
                presence::run_later(presence::removal(cx.hub, sub.topic(), &self.me.client));
                self.sub = None;
                return cx.reply(error(&AppError::new(ErrorCode::Unavailable, e.to_string())));
            }
        };
        let members = match members {
            Ok(mut members) => {
                presence::sort(&mut members);
                members
            }
            Err(e) => {
                // The room goes on; the newcomer sees only itself listed.
                tracing::debug!(topic = sub.topic(), error = %e, "presence read failed");
                vec![self.me.clone()]
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
        cx.config
            .namespaces
            .check_subscribe(cx.identity(), &Self::topic(room), false)?;
        let left = self.leave(cx.hub, true);
        // Frames of the old room go out before the new room's welcome.
        cx.outbox_first();
        self.room = room.to_string();
        self.join(cx, left);
        Ok(())
    }

    /// Leaves the room: unsubscribes, tells the room (`goodbye`), and returns the removal
    /// of this member's presence (ready, or to wait for or run later).
    fn leave(&mut self, hub: &Hub, goodbye: bool) -> Op<()> {
        let Some(sub) = self.sub.take() else {
            return Op::ready(());
        };
        hub.unsubscribe(&sub);
        let removed = presence::removal(hub, sub.topic(), &self.me.client);
        if goodbye {
            let leave = render(&Out::Leave {
                room: &self.room,
                member: (&self.me).into(),
                time: now_ms(),
            });
            fire(hub.broadcast(sub.topic(), text_body(leave)));
        }
        removed
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
            "refresh" => cx.refresh(req.token.as_deref().unwrap_or_default()),
            other => Err(AppError::new(
                ErrorCode::UnknownType,
                format!("unknown message type {other:?}; use \"message\", \"join\", \"typing\" or \"refresh\""),
            )),
        }
    }
}

impl App for Chat {
    type Waited = Waited;

    fn open(&mut self, cx: &mut Ctx<'_, Waited>) {
        self.join(cx, Op::ready(()));
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
                from,
                members,
                page,
            } => {
                // Still in that room (not switched away meanwhile).
                if self.sub.as_ref() == Some(&sub) {
                    self.joined(cx, &sub, from.as_ref(), members, page);
                }
            }
            Waited::Said(Err(e)) => {
                cx.reply(error(&AppError::new(ErrorCode::Unavailable, e.to_string())));
            }
            Waited::Said(Ok(_)) => {}
        }
    }

    fn close(&mut self, hub: &Hub) {
        presence::run_later(self.leave(hub, true));
    }

    /// No goodbye (everyone gets a 1001), but the presence goes: the other nodes keep
    /// running.
    fn shutdown(&mut self, hub: &Hub) {
        presence::run_later(self.leave(hub, false));
    }
}

#[cfg(test)]
mod tests;
