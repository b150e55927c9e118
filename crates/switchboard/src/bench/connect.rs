//! `bench connect`: handshakes per second. C loops at once, each: TCP connect, WebSocket
//! handshake (timed), close handshake, again.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{
    ends, latency_line, on_threads, percentiles, Common, Progress, Report, RunInfo, Target,
    ThreadStats,
};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnectArgs {
    /// Any WebSocket endpoint, ws:// or wss://.
    url: String,
    /// Connect loops running at once.
    #[arg(long, short = 'c', default_value_t = 50)]
    connections: usize,
    /// Keep each connection open this long before closing it: 100ms, 1s.
    #[arg(long, default_value = "0s", value_parser = crate::duration::parse, value_name = "DURATION")]
    hold: Duration,
    #[command(flatten)]
    common: Common,
}

pub(crate) fn run(a: ConnectArgs) -> anyhow::Result<Report> {
    super::ensure_fd_limit(a.connections as u64 * 2)?;
    let target = Arc::new(Target::new(&a.url, a.connections, &a.common)?);
    let progress = Arc::new(Progress::default());
    let printer = progress.spawn_printer(a.common.quiet, "handshakes");
    let threads = a.common.threads.max(1);
    let duration = a.common.duration;
    let started = std::time::Instant::now();
    let args = Arc::new(a.clone());
    let p = Arc::clone(&progress);
    let results = on_threads(threads, move |t| {
        let (target, args, p) = (Arc::clone(&target), Arc::clone(&args), Arc::clone(&p));
        async move {
            let cpu0 = super::thread_cpu_ns();
            let stats = Rc::new(RefCell::new(ThreadStats::default()));
            let end = Instant::now() + duration;
            let mut tasks = Vec::new();
            for i in (0..args.connections).filter(|i| i % threads == t) {
                let (target, args, p, stats) = (
                    Arc::clone(&target),
                    Arc::clone(&args),
                    Arc::clone(&p),
                    Rc::clone(&stats),
                );
                tasks.push(tokio::task::spawn_local(connect_loop(
                    i, end, target, args, p, stats,
                )));
            }
            super::join_tasks(tasks, stats, cpu0).await
        }
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = super::collect(&progress, printer, results);
    let (attempts, ok, errors) = progress.totals();
    let rate = ok as f64 / elapsed;
    let head = format!("connect {}: {} loops, {elapsed:.1} s", a.url, a.connections);
    let run = RunInfo {
        scenario: "connect",
        url: &a.url,
        connections: a.connections,
        elapsed,
        print_json: a.common.json,
    };
    if super::mostly_failed(attempts, ok, errors) {
        let (what, null_rates) = ("handshakes tried", &["handshakes_per_sec"]);
        return Ok(run.failed_report(head, what, &progress, &stats, null_rates, Vec::new()));
    }
    let mut summary = vec![
        head,
        format!("handshakes {ok} of {attempts} attempts, errors {errors}"),
        format!("throughput {rate:.0} handshakes/s (each followed by a close handshake)"),
        latency_line("handshake", &stats.latency),
    ];
    summary.extend(ends(&stats).0);
    let json = run.json(
        &progress,
        &stats,
        json!({
            "msgs_per_sec": rate,
            "handshakes_per_sec": rate,
            "latency_us": percentiles(&stats.latency),
        }),
    );
    Ok(Report {
        summary,
        json,
        print_json: a.common.json,
        failed: errors > 0,
    })
}

/// One connect loop until the end of the run: connect (timed), hold, close; again. The
/// loop's `n`th connection is number `i + n × connections`.
async fn connect_loop(
    i: usize,
    end: Instant,
    target: Arc<Target>,
    args: Arc<ConnectArgs>,
    p: Arc<Progress>,
    stats: Rc<RefCell<ThreadStats>>,
) {
    let mut n = i;
    while Instant::now() < end && !p.stopped() {
        let t0 = Instant::now();
        p.sent.fetch_add(1, Ordering::Relaxed);
        match target.connect(n).await {
            Ok(mut ws) => {
                stats
                    .borrow_mut()
                    .record_us(t0.elapsed().as_micros() as u64);
                p.received.fetch_add(1, Ordering::Relaxed);
                if !args.hold.is_zero() {
                    tokio::time::sleep(args.hold).await;
                }
                let closed = tokio::time::timeout(
                    Duration::from_secs(5),
                    ws.close(switchboard_proto::CloseCode::NORMAL, ""),
                )
                .await;
                if !matches!(closed, Ok(Ok(()))) {
                    stats
                        .borrow_mut()
                        .error(&p, "close handshake did not complete");
                }
                stats.borrow_mut().ended(&ws);
            }
            Err(e) => {
                stats.borrow_mut().error(&p, super::error_kind(&e));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        n += args.connections;
    }
}
