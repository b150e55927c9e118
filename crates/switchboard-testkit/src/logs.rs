//! Log capture for the tests that check what the server logs: a `tracing_subscriber` writer
//! that keeps everything written to it.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Everything a subscriber writes, shared: pass a clone as the writer
/// (`.with_writer(move || captured.clone())`), read it with [`Captured::text`].
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// What was written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}
