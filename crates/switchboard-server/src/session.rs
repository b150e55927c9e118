//! The loop of a hub-connected WebSocket (`/chat`, `/ws`): client messages go to the
//! endpoint's [`App`], broadcast frames come out of the connection's [`Outbox`] and go to
//! the socket when it has room.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use switchboard_hub::{Hub, Outbox};
use switchboard_proto::{Event, Message};
use switchboard_tokio::{SocketControl, Transport, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::echo::{check_registration, finish, Stop};
use crate::metrics::Metrics;
use crate::registry::Registration;

/// Broadcast frames move from the outbox to the socket's queue while less than this is
/// queued there; past it they wait in the outbox, where the slow-consumer bound applies.
const SOCKET_QUEUE_HIGH_WATER: usize = 64 * 1024;

/// What an endpoint's protocol does with a connection.
pub(crate) trait App {
    /// Right after the handshake: say hello, subscribe.
    fn open<S: AsyncRead + AsyncWrite + Unpin>(&mut self, cx: &mut Ctx<'_, S>) -> Result<(), Stop>;
    /// A message from the client.
    fn message<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Ctx<'_, S>,
        msg: Message,
    ) -> Result<(), Stop>;
    /// The connection is over: unsubscribe, say goodbye to the others.
    fn close(&mut self, hub: &Hub);
    /// The connection is over because the server is shutting down: every other connection
    /// gets its own 1001, so a goodbye would only claim that someone left. Unsubscribe.
    fn shutdown(&mut self, hub: &Hub) {
        self.close(hub);
    }
}

/// What an [`App`] may use.
pub(crate) struct Ctx<'a, S> {
    pub(crate) ws: &'a mut WebSocket<S>,
    pub(crate) hub: &'a Hub,
    pub(crate) outbox: &'a Arc<Outbox>,
    pub(crate) metrics: &'a Metrics,
    pub(crate) reg: &'a mut Registration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Ctx<'_, S> {
    /// Queues a reply to this client only.
    pub(crate) fn reply(&mut self, msg: &Message) -> Result<(), Stop> {
        self.metrics.messages_out.add(1);
        self.metrics.bytes_out.add(msg.payload().len() as u64);
        self.reg.sent();
        self.ws.feed(msg).map_err(Stop::Failed)
    }

    /// Moves every frame waiting in the outbox to the socket's queue (before a room switch,
    /// so frames of the old room do not arrive after the new room's welcome).
    pub(crate) fn flush_outbox(&mut self) -> Result<(), Stop> {
        move_frames(self.ws, self.outbox, self.metrics, self.reg, usize::MAX)
    }
}

fn move_frames<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    outbox: &Outbox,
    metrics: &Metrics,
    reg: &mut Registration,
    budget: usize,
) -> Result<(), Stop> {
    let mut result = Ok(());
    let mut n = 0;
    let bytes = outbox.drain(budget, |frame| {
        if result.is_ok() {
            n += 1;
            result = ws.feed_shared(frame).map_err(Stop::Failed);
        }
    });
    if n > 0 {
        metrics.messages_out.add(n);
        metrics.bytes_out.add(bytes as u64);
        reg.sent();
    }
    result
}

/// Runs a session to its end, closing the connection the way its end calls for.
pub(crate) async fn run<S, A>(
    mut ws: WebSocket<S>,
    mut app: A,
    hub: Hub,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    mut reg: Registration,
) where
    S: Transport + SocketControl,
    A: App,
{
    let opened = app.open(&mut Ctx {
        ws: &mut ws,
        hub: &hub,
        outbox: &outbox,
        metrics: &metrics,
        reg: &mut reg,
    });
    let stop = match opened {
        Err(stop) => stop,
        Ok(()) => {
            poll_fn(|cx| poll_session(&mut ws, &mut app, &hub, &outbox, &metrics, &mut reg, cx))
                .await
        }
    };
    // No more deliveries; leave every topic (the others see the leave now).
    outbox.close();
    if matches!(stop, Stop::Shutdown) || reg.is_triggered() {
        app.shutdown(&hub);
    } else {
        app.close(&hub);
    }
    match stop {
        // Everything accepted before the shutdown still goes out, before the 1001.
        Stop::Shutdown => {
            let _ = move_frames(&mut ws, &outbox, &metrics, &mut reg, usize::MAX);
        }
        // Given up on: what waits for it will never be sent; let it go now, not after
        // the closing handshake's timeout.
        Stop::SlowConsumer => {
            outbox.discard();
        }
        _ => {}
    }
    let timeout = ws.connection().config().close_timeout;
    // Boxed: the closing steps' timers and nested futures would otherwise be part of every
    // idle session's state.
    Box::pin(finish(ws, stop, reg, timeout)).await;
}

fn poll_session<S, A>(
    ws: &mut WebSocket<S>,
    app: &mut A,
    hub: &Hub,
    outbox: &Arc<Outbox>,
    metrics: &Metrics,
    reg: &mut Registration,
    cx: &mut Context<'_>,
) -> Poll<Stop>
where
    S: Transport,
    A: App,
{
    if let Some(stop) = check_registration(ws, reg) {
        return Poll::Ready(stop);
    }
    loop {
        if outbox.is_overflowed() {
            return Poll::Ready(Stop::SlowConsumer);
        }
        // Registered before taking frames, so a push in between wakes us.
        outbox.register(cx.waker());
        let queued = ws.connection().queued_transmit();
        if queued < SOCKET_QUEUE_HIGH_WATER {
            if let Err(stop) =
                move_frames(ws, outbox, metrics, reg, SOCKET_QUEUE_HIGH_WATER - queued)
            {
                return Poll::Ready(stop);
            }
        }
        match ws.poll_next_event(cx) {
            Poll::Ready(Ok(Some(Event::Message(m)))) => {
                reg.received(true);
                metrics.messages_in.add(1);
                metrics.bytes_in.add(m.payload().len() as u64);
                let mut ctx = Ctx {
                    ws: &mut *ws,
                    hub,
                    outbox,
                    metrics,
                    reg: &mut *reg,
                };
                if let Err(stop) = app.message(&mut ctx, m) {
                    return Poll::Ready(stop);
                }
            }
            Poll::Ready(Ok(Some(Event::Close(_)))) => return Poll::Ready(Stop::PeerClosed),
            Poll::Ready(Ok(Some(_))) => reg.received(false),
            Poll::Ready(Ok(None)) => return Poll::Ready(Stop::Ended),
            Poll::Ready(Err(e)) => return Poll::Ready(Stop::Failed(e)),
            Poll::Pending => {
                // More frames arrived while the socket has room: go round again.
                if outbox.has_frames()
                    && ws.connection().queued_transmit() < SOCKET_QUEUE_HIGH_WATER
                {
                    continue;
                }
                return if reg.register(cx.waker()) {
                    Poll::Ready(Stop::Shutdown)
                } else {
                    Poll::Pending
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// A subscribed, idle connection is this future (boxed) plus its outbox and hub entry:
    /// keep it small (docs/benchmarks.md has the whole connection's cost).
    #[tokio::test]
    async fn session_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (a, _) = l.accept().await.unwrap();
        let ws = switchboard_tokio::WebSocket::from_raw(
            a,
            switchboard_proto::Role::Server,
            switchboard_proto::Config::default(),
        );
        let registry = std::sync::Arc::new(crate::registry::Registry::new(
            crate::config::Limits::default(),
            crate::config::HeartbeatConfig::default(),
            Default::default(),
        ));
        let reg = crate::registry::Registration::new(registry, [127, 0, 0, 1].into())
            .map_err(|_| ())
            .unwrap();
        let hub = switchboard_hub::Hub::new(switchboard_hub::HubConfig::default());
        let outbox = std::sync::Arc::new(switchboard_hub::Outbox::new(Default::default()));
        let f = super::run(
            ws,
            crate::pubsub::PubSub::new(8),
            hub,
            outbox,
            Default::default(),
            reg,
        );
        let size = std::mem::size_of_val(&f);
        assert!(size <= 1024, "session future is {size} bytes");
    }
}
