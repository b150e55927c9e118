//! `switchboard connect URL`: an interactive WebSocket client that can draw the session.
//!
//! In a terminal, each line typed is sent as a text message and received messages are
//! printed as they arrive, above the prompt. In a pipe, stdin lines are sent, received
//! messages go to stdout one per line, and the exit status says how the session ended
//! (docs/connect.md has the table).

mod args;
mod command;
mod connection;
mod exit;
mod handshake;
mod input;
mod output;
mod recorder;
mod term;
mod trace;

use std::io::IsTerminal;
use std::time::Duration;

use tokio::sync::mpsc;

pub(crate) use args::ConnectArgs;
use connection::{one_connection, Outcome};
use exit::Exit;
use input::{start_input, Input};
use output::Out;
use trace::{Format, Tracer};

/// Runs `switchboard connect`; returns the exit status.
pub(crate) fn run(a: ConnectArgs) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(session(a)) as i32)
}

/// Starts the input and the output, runs the session, then puts the terminal back.
async fn session(a: ConnectArgs) -> Exit {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let saved = if interactive { term::save() } else { None };
    let (input, out) = start_input(interactive);
    let exit = session_with(&a, input, &out, interactive).await;
    out.finish(saved);
    exit
}

/// The session: connections one after the other while `--reconnect` asks for them, with
/// exponential backoff and jitter between them.
async fn session_with(
    a: &ConnectArgs,
    mut input: mpsc::Receiver<Input>,
    out: &Out,
    interactive: bool,
) -> Exit {
    let mut tracer = tracer_for(a, out, interactive);
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
                let wait = backoff(attempt);
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

/// The tracer `--trace` or `--trace-json` asks for: its lines go on stderr, or above the
/// prompt in a terminal.
fn tracer_for(a: &ConnectArgs, out: &Out, interactive: bool) -> Option<Tracer> {
    (a.trace || a.trace_json).then(|| {
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
    })
}

/// How long to wait before reconnection attempt `attempt` (1, 2, …): 0.5 s doubling up to
/// 30 s, plus up to half of that again at random.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << attempt.min(6).saturating_sub(1));
    let base = base.min(Duration::from_secs(30));
    let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
    base + jitter
}
