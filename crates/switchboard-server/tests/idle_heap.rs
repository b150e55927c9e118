//! The heap an idle `/echo` connection holds, counted with a global allocator: the task
//! cell tokio allocates for it, tokio's I/O registration, and nothing else of any size (no
//! buffer, no span, no boxed state). benchmarks/README.md measures the same thing as RSS.
//!
//! The clients are plain blocking sockets on the test thread: they allocate nothing, so every
//! allocation counted is the server's.
use std::fmt::Write as _;
use std::time::Duration;

use switchboard_testkit::alloc::{self, CountingAllocator};
use switchboard_testkit::server::blocking_upgrade;

#[global_allocator]
static A: CountingAllocator = CountingAllocator;

/// Live allocations by size (up to [`alloc::SMALL_SIZES`] bytes), and the bytes of larger
/// ones (vectors that grow with the connection count).
fn snapshot() -> (Vec<isize>, isize) {
    let l = alloc::live_by_size();
    (l.counts, l.large_bytes)
}

/// Waits until the live heap stops changing (the server tasks have settled after their
/// handshakes); returns the snapshot.
fn settled() -> (Vec<isize>, isize) {
    let mut last = snapshot();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let now = snapshot();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the server's heap never settled");
}

struct Held {
    /// Bytes in allocations of at most [`alloc::SMALL_SIZES`] bytes, per connection.
    small: f64,
    /// Bytes in larger allocations, per connection.
    large: f64,
    /// The small allocations, by size, for the failure message.
    breakdown: String,
}

impl Held {
    /// At most `small_max` bytes in small allocations per connection. Tables that grow with
    /// the connection count (the registry's slots, tokio's task lists, the ring's slot
    /// chunks) add to that, amortized; the whole must stay under the 1 KB budget.
    fn check(&self, small_max: f64) {
        assert!(
            self.small <= small_max,
            "an idle connection holds {:.0} B in small allocations:{}",
            self.small,
            self.breakdown
        );
        assert!(
            self.small + self.large <= 1024.0,
            "an idle connection holds {:.0} B ({:.0} B in large allocations)",
            self.small + self.large,
            self.large
        );
    }
}

impl Held {
    /// At most `max` bytes per connection in all.
    fn check_total(&self, max: f64) {
        assert!(
            self.small + self.large <= max,
            "an idle connection holds {:.0} B ({:.0} B in large allocations):{}",
            self.small + self.large,
            self.large,
            self.breakdown
        );
    }
}

/// One measurement at a time: the counters are global to the test binary.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Opens `n` idle echo connections to a one-worker server and reports the heap they hold.
fn held_per_connection(n: usize, io_uring: bool) -> Held {
    held_per(n, io_uring, |addr, _| blocking_upgrade(addr, "/echo"))
}

/// Opens `n` connections with `open` (given the server's address and the connection's
/// number) to a one-worker server and reports the heap they hold once idle.
fn held_per(
    n: usize,
    io_uring: bool,
    open: impl Fn(std::net::SocketAddr, usize) -> std::net::TcpStream,
) -> Held {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(1).enable_all();
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    if io_uring {
        rt.on_thread_park(switchboard_tokio::uring::before_park);
    }
    let rt = rt.build().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = switchboard_server::ServerConfig::default().io_uring(io_uring);
    config.limits.max_connections_per_ip = 10 * n as u32;
    rt.spawn(switchboard_server::run(
        listener,
        config,
        std::future::pending(),
    ));
    // Warm up: the first connections grow per-thread pools and tables once.
    let warm: Vec<_> = (0..64).map(|i| open(addr, n + i)).collect();
    let (small0, large0) = settled();
    let conns: Vec<_> = (0..n).map(|i| open(addr, i)).collect();
    let (small1, large1) = settled();
    let mut bytes = 0;
    let mut breakdown = String::new();
    for (size, (a, b)) in small0.iter().zip(&small1).enumerate() {
        let d = b - a;
        bytes += d * size as isize;
        if d != 0 && d.unsigned_abs() * 20 >= n {
            let _ = write!(breakdown, " {size} B x {:.2};", d as f64 / n as f64);
        }
    }
    drop((conns, warm));
    rt.shutdown_timeout(Duration::from_secs(1));
    eprintln!(
        "{n} idle connections (io_uring: {io_uring}):{breakdown} {:.0} B per connection in larger allocations",
        (large1 - large0) as f64 / n as f64
    );
    Held {
        small: bytes as f64 / n as f64,
        large: (large1 - large0) as f64 / n as f64,
        breakdown,
    }
}

/// Epoll (the default): tokio's 256-byte task cell and its 256-byte I/O registration
/// (`ScheduledIo`, 128-byte aligned), 512 bytes in all. A bigger connection future makes the
/// cell 384 bytes (640 in all); anything the connection kept while idle (a buffer, its span,
/// boxed close or trace state) shows here too.
#[test]
fn an_idle_echo_connection_holds_its_task_and_its_registration() {
    held_per_connection(1000, false).check(560.0);
}

/// io_uring: no tokio registration; the socket's slot lives in the ring's slot chunks (large
/// allocations), so the task cell is the only small allocation.
#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[test]
fn an_idle_io_uring_echo_connection_holds_its_task() {
    if let Err(e) = switchboard_tokio::uring::available() {
        eprintln!("skipped: io_uring is not available here ({e})");
        return;
    }
    held_per_connection(1000, true).check(300.0);
}

/// Sends `{"type":"subscribe","topic":"<topic>"}` as one masked frame from a stack buffer
/// (the key is zero: masking leaves the payload as it is).
fn subscribe(s: &mut std::net::TcpStream, topic: &str) {
    use std::io::Write;
    let parts: [&[u8]; 3] = [
        br#"{"type":"subscribe","topic":""#,
        topic.as_bytes(),
        br#""}"#,
    ];
    let len: usize = parts.iter().map(|p| p.len()).sum();
    assert!(len < 126);
    let mut frame = [0u8; 132];
    frame[..6].copy_from_slice(&[0x81, 0x80 | len as u8, 0, 0, 0, 0]);
    let mut at = 6;
    for p in parts {
        frame[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    s.write_all(&frame[..at]).unwrap();
}

/// A topic name for connection `i` (`t` and its number), in `buf`.
fn topic_of(buf: &mut [u8; 24], i: usize) -> &str {
    let mut w = &mut buf[..];
    let _ = std::io::Write::write_fmt(&mut w, format_args!("t{i}"));
    let left = w.len();
    let n = buf.len() - left;
    std::str::from_utf8(&buf[..n]).unwrap()
}

/// `/ws` connections subscribed to one topic each, idle (epoll): the task and registration
/// (512 B), the session (744 B), its outbox, the hub's topic and subscriber, the engine's
/// stream (epoch, history) and the connection's presence in it (its client id, 32 B, and one
/// entry, 64 B with the token's info): about 2,300 B (2,885 B before presence moved to the engine, which took the
/// member out of the hub's subscriber, and the session stopped keeping a second copy of its
/// app and socket; 2,628 B while the hub kept a topic's subscribers in a B-tree, whose first
/// leaf holds eleven).
#[test]
fn an_idle_ws_connection_with_its_own_topic() {
    let held = held_per(1000, false, |addr, i| {
        let mut s = blocking_upgrade(addr, "/ws");
        let mut buf = [0u8; 24];
        subscribe(&mut s, topic_of(&mut buf, i));
        s
    });
    held.check_total(2600.0);
}

/// `/ws` connections subscribed to the same topic, idle: the topic and its stream are
/// shared; each adds its subscriber and its presence entry (past 32 present, in a set: about
/// 130 B each with the set's spare room, since entries carry a token's info): about 1,860 B
/// (1,853 B before the session shed its copies of the hub and the limits, 1,770 B before
/// entries had info and sessions a rate limiter and a token's expiry).
#[test]
fn an_idle_ws_connection_on_a_shared_topic() {
    let held = held_per(1000, false, |addr, _| {
        let mut s = blocking_upgrade(addr, "/ws");
        subscribe(&mut s, "shared");
        s
    });
    held.check_total(1900.0);
}
