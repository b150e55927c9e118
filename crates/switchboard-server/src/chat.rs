//! `/chat`: rooms with presence and history (docs/protocol.md).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_hub::{Hub, Member, Subscription};
use switchboard_proto::Message;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::echo::Stop;
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
pub(crate) fn valid_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > 64 {
        return Err("room names are 1-64 characters".into());
    }
    if !room
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("room names use only A-Z, a-z, 0-9, '_', '-' and '.'".into());
    }
    Ok(())
}

/// Names: 1-32 characters after trimming, no control characters.
pub(crate) fn clean_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > 32 {
        return Err("names are 1-32 characters".into());
    }
    if name.chars().any(char::is_control) {
        return Err("names may not contain control characters".into());
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
    },
    Message {
        id: u64,
        room: &'a str,
        from: MemberJson<'a>,
        text: &'a str,
        time: u64,
        seq: u64,
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

fn render(out: &Out<'_>) -> Message {
    // Serializing these structs cannot fail (string keys, no maps with other keys).
    Message::text(serde_json::to_string(out).unwrap_or_default())
}

pub(crate) fn error(code: &str, message: &str) -> Message {
    render(&Out::Error { code, message })
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
        }
    }

    fn topic(room: &str) -> String {
        format!("chat:{room}")
    }

    fn join<S: AsyncRead + AsyncWrite + Unpin>(&mut self, cx: &mut Ctx<'_, S>) -> Result<(), Stop> {
        let topic = Self::topic(&self.room);
        let joined = cx
            .hub
            .subscribe(&topic, Arc::clone(cx.outbox), Some(self.me.clone()));
        let history: Vec<&RawValue> = joined
            .history
            .iter()
            .filter_map(|b| std::str::from_utf8(b).ok())
            .filter_map(|s| serde_json::from_str::<&RawValue>(s).ok())
            .collect();
        let welcome = render(&Out::Welcome {
            you: (&self.me).into(),
            room: &self.room,
            members: joined.members.iter().map(Into::into).collect(),
            history,
        });
        self.sub = Some(joined.subscription);
        cx.reply(&welcome)?;
        let join = render(&Out::Join {
            room: &self.room,
            member: (&self.me).into(),
            time: now_ms(),
        });
        let _ = cx.hub.publish(&topic, join, false);
        Ok(())
    }

    /// Says `text` in the room (a `message` event, kept in the history).
    fn say<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Ctx<'_, S>,
        text: &str,
    ) -> Result<(), Stop> {
        let chars = text.chars().count();
        if text.trim().is_empty() || chars > self.max_text {
            return cx.reply(&error(
                "invalid_text",
                &format!("text must be 1-{} characters and not blank", self.max_text),
            ));
        }
        // The next keystroke may announce itself again right away.
        self.last_typing = 0;
        let topic = Self::topic(&self.room);
        let (room, me) = (&self.room, &self.me);
        let _ = cx.hub.publish_with(&topic, true, |seq| {
            render(&Out::Message {
                id: NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed),
                room,
                from: me.into(),
                text,
                time: now_ms(),
                seq,
            })
        });
        Ok(())
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
        let _ = hub.publish(&Self::topic(&self.room), notice, false);
    }

    fn leave(&mut self, hub: &Hub) {
        if let Some(sub) = self.sub.take() {
            hub.unsubscribe(&sub);
            let leave = render(&Out::Leave {
                room: &self.room,
                member: (&self.me).into(),
                time: now_ms(),
            });
            let _ = hub.publish(sub.topic(), leave, false);
        }
    }
}

impl App for Chat {
    fn open<S: AsyncRead + AsyncWrite + Unpin>(&mut self, cx: &mut Ctx<'_, S>) -> Result<(), Stop> {
        self.join(cx)
    }

    fn message<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Ctx<'_, S>,
        msg: Message,
    ) -> Result<(), Stop> {
        let Message::Text(t) = msg else {
            return cx.reply(&error(
                "binary_unsupported",
                "chat messages are JSON text, see docs/protocol.md",
            ));
        };
        // Text that does not start with `{` is what someone typed (`switchboard connect`,
        // websocat): a chat message as it stands.
        if !t.as_str().trim_start().starts_with('{') {
            return self.say(cx, t.as_str());
        }
        let req: In<'_> = match serde_json::from_str(t.as_str()) {
            Ok(r) => r,
            Err(e) => {
                return cx.reply(&error(
                    "invalid_json",
                    &format!(
                        "text starting with '{{' must be a JSON object like {{\"type\":\"message\",\"text\":\"hi\"}} (other text is sent as a message): {e}"
                    ),
                ))
            }
        };
        match &*req.kind {
            "message" => self.say(cx, req.text.as_deref().unwrap_or_default()),
            "typing" => {
                self.typing(cx.hub);
                Ok(())
            }
            "join" => {
                let room = req.room.as_deref().unwrap_or_default();
                if let Err(why) = valid_room(room) {
                    return cx.reply(&error("invalid_room", &why));
                }
                if room == self.room && self.sub.is_some() {
                    return Ok(());
                }
                self.leave(cx.hub);
                // Frames of the old room go out before the new room's welcome.
                cx.flush_outbox()?;
                self.room = room.to_string();
                self.join(cx)
            }
            other => cx.reply(&error(
                "unknown_type",
                &format!("unknown message type {other:?}; use \"message\", \"join\" or \"typing\""),
            )),
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
