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
    let threads = a.common.threads.max(1);
    let started = std::time::Instant::now();
    let duration = a.common.duration;
    let args = Arc::new(a.clone());
    let p = Arc::clone(&progress);
    let results = on_threads(threads, move |t| {
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
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = super::collect(&progress, printer, results);
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
        return Ok(run.failed_report(head, what, &progress, &stats, &[], hints));
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
    summary.extend(ends(&stats).0);
    let json = run.json(
        &progress,
        &stats,
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
    Ok(Report {
        summary,
        json,
        print_json: a.common.json,
        failed: errors > 0 || sent != received,
    })
}

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
    let Some(mut ws) = target.connect_or_count(i, &stats, &p).await else {
        return;
    };
    p.connected.fetch_add(1, Ordering::Relaxed);
    let mut left = quota.unwrap_or(u64::MAX);
    // Send times (closed loop) or scheduled times (open loop), oldest first: echoes come
    // back in order.
    let mut times: VecDeque<Instant> = VecDeque::new();
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r.max(1e-9)));
    let mut next_due =
        Instant::now() + interval.map_or(Duration::ZERO, |iv| iv.mul_f64((i % 997) as f64 / 997.0));
    let len = msg.payload().len();
    let send_one = |ws: &mut switchboard_tokio::WebSocket<_>,
                    at: Instant,
                    times: &mut VecDeque<Instant>,
                    left: &mut u64| {
        *left -= 1;
        times.push_back(at);
        p.sent.fetch_add(1, Ordering::Relaxed);
        ws.feed(&msg)
    };
    if interval.is_none() {
        for _ in 0..args.inflight.max(1) {
            if left == 0 {
                break;
            }
            if let Err(e) = send_one(&mut ws, Instant::now(), &mut times, &mut left) {
                return stats.borrow_mut().error(&p, super::error_kind(&e));
            }
        }
    }
    let deadline = tokio::time::sleep_until(end);
    tokio::pin!(deadline);
    let mut stopping = false;
    // Every 200 ms: has the run been stopped because most messages fail?
    let check = tokio::time::sleep(CHECK);
    tokio::pin!(check);
    loop {
        if left == 0 && times.is_empty() {
            break;
        }
        if p.stopped() {
            break;
        }
        if stopping && times.is_empty() {
            break;
        }
        let due = tokio::time::sleep_until(next_due);
        tokio::select! {
            biased;
            r = ws.recv() => match r {
                Ok(Some(m)) => {
                    let Some(t0) = times.pop_front() else {
                        stats.borrow_mut().error(&p, "unexpected message");
                        continue;
                    };
                    if m.payload().len() != len {
                        stats.borrow_mut().error(&p, "echo of the wrong length");
                    }
                    stats.borrow_mut().record_us(t0.elapsed().as_micros() as u64);
                    p.received.fetch_add(1, Ordering::Relaxed);
                    if interval.is_none() && !stopping && left > 0 {
                        if let Err(e) = send_one(&mut ws, Instant::now(), &mut times, &mut left) {
                            stats.borrow_mut().error(&p, super::error_kind(&e));
                            break;
                        }
                    }
                }
                Ok(None) => {
                    stats.borrow_mut().ended(&ws);
                    if !times.is_empty() {
                        stats.borrow_mut().error(&p, "closed by the server with messages in flight");
                    }
                    return;
                }
                Err(e) => {
                    stats.borrow_mut().ended(&ws);
                    return stats.borrow_mut().error(&p, super::error_kind(&e));
                }
            },
            () = due, if interval.is_some() && !stopping && left > 0 => {
                let iv = interval.unwrap_or_default();
                // Everything that is due goes now, each with its scheduled time.
                let now = Instant::now();
                while next_due <= now && left > 0 {
                    if let Err(e) = send_one(&mut ws, next_due, &mut times, &mut left) {
                        return stats.borrow_mut().error(&p, super::error_kind(&e));
                    }
                    next_due += iv;
                }
                if let Err(e) = ws.flush().await {
                    return stats.borrow_mut().error(&p, super::error_kind(&e));
                }
            }
            () = &mut check => {
                check.as_mut().reset(Instant::now() + CHECK);
            }
            () = &mut deadline => {
                if stopping {
                    stats.borrow_mut().error(&p, "no echo within 2 s of the end");
                    break;
                }
                stopping = true;
                deadline.as_mut().reset(Instant::now() + DRAIN);
            }
        }
    }
    super::close_done(&mut ws).await;
}
