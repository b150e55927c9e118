//! `bench echo`: N connections against an echo server, closed loop (K in flight each) or
//! open loop (`--rate` messages per second in total, latency from the scheduled send time).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchboard_proto::Message;
use switchboard_tokio::{MaybeTlsStream, WebSocket};
use tokio::time::Instant;

use super::{
    ends, latency_line, on_threads, percentiles, Common, Progress, Report, RunInfo, Target,
    ThreadStats,
};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EchoArgs {
    /// The echo endpoint, ws:// or wss://.
    url: String,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 100)]
    connections: usize,
    /// Messages in flight per connection (closed loop).
    #[arg(long, short = 'k', default_value_t = 1)]
    inflight: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 20)]
    payload: usize,
    /// Open loop: messages per second over all connections, on a fixed schedule.
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many messages in total instead of after --duration.
    #[arg(long)]
    count: Option<u64>,
    /// Binary messages instead of text.
    #[arg(long)]
    binary: bool,
    #[command(flatten)]
    common: Common,
}

/// How often a waiting connection checks whether the run was stopped.
const CHECK: Duration = Duration::from_millis(200);

/// How long to wait for the replies still in flight when the run ends.
const DRAIN: Duration = Duration::from_secs(2);

pub(crate) fn run(a: EchoArgs) -> anyhow::Result<Report> {
    super::ensure_fd_limit(a.connections as u64)?;
    let target = Arc::new(Target::new(&a.url, a.connections, &a.common)?);
    let progress = Arc::new(Progress::default());
    let printer = progress.spawn_printer(a.common.quiet, "received");
    let msg = if a.binary {
        Message::binary(vec![0xa5u8; a.payload])
    } else {
        Message::text("x".repeat(a.payload))
    };
    let started = std::time::Instant::now();
    let results = run_threads(&a, target, &progress, msg)?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = super::collect(&progress, printer, results);
    Ok(report(&a, elapsed, &progress, &stats))
}

/// Runs the connections, spread over `--threads` threads; `--count` split among them.
fn run_threads(
    a: &EchoArgs,
    target: Arc<Target>,
    progress: &Arc<Progress>,
    msg: Message,
) -> anyhow::Result<Vec<ThreadStats>> {
    let threads = a.common.threads.max(1);
    let duration = a.common.duration;
    let args = Arc::new(a.clone());
    let p = Arc::clone(progress);
    on_threads(threads, move |t| {
        let (target, args, p, msg) = (
            Arc::clone(&target),
            Arc::clone(&args),
            Arc::clone(&p),
            msg.clone(),
        );
        async move {
            let cpu0 = super::thread_cpu_ns();
            let stats = Rc::new(RefCell::new(ThreadStats::default()));
            let end = Instant::now() + duration;
            let mine: Vec<usize> = (0..args.connections).filter(|i| i % threads == t).collect();
            let mut tasks = Vec::new();
            for i in mine {
                let quota = args.count.map(|n| {
                    let c = args.connections as u64;
                    n / c + u64::from((i as u64) < n % c)
                });
                tasks.push(tokio::task::spawn_local(conn(
                    i,
                    Arc::clone(&target),
                    Arc::clone(&args),
                    Arc::clone(&p),
                    Rc::clone(&stats),
                    msg.clone(),
                    end,
                    quota,
                )));
            }
            super::join_tasks(tasks, stats, cpu0).await
        }
    })
}

/// The summary and JSON of a finished run (or why most of it failed).
fn report(a: &EchoArgs, elapsed: f64, progress: &Progress, stats: &ThreadStats) -> Report {
    let threads = a.common.threads.max(1);
    let (sent, received, errors) = progress.totals();
    let rate = received as f64 / elapsed;
    let mb = rate * a.payload as f64 / 1e6;
    let mode = match a.rate {
        Some(r) => format!("open loop at {r} msg/s"),
        None => format!("closed loop, {} in flight per connection", a.inflight),
    };
    let head = format!(
        "echo {}: {} connections, {} B payload, {mode}, {elapsed:.1} s",
        a.url, a.connections, a.payload
    );
    let run = RunInfo {
        scenario: "echo",
        url: &a.url,
        connections: a.connections,
        elapsed,
        print_json: a.common.json,
    };
    if super::mostly_failed(sent, received, errors) {
        let mut hints = Vec::new();
        if stats.errors.keys().any(|e| e.contains("wrong length")) {
            hints.push(format!(
                "hint        the replies are not echoes of the messages sent: is {} an echo \
                 endpoint? (a Switchboard server's is /echo)",
                a.url
            ));
        }
        let what = "messages sent";
        return run.failed_report(head, what, progress, stats, &[], hints);
    }
    let mut summary = vec![
        head,
        format!("messages   sent {sent}, received {received}, errors {errors}"),
        format!("throughput {rate:.0} msg/s, {mb:.2} MB/s (payload, one direction)"),
        latency_line("latency", &stats.latency),
    ];
    let cpu_s = stats.cpu_ns as f64 / 1e9;
    let per_core = if cpu_s > 0.0 {
        received as f64 / cpu_s
    } else {
        0.0
    };
    if cpu_s > 0.0 {
        summary.push(format!(
            "load gen   {cpu_s:.2} s CPU on {threads} thread(s): {:.2} µs per echo, {per_core:.0} echoes/s per core at full load",
            cpu_s * 1e6 / received.max(1) as f64
        ));
    }
    summary.extend(ends(stats).0);
    let json = run.json(
        progress,
        stats,
        json!({
            "inflight": a.inflight,
            "rate": a.rate,
            "payload": a.payload,
            "msgs_per_sec": rate,
            "mb_per_sec": mb,
            "latency_us": percentiles(&stats.latency),
            "load_cpu_s": cpu_s,
            "load_msgs_per_core_sec": per_core,
        }),
    );
    Report {
        summary,
        json,
        print_json: a.common.json,
        failed: errors > 0 || sent != received,
    }
}

/// One connection: sends and times echoes until the run ends, its quota is used up, or the
/// run is stopped; then closes.
#[allow(clippy::too_many_arguments)]
async fn conn(
    i: usize,
    target: Arc<Target>,
    args: Arc<EchoArgs>,
    p: Arc<Progress>,
    stats: Rc<RefCell<ThreadStats>>,
    msg: Message,
    end: Instant,
    quota: Option<u64>,
) {
    let Some(ws) = target.connect_or_count(i, &stats, &p).await else {
        return;
    };
    p.connected.fetch_add(1, Ordering::Relaxed);
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r.max(1e-9)));
    let next_due =
        Instant::now() + interval.map_or(Duration::ZERO, |iv| iv.mul_f64((i % 997) as f64 / 997.0));
    let mut c = Echoer {
        ws,
        len: msg.payload().len(),
        msg,
        p,
        stats,
        left: quota.unwrap_or(u64::MAX),
        times: VecDeque::new(),
        interval,
        next_due,
        stopping: false,
    };
    if interval.is_none() {
        for _ in 0..args.inflight.max(1) {
            if c.left == 0 {
                break;
            }
            if let Err(e) = c.send_one(Instant::now()) {
                return c.error(&e);
            }
        }
    }
    if let Step::Close = c.run(end).await {
        super::close_done(&mut c.ws).await;
    }
}

/// What an echo connection does next.
enum Step {
    Go,
    /// Done: close the connection.
    Close,
    /// The connection is gone (or failed): leave it.
    Gone,
}

/// One echo connection and its messages in flight.
struct Echoer {
    ws: WebSocket<MaybeTlsStream>,
    msg: Message,
    /// The payload length an echo must have.
    len: usize,
    p: Arc<Progress>,
    stats: Rc<RefCell<ThreadStats>>,
    /// Messages still to send (`--count`).
    left: u64,
    /// Send times (closed loop) or scheduled times (open loop), oldest first: echoes come
    /// back in order.
    times: VecDeque<Instant>,
    /// Open loop: the time between two sends of this connection.
    interval: Option<Duration>,
    next_due: Instant,
    /// The run's time is up: no more sends, waiting for the echoes in flight.
    stopping: bool,
}

impl Echoer {
    /// Runs until the connection is done; `end`: when the run's time is up.
    async fn run(&mut self, end: Instant) -> Step {
        let deadline = tokio::time::sleep_until(end);
        tokio::pin!(deadline);
        // Every 200 ms: has the run been stopped because most messages fail?
        let check = tokio::time::sleep(CHECK);
        tokio::pin!(check);
        loop {
            if self.left == 0 && self.times.is_empty() {
                return Step::Close;
            }
            if self.p.stopped() {
                return Step::Close;
            }
            if self.stopping && self.times.is_empty() {
                return Step::Close;
            }
            let due = tokio::time::sleep_until(self.next_due);
            let step = tokio::select! {
                biased;
                r = self.ws.recv() => self.on_reply(r),
                () = due, if self.interval.is_some() && !self.stopping && self.left > 0 => {
                    self.send_due().await
                }
                () = &mut check => {
                    check.as_mut().reset(Instant::now() + CHECK);
                    Step::Go
                }
                () = &mut deadline => {
                    if self.stopping {
                        self.stats.borrow_mut().error(&self.p, "no echo within 2 s of the end");
                        Step::Close
                    } else {
                        self.stopping = true;
                        deadline.as_mut().reset(Instant::now() + DRAIN);
                        Step::Go
                    }
                }
            };
            if !matches!(step, Step::Go) {
                return step;
            }
        }
    }

    /// Queues the message, timed from `at`.
    fn send_one(&mut self, at: Instant) -> Result<(), switchboard_tokio::Error> {
        self.left -= 1;
        self.times.push_back(at);
        self.p.sent.fetch_add(1, Ordering::Relaxed);
        self.ws.feed(&self.msg)
    }

    /// Counts a failure of this connection.
    fn error(&self, e: &switchboard_tokio::Error) {
        self.stats.borrow_mut().error(&self.p, super::error_kind(e));
    }

    /// An echo (timed; in the closed loop, the next message goes), or the connection's end.
    fn on_reply(&mut self, r: Result<Option<Message>, switchboard_tokio::Error>) -> Step {
        match r {
            Ok(Some(m)) => {
                let Some(t0) = self.times.pop_front() else {
                    self.stats.borrow_mut().error(&self.p, "unexpected message");
                    return Step::Go;
                };
                if m.payload().len() != self.len {
                    self.stats
                        .borrow_mut()
                        .error(&self.p, "echo of the wrong length");
                }
                self.stats
                    .borrow_mut()
                    .record_us(t0.elapsed().as_micros() as u64);
                self.p.received.fetch_add(1, Ordering::Relaxed);
                if self.interval.is_none() && !self.stopping && self.left > 0 {
                    if let Err(e) = self.send_one(Instant::now()) {
                        self.error(&e);
                        return Step::Close;
                    }
                }
                Step::Go
            }
            Ok(None) => {
                self.stats.borrow_mut().ended(&self.ws);
                if !self.times.is_empty() {
                    self.stats
                        .borrow_mut()
                        .error(&self.p, "closed by the server with messages in flight");
                }
                Step::Gone
            }
            Err(e) => {
                self.stats.borrow_mut().ended(&self.ws);
                self.error(&e);
                Step::Gone
            }
        }
    }

    /// Open loop: everything that is due goes now, each with its scheduled time.
    async fn send_due(&mut self) -> Step {
        let iv = self.interval.unwrap_or_default();
        let now = Instant::now();
        while self.next_due <= now && self.left > 0 {
            if let Err(e) = self.send_one(self.next_due) {
                self.error(&e);
                return Step::Gone;
            }
            self.next_due += iv;
        }
        if let Err(e) = self.ws.flush().await {
            self.error(&e);
            return Step::Gone;
        }
        Step::Go
    }
}
