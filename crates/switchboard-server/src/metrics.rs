//! Server counters and their Prometheus text rendering.
//!
//! Counters on the message path are sharded per thread (one cache line each). The first
//! threads to count own their shard alone, so counting is a relaxed load and store, with no
//! locked read-modify-write and no cache line bouncing between cores; threads beyond those
//! share the last shard and add atomically.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use switchboard_hub::Hub;

use crate::ratelimit::Limit;

const SHARDS: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

/// A monotonically increasing counter, sharded per thread.
#[derive(Debug, Default)]
pub struct Counter([Shard; SHARDS]);

/// This thread's shard, and whether it owns it alone.
fn shard() -> (usize, bool) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: (usize, bool) = {
            let i = NEXT.fetch_add(1, Ordering::Relaxed);
            if i < SHARDS - 1 { (i, true) } else { (SHARDS - 1, false) }
        };
    }
    INDEX.with(|i| *i)
}

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        let (i, own) = shard();
        let s = &self.0[i].0;
        if own {
            // The only writer of this shard: readers see the old or the new total.
            s.store(s.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            s.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    Accepted,
    /// Refused on purpose, for a reason.
    Rejected(Reject),
    /// Malformed, timed out, or the peer went away.
    Failed,
}

/// The HTTP version a WebSocket handshake came over: the `http` label of
/// `switchboard_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpVersion {
    /// An HTTP/1.1 `Upgrade` (answered `101`).
    Http1,
    /// An HTTP/2 extended `CONNECT` (RFC 8441, answered `200`).
    Http2,
}

impl HttpVersion {
    const ALL: [Self; 2] = [Self::Http1, Self::Http2];

    /// The label value.
    fn label(self) -> &'static str {
        match self {
            Self::Http1 => "1.1",
            Self::Http2 => "2",
        }
    }
}

/// One HTTP version's handshake counters.
#[derive(Debug, Default)]
struct HandshakeCounters {
    accepted: Counter,
    /// By [`Reject`], in the order of [`Reject::ALL`].
    rejected: [Counter; Reject::ALL.len()],
    failed: Counter,
}

/// Why a WebSocket handshake was refused: the `reason` label of
/// `switchboard_handshakes_total{outcome="rejected"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// 404: no WebSocket endpoint at the path.
    NotFound,
    /// 403: the `Origin` is not allowed.
    Origin,
    /// 503: the server is at `--max-connections`.
    ConnectionLimit,
    /// 503: the client's address is at `--max-connections-per-ip`.
    PerIpLimit,
    /// 400: a valid handshake with parameters the endpoint refuses (chat room or name).
    BadRequest,
    /// 401: no token, or one that is not accepted, where tokens are required.
    Unauthorized,
    /// 403: the connection may not use what it asked for (a chat room its namespace's
    /// rules keep it out of).
    Forbidden,
    /// 429: the client's address is past `--max-new-connections-per-second-per-ip`.
    RateLimit,
}

impl Reject {
    const ALL: [Self; 8] = [
        Self::NotFound,
        Self::Origin,
        Self::ConnectionLimit,
        Self::PerIpLimit,
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RateLimit,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Origin => "origin",
            Self::ConnectionLimit => "connection_limit",
            Self::PerIpLimit => "per_ip_limit",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimit => "rate_limit",
        }
    }
}

/// The `method` label of `switchboard_http_requests_total`: a fixed set, other methods are
/// counted as `other`.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        _ => "other",
    }
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// WebSocket connections open now.
    pub connections_open: AtomicI64,
    /// TCP connections accepted.
    pub tcp_accepted: Counter,
    /// WebSocket handshakes by outcome, by [`HttpVersion`] (in the order of
    /// [`HttpVersion::ALL`]).
    handshakes: [HandshakeCounters; HttpVersion::ALL.len()],
    /// Plain HTTP requests answered, by method label and status (both from fixed sets:
    /// the statuses are the server's own).
    http_requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// WebSocket messages received.
    pub messages_in: Counter,
    /// WebSocket payload bytes received.
    pub bytes_in: Counter,
    /// WebSocket messages sent (each broadcast delivery counts once per receiver).
    pub messages_out: Counter,
    /// WebSocket payload bytes sent.
    pub bytes_out: Counter,
    /// Connections closed because their outbox overflowed.
    pub slow_consumer_disconnects: Counter,
    /// Connections closed because a ping went unanswered.
    pub ping_timeouts: Counter,
    /// Messages dropped and connections refused for a rate limit, by [`Limit`], in the
    /// order of [`Limit::ALL`].
    rate_limited: [Counter; Limit::ALL.len()],
    /// Connections closed (1008) because they went on past their rate limit.
    pub rate_limit_disconnects: Counter,
    /// Connections closed with "reconnect and recover" (publications lost on their way).
    pub recover_disconnects: Counter,
    /// Connections closed with 4011 because their token expired without a refresh.
    pub token_expired_disconnects: Counter,
    /// Tokens refreshed by connections (`refresh`).
    pub token_refreshes: Counter,
    /// Subscriptions with a position that recovered everything they missed.
    pub recovered: Counter,
    /// Subscriptions with a position that could not recover (the client reloads).
    pub not_recovered: Counter,
    /// Close codes sent or received, by code.
    close_codes: Mutex<BTreeMap<(u16, &'static str), u64>>,
}

impl Metrics {
    /// Counts how an HTTP/1.1 WebSocket handshake ended.
    pub(crate) fn handshake(&self, h: Handshake) {
        self.handshake_over(HttpVersion::Http1, h);
    }

    /// Counts how a WebSocket handshake over `http` ended.
    pub(crate) fn handshake_over(&self, http: HttpVersion, h: Handshake) {
        let c = &self.handshakes[http as usize];
        match h {
            Handshake::Accepted => c.accepted.add(1),
            Handshake::Rejected(why) => c.rejected[why as usize].add(1),
            Handshake::Failed => c.failed.add(1),
        }
    }

    /// Counts a message dropped or a connection refused for going over `limit`.
    pub(crate) fn rate_limited(&self, limit: Limit) {
        self.rate_limited[limit as usize].add(1);
    }

    /// Counts a plain HTTP request answered with `status`.
    pub(crate) fn http_request(&self, method: &str, status: u16) {
        let mut m = self.http_requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((method_label(method), status)).or_default() += 1;
    }

    /// Counts a close code; `side` is `"sent"` or `"received"`.
    pub(crate) fn close_code(&self, code: u16, side: &'static str) {
        let mut m = self.close_codes.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((code, side)).or_default() += 1;
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, hub: &Hub) -> String {
        let topics = hub.topic_count();
        let engine = hub.engine().metrics();
        let hub = hub.stats();
        let mut s = String::with_capacity(2048);
        let counters = [
            (
                "switchboard_tcp_connections_total",
                "TCP connections accepted.",
                self.tcp_accepted.get(),
            ),
            (
                "switchboard_messages_received_total",
                "WebSocket messages received.",
                self.messages_in.get(),
            ),
            (
                "switchboard_bytes_received_total",
                "WebSocket message payload bytes received.",
                self.bytes_in.get(),
            ),
            (
                "switchboard_messages_sent_total",
                "WebSocket messages sent.",
                self.messages_out.get(),
            ),
            (
                "switchboard_bytes_sent_total",
                "WebSocket message payload bytes sent (frames for broadcasts).",
                self.bytes_out.get(),
            ),
            (
                "switchboard_publications_total",
                "Publications delivered on this node.",
                hub.publications.load(Ordering::Relaxed),
            ),
            (
                "switchboard_broadcast_deliveries_total",
                "Broadcast frames handed to subscribers.",
                hub.deliveries.load(Ordering::Relaxed),
            ),
            (
                "switchboard_slow_consumer_drops_total",
                "Frames dropped for slow consumers (drop-oldest policy).",
                hub.dropped.load(Ordering::Relaxed),
            ),
            (
                "switchboard_slow_consumer_disconnects_total",
                "Connections closed because they could not keep up.",
                self.slow_consumer_disconnects.get(),
            ),
            (
                "switchboard_ping_timeouts_total",
                "Connections closed because a ping went unanswered.",
                self.ping_timeouts.get(),
            ),
            (
                "switchboard_rate_limit_disconnects_total",
                "Connections closed (1008) because they went on past their messages or bytes a second.",
                self.rate_limit_disconnects.get(),
            ),
            (
                "switchboard_stream_gaps_total",
                "Subscribers told to recover: a gap in offsets or a new epoch reached this node.",
                hub.lost.load(Ordering::Relaxed),
            ),
            (
                "switchboard_recover_disconnects_total",
                "Connections closed with 4010 (reconnect and recover).",
                self.recover_disconnects.get(),
            ),
            (
                "switchboard_token_expired_disconnects_total",
                "Connections closed with 4011: their token expired without a refresh.",
                self.token_expired_disconnects.get(),
            ),
            (
                "switchboard_token_refreshes_total",
                "Connection tokens refreshed (refresh requests accepted).",
                self.token_refreshes.get(),
            ),
            (
                "switchboard_recovered_total",
                "Subscriptions with a position that got everything they missed.",
                self.recovered.get(),
            ),
            (
                "switchboard_not_recovered_total",
                "Subscriptions with a position that could not recover (the client reloads).",
                self.not_recovered.get(),
            ),
        ];
        for (name, help, v) in counters {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        }
        let _ = write!(
            s,
            "# HELP switchboard_connections_open WebSocket connections open.\n\
             # TYPE switchboard_connections_open gauge\n\
             switchboard_connections_open {}\n\
             # HELP switchboard_topics Topics with subscribers on this node.\n\
             # TYPE switchboard_topics gauge\n\
             switchboard_topics {topics}\n",
            self.connections_open.load(Ordering::Relaxed).max(0)
        );
        for m in engine {
            let kind = if m.gauge { "gauge" } else { "counter" };
            let _ = write!(
                s,
                "# HELP {n} {h}\n# TYPE {n} {kind}\n{n} {v}\n",
                n = m.name,
                h = m.help,
                v = m.value
            );
        }
        self.render_handshakes(&mut s);
        self.render_rate_limited(&mut s);
        self.render_requests_and_close_codes(&mut s);
        let _ = write!(
            s,
            "# HELP switchboard_build_info The running version (always 1).\n\
             # TYPE switchboard_build_info gauge\n\
             switchboard_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        crate::process::render(&mut s);
        s
    }

    /// `switchboard_handshakes_total`, by outcome and reason, and HTTP version.
    fn render_handshakes(&self, s: &mut String) {
        s.push_str(
            "# HELP switchboard_handshakes_total WebSocket handshakes by outcome and HTTP version (1.1: Upgrade, 2: extended CONNECT).\n\
             # TYPE switchboard_handshakes_total counter\n",
        );
        for http in HttpVersion::ALL {
            let c = &self.handshakes[http as usize];
            let v = http.label();
            let _ = writeln!(
                s,
                "switchboard_handshakes_total{{outcome=\"accepted\",http=\"{v}\"}} {}",
                c.accepted.get()
            );
            for why in Reject::ALL {
                let _ = writeln!(
                    s,
                    "switchboard_handshakes_total{{outcome=\"rejected\",reason=\"{}\",http=\"{v}\"}} {}",
                    why.label(),
                    c.rejected[why as usize].get()
                );
            }
            let _ = writeln!(
                s,
                "switchboard_handshakes_total{{outcome=\"failed\",http=\"{v}\"}} {}",
                c.failed.get()
            );
        }
    }

    /// `switchboard_rate_limited_total`, by limit.
    fn render_rate_limited(&self, s: &mut String) {
        s.push_str(
            "# HELP switchboard_rate_limited_total Messages dropped and connections refused for going over a rate limit, by limit.\n\
             # TYPE switchboard_rate_limited_total counter\n",
        );
        for limit in Limit::ALL {
            let _ = writeln!(
                s,
                "switchboard_rate_limited_total{{limit=\"{}\"}} {}",
                limit.label(),
                self.rate_limited[limit as usize].get()
            );
        }
    }

    /// `switchboard_http_requests_total` and `switchboard_close_codes_total`.
    fn render_requests_and_close_codes(&self, s: &mut String) {
        s.push_str(
            "# HELP switchboard_http_requests_total Plain HTTP requests answered (pages, API, metrics), by method and status.\n\
             # TYPE switchboard_http_requests_total counter\n",
        );
        let requests = self.http_requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, status), n) in requests.iter() {
            let _ = writeln!(
                s,
                "switchboard_http_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        drop(requests);
        s.push_str(
            "# HELP switchboard_close_codes_total Close frames by code and direction.\n\
             # TYPE switchboard_close_codes_total counter\n",
        );
        let codes = self.close_codes.lock().unwrap_or_else(|p| p.into_inner());
        for ((code, side), n) in codes.iter() {
            let _ = writeln!(
                s,
                "switchboard_close_codes_total{{code=\"{code}\",direction=\"{side}\"}} {n}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_more_threads_than_shards_add_up() {
        // More threads than shards: the first own theirs, the rest share the last one.
        let c = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..SHARDS * 3)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.add(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("counting thread");
        }
        assert_eq!(c.get(), (SHARDS * 3 * 10_000) as u64);
    }
}
