//! `switchboard connect URL`: an interactive WebSocket client that can draw the session.
//!
//! In a terminal, each line typed is sent as a text message and received messages are
//! printed as they arrive, above the prompt. In a pipe, stdin lines are sent, received
//! messages go to stdout one per line, and the exit status says how the session ended
//! (docs/connect.md has the table).

mod trace;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use switchboard_proto::{CloseCode, Config, Event, Message};
use switchboard_tokio::client::WsUrl;
use switchboard_tokio::{
    client_handshake, ClientBuilder, Error as WsError, MaybeTlsStream, WebSocket,
};
use tokio::sync::mpsc;

use trace::{Format, Tracer};

/// Options of `switchboard connect`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = CONNECT_HELP)]
pub(crate) struct ConnectArgs {
    /// ws:// or wss:// URL (http:// and https:// are taken as ws:// and wss://).
    url: String,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(long = "header", short = 'H', value_name = "HEADER")]
    headers: Vec<String>,
    /// Send this Origin header.
    #[arg(long)]
    origin: Option<String>,
    /// Offer this subprotocol (repeatable, in order of preference).
    #[arg(long = "protocol", short = 'p', value_name = "NAME")]
    protocols: Vec<String>,
    /// permessage-deflate: offer compression.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    compress: String,
    /// Trust the CA certificates in this PEM file too (wss:// with a private CA).
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (self-signed test servers). Not for real traffic.
    #[arg(long, short = 'k')]
    insecure: bool,
    /// Stay connected when stdin ends (print what arrives until the server closes or
    /// Ctrl-C), instead of closing with 1000.
    #[arg(long, short = 'n')]
    no_close: bool,
    /// Keep-alive: send a ping whenever this long has passed since the last one (30s,
    /// 500ms), so idle timeouts of proxies and servers do not end a quiet session.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    ping_interval: Option<Duration>,
    /// Draw the session as a sequence diagram on stderr: handshake, every frame, closing.
    #[arg(long)]
    trace: bool,
    /// The same trace as JSON lines on stderr.
    #[arg(long, conflicts_with = "trace")]
    trace_json: bool,
    /// Reconnect with exponential backoff and jitter when the connection ends (not when you
    /// close it or stdin ends).
    #[arg(long)]
    reconnect: bool,
    /// How long to wait for TCP, TLS and the handshake: 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse, value_name = "DURATION")]
    timeout: Duration,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    max_message_size: usize,
}

const CONNECT_HELP: &str = "\
Input (typed, or lines on stdin):
  any line               sent as a text message
  /binary hex 0a0b0c     a binary message, from hex (or: /binary base64 AAEC)
  /ping [text]           a ping; the pong is shown
  /close [code [reason]] close with a code (default 1000) and reason, then exit
  //text                 a text message that starts with '/'
  /help                  this list

Output: text messages as they are; binary ones as `base64:DATA` (in a pipe) or as hex. Errors
are one `error: ...` line on stderr. When stdin ends the client closes with 1000 (not with -n).

Exit status: 0 closed with 1000 (or stdin ended and the close completed), 3 closed with another
code, 4 connection lost without a close handshake, 5 handshake refused or invalid (an HTTP
status line instead of 101, HTTP/1.0, not HTTP at all, wrong accept key), 6 could not connect
(refused, DNS, timeout), 7 TLS failed (or wss:// to a plain server), 1 other errors, 2 bad
usage (unknown option, invalid URL or --header).";

/// How the program ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Normal = 0,
    Other = 1,
    Usage = 2,
    CloseCode = 3,
    Lost = 4,
    Refused = 5,
    Unreachable = 6,
    Tls = 7,
}

enum Input {
    Line(String),
    Eof,
    /// Ctrl-C in a terminal: close, even under --no-close.
    Interrupt,
}

enum Outcome {
    /// The user closed (command or end of input): stop.
    Done(Exit),
    /// The connection ended by itself: maybe reconnect.
    Ended(Exit),
}

/// Where a terminal's output goes: above the prompt while the line editor runs, straight to
/// stdout once it has stopped (after Ctrl-C, Ctrl-D or `/close`: the terminal is back in its
/// normal mode, and the editor would no longer print what it is handed).
enum Screen {
    Editor(Box<dyn rustyline::ExternalPrinter + Send>),
    Direct,
}

/// Where output goes: stdout in a pipe, above the prompt in a terminal.
#[derive(Clone)]
struct Out {
    interactive: bool,
    screen: Option<std::sync::Arc<std::sync::Mutex<Screen>>>,
}

impl Out {
    fn message(&self, text: String) {
        match &self.screen {
            Some(s) => match s.lock().as_deref_mut() {
                Ok(Screen::Editor(p)) => {
                    let _ = p.print(text);
                }
                _ => println!("{text}"),
            },
            None => println!("{text}"),
        }
    }

    fn status(&self, text: String) {
        match &self.screen {
            Some(_) => self.message(format!("* {text}")),
            None => eprintln!("connect: {text}"),
        }
    }

    /// Why the session failed or ended badly: one `error: …` line.
    fn error(&self, text: String) {
        match &self.screen {
            Some(_) => self.message(format!("* error: {text}")),
            None => eprintln!("error: {text}"),
        }
    }

    /// The session is over: if the line editor still runs (the server ended the session),
    /// let it print what it was handed, then put the terminal back as it was.
    fn finish(&self, saved: Option<term::Saved>) {
        let Some(s) = &self.screen else { return };
        let Ok(mut g) = s.lock() else { return };
        if matches!(*g, Screen::Editor(_)) {
            // The editor prints queued lines as soon as its thread wakes up.
            std::thread::sleep(Duration::from_millis(100));
            *g = Screen::Direct;
            if let Some(saved) = saved {
                term::restore(&saved);
            }
            println!();
        }
    }
}

/// The terminal's settings, saved before the line editor switches it to raw mode, so they can
/// be put back if the program ends while the editor runs.
mod term {
    #[cfg(target_os = "linux")]
    pub(super) struct Saved(libc::termios);
    #[cfg(not(target_os = "linux"))]
    pub(super) struct Saved;

    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    pub(super) fn save() -> Option<Saved> {
        // SAFETY: tcgetattr fills the termios it is given (zeroed is a valid bit pattern for
        // this plain C struct) and reads nothing else of ours.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) };
        (r == 0).then_some(Saved(t))
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn save() -> Option<Saved> {
        None
    }

    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    pub(super) fn restore(s: &Saved) {
        use std::io::Write;
        // Bracketed paste off, as the editor would on its way out.
        let _ = std::io::stdout().write_all(b"\x1b[?2004l");
        let _ = std::io::stdout().flush();
        // SAFETY: tcsetattr reads the termios saved by `save`, a valid value.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &s.0) };
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn restore(_: &Saved) {}

    /// Waits (at most `limit`) until the line editor has put the terminal in raw mode: until
    /// then it would print what it is handed without a line break.
    #[cfg(target_os = "linux")]
    pub(super) fn wait_raw(limit: std::time::Duration) {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            match save() {
                Some(Saved(t)) if t.c_lflag & libc::ICANON == 0 => return,
                None => return,
                Some(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn wait_raw(limit: std::time::Duration) {
        std::thread::sleep(limit.min(std::time::Duration::from_millis(50)));
    }
}

pub(crate) fn run(a: ConnectArgs) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(session(a)) as i32)
}

fn start_input(interactive: bool) -> (mpsc::Receiver<Input>, Out) {
    let (tx, rx) = mpsc::channel(64);
    if interactive {
        if let Ok(mut editor) = rustyline::DefaultEditor::new() {
            if let Ok(printer) = editor.create_external_printer() {
                let screen =
                    std::sync::Arc::new(std::sync::Mutex::new(Screen::Editor(Box::new(printer))));
                let out = Out {
                    interactive,
                    screen: Some(std::sync::Arc::clone(&screen)),
                };
                // The editor is done: what follows goes straight to the terminal.
                let stop = move || {
                    if let Ok(mut g) = screen.lock() {
                        *g = Screen::Direct;
                    }
                };
                std::thread::spawn(move || loop {
                    match editor.readline("> ") {
                        Ok(line) => {
                            let _ = editor.add_history_entry(line.as_str());
                            // A bracketed paste of several lines comes back as one
                            // string: each line is a message, as if typed one by one.
                            let lines: Vec<String> = if line.is_empty() {
                                vec![line]
                            } else {
                                line.lines().map(str::to_string).collect()
                            };
                            for l in lines {
                                // After `/close` nothing more is read: stop the editor
                                // first, so the closing steps print in order.
                                let closing = matches!(parse_command(&l), Ok(Command::Close(..)));
                                if closing {
                                    stop();
                                }
                                if tx.blocking_send(Input::Line(l)).is_err() || closing {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            // Ctrl-C closes; Ctrl-D ends the input (which closes too,
                            // unless --no-close).
                            stop();
                            let input = match e {
                                rustyline::error::ReadlineError::Interrupted => Input::Interrupt,
                                _ => Input::Eof,
                            };
                            let _ = tx.blocking_send(input);
                            return;
                        }
                    }
                });
                term::wait_raw(Duration::from_millis(500));
                return (rx, out);
            }
        }
    }
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(Input::Line(line)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Input::Eof).await;
    });
    (
        rx,
        Out {
            interactive: false,
            screen: None,
        },
    )
}

async fn session(a: ConnectArgs) -> Exit {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let saved = if interactive { term::save() } else { None };
    let (input, out) = start_input(interactive);
    let exit = session_with(&a, input, &out, interactive).await;
    out.finish(saved);
    exit
}

async fn session_with(
    a: &ConnectArgs,
    mut input: mpsc::Receiver<Input>,
    out: &Out,
    interactive: bool,
) -> Exit {
    let mut tracer = (a.trace || a.trace_json).then(|| {
        let format = if a.trace_json {
            Format::Json
        } else {
            Format::Diagram
        };
        let o = out.clone();
        let sink: trace::Sink = if interactive {
            Box::new(move |s| o.message(s))
        } else {
            Box::new(|s| eprintln!("{s}"))
        };
        Tracer::new(format, sink)
    });
    let mut attempt: u32 = 0;
    // Set when stdin ended under --no-close: nothing more to read, the session goes on.
    let mut input_done = false;
    loop {
        let (outcome, opened) = one_connection(
            a,
            &mut input,
            &mut input_done,
            out,
            tracer.as_mut(),
            attempt > 0,
        )
        .await;
        match outcome {
            Outcome::Done(e) => return e,
            Outcome::Ended(e) if !a.reconnect => return e,
            Outcome::Ended(_) => {
                attempt = if opened { 1 } else { attempt + 1 };
                let base = Duration::from_millis(500)
                    .saturating_mul(1 << attempt.min(6).saturating_sub(1));
                let base = base.min(Duration::from_secs(30));
                let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
                let wait = base + jitter;
                out.status(format!(
                    "reconnecting in {:.1} s (attempt {attempt})",
                    wait.as_secs_f64()
                ));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    i = input.recv(), if !input_done => if matches!(i, None | Some(Input::Eof | Input::Interrupt)) {
                        if a.no_close && !matches!(i, Some(Input::Interrupt)) {
                            input_done = true;
                            tokio::time::sleep(wait).await;
                        } else {
                            return Exit::Normal;
                        }
                    },
                }
            }
        }
    }
}

fn builder(a: &ConnectArgs) -> Result<(ClientBuilder, Config), String> {
    let mut config = Config::default()
        .max_message_size(a.max_message_size)
        .max_frame_size(a.max_message_size);
    if a.compress == "on" {
        config = config.deflate(Some(switchboard_proto::extension::DeflateConfig::default()));
    }
    let mut b = ClientBuilder::new(&a.url)
        .config(config)
        .connect_timeout(a.timeout.max(Duration::from_millis(100)));
    for p in &a.protocols {
        b = b.protocol(p.clone());
    }
    for h in &a.headers {
        let Some((n, v)) = h.split_once(':') else {
            return Err(format!("--header {h:?}: expected \"Name: value\""));
        };
        b = b.header(n.trim(), v.trim());
    }
    if let Some(o) = &a.origin {
        b = b.origin(o.clone());
    }
    if a.insecure {
        b = b.tls_config(
            switchboard_tokio::tls::insecure_client_config().map_err(|e| e.to_string())?,
        );
    } else if let Some(ca) = &a.ca {
        b = b.tls_config(
            switchboard_tokio::tls::client_config(Some(ca)).map_err(|e| e.to_string())?,
        );
    }
    Ok((b, config))
}

/// The first line of what the server sent, printable (at most 100 characters).
fn first_line(seen: &[u8]) -> String {
    let end = seen
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(seen.len());
    String::from_utf8_lossy(&seen[..end])
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

/// The first line of the body after an HTTP head, if any.
fn body_line(seen: &[u8]) -> String {
    let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
        return String::new();
    };
    first_line(&seen[i + 4..])
}

/// The same URL with the other scheme: `wss://` for `ws://` and back.
fn other_scheme(url: &str) -> String {
    for (from, to) in [
        ("wss://", "ws://"),
        ("https://", "http://"),
        ("ws://", "wss://"),
        ("http://", "https://"),
    ] {
        if let Some(rest) = url.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    url.to_string()
}

/// Why connecting failed, in words, with the exit status. `seen`: the first bytes the server
/// sent, if any.
fn explain(e: &WsError, url: &WsUrl, raw_url: &str, seen: &[u8]) -> (String, Exit) {
    let target = format!("{}:{}", url.host, url.port);
    match e {
        // A TLS client hello answered in plain text (an HTTP 400, typically).
        WsError::Tls(t) if t.contains("InvalidContentType") || t.contains("corrupt message") => (
            format!(
                "{target} answered in plain text, not TLS: try {}",
                other_scheme(raw_url)
            ),
            Exit::Tls,
        ),
        // An HTTP request answered with a TLS record (alert or handshake).
        WsError::Handshake(_) if !url.tls && matches!(seen.first(), Some(0x15 | 0x16)) => (
            format!(
                "{target} answered with TLS, not plain HTTP: try {}",
                other_scheme(raw_url)
            ),
            Exit::Refused,
        ),
        WsError::Handshake(switchboard_proto::handshake::HandshakeError::HttpVersion)
            if !seen.is_empty() =>
        {
            let body = body_line(seen);
            (
                format!(
                    "the server answered {} instead of HTTP/1.1 101 Switching Protocols{}",
                    first_line(seen),
                    if body.is_empty() { String::new() } else { format!(": {body}") }
                ),
                Exit::Refused,
            )
        }
        WsError::Handshake(switchboard_proto::handshake::HandshakeError::Malformed(_))
            if !seen.is_empty() =>
        {
            (
                format!(
                    "the server answered {:?}, which is not HTTP: is {target} a WebSocket server?",
                    first_line(seen)
                ),
                Exit::Refused,
            )
        }
        WsError::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => (
                format!("connection refused by {target}: is the server running, and on that port?"),
                Exit::Unreachable,
            ),
            std::io::ErrorKind::TimedOut => (format!("{target}: {io}"), Exit::Unreachable),
            _ if io.to_string().contains("lookup") || io.to_string().contains("resolve") => (
                format!("cannot resolve host {:?}: {io}", url.host),
                Exit::Unreachable,
            ),
            _ => (format!("cannot connect to {target}: {io}"), Exit::Unreachable),
        },
        WsError::Tls(t) => (
            format!("TLS with {target} failed: {t} (for a self-signed server try --ca FILE or --insecure)"),
            Exit::Tls,
        ),
        WsError::Rejected { status, reason, body } => {
            let first = body.lines().next().unwrap_or_default();
            (
                format!("the server answered HTTP {status} {reason} instead of 101 Switching Protocols{}", if first.is_empty() { String::new() } else { format!(": {first}") }),
                Exit::Refused,
            )
        }
        WsError::Handshake(switchboard_proto::handshake::HandshakeError::InvalidAccept) => (
            "the server's Sec-WebSocket-Accept does not match our key: not a WebSocket server, or a proxy in the way".into(),
            Exit::Refused,
        ),
        WsError::Handshake(h) => (format!("invalid handshake response: {h}"), Exit::Refused),
        WsError::HandshakeTimeout(t) => (format!("no handshake response from {target} within {t:?}"), Exit::Unreachable),
        other => (other.to_string(), Exit::Other),
    }
}

fn drain_trace(ws: &mut Ws, tracer: &mut Option<&mut Tracer>, closing_seen: &mut bool) {
    while let Some(f) = ws.poll_trace() {
        if let Some(t) = tracer.as_deref_mut() {
            if f.header.opcode == switchboard_proto::OpCode::Close && !*closing_seen {
                *closing_seen = true;
                t.closing(f.outgoing);
            }
            t.frame(&f);
        }
    }
}

fn exit_for(code: Option<u16>) -> Exit {
    match code {
        Some(1000) => Exit::Normal,
        _ => Exit::CloseCode,
    }
}

/// One connection from connect to close. Returns the outcome and whether it got past the
/// handshake.
async fn one_connection(
    a: &ConnectArgs,
    input: &mut mpsc::Receiver<Input>,
    input_done: &mut bool,
    out: &Out,
    mut tracer: Option<&mut Tracer>,
    reconnecting: bool,
) -> (Outcome, bool) {
    let url = match WsUrl::parse(&a.url) {
        Ok(u) => u,
        Err(e) => {
            out.error(format!("{e} (for example ws://127.0.0.1:8080/echo)"));
            return (Outcome::Done(Exit::Usage), false);
        }
    };
    let (b, config) = match builder(a) {
        Ok(b) => b,
        Err(e) => {
            out.error(e);
            return (Outcome::Done(Exit::Usage), false);
        }
    };
    if let Some(t) = tracer.as_deref_mut() {
        t.tcp_connect(&format!("{}:{}", url.host, url.port), url.tls);
    }
    let timeout = a.timeout.max(Duration::from_millis(100));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let fail = |e: &WsError| {
        let bytes = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let (msg, exit) = explain(e, &url, &a.url, &bytes);
        out.error(msg);
        (Outcome::Ended(exit), false)
    };
    let stream = match tokio::time::timeout(timeout, b.open(&url)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(&e),
        Err(_) => {
            return fail(&WsError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {}", crate::duration::show(timeout)),
            )))
        }
    };
    let req = b.request(&url);
    if let (Some(t), Ok(raw)) = (tracer.as_deref_mut(), req.encode()) {
        t.request(&raw);
    }
    let stream = Recorder {
        inner: stream,
        seen: std::sync::Arc::clone(&seen),
    };
    let (mut ws, resp) = match client_handshake(stream, &req, config).await {
        Ok(r) => r,
        Err(e) => {
            if let (
                Some(t),
                WsError::Rejected {
                    status,
                    reason,
                    body,
                },
            ) = (tracer.as_deref_mut(), &e)
            {
                t.refused(*status, reason, body);
            }
            return fail(&e);
        }
    };
    if let Some(t) = tracer.as_deref_mut() {
        t.response(&resp);
    }
    ws.set_trace(tracer.is_some());
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
    let mut closing_seen = false;
    let end = |ws: &mut Ws, tracer: &mut Option<&mut Tracer>, closing_seen: &mut bool| {
        drain_trace(ws, tracer, closing_seen);
        let conn = ws.connection();
        let code = conn
            .received_close()
            .and_then(|f| f.as_ref().map(|f| f.code.0))
            .or_else(|| conn.received_close().map(|_| 1005));
        let client_first = conn
            .close_initiator()
            .map(|s| s == switchboard_proto::Side::Local);
        if let Some(t) = tracer.as_deref_mut() {
            t.tcp_closed(ws.peer_closed_tcp());
            t.closed(code.filter(|c| *c != 1005), client_first);
        }
        code
    };
    // Set once we sent our close frame: how long the server has to answer it.
    let mut closing: Option<tokio::time::Instant> = None;
    let mut sent_code: Option<u16> = None;
    let close_timeout = ws.connection().config().close_timeout;
    let mut next_ping = a.ping_interval.map(|p| tokio::time::Instant::now() + p);
    loop {
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
        let deadline = tokio::time::sleep_until(closing.unwrap_or_else(far));
        let ping_due = tokio::time::sleep_until(next_ping.unwrap_or_else(far));
        tokio::select! {
            () = ping_due, if next_ping.is_some() && closing.is_none() => {
                next_ping = a.ping_interval.map(|p| tokio::time::Instant::now() + p);
                let r = ws.ping(KEEP_ALIVE).await;
                drain_trace(&mut ws, &mut tracer, &mut closing_seen);
                if let Err(e) = r {
                    out.error(format!("keep-alive ping failed: {e}"));
                }
            }
            ev = ws.next_event() => {
                drain_trace(&mut ws, &mut tracer, &mut closing_seen);
                match ev {
                    Ok(Some(Event::Message(m))) => out.message(render(&m, out.interactive)),
                    Ok(Some(Event::Pong(p))) => if out.interactive && p.as_ref() != KEEP_ALIVE {
                        out.status(format!("pong ({} bytes)", p.len()));
                    },
                    Ok(Some(Event::Ping(_))) => {}
                    Ok(Some(Event::Close(f))) => {
                        let code = end(&mut ws, &mut tracer, &mut closing_seen);
                        if closing.is_some() && code == sent_code {
                            // The server answered our close with its code.
                            return (Outcome::Done(Exit::Normal), true);
                        }
                        let reason = f.as_ref().map(|f| f.reason.as_str().to_string()).unwrap_or_default();
                        if closing.is_some() {
                            out.error(format!(
                                "the server closed with {} (we asked for {})",
                                code.map_or("no status code".into(), |c| c.to_string()),
                                sent_code.unwrap_or(1000)
                            ));
                            return (Outcome::Done(exit_for(code)), true);
                        }
                        if code != Some(1000) {
                            out.error(format!(
                                "closed by the server with {}{}",
                                code.map_or("no status code".into(), |c| c.to_string()),
                                if reason.is_empty() { String::new() } else { format!(" ({reason})") }
                            ));
                        }
                        return (Outcome::Ended(exit_for(code)), true);
                    }
                    Ok(None) => {
                        let code = end(&mut ws, &mut tracer, &mut closing_seen);
                        let o = exit_for(code);
                        return (if closing.is_some() { Outcome::Done(o) } else { Outcome::Ended(o) }, true);
                    }
                    Err(WsError::Disconnected) | Err(WsError::Io(_)) => {
                        end(&mut ws, &mut tracer, &mut closing_seen);
                        out.error("connection lost without a close handshake (1006)".into());
                        let o = Exit::Lost;
                        return (if closing.is_some() { Outcome::Done(o) } else { Outcome::Ended(o) }, true);
                    }
                    Err(e) => {
                        end(&mut ws, &mut tracer, &mut closing_seen);
                        out.error(e.to_string());
                        return (Outcome::Ended(Exit::Other), true);
                    }
                }
            }
            () = deadline, if closing.is_some() => {
                end(&mut ws, &mut tracer, &mut closing_seen);
                out.error(format!("the server did not answer the close within {}", crate::duration::show(close_timeout)));
                return (Outcome::Done(Exit::Lost), true);
            }
            line = input.recv(), if closing.is_none() && !*input_done => {
                let cmd = match line {
                    Some(Input::Line(l)) => parse_command(&l),
                    Some(Input::Eof) | None if a.no_close => {
                        *input_done = true;
                        continue;
                    }
                    Some(Input::Eof | Input::Interrupt) | None => {
                        Ok(Command::Close(CloseCode::NORMAL, String::new()))
                    }
                };
                let r = match cmd {
                    Err(help) => { out.error(help); Ok(()) }
                    Ok(Command::Send(m)) => ws.send(&m).await,
                    Ok(Command::Ping(p)) => ws.ping(p.as_bytes()).await,
                    Ok(Command::Close(code, reason)) => {
                        closing = Some(tokio::time::Instant::now() + close_timeout);
                        sent_code = Some(code.0);
                        match ws.feed_close(code, &reason) {
                            Ok(()) => ws.flush().await,
                            Err(e) => Err(e),
                        }
                    }
                };
                drain_trace(&mut ws, &mut tracer, &mut closing_seen);
                if let Err(e) = r {
                    out.error(format!("send failed: {e}"));
                }
            }
        }
    }
}

/// The payload of `--ping-interval`'s pings; their pongs are not shown.
const KEEP_ALIVE: &[u8] = b"keep-alive";

type Ws = WebSocket<Recorder<MaybeTlsStream>>;

/// A stream that keeps the first 4 KiB it reads: what the server answered, to show it when
/// the handshake fails.
struct Recorder<S> {
    inner: S,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

const RECORD: usize = 4096;

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = r {
            if let Ok(mut seen) = self.seen.lock() {
                let new = &buf.filled()[before..];
                let take = new.len().min(RECORD.saturating_sub(seen.len()));
                seen.extend_from_slice(&new[..take]);
            }
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// Read and written by copying, through the AsyncRead and AsyncWrite above.
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> switchboard_tokio::Transport
    for Recorder<S>
{
}

enum Command {
    Send(Message),
    Ping(String),
    Close(CloseCode, String),
}

fn parse_command(line: &str) -> Result<Command, String> {
    if let Some(rest) = line.strip_prefix("//") {
        return Ok(Command::Send(Message::text(format!("/{rest}"))));
    }
    let Some(cmd) = line.strip_prefix('/') else {
        return Ok(Command::Send(Message::text(line.to_string())));
    };
    let mut parts = cmd.splitn(2, ' ');
    let name = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or("").trim();
    match name {
        "binary" => {
            let (enc, data) = rest.split_once(' ').unwrap_or((rest, ""));
            let bytes = match enc {
                "hex" => {
                    let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
                    if clean.len() % 2 != 0 {
                        return Err("hex needs an even number of digits".into());
                    }
                    (0..clean.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16))
                        .collect::<Result<Vec<u8>, _>>()
                        .map_err(|e| format!("bad hex: {e}"))?
                }
                "base64" => base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| format!("bad base64: {e}"))?,
                _ => return Err("usage: /binary hex 0a0b0c  or  /binary base64 AAEC".into()),
            };
            Ok(Command::Send(Message::binary(bytes)))
        }
        "ping" => Ok(Command::Ping(rest.to_string())),
        "close" => {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let code = if code.is_empty() {
                CloseCode::NORMAL
            } else {
                let c: u16 = code.parse().map_err(|_| format!("bad close code {code:?}"))?;
                if !CloseCode(c).is_valid_on_wire() {
                    return Err(format!("{c} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)"));
                }
                CloseCode(c)
            };
            if reason.len() > 123 {
                return Err("the close reason is at most 123 bytes".into());
            }
            Ok(Command::Close(code, reason.to_string()))
        }
        _ => Err("commands: /binary hex|base64 DATA, /ping [text], /close [code [reason]], //text to send a line starting with '/'".into()),
    }
}

fn render(m: &Message, interactive: bool) -> String {
    match (m, interactive) {
        (Message::Text(t), false) => t.as_str().to_string(),
        (Message::Text(t), true) => format!("< {}", t.as_str()),
        (Message::Binary(b), false) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(b)
        ),
        (Message::Binary(b), true) => {
            let hex: Vec<String> = b.iter().take(64).map(|x| format!("{x:02x}")).collect();
            format!(
                "< [binary {} bytes] {}{}",
                b.len(),
                hex.join(" "),
                if b.len() > 64 { " …" } else { "" }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert!(matches!(
            parse_command("hi"),
            Ok(Command::Send(Message::Text(_)))
        ));
        assert!(matches!(parse_command("//x"), Ok(Command::Send(m)) if m == Message::text("/x")));
        assert!(
            matches!(parse_command("/binary hex 0a 0b"), Ok(Command::Send(m)) if m == Message::binary(vec![10, 11]))
        );
        assert!(
            matches!(parse_command("/binary base64 AAE="), Ok(Command::Send(m)) if m == Message::binary(vec![0, 1]))
        );
        assert!(
            matches!(parse_command("/close 4000 done here"), Ok(Command::Close(CloseCode(4000), r)) if r == "done here")
        );
        assert!(parse_command("/close 1006").is_err());
        assert!(parse_command("/binary hex 0").is_err());
        assert!(parse_command("/nope").is_err());
    }
}
