//! Running an [`App`] without a socket: what it replies and what its outbox receives, in
//! the order the session would write them.

use std::sync::Arc;

use serde_json::Value;
use switchboard_hub::{Hub, Outbox, OutboxLimits};
use switchboard_proto::Message;

use crate::auth::Identity;
use crate::session::{Action, App, Ctx, Replies, Waits};

/// Something sent to the client: a reply of the app's, or a broadcast frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sent {
    /// A text reply, as JSON.
    Reply(Value),
    /// A broadcast text frame, as JSON.
    Frame(Value),
    /// A broadcast binary frame's payload.
    BinaryFrame(Vec<u8>),
}

impl Sent {
    /// The JSON of a text reply or frame.
    pub(crate) fn json(&self) -> &Value {
        match self {
            Self::Reply(v) | Self::Frame(v) => v,
            Self::BinaryFrame(_) => &Value::Null,
        }
    }

    /// The `type` of a text reply or frame.
    pub(crate) fn kind(&self) -> &str {
        self.json()["type"].as_str().unwrap_or_default()
    }
}

/// One client's side of an app: its outbox and identity, on a hub shared with others.
pub(crate) struct Client {
    hub: Hub,
    outbox: Arc<Outbox>,
    identity: Identity,
    replies: Replies,
    metrics: crate::metrics::Metrics,
}

impl Client {
    pub(crate) fn new(hub: &Hub) -> Self {
        Self {
            hub: hub.clone(),
            outbox: Arc::new(Outbox::new(OutboxLimits::default())),
            identity: Identity::anonymous(),
            replies: Replies::default(),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// `f` on `app` with this client's context, then every wait it started (run to its
    /// end here, in order, as the session would); what it replied.
    fn call<A: App>(
        &mut self,
        app: &mut A,
        f: impl FnOnce(&mut A, &mut Ctx<'_, A::Waited>),
    ) -> Vec<Sent> {
        let mut waits = Waits::default();
        let mut cx = Ctx {
            hub: &self.hub,
            outbox: &self.outbox,
            identity: &self.identity,
            replies: &mut self.replies,
            waits: &mut waits,
            metrics: &self.metrics,
        };
        f(app, &mut cx);
        while cx.waits.len() > 0 {
            let waited = block_on(std::future::poll_fn(|c| cx.waits.poll_next(c)));
            if let Some(waited) = waited {
                app.done(&mut cx, waited);
            }
        }
        self.replies.take().into_iter().map(decode_action).collect()
    }

    /// Opens `app`; what it replied.
    pub(crate) fn open<A: App>(&mut self, app: &mut A) -> Vec<Sent> {
        self.call(app, |app, cx| app.open(cx))
    }

    /// Sends `msg` to `app`; what it replied.
    pub(crate) fn send<A: App>(&mut self, app: &mut A, msg: Message) -> Vec<Sent> {
        self.call(app, |app, cx| app.message(cx, msg))
    }

    /// Sends the JSON `v` as text.
    pub(crate) fn send_json<A: App>(&mut self, app: &mut A, v: &Value) -> Vec<Sent> {
        self.send(app, Message::text(v.to_string()))
    }

    /// The frames waiting in the outbox, taken.
    pub(crate) fn delivered(&self) -> Vec<Sent> {
        let mut out = Vec::new();
        self.outbox
            .drain(usize::MAX, |f| out.push(decode_frame(&f)));
        out
    }

    /// The frames waiting in the outbox, taken: their `type`s.
    pub(crate) fn delivered_kinds(&self) -> Vec<String> {
        let d = self.delivered();
        d.iter().map(|s| s.kind().to_string()).collect()
    }
}

/// Runs a wait to its end on a runtime of its own (the apps' tests run on the in-memory
/// engine, whose waits are ready at once; an engine that asks a server needs a runtime).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(f))
        .unwrap_or_else(|e| panic!("a runtime for the wait: {e}"))
}

fn decode_action(a: Action) -> Sent {
    match a {
        Action::Reply(Message::Text(t)) => Sent::Reply(json(t.as_str())),
        Action::Reply(m) => panic!("a binary reply: {m:?}"),
        Action::Frame(f) => decode_frame(&f),
    }
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A whole, unmasked server frame: its payload, by opcode.
fn decode_frame(f: &[u8]) -> Sent {
    assert!(f.len() >= 2 && f[0] & 0x80 != 0, "not a final frame: {f:?}");
    assert_eq!(f[1] & 0x80, 0, "a masked server frame");
    let (len, start) = match f[1] & 0x7f {
        126 => (usize::from(u16::from_be_bytes([f[2], f[3]])), 4),
        127 => (
            usize::try_from(u64::from_be_bytes(f[2..10].try_into().unwrap())).unwrap(),
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = &f[start..];
    assert_eq!(payload.len(), len, "frame length");
    match f[0] & 0x0f {
        1 => Sent::Frame(json(std::str::from_utf8(payload).unwrap())),
        2 => Sent::BinaryFrame(payload.to_vec()),
        op => panic!("opcode {op} in a broadcast frame"),
    }
}
