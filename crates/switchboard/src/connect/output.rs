//! Where output goes (stdout in a pipe, above the prompt in a terminal), and how received
//! messages are shown.

use std::time::Duration;

use base64::Engine;
use switchboard_proto::Message;

use super::term;

/// Where a terminal's output goes: above the prompt while the line editor runs, straight to
/// stdout once it has stopped (after Ctrl-C, Ctrl-D or `/close`: the terminal is back in its
/// normal mode, and the editor would no longer print what it is handed).
pub(super) enum Screen {
    Editor(Box<dyn rustyline::ExternalPrinter + Send>),
    Direct,
}

/// Where output goes: stdout in a pipe, above the prompt in a terminal.
#[derive(Clone)]
pub(super) struct Out {
    pub(super) interactive: bool,
    pub(super) screen: Option<std::sync::Arc<std::sync::Mutex<Screen>>>,
}

impl Out {
    /// A line of output (a received message, a trace line): above the prompt while the
    /// line editor runs, else on stdout.
    pub(super) fn message(&self, text: String) {
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

    /// How the session goes: `* …` in a terminal, `connect: …` on stderr in a pipe.
    pub(super) fn status(&self, text: String) {
        match &self.screen {
            Some(_) => self.message(format!("* {text}")),
            None => eprintln!("connect: {text}"),
        }
    }

    /// Why the session failed or ended badly: one `error: …` line.
    pub(super) fn error(&self, text: String) {
        match &self.screen {
            Some(_) => self.message(format!("* error: {text}")),
            None => eprintln!("error: {text}"),
        }
    }

    /// The session is over: if the line editor still runs (the server ended the session),
    /// let it print what it was handed, then put the terminal back as it was.
    pub(super) fn finish(&self, saved: Option<term::Saved>) {
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

/// A received message as shown: as it is (text) or `base64:` (binary) in a pipe; after `< `,
/// binary as hex, in a terminal.
pub(super) fn render(m: &Message, interactive: bool) -> String {
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
