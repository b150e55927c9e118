//! `switchboard bench`: load generation against WebSocket servers.
//!
//! Scenarios: [`echo`] (any echo server; closed loop or open loop), [`broadcast`] (a
//! Switchboard server's `/ws`: N subscribers, one publisher at a set rate) and [`connect`]
//! (handshakes per second, open/close churn).
//!
//! The load runs on `--threads` OS threads (default 1), each with its own single-threaded
//! tokio runtime and its own latency histogram, so the hot path takes no lock and shares
//! nothing but a few relaxed counters for the progress line. Latency is measured with
//! `Instant` in this process; in open-loop mode from the *scheduled* send time, so a server
//! that stalls cannot hide behind the load generator waiting for it (coordinated omission).

pub(crate) mod broadcast;
pub(crate) mod connect;
pub(crate) mod echo;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use switchboard_proto::Config;
use switchboard_tokio::client::WsUrl;
use switchboard_tokio::{client_handshake, ClientBuilder, MaybeTlsStream, WebSocket};

/// `switchboard bench`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = BENCH_HELP)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

const BENCH_HELP: &str = "\
Examples:
  switchboard bench echo ws://127.0.0.1:8080/echo --connections 100 --payload 20 --duration 10
  switchboard bench echo ws://127.0.0.1:8080/echo --connections 100 --rate 50000 --duration 10
  switchboard bench broadcast ws://127.0.0.1:8080/ws --subscribers 10000 --rate 10 --duration 10
  switchboard bench connect ws://127.0.0.1:8080/echo --connections 50 --duration 5

Every scenario prints a live progress line on stderr, a summary on stdout, and with --json one
JSON object as the last line (sent, received, errors, msgs_per_sec, latency_us, ...).";

#[derive(Debug, clap::Subcommand)]
enum Scenario {
    /// N connections each keep K messages in flight against an echo server (closed loop), or
    /// send at --rate messages per second in total (open loop).
    Echo(echo::EchoArgs),
    /// N subscribers on one topic of a Switchboard server's /ws, one publisher at a set rate:
    /// delivery latency, deliveries per second, time until the last subscriber has a message.
    Broadcast(broadcast::BroadcastArgs),
    /// Handshakes per second: C concurrent loops of connect, handshake, close.
    Connect(connect::ConnectArgs),
}

/// Options every scenario has.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// How long to run: 10s, 500ms, 2m (a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse, value_name = "DURATION")]
    duration: Duration,
    /// Load-generator threads (each a single-threaded runtime). Default 1: one core drives
    /// the load, the others stay for the server.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Spread connections over this many local addresses 127.0.0.1, 127.0.0.2, … (only for
    /// a loopback target; one address has ~28,000 ephemeral ports). Default: as many as the
    /// connection count needs.
    #[arg(long)]
    source_ips: Option<u8>,
    /// Print one JSON object as the last line of output.
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Skip certificate checks for wss:// (self-signed test servers).
    #[arg(long)]
    insecure: bool,
    /// WebSockets over HTTP/2 (RFC 8441): h2c for ws://, ALPN h2 for wss://. Each bench
    /// connection is its own HTTP/2 connection with one WebSocket stream.
    #[arg(long)]
    http2: bool,
    #[command(flatten)]
    proxy: crate::proxy_options::ProxyArgs,
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let report = match args.scenario {
        Scenario::Echo(a) => echo::run(a)?,
        Scenario::Broadcast(a) => broadcast::run(a)?,
        Scenario::Connect(a) => connect::run(a)?,
    };
    Ok(report.print())
}

/// Monotonic time since the bench started, shared by every thread.
pub(crate) fn since_start() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// Counters the progress line shows.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) done: AtomicBool,
    /// Set when most attempts fail: every load loop stops, and no rate is reported.
    pub(crate) stop: AtomicBool,
}

/// Failures before a run may be stopped for failing mostly.
const MIN_FAILURES: u64 = 20;

impl Progress {
    /// Counts a failure; once most attempts have failed (at least [`MIN_FAILURES`], and at
    /// least as many as messages sent and connections opened), asks every load loop to stop:
    /// going on would only measure how fast things fail. (Connections opened count, so a few
    /// failed connects early in a large run do not stop it.)
    pub(crate) fn failed(&self) {
        let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let attempts = self.sent.load(Ordering::Relaxed) + self.connected.load(Ordering::Relaxed);
        if errors >= MIN_FAILURES && errors * 2 >= attempts {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the load loops should stop early.
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The final counts: (sent, received, errors).
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    /// Prints a line every second on stderr until `done`.
    pub(crate) fn spawn_printer(
        self: &Arc<Self>,
        quiet: bool,
        what: &'static str,
    ) -> std::thread::JoinHandle<()> {
        let p = Arc::clone(self);
        std::thread::spawn(move || {
            if quiet {
                return;
            }
            let tty = std::io::stderr().is_terminal();
            let start = Instant::now();
            let mut last = (0u64, Instant::now());
            while !p.done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if last.1.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let r = p.received.load(Ordering::Relaxed);
                let rate = (r - last.0) as f64 / last.1.elapsed().as_secs_f64();
                last = (r, Instant::now());
                let line = format!(
                    "[{:6.1}s] connected {}  sent {}  {what} {}  {:.0}/s  errors {}",
                    start.elapsed().as_secs_f64(),
                    p.connected.load(Ordering::Relaxed),
                    p.sent.load(Ordering::Relaxed),
                    r,
                    rate,
                    p.errors.load(Ordering::Relaxed)
                );
                if tty {
                    eprint!("\r\x1b[2K{line}");
                } else {
                    eprintln!("{line}");
                }
            }
            if tty {
                eprintln!();
            }
        })
    }
}

/// What one load thread measured.
#[derive(Debug)]
pub(crate) struct ThreadStats {
    pub(crate) latency: Histogram<u64>,
    pub(crate) close_codes: BTreeMap<u16, u64>,
    pub(crate) errors: BTreeMap<String, u64>,
    /// CPU time the load threads used, in nanoseconds (Linux; 0 elsewhere).
    pub(crate) cpu_ns: u64,
}

/// CPU time this thread has used so far, in nanoseconds (Linux `/proc/thread-self/schedstat`).
pub(crate) fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self {
            cpu_ns: 0,
            latency: new_histogram(),
            close_codes: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes at 3 significant digits; values past it are clamped.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

impl ThreadStats {
    pub(crate) fn record_us(&mut self, us: u64) {
        self.latency.saturating_record(us.max(1));
    }

    pub(crate) fn error(&mut self, progress: &Progress, what: impl Into<String>) {
        progress.failed();
        *self.errors.entry(what.into()).or_default() += 1;
    }

    /// Notes how a connection ended (the close code the server sent, if any).
    pub(crate) fn ended<S>(&mut self, ws: &WebSocket<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        if let Some(Some(f)) = ws.connection().received_close() {
            *self.close_codes.entry(f.code.0).or_default() += 1;
        }
    }

    pub(crate) fn merge(&mut self, other: ThreadStats) {
        self.cpu_ns += other.cpu_ns;
        let _ = self.latency.add(&other.latency);
        for (k, v) in other.close_codes {
            *self.close_codes.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

pub(crate) fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0});
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// A finished run: a human summary and the JSON object.
pub(crate) struct Report {
    pub(crate) summary: Vec<String>,
    pub(crate) json: Value,
    pub(crate) print_json: bool,
    pub(crate) failed: bool,
}

impl Report {
    fn print(&self) -> i32 {
        for line in &self.summary {
            println!("{line}");
        }
        if self.print_json {
            println!("{}", self.json);
        }
        i32::from(self.failed)
    }
}

pub(crate) fn latency_line(name: &str, h: &Histogram<u64>) -> String {
    let p = percentiles(h);
    format!(
        "{name:<10} p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs",
        p["p50"], p["p90"], p["p99"], p["p999"], p["max"]
    )
}

/// Raises the open-files limit as far as allowed and checks that `needed` descriptors fit.
pub(crate) fn ensure_fd_limit(needed: u64) -> anyhow::Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    if needed + 64 > limit {
        bail!(
            "{needed} connections need {needed} file descriptors, but the open-files limit is {limit} \
             (raised as far as this user may); raise the hard limit (`ulimit -Hn`, /etc/security/limits.conf, \
             or LimitNOFILE= for a service) or use fewer connections"
        );
    }
    Ok(())
}

/// How to open connections: the URL, the client settings and the local addresses to use.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) url: WsUrl,
    pub(crate) builder: ClientBuilder,
    /// The server's address for direct ws:// connections from several local addresses.
    addr: Option<SocketAddr>,
    sources: Vec<Ipv4Addr>,
    config: Config,
}

impl Target {
    pub(crate) fn new(url: &str, connections: usize, common: &Common) -> anyhow::Result<Self> {
        let parsed = WsUrl::parse(url).with_context(|| format!("invalid URL {url:?}"))?;
        let config = Config::default()
            .max_message_size(64 << 20)
            .max_frame_size(64 << 20);
        let proxies = common.proxy.settings().map_err(anyhow::Error::msg)?;
        let mut builder = ClientBuilder::new(url).config(config);
        if common.insecure {
            builder = builder.tls_config(crate::insecure_tls());
        }
        if common.http2 {
            builder = builder.http2(switchboard_tokio::Http2::Force);
        }
        if let Some(via) = crate::proxy_options::describe(&proxies, &parsed) {
            // Through a proxy: it resolves the host, and every connection comes from it.
            eprintln!("bench: {url} {via}");
            return Ok(Self {
                url: parsed,
                builder: builder.proxy_settings(proxies),
                addr: None,
                sources: Vec::new(),
                config,
            });
        }
        let addr = (parsed.host.as_str(), parsed.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {}", parsed.host))?
            .next()
            .with_context(|| format!("{} has no address", parsed.host))?;
        // ~28,000 ephemeral ports per source address; stay well under.
        let needed = connections.div_ceil(20_000).clamp(1, 250) as u8;
        let n = common.source_ips.unwrap_or(needed).max(1);
        let sources = match addr.ip() {
            IpAddr::V4(v4) if v4.is_loopback() && n > 1 => {
                (1..=n).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
            }
            _ => {
                if connections > 28_000 {
                    eprintln!(
                        "bench: warning: {connections} connections to a non-loopback target from one local address may run out of ephemeral ports"
                    );
                }
                Vec::new()
            }
        };
        Ok(Self {
            url: parsed,
            builder,
            addr: Some(addr),
            sources,
            config,
        })
    }

    /// Opens connection number `i`.
    pub(crate) async fn connect(
        &self,
        i: usize,
    ) -> Result<WebSocket<MaybeTlsStream>, switchboard_tokio::Error> {
        let Some(addr) = self
            .addr
            .filter(|_| !self.sources.is_empty() && !self.url.tls)
        else {
            return self.builder.connect().await.map(|(ws, _)| ws);
        };
        let src = self.sources[i % self.sources.len()];
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
        let tcp = sock.connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        if self.builder.http2_mode() != switchboard_tokio::Http2::Off {
            return self
                .builder
                .connect_over(tcp, &self.url)
                .await
                .map(|(ws, _)| ws);
        }
        let req = self.builder.request(&self.url);
        client_handshake(MaybeTlsStream::Plain(tcp), &req, self.config)
            .await
            .map(|(ws, _)| ws)
    }

    /// Opens connection number `i`; a failure is counted in `stats` as a `connect: …` error.
    pub(crate) async fn connect_or_count(
        &self,
        i: usize,
        stats: &std::cell::RefCell<ThreadStats>,
        progress: &Progress,
    ) -> Option<WebSocket<MaybeTlsStream>> {
        match self.connect(i).await {
            Ok(ws) => Some(ws),
            Err(e) => {
                let what = format!("connect: {}", error_kind(&e));
                stats.borrow_mut().error(progress, what);
                None
            }
        }
    }
}

/// Runs `threads` single-threaded runtimes; `body(thread_index)` on each; returns their
/// results in order.
pub(crate) fn on_threads<T, F, Fut>(threads: usize, body: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T>,
{
    let body = Arc::new(body);
    let handles: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let body = Arc::clone(&body);
            std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let local = tokio::task::LocalSet::new();
                    Ok::<T, std::io::Error>(local.block_on(&rt, body(t)))
                })
        })
        .collect::<Result<_, _>>()?;
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
                .map_err(Into::into)
        })
        .collect()
}

/// Waits for one load thread's tasks and hands back what it measured, with the CPU time the
/// thread used since `cpu0` ([`thread_cpu_ns`]).
pub(crate) async fn join_tasks(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stats: std::rc::Rc<std::cell::RefCell<ThreadStats>>,
    cpu0: u64,
) -> ThreadStats {
    for t in tasks {
        let _ = t.await;
    }
    let mut s = std::rc::Rc::try_unwrap(stats)
        .map(std::cell::RefCell::into_inner)
        .unwrap_or_default();
    s.cpu_ns = thread_cpu_ns().saturating_sub(cpu0);
    s
}

/// Stops the progress line and merges what the load threads measured.
pub(crate) fn collect(
    progress: &Progress,
    printer: std::thread::JoinHandle<()>,
    results: Vec<ThreadStats>,
) -> ThreadStats {
    progress.done.store(true, Ordering::Relaxed);
    let _ = printer.join();
    let mut stats = ThreadStats::default();
    for r in results {
        stats.merge(r);
    }
    stats
}

/// Short text for an error, for the error table.
pub(crate) fn error_kind(e: &switchboard_tokio::Error) -> String {
    // Whole (it names the cause: refused, 503 and why, timeout), but bounded.
    e.to_string().chars().take(160).collect()
}

/// Whether a run failed mostly (most attempts failed, or nothing succeeded): then its rate and
/// latency would describe failures, and are not reported.
pub(crate) fn mostly_failed(sent: u64, succeeded: u64, errors: u64) -> bool {
    errors > 0 && (succeeded == 0 || errors * 2 >= sent)
}

/// What the report of an echo or connect run names in every case.
pub(crate) struct RunInfo<'a> {
    pub(crate) scenario: &'static str,
    pub(crate) url: &'a str,
    pub(crate) connections: usize,
    /// Seconds the run took.
    pub(crate) elapsed: f64,
    /// Whether to print the JSON line.
    pub(crate) print_json: bool,
}

impl RunInfo<'_> {
    /// The report's JSON: the fields every echo or connect report has (the run, the counts,
    /// how connections ended) and the scenario's own `fields` (an object). serde_json keeps
    /// keys sorted, so the output does not depend on which part names a key.
    pub(crate) fn json(&self, progress: &Progress, stats: &ThreadStats, fields: Value) -> Value {
        let (sent, received, errors) = progress.totals();
        let (_, codes, errs) = ends(stats);
        let mut json = json!({
            "scenario": self.scenario,
            "url": self.url,
            "connections": self.connections,
            "duration_s": self.elapsed,
            "sent": sent,
            "received": received,
            "errors": errors,
            "close_codes": codes,
            "error_kinds": errs,
        });
        if let (Value::Object(all), Value::Object(own)) = (&mut json, fields) {
            all.extend(own);
        }
        json
    }

    /// The report of a run that failed mostly: the summary says what failed, how often, and
    /// that no rate or latency is reported (then come the close codes, the errors and
    /// `hints`); the JSON has `failed`, `stopped_early`, and null for `msgs_per_sec`,
    /// `latency_us` and the scenario's `null_rates`.
    pub(crate) fn failed_report(
        &self,
        head: String,
        what: &str,
        progress: &Progress,
        stats: &ThreadStats,
        null_rates: &[&str],
        hints: Vec<String>,
    ) -> Report {
        let (sent, _, errors) = progress.totals();
        let elapsed = self.elapsed;
        let when = if progress.stopped() {
            format!("stopped early after {elapsed:.1} s")
        } else {
            format!("ended after {elapsed:.1} s")
        };
        let mut summary = vec![
            head,
            format!(
                "failed      {when}: {errors} errors for {sent} {what}; no throughput or latency \
                 is reported, they would measure the failures (the errors below say why)"
            ),
        ];
        summary.extend(ends(stats).0);
        summary.extend(hints);
        let mut fields = json!({
            "failed": true,
            "stopped_early": progress.stopped(),
            "msgs_per_sec": null,
            "latency_us": null,
        });
        if let Value::Object(f) = &mut fields {
            for rate in null_rates {
                f.insert((*rate).to_string(), Value::Null);
            }
        }
        Report {
            summary,
            json: self.json(progress, stats, fields),
            print_json: self.print_json,
            failed: true,
        }
    }
}

/// Closes with 1000 "bench done", waiting at most 2 s for the close handshake.
pub(crate) async fn close_done<S>(ws: &mut WebSocket<S>)
where
    S: switchboard_tokio::Transport,
{
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        ws.close(switchboard_proto::CloseCode::NORMAL, "bench done"),
    )
    .await;
}

/// The close codes and errors as summary lines and JSON.
pub(crate) fn ends(stats: &ThreadStats) -> (Vec<String>, Value, Value) {
    let mut lines = Vec::new();
    if !stats.close_codes.is_empty() {
        let codes: Vec<String> = stats
            .close_codes
            .iter()
            .map(|(c, n)| format!("{c}×{n}"))
            .collect();
        lines.push(format!("close codes {}", codes.join(", ")));
    }
    for (e, n) in &stats.errors {
        lines.push(format!("error       {n} × {e}"));
    }
    if stats
        .errors
        .keys()
        .any(|e| e.contains("Connection refused") || e.contains("connection refused"))
    {
        lines.push(
            "hint        the target refused the connections: is the server running, and on that port?"
                .into(),
        );
    }
    if stats.errors.keys().any(|e| e.contains("HTTP 503")) {
        lines.push(
            "hint        the server refused connections with 503 (its connection limits); for a Switchboard \
             server raise them, e.g. `switchboard serve --max-connections-per-ip 100000`"
                .into(),
        );
    }
    let codes: serde_json::Map<String, Value> = stats
        .close_codes
        .iter()
        .map(|(c, n)| (c.to_string(), json!(n)))
        .collect();
    let errors: serde_json::Map<String, Value> = stats
        .errors
        .iter()
        .map(|(e, n)| (e.clone(), json!(n)))
        .collect();
    (lines, Value::Object(codes), Value::Object(errors))
}
