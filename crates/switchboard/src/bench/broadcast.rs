//! `bench broadcast`: N subscribers on one topic of a Switchboard server's `/ws`, one
//! publisher at a set rate. Measures each delivery's latency, deliveries per second, and per
//! publish the time until the *last* subscriber has it (the fan-out time).
//!
//! Publications are binary `/ws` messages (docs/protocol.md): one byte N, the topic, then
//! the publish number and the send time (nanoseconds since the bench started, big endian)
//! and padding up to `--payload`. Deliveries carry the stream position after the topic (8
//! bytes of offset, one byte M, M bytes of epoch), which subscribers skip.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use switchboard_proto::Message;
use tokio::time::Instant;

use super::{
    ends, latency_line, new_histogram, on_threads, percentiles, since_start, Common, Progress,
    Report, Target, ThreadStats,
};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BroadcastArgs {
    /// A Switchboard server's pub/sub endpoint, for example ws://127.0.0.1:8080/ws.
    url: String,
    /// Subscribers.
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: usize,
    /// Publishes per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Stop after this many publishes instead of after --duration.
    #[arg(long)]
    count: Option<u64>,
    /// Bytes per published payload (at least 16).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// The topic.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// The server's process id: report its memory per subscribed connection (RSS growth
    /// while the subscribers connect, divided by their number; Linux).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Subscribers connecting at the same time.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Spread the subscribers over these endpoints in turn (other nodes of a cluster, say),
    /// publishing on URL; repeat it, or separate with commas [default: URL].
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    subscribe_url: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// Shared between the publisher and every subscriber.
struct Board {
    subscribed: AtomicUsize,
    published: AtomicU64,
    /// Per publish: the slowest delivery so far (µs) and how many subscribers have it.
    slowest: Vec<AtomicU64>,
    delivered: Vec<AtomicU32>,
}

/// Fewer subscribers than this make the memory per connection noise: RSS grows by pages and
/// allocator chunks, and a few hundred bytes per connection hide in that granularity.
const RSS_MIN_CONNECTIONS: usize = 1000;

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub(crate) fn run(a: BroadcastArgs) -> anyhow::Result<Report> {
    if a.payload < 16 {
        bail!("--payload must be at least 16 bytes (publish number and timestamp)");
    }
    if a.topic.len() > 128 {
        bail!("--topic is at most 128 bytes");
    }
    super::ensure_fd_limit(a.subscribers as u64 + 1)?;
    let target = Arc::new(Target::new(&a.url, a.subscribers + 1, &a.common)?);
    let per_node = a.subscribers.div_ceil(a.subscribe_url.len().max(1)) + 1;
    let sub_targets: Arc<[Arc<Target>]> = if a.subscribe_url.is_empty() {
        Arc::from([Arc::clone(&target)])
    } else {
        a.subscribe_url
            .iter()
            .map(|u| Target::new(u, per_node, &a.common).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into()
    };
    let max_publishes = a
        .count
        .unwrap_or((a.rate * a.common.duration.as_secs_f64()).ceil().max(1.0) as u64)
        .min(10_000_000) as usize;
    let board = Arc::new(Board {
        subscribed: AtomicUsize::new(0),
        published: AtomicU64::new(0),
        slowest: (0..max_publishes).map(|_| AtomicU64::new(0)).collect(),
        delivered: (0..max_publishes).map(|_| AtomicU32::new(0)).collect(),
    });
    let rss_before = a.server_pid.and_then(rss_kib);
    let progress = Arc::new(Progress::default());
    let printer = progress.spawn_printer(a.common.quiet, "delivered");
    let rss_after = Arc::new(AtomicU64::new(0));
    let started = since_start();
    let results = run_threads(&a, target, sub_targets, &board, &progress, &rss_after)?;
    let elapsed = (since_start() - started).as_secs_f64();
    let stats = super::collect(&progress, printer, results);
    let rss = (rss_before, rss_after.load(Ordering::Relaxed));
    let m = Measured::new(&a, &board, &progress, elapsed, rss);
    Ok(Report {
        summary: summary(&a, &m, &stats),
        json: json_report(&a, &m, &stats),
        print_json: a.common.json,
        failed: m.errors > 0 || m.deliveries != m.expected,
    })
}

/// Runs the subscribers, spread over `--threads` threads, and the publisher on the first.
fn run_threads(
    a: &BroadcastArgs,
    target: Arc<Target>,
    sub_targets: Arc<[Arc<Target>]>,
    board: &Arc<Board>,
    progress: &Arc<Progress>,
    rss_after: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<ThreadStats>> {
    let threads = a.common.threads.max(1);
    let args = Arc::new(a.clone());
    let (b, p, r) = (
        Arc::clone(board),
        Arc::clone(progress),
        Arc::clone(rss_after),
    );
    on_threads(threads, move |t| {
        let (target, sub_targets, args, board, p, rss_after) = (
            Arc::clone(&target),
            Arc::clone(&sub_targets),
            Arc::clone(&args),
            Arc::clone(&b),
            Arc::clone(&p),
            Arc::clone(&r),
        );
        async move {
            let cpu0 = super::thread_cpu_ns();
            let stats = Rc::new(RefCell::new(ThreadStats::default()));
            let gate = Rc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
            let mut tasks = Vec::new();
            for i in (0..args.subscribers).filter(|i| i % threads == t) {
                tasks.push(tokio::task::spawn_local(subscriber(
                    i,
                    Arc::clone(&sub_targets[i % sub_targets.len()]),
                    Arc::clone(&args),
                    Arc::clone(&board),
                    Arc::clone(&p),
                    Rc::clone(&stats),
                    Rc::clone(&gate),
                )));
            }
            if t == 0 {
                publisher(&target, &args, &board, &p, &rss_after, &stats).await;
            }
            super::join_tasks(tasks, stats, cpu0).await
        }
    })
}

/// The run's numbers, from the board and the progress counters.
struct Measured {
    elapsed: f64,
    publishes: u64,
    deliveries: u64,
    errors: u64,
    expected: u64,
    /// Per complete publish, the time until its last subscriber had it.
    fanout: Histogram<u64>,
    complete: u64,
    per_sec: f64,
    rss_per_conn: Option<f64>,
    /// Too few subscribers for the memory per connection to mean anything.
    rss_noise: bool,
}

impl Measured {
    /// `rss`: the server's RSS in KiB before and after the subscribers connected.
    fn new(
        a: &BroadcastArgs,
        board: &Board,
        progress: &Progress,
        elapsed: f64,
        rss: (Option<u64>, u64),
    ) -> Self {
        let publishes = board.published.load(Ordering::Relaxed);
        let (_, deliveries, errors) = progress.totals();
        let mut fanout = new_histogram();
        let mut complete = 0u64;
        for i in 0..publishes as usize {
            if board.delivered[i].load(Ordering::Relaxed) as usize == a.subscribers {
                complete += 1;
                fanout.saturating_record(board.slowest[i].load(Ordering::Relaxed).max(1));
            }
        }
        let publish_secs = publishes as f64 / a.rate.max(1e-9);
        let rss_per_conn = match rss {
            (Some(b), after) if after > b => {
                Some(((after - b) * 1024) as f64 / a.subscribers as f64)
            }
            _ => None,
        };
        Measured {
            elapsed,
            publishes,
            deliveries,
            errors,
            expected: publishes * a.subscribers as u64,
            fanout,
            complete,
            per_sec: deliveries as f64 / publish_secs.max(1e-9),
            rss_per_conn,
            rss_noise: a.subscribers < RSS_MIN_CONNECTIONS,
        }
    }
}

/// The human summary.
fn summary(a: &BroadcastArgs, m: &Measured, stats: &ThreadStats) -> Vec<String> {
    let &Measured {
        elapsed,
        deliveries,
        expected,
        errors,
        per_sec,
        complete,
        ..
    } = m;
    let (end_lines, _, _) = ends(stats);
    let mut summary = vec![
        format!(
            "broadcast {}: {} subscribers on {:?}, {} publishes at {}/s of {} B, {elapsed:.1} s",
            a.url, a.subscribers, a.topic, m.publishes, a.rate, a.payload
        ),
        format!("deliveries {deliveries} of {expected} expected, errors {errors}"),
        format!("throughput {per_sec:.0} deliveries/s over the publishing time"),
        latency_line("delivery", &stats.latency),
        latency_line("fan-out", &m.fanout),
        format!("           (fan-out: per publish, until the last of the {} subscribers had it; {complete} complete publishes)", a.subscribers),
    ];
    let rss_noise = m.rss_noise;
    match m.rss_per_conn {
        Some(b) if !rss_noise => {
            summary.push(format!("server RSS {b:.0} B per subscribed connection"));
        }
        _ if a.server_pid.is_some() && rss_noise => summary.push(format!(
            "server RSS {} per subscribed connection: noise with {} connections (memory grows \
             in pages and allocator chunks); measure with {RSS_MIN_CONNECTIONS} or more",
            m.rss_per_conn
                .map_or("not measurable".into(), |b| format!("{b:.0} B")),
            a.subscribers
        )),
        _ => {}
    }
    summary.extend(end_lines);
    summary
}

/// The JSON object (`--json`).
fn json_report(a: &BroadcastArgs, m: &Measured, stats: &ThreadStats) -> Value {
    let (_, codes, errs) = ends(stats);
    json!({
        "scenario": "broadcast",
        "url": a.url,
        "subscribers": a.subscribers,
        "rate": a.rate,
        "payload": a.payload,
        "duration_s": m.elapsed,
        "sent": m.publishes,
        "publishes": m.publishes,
        "received": m.deliveries,
        "deliveries": m.deliveries,
        "expected_deliveries": m.expected,
        "errors": m.errors,
        "msgs_per_sec": m.per_sec,
        "deliveries_per_sec": m.per_sec,
        "latency_us": percentiles(&stats.latency),
        "fanout_us": percentiles(&m.fanout),
        "complete_publishes": m.complete,
        "server_rss_bytes_per_connection": m.rss_per_conn,
        "server_rss_is_noise": a.server_pid.is_some() && m.rss_noise,
        "close_codes": codes,
        "error_kinds": errs,
    })
}

fn topic_header(topic: &str) -> Vec<u8> {
    let mut v = vec![topic.len() as u8];
    v.extend_from_slice(topic.as_bytes());
    v
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    i: usize,
    target: Arc<Target>,
    args: Arc<BroadcastArgs>,
    board: Arc<Board>,
    p: Arc<Progress>,
    stats: Rc<RefCell<ThreadStats>>,
    gate: Rc<tokio::sync::Semaphore>,
) {
    let permit = gate.acquire().await;
    let Some(mut ws) = target.connect_or_count(i, &stats, &p).await else {
        return;
    };
    let sub = json!({"type":"subscribe","topic":args.topic,"id":i}).to_string();
    if let Err(e) = ws.send(&Message::text(sub)).await {
        return stats.borrow_mut().error(&p, super::error_kind(&e));
    }
    // Wait for the ack: only then is the subscription in place.
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.recv()).await {
            Ok(Ok(Some(Message::Text(t)))) if t.as_str().contains("\"ack\"") => break,
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => {
                stats.borrow_mut().ended(&ws);
                return stats
                    .borrow_mut()
                    .error(&p, "closed before the subscription was acknowledged");
            }
            Ok(Err(e)) => return stats.borrow_mut().error(&p, super::error_kind(&e)),
            Err(_) => return stats.borrow_mut().error(&p, "no subscribe ack within 30 s"),
        }
    }
    drop(permit);
    p.connected.fetch_add(1, Ordering::Relaxed);
    board.subscribed.fetch_add(1, Ordering::Release);
    // The delivery layout: [N][topic][offset: 8][M][epoch: M][payload].
    let epoch_len_at = 1 + args.topic.len() + 8;
    let payload_at = |b: &[u8]| {
        b.get(epoch_len_at)
            .map_or(usize::MAX, |m| epoch_len_at + 1 + usize::from(*m))
    };
    let mut got = 0u64;
    loop {
        if DONE.load(Ordering::Acquire) && board.published.load(Ordering::Acquire) == got {
            break;
        }
        let r = tokio::time::timeout(Duration::from_secs(5), ws.recv()).await;
        match r {
            Err(_) if DONE.load(Ordering::Acquire) => {
                // Quiet for 5 s after the last publish: what is missing is lost.
                break;
            }
            Err(_) => continue,
            Ok(Ok(Some(Message::Binary(b)))) if b.len() >= payload_at(&b).saturating_add(16) => {
                let skip = payload_at(&b);
                let n =
                    u64::from_be_bytes(b[skip..skip + 8].try_into().unwrap_or_default()) as usize;
                let sent =
                    u64::from_be_bytes(b[skip + 8..skip + 16].try_into().unwrap_or_default());
                let now = since_start().as_nanos() as u64;
                let us = now.saturating_sub(sent) / 1000;
                stats.borrow_mut().record_us(us);
                if let (Some(s), Some(d)) = (board.slowest.get(n), board.delivered.get(n)) {
                    s.fetch_max(us, Ordering::Relaxed);
                    d.fetch_add(1, Ordering::Relaxed);
                }
                p.received.fetch_add(1, Ordering::Relaxed);
                got += 1;
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                stats.borrow_mut().ended(&ws);
                return stats.borrow_mut().error(&p, "closed by the server");
            }
            Ok(Err(e)) => {
                stats.borrow_mut().ended(&ws);
                return stats.borrow_mut().error(&p, super::error_kind(&e));
            }
        }
    }
    super::close_done(&mut ws).await;
}

/// Set once the publisher has sent its last publish.
static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

async fn publisher(
    target: &Target,
    args: &BroadcastArgs,
    board: &Board,
    p: &Progress,
    rss_after: &AtomicU64,
    stats: &Rc<RefCell<ThreadStats>>,
) {
    // Everyone subscribed first (or gave up).
    let waiting = Instant::now();
    while board.subscribed.load(Ordering::Acquire) + (p.errors.load(Ordering::Relaxed) as usize)
        < args.subscribers
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if waiting.elapsed() > Duration::from_secs(300) {
            stats
                .borrow_mut()
                .error(p, "subscribers did not connect within 300 s");
            break;
        }
    }
    if let Some(pid) = args.server_pid {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_after.store(rss_kib(pid).unwrap_or(0), Ordering::Relaxed);
    }
    let mut ws = match target.connect(usize::MAX / 2).await {
        Ok(ws) => ws,
        Err(e) => {
            DONE.store(true, Ordering::Release);
            return stats
                .borrow_mut()
                .error(p, format!("publisher connect: {}", super::error_kind(&e)));
        }
    };
    let head = topic_header(&args.topic);
    let total = board.slowest.len();
    let every = Duration::from_secs_f64(1.0 / args.rate.max(1e-9));
    let start = Instant::now();
    for n in 0..total {
        tokio::time::sleep_until(start + every.mul_f64(n as f64)).await;
        let mut b = Vec::with_capacity(head.len() + args.payload);
        b.extend_from_slice(&head);
        b.extend_from_slice(&(n as u64).to_be_bytes());
        b.extend_from_slice(&(since_start().as_nanos() as u64).to_be_bytes());
        b.resize(head.len() + args.payload, b'.');
        if let Err(e) = ws.send(&Message::binary(b)).await {
            stats
                .borrow_mut()
                .error(p, format!("publish: {}", super::error_kind(&e)));
            break;
        }
        board.published.fetch_add(1, Ordering::Release);
        p.sent.fetch_add(1, Ordering::Relaxed);
    }
    DONE.store(true, Ordering::Release);
    super::close_done(&mut ws).await;
}
