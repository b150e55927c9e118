//! Input: lines typed into the line editor in a terminal, or read from stdin in a pipe.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::command::{parse_command, Command};
use super::output::{Out, Screen};
use super::term;

/// What the input side hands the session.
pub(super) enum Input {
    Line(String),
    Eof,
    /// Ctrl-C in a terminal: close, even under --no-close.
    Interrupt,
}

/// Starts reading input: the line editor in a terminal (falling back to stdin if it cannot
/// start), stdin lines in a pipe. Returns the lines and where output goes.
pub(super) fn start_input(interactive: bool) -> (mpsc::Receiver<Input>, Out) {
    let (tx, rx) = mpsc::channel(64);
    if interactive {
        if let Some(out) = start_editor(&tx) {
            return (rx, out);
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

/// Runs the line editor on its own thread, once the terminal is in raw mode; `None` if the
/// editor cannot start.
fn start_editor(tx: &mpsc::Sender<Input>) -> Option<Out> {
    let mut editor = rustyline::DefaultEditor::new().ok()?;
    let printer = editor.create_external_printer().ok()?;
    let screen = Arc::new(Mutex::new(Screen::Editor(Box::new(printer))));
    let out = Out {
        interactive: true,
        screen: Some(Arc::clone(&screen)),
    };
    let tx = tx.clone();
    std::thread::spawn(move || read_lines(editor, &screen, &tx));
    term::wait_raw(Duration::from_millis(500));
    Some(out)
}

/// The editor thread: each line typed is sent; `/close`, Ctrl-C and Ctrl-D end it.
fn read_lines(
    mut editor: rustyline::DefaultEditor,
    screen: &Mutex<Screen>,
    tx: &mpsc::Sender<Input>,
) {
    // The editor is done: what follows goes straight to the terminal.
    let stop = || {
        if let Ok(mut g) = screen.lock() {
            *g = Screen::Direct;
        }
    };
    loop {
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
    }
}
