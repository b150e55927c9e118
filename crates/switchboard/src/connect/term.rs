//! The terminal's settings, saved before the line editor switches it to raw mode, so they can
//! be put back if the program ends while the editor runs.

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
