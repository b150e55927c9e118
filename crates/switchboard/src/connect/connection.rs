//! One connection, from connect to close: what `--reconnect` repeats. Once open, it shows
//! what the server sends, sends what the input asks for, pings under `--ping-interval`, and
//! runs the closing handshake.

use std::time::Duration;

use switchboard_proto::handshake::client::Response;
use switchboard_proto::{CloseCode, CloseFrame, Event, OpCode};
use switchboard_tokio::Error as WsError;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::args::ConnectArgs;
use super::command::{parse_command, Command};
use super::exit::{exit_for, Exit};
use super::handshake::{open, Ws};
use super::input::Input;
use super::output::{render, Out};
use super::trace::Tracer;

/// How a connection ended.
pub(super) enum Outcome {
    /// The user closed (command or end of input): stop.
    Done(Exit),
    /// The connection ended by itself: maybe reconnect.
    Ended(Exit),
}

/// The payload of `--ping-interval`'s pings; their pongs are not shown.
const KEEP_ALIVE: &[u8] = b"keep-alive";

/// One connection from connect to close. Returns the outcome and whether it got past the
/// handshake.
pub(super) async fn one_connection(
    a: &ConnectArgs,
    input: &mut mpsc::Receiver<Input>,
    input_done: &mut bool,
    out: &Out,
    mut tracer: Option<&mut Tracer>,
    reconnecting: bool,
) -> (Outcome, bool) {
    let (mut ws, resp) = match open(a, out, tracer.as_deref_mut()).await {
        Ok(r) => r,
        Err(outcome) => return (outcome, false),
    };
    if let Some(t) = tracer.as_deref_mut() {
        t.response(&resp);
    }
    ws.set_trace(tracer.is_some());
    announce(a, out, &resp, reconnecting);
    let close_timeout = ws.connection().config().close_timeout;
    let mut live = Live {
        a,
        out,
        ws,
        tracer,
        input,
        input_done,
        closing_seen: false,
        closing: None,
        sent_code: None,
        close_timeout,
        next_ping: a.ping_interval.map(|p| Instant::now() + p),
    };
    (live.run().await, true)
}

/// Says the connection is up: always after a reconnection, the first time in a terminal.
fn announce(a: &ConnectArgs, out: &Out, resp: &Response, reconnecting: bool) {
    if reconnecting {
        out.status(format!("reconnected to {}", a.url));
    } else if out.interactive {
        let p = resp
            .protocol
            .as_deref()
            .map(|p| format!(", protocol {p}"))
            .unwrap_or_default();
        out.status(format!(
            "connected to {}{p}; /help lists the commands",
            a.url
        ));
    }
}

/// An open connection and where its session stands.
struct Live<'a> {
    a: &'a ConnectArgs,
    out: &'a Out,
    ws: Ws,
    tracer: Option<&'a mut Tracer>,
    input: &'a mut mpsc::Receiver<Input>,
    /// Set when stdin ended under --no-close: nothing more to read, the session goes on.
    input_done: &'a mut bool,
    /// Whether the trace has opened its closing section.
    closing_seen: bool,
    /// Set once we sent our close frame: how long the server has to answer it.
    closing: Option<Instant>,
    sent_code: Option<u16>,
    close_timeout: Duration,
    next_ping: Option<Instant>,
}

impl Live<'_> {
    /// Runs the session until the connection ends.
    async fn run(&mut self) -> Outcome {
        loop {
            let far = || Instant::now() + Duration::from_secs(86_400);
            let deadline = tokio::time::sleep_until(self.closing.unwrap_or_else(far));
            let ping_due = tokio::time::sleep_until(self.next_ping.unwrap_or_else(far));
            let over = tokio::select! {
                () = ping_due, if self.next_ping.is_some() && self.closing.is_none() => {
                    self.keep_alive().await;
                    None
                }
                ev = self.ws.next_event() => self.on_event(ev),
                () = deadline, if self.closing.is_some() => Some(self.close_unanswered()),
                line = self.input.recv(), if self.closing.is_none() && !*self.input_done => {
                    self.on_input(line).await;
                    None
                }
            };
            if let Some(outcome) = over {
                return outcome;
            }
        }
    }

    /// `--ping-interval`: a ping now, the next one an interval later.
    async fn keep_alive(&mut self) {
        self.next_ping = self.a.ping_interval.map(|p| Instant::now() + p);
        let r = self.ws.ping(KEEP_ALIVE).await;
        self.drain_trace();
        if let Err(e) = r {
            self.out.error(format!("keep-alive ping failed: {e}"));
        }
    }

    /// What the server sent, or how the connection ended; `Some` once it is over.
    fn on_event(&mut self, ev: Result<Option<Event>, WsError>) -> Option<Outcome> {
        self.drain_trace();
        match ev {
            Ok(Some(Event::Message(m))) => {
                self.out.message(render(&m, self.out.interactive));
                None
            }
            Ok(Some(Event::Pong(p))) => {
                if self.out.interactive && p.as_ref() != KEEP_ALIVE {
                    self.out.status(format!("pong ({} bytes)", p.len()));
                }
                None
            }
            Ok(Some(Event::Ping(_))) => None,
            Ok(Some(Event::Close(f))) => Some(self.on_close(f.as_ref())),
            Ok(None) => {
                let code = self.end();
                Some(self.ended(exit_for(code)))
            }
            Err(WsError::Disconnected) | Err(WsError::Io(_)) => {
                self.end();
                self.out
                    .error("connection lost without a close handshake (1006)".into());
                Some(self.ended(Exit::Lost))
            }
            Err(e) => {
                self.end();
                self.out.error(e.to_string());
                Some(Outcome::Ended(Exit::Other))
            }
        }
    }

    /// The server's close frame: its answer to ours, or the server closing first.
    fn on_close(&mut self, f: Option<&CloseFrame>) -> Outcome {
        let code = self.end();
        if self.closing.is_some() && code == self.sent_code {
            // The server answered our close with its code.
            return Outcome::Done(Exit::Normal);
        }
        let shown: String = code.map_or("no status code".into(), |c| c.to_string());
        if self.closing.is_some() {
            self.out.error(format!(
                "the server closed with {shown} (we asked for {})",
                self.sent_code.unwrap_or(1000)
            ));
            return Outcome::Done(exit_for(code));
        }
        if code != Some(1000) {
            let reason = f.map(|f| f.reason.as_str()).unwrap_or_default();
            self.out.error(format!(
                "closed by the server with {shown}{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            ));
        }
        Outcome::Ended(exit_for(code))
    }

    /// Our close frame went unanswered for the close timeout.
    fn close_unanswered(&mut self) -> Outcome {
        self.end();
        self.out.error(format!(
            "the server did not answer the close within {}",
            crate::duration::show(self.close_timeout)
        ));
        Outcome::Done(Exit::Lost)
    }

    /// A line of input, or its end: a message, a ping or our close.
    async fn on_input(&mut self, line: Option<Input>) {
        let cmd = match line {
            Some(Input::Line(l)) => parse_command(&l),
            Some(Input::Eof) | None if self.a.no_close => {
                *self.input_done = true;
                return;
            }
            Some(Input::Eof | Input::Interrupt) | None => {
                Ok(Command::Close(CloseCode::NORMAL, String::new()))
            }
        };
        let r = match cmd {
            Err(help) => {
                self.out.error(help);
                Ok(())
            }
            Ok(Command::Send(m)) => self.ws.send(&m).await,
            Ok(Command::Ping(p)) => self.ws.ping(p.as_bytes()).await,
            Ok(Command::Close(code, reason)) => self.send_close(code, &reason).await,
        };
        self.drain_trace();
        if let Err(e) = r {
            self.out.error(format!("send failed: {e}"));
        }
    }

    /// Sends our close frame and starts the close timeout.
    async fn send_close(&mut self, code: CloseCode, reason: &str) -> Result<(), WsError> {
        self.closing = Some(Instant::now() + self.close_timeout);
        self.sent_code = Some(code.0);
        match self.ws.feed_close(code, reason) {
            Ok(()) => self.ws.flush().await,
            Err(e) => Err(e),
        }
    }

    /// After our close frame the session is over either way; before it, the connection
    /// ended by itself and may be retried.
    fn ended(&self, exit: Exit) -> Outcome {
        if self.closing.is_some() {
            Outcome::Done(exit)
        } else {
            Outcome::Ended(exit)
        }
    }

    /// Hands the frames traced since the last call to the tracer; the first close frame,
    /// either way, opens the trace's closing section.
    fn drain_trace(&mut self) {
        while let Some(f) = self.ws.poll_trace() {
            if let Some(t) = self.tracer.as_deref_mut() {
                if f.header.opcode == OpCode::Close && !self.closing_seen {
                    self.closing_seen = true;
                    t.closing(f.outgoing);
                }
                t.frame(&f);
            }
        }
    }

    /// The connection is over: traces its last frames and how it closed. Returns the code
    /// of the server's close frame (1005 when it had none; `None` without a close frame).
    fn end(&mut self) -> Option<u16> {
        self.drain_trace();
        let conn = self.ws.connection();
        let code = conn
            .received_close()
            .and_then(|f| f.as_ref().map(|f| f.code.0))
            .or_else(|| conn.received_close().map(|_| 1005));
        let client_first = conn
            .close_initiator()
            .map(|s| s == switchboard_proto::Side::Local);
        if let Some(t) = self.tracer.as_deref_mut() {
            t.tcp_closed(self.ws.peer_closed_tcp());
            t.closed(code.filter(|c| *c != 1005), client_first);
        }
        code
    }
}
