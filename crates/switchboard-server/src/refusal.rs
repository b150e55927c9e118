//! Logging refusals for operators, rate-limited so a flood of refused clients cannot fill
//! the disk: each kind of refusal logs at most [`LINES_PER_SECOND`] lines a second, and the
//! next line it logs says how many were left out (`suppressed`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many lines a second for each kind of refusal.
pub(crate) const LINES_PER_SECOND: u32 = 5;

/// A fixed one-second window: up to `per_window` lines in it, the rest counted.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    per_window: u32,
    window: Duration,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// When the current window began (`None`: nothing logged yet).
    start: Option<Instant>,
    /// Lines logged in the current window.
    logged: u32,
    /// Lines left out since the last one logged.
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            state: Mutex::new(Window::default()),
        }
    }

    /// Whether a line may be logged now; `Some(n)`: yes, and `n` were left out since the
    /// last one. Takes a short lock once per refusal (never per message).
    pub(crate) fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// As [`check`](Self::check), at `now` (tests give the clock).
    pub(crate) fn check_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = w
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if expired {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < self.per_window {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed = w.suppressed.saturating_add(1);
            None
        }
    }
}

/// The kinds of refusal that log, each with its own limit.
#[derive(Debug)]
pub(crate) struct RefusalLogs {
    /// WebSocket handshakes refused for their `Origin`.
    pub(crate) origin: LogLimiter,
    /// WebSocket handshakes refused at the total or per-address connection limit.
    pub(crate) limit: LogLimiter,
    /// `POST /api/publish` without the right key.
    pub(crate) auth: LogLimiter,
}

impl Default for RefusalLogs {
    fn default() -> Self {
        let limiter = || LogLimiter::new(LINES_PER_SECOND, Duration::from_secs(1));
        Self {
            origin: limiter(),
            limit: limiter(),
            auth: limiter(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_lines_a_window_then_the_count_of_those_left_out() {
        let l = LogLimiter::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // A flood within one window: three lines, then nothing.
        assert_eq!(l.check_at(t0), Some(0));
        assert_eq!(l.check_at(ms(1)), Some(0));
        assert_eq!(l.check_at(ms(2)), Some(0));
        for i in 3..1000 {
            assert_eq!(l.check_at(ms(i / 2)), None, "line {i} was let through");
        }
        // The next window: the first line says how many were left out, once.
        assert_eq!(l.check_at(ms(1000)), Some(997));
        assert_eq!(l.check_at(ms(1001)), Some(0));
        assert_eq!(l.check_at(ms(1002)), Some(0));
        assert_eq!(l.check_at(ms(1003)), None);
        // Quiet for a long time, then one more: logged, with the one left out before.
        assert_eq!(l.check_at(ms(60_000)), Some(1));
    }

    #[test]
    fn a_clock_that_goes_back_does_not_open_a_window() {
        let l = LogLimiter::new(1, Duration::from_secs(1));
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(l.check_at(t0), Some(0));
        assert_eq!(l.check_at(t0 - Duration::from_secs(5)), None);
        assert_eq!(l.check_at(t0 + Duration::from_secs(1)), Some(1));
    }
}
