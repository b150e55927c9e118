//! `driver`: closed-loop WebSocket echo load generator, idle-connection memory probe and
//! report builder for the Switchboard benchmarks (see `benchmarks/run.sh`, `paired.py` and
//! `benchmarks/README.md`). It stays apart from `switchboard bench` on purpose: it shares no
//! data path with the code it measures, and it measures what `bench` does not (server CPU
//! over a window, evenly served connections, idle RSS, the host's system-call costs);
//! `benchmarks/README.md` ("Two load generators, and why") gives the reasons.
//!
//! ```text
//! driver [load] --url ws://127.0.0.1:PORT/echo --connections N --inflight K --payload BYTES
//!        --duration SECS [--warmup SECS] [--server-pid PID] [--server-name NAME] [--text]
//! driver idle   --url ws://127.0.0.1:PORT/echo --connections N --server-pid PID
//!        [--settle SECS] [--concurrency C] [--server-name NAME]
//! driver report --input RESULTS.jsonl --json-out FILE [--baseline NAME] [--meta KEY=VALUE]...
//! driver host
//! ```
//!
//! Design goals of the load mode: the driver must be cheap enough never to be the thing
//! measured. It runs on a current_thread tokio runtime (the runner pins it to its own core),
//! does its own minimal WebSocket data path over a raw `TcpStream` (only the opening handshake
//! comes from `switchboard-proto`), pre-encodes the masked client frame once per connection,
//! parses echoes by reading frame headers only (payload bytes are skipped, never copied or
//! unmasked), and writes all replacement frames for one read in a single `write`.
//!
//! Server CPU is read from `/proc/PID/stat` (utime + stime, all threads, in clock ticks) at the
//! start and the end of the measured window; divided by the echoes completed in that window it
//! gives microseconds of server CPU per echo.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use switchboard_proto::handshake::client::ClientRequest;
use switchboard_proto::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod host;

/// Echoes received (complete frames), across all connections.
static ECHOED: AtomicU64 = AtomicU64::new(0);
/// Echoes per connection (by index), to find connections that stopped: a server that
/// drops some connections' reads serves fewer at once and looks cheaper per echo.
static PER_CONN: std::sync::OnceLock<Box<[AtomicU64]>> = std::sync::OnceLock::new();
/// Echoes with the wrong opcode/flags or the wrong length.
static BAD_ECHOES: AtomicU64 = AtomicU64::new(0);
/// Connections that failed or were closed by the server during the run.
static CONN_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Set at the end of the measured window: connections stop sending and drain.
static STOP: AtomicBool = AtomicBool::new(false);

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("driver: error: {e:#}");
        std::process::exit(2);
    }
}

fn real_main() -> anyhow::Result<()> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    let mode = match argv.first().map(String::as_str) {
        Some("idle") | Some("report") | Some("load") | Some("host") => argv.remove(0),
        Some("-h") | Some("--help") | None => {
            print!("{}", USAGE);
            return Ok(());
        }
        _ => "load".to_string(),
    };
    let args = Args::parse(argv)?;
    match mode.as_str() {
        "load" => {
            raise_nofile();
            let cfg = LoadArgs::from(&args)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(load(cfg))
        }
        "idle" => {
            raise_nofile();
            let cfg = IdleArgs::from(&args)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(idle(cfg))
        }
        "report" => report(&args),
        "host" => host::host(),
        _ => unreachable!(),
    }
}

const USAGE: &str = "\
driver [load] --url ws://HOST:PORT/PATH --connections N --inflight K --payload BYTES
               --duration SECS [--warmup SECS] [--server-pid PID] [--server-name NAME]
               [--scenario LABEL] [--text] [--connect-concurrency C]
    Closed-loop echo load: N connections, each keeping K messages of BYTES in flight.
    Prints msgs/s and, with --server-pid, the server's CPU per echo; last line is JSON.

driver idle --url ws://HOST:PORT/PATH --connections N --server-pid PID
            [--settle SECS] [--concurrency C | --storm] [--server-name NAME]
    Opens N WebSocket connections (handshake only), C at a time (64), or with --storm all
    N at once (a reconnect storm), waits SECS (2) for the server to settle, prints the
    server's VmRSS delta per connection; last line is JSON.

driver report --input RESULTS.jsonl --json-out FILE [--baseline NAME] [--meta KEY=VALUE]...
    Turns the JSON lines of many runs into markdown tables (stdout) and one JSON file.

driver host
    Prints the CPU, the kernel, and what the kernel charges per system call, per io_uring
    entry and per 20 B sent and received over loopback TCP (about 10 s); last line is JSON.
";

// ---------------------------------------------------------------------------------------------
// Arguments

#[derive(Debug, Default)]
struct Args {
    values: HashMap<String, Vec<String>>,
    flags: Vec<String>,
}

impl Args {
    fn parse(argv: Vec<String>) -> anyhow::Result<Self> {
        const FLAGS: &[&str] = &["--text", "--storm"];
        let mut out = Args::default();
        let mut it = argv.into_iter();
        while let Some(a) = it.next() {
            if !a.starts_with("--") {
                bail!("unexpected argument {a:?}\n\n{USAGE}");
            }
            if FLAGS.contains(&a.as_str()) {
                out.flags.push(a);
                continue;
            }
            let (k, v) = match a.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let v = it.next().ok_or_else(|| anyhow!("{a} needs a value"))?;
                    (a, v)
                }
            };
            out.values.entry(k).or_default().push(v);
        }
        Ok(out)
    }

    fn str(&self, k: &str) -> Option<&str> {
        self.values
            .get(k)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    fn req(&self, k: &str) -> anyhow::Result<&str> {
        self.str(k).ok_or_else(|| anyhow!("missing {k}\n\n{USAGE}"))
    }

    fn num<T: std::str::FromStr>(&self, k: &str, default: Option<T>) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.str(k) {
            Some(s) => s.parse().map_err(|e| anyhow!("{k} {s:?}: {e}")),
            None => default.ok_or_else(|| anyhow!("missing {k}\n\n{USAGE}")),
        }
    }

    fn flag(&self, k: &str) -> bool {
        self.flags.iter().any(|f| f == k)
    }
}

/// `ws://host:port/path` → (socket address, Host header, path).
fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("only ws:// URLs are supported, got {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .ok_or_else(|| anyhow!("{with_port} resolves to nothing"))?;
    Ok((addr, authority.to_string(), path))
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit (10,000 connections need > 1024 fds).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls with a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn nofile_limit() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

// ---------------------------------------------------------------------------------------------
// /proc readers

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime of every thread of `pid`, in clock ticks.
fn proc_cpu_ticks(pid: i32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the server running?)"))?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &s[s
        .rfind(')')
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?
        + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = f.get(11).ok_or_else(|| anyhow!("short stat"))?.parse()?;
    let stime: u64 = f.get(12).ok_or_else(|| anyhow!("short stat"))?.parse()?;
    Ok(utime + stime)
}

/// A `/proc/PID/status` field in kB (VmRSS, VmHWM, ...).
fn proc_status_kb(pid: i32, field: &str) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the server running?)"))?;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix(field).and_then(|v| v.strip_prefix(':')) {
            let num = v.trim().trim_end_matches("kB").trim();
            return Ok(num.parse()?);
        }
    }
    bail!("{field} not in /proc/{pid}/status")
}

fn proc_threads(pid: i32) -> Option<u64> {
    proc_status_kb(pid, "Threads").ok()
}

/// The driver's own CPU time (user + system), for spotting a saturated driver.
fn self_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---------------------------------------------------------------------------------------------
// Wire helpers

/// A few random bits without a RNG dependency (std's SipHash keys are random per process).
fn random_u64(salt: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish()
}

/// One complete masked client frame (FIN set) carrying `payload`.
fn encode_masked(op: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let len = payload.len();
    let mut f = Vec::with_capacity(len + 14);
    f.push(0x80 | op);
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

fn test_payload(len: usize, text: bool) -> Vec<u8> {
    if text {
        (0..len).map(|i| b'a' + (i % 26) as u8).collect()
    } else {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
            .collect()
    }
}

/// TCP connect + WebSocket opening handshake. Returns the stream and any bytes that arrived
/// after the 101 response head.
async fn ws_connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let req = ClientRequest::new(host, path);
    tcp.write_all(&req.encode()?).await?;
    let mut buf = Vec::with_capacity(512);
    let cfg = Config::default();
    loop {
        if tcp.read_buf(&mut buf).await? == 0 {
            bail!("server closed the connection during the handshake");
        }
        if let Some((_resp, used)) = req.parse_response(&buf, &cfg)? {
            buf.drain(..used);
            return Ok((tcp, buf));
        }
    }
}

/// Opens `n` connections, at most `concurrency` handshakes at a time (so the server's accept
/// backlog is never overwhelmed). Returns the connections and the failures.
async fn open_many(
    addr: SocketAddr,
    host: &str,
    path: &str,
    n: usize,
    concurrency: usize,
) -> (Vec<(TcpStream, Vec<u8>)>, Vec<String>) {
    let mut set = tokio::task::JoinSet::new();
    let mut conns = Vec::with_capacity(n);
    let mut errors = Vec::new();
    let mut started = 0;
    while started < n || !set.is_empty() {
        while started < n && set.len() < concurrency.max(1) {
            let (host, path) = (host.to_string(), path.to_string());
            set.spawn(async move {
                tokio::time::timeout(Duration::from_secs(10), ws_connect(addr, &host, &path))
                    .await
                    .map_err(|_| anyhow!("handshake timed out"))?
            });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(c))) => conns.push(c),
            Some(Ok(Err(e))) => errors.push(format!("{e:#}")),
            Some(Err(e)) => errors.push(format!("task: {e}")),
            None => {}
        }
    }
    (conns, errors)
}

// ---------------------------------------------------------------------------------------------
// Load mode

#[derive(Debug)]
struct LoadArgs {
    url: String,
    connections: usize,
    inflight: usize,
    payload: usize,
    duration: f64,
    warmup: f64,
    server_pid: Option<i32>,
    server_name: String,
    scenario: String,
    text: bool,
    connect_concurrency: usize,
    /// Which repeat of the benchmark matrix this run belongs to (the report pairs runs of
    /// different servers by it).
    repeat: Option<u64>,
}

impl LoadArgs {
    fn from(a: &Args) -> anyhow::Result<Self> {
        let connections: usize = a.num("--connections", None)?;
        let payload: usize = a.num("--payload", None)?;
        let s = Self {
            url: a.req("--url")?.to_string(),
            connections,
            inflight: a.num("--inflight", Some(1))?,
            payload,
            duration: a.num("--duration", Some(10.0))?,
            warmup: a.num("--warmup", Some(2.0))?,
            server_pid: a.str("--server-pid").map(str::parse).transpose()?,
            server_name: a.str("--server-name").unwrap_or("server").to_string(),
            scenario: a
                .str("--scenario")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{connections}x{payload}B")),
            text: a.flag("--text"),
            connect_concurrency: a.num("--connect-concurrency", Some(64))?,
            repeat: a.str("--repeat").map(str::parse).transpose()?,
        };
        if s.connections == 0 || s.inflight == 0 || s.duration <= 0.0 {
            bail!("--connections, --inflight and --duration must be > 0");
        }
        Ok(s)
    }
}

struct Snapshot {
    at: Instant,
    echoed: u64,
    server_ticks: Option<u64>,
    driver_cpu: Duration,
    cpus: Vec<CpuTicks>,
}

fn snapshot(pid: Option<i32>) -> anyhow::Result<Snapshot> {
    Ok(Snapshot {
        at: Instant::now(),
        echoed: ECHOED.load(Relaxed),
        server_ticks: pid.map(proc_cpu_ticks).transpose()?,
        driver_cpu: self_cpu(),
        cpus: proc_stat_cpus(),
    })
}

/// Per-CPU tick counters from /proc/stat (cpu0, cpu1, ...).
#[derive(Debug, Clone, Copy, Default)]
struct CpuTicks {
    total: u64,
    idle: u64,
    softirq: u64,
}

fn proc_stat_cpus() -> Vec<CpuTicks> {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    s.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
            // already included in user.
            let total = v.iter().take(8).sum();
            CpuTicks {
                total,
                idle: v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0),
                softirq: v.get(6).copied().unwrap_or(0),
            }
        })
        .collect()
}

async fn load(a: LoadArgs) -> anyhow::Result<()> {
    let (addr, host, path) = parse_url(&a.url)?;
    let op = if a.text { OP_TEXT } else { OP_BINARY };
    let payload = test_payload(a.payload, a.text);

    let t_connect = Instant::now();
    let (conns, errors) = open_many(addr, &host, &path, a.connections, a.connect_concurrency).await;
    if !errors.is_empty() {
        bail!(
            "{} of {} connections failed to open (nofile limit {}); first error: {}",
            errors.len(),
            a.connections,
            nofile_limit(),
            errors[0]
        );
    }
    let connect_secs = t_connect.elapsed().as_secs_f64();

    let _ = PER_CONN.set((0..conns.len()).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (tcp, leftover)) in conns.into_iter().enumerate() {
        // RFC 6455 requires clients to mask with a fresh random key per frame. The server
        // cannot tell (and must not care) whether keys repeat, so for a cheap driver each
        // connection draws ONE random key and reuses it for every frame: the masked frame is
        // encoded once here and then written out as-is, K copies back to back.
        let key = (random_u64(i as u64) as u32).to_be_bytes();
        let frame = encode_masked(op, &payload, key);
        let frame_len = frame.len();
        let batch = frame.repeat(a.inflight);
        let (k, plen) = (a.inflight, a.payload as u64);
        let counter = PER_CONN.get().and_then(|p| p.get(i));
        tasks.spawn(async move {
            if let Err(e) = echo_loop(counter, tcp, leftover, &batch, frame_len, plen, k, op).await
            {
                if CONN_ERRORS.fetch_add(1, Relaxed) < 3 {
                    eprintln!("driver: connection {i}: {e:#}");
                }
            }
        });
    }

    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let per_conn = || -> Vec<u64> {
        PER_CONN
            .get()
            .map(|p| p.iter().map(|c| c.load(Relaxed)).collect())
            .unwrap_or_default()
    };
    let s0 = snapshot(a.server_pid)?;
    let per0 = per_conn();
    let bad0 = BAD_ECHOES.load(Relaxed);
    let err0 = CONN_ERRORS.load(Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    let s1 = snapshot(a.server_pid)?;
    let per1 = per_conn();
    STOP.store(true, Relaxed);
    // Echoes per connection in the measured window. In a closed loop every connection
    // should get about as many as the others; a connection with no echo (stalled) or far
    // fewer than the median (stalling now and then) means the server served fewer
    // connections at once than asked, which flatters its CPU per echo.
    let mut got: Vec<u64> = per0.iter().zip(&per1).map(|(x, y)| y - x).collect();
    got.sort_unstable();
    let stalled = got.iter().filter(|&&n| n == 0).count();
    let (got_min, got_median) = (
        got.first().copied().unwrap_or(0),
        got.get(got.len() / 2).copied().unwrap_or(0),
    );
    // A connection with none counts even when the median is 0 (most of them stalled).
    let uneven = got
        .iter()
        .filter(|&&n| n == 0 || n * 4 < got_median)
        .count();

    let wall = (s1.at - s0.at).as_secs_f64();
    let echoes = s1.echoed - s0.echoed;
    let rate = echoes as f64 / wall;
    let driver_cpu = (s1.driver_cpu - s0.driver_cpu).as_secs_f64();
    let tck = clk_tck();
    let server_cpu = match (s0.server_ticks, s1.server_ticks) {
        (Some(t0), Some(t1)) => Some((t1 - t0) as f64 / tck as f64),
        _ => None,
    };
    let us_per_echo = server_cpu.map(|c| {
        if echoes > 0 {
            c * 1e6 / echoes as f64
        } else {
            f64::NAN
        }
    });
    // How busy each core was (anything: our processes, softirq, other people's jobs), to spot
    // runs disturbed by other load on the machine.
    let mut core_busy = Vec::new();
    let mut core_softirq = Vec::new();
    for (c0, c1) in s0.cpus.iter().zip(&s1.cpus) {
        let total = (c1.total - c0.total).max(1) as f64;
        core_busy.push(1.0 - (c1.idle - c0.idle) as f64 / total);
        core_softirq.push((c1.softirq - c0.softirq) as f64 / total);
    }
    // Busy core time not explained by the server or the driver: other load on the machine,
    // in cores. (Softirq network work done in a task's context is charged to that task's
    // utime+stime here, so it is not subtracted separately; on kernels where it is not, this
    // over-reports "other load" by the softirq share.)
    let other_load = if core_busy.is_empty() || a.server_pid.is_none() {
        None
    } else {
        let busy: f64 = core_busy.iter().sum::<f64>();
        Some((busy - server_cpu.unwrap_or(0.0) / wall - driver_cpu / wall).max(0.0))
    };
    let bad = BAD_ECHOES.load(Relaxed) - bad0;
    let conn_errors = CONN_ERRORS.load(Relaxed) - err0;

    // Let the connections drain their in-flight messages and close politely (outside the
    // measured window); don't wait forever.
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();

    println!(
        "{} {}: {} conns x {} B, {} in flight each, {:.1} s measured after {:.1} s warm-up",
        a.server_name, a.scenario, a.connections, a.payload, a.inflight, wall, a.warmup
    );
    println!("  echoes:            {echoes} ({rate:.0} msgs/s)");
    println!(
        "  mean round trip:   {:.1} us (Little's law: connections x in-flight / rate)",
        (a.connections * a.inflight) as f64 / rate * 1e6
    );
    if let (Some(c), Some(u)) = (server_cpu, us_per_echo) {
        println!(
            "  server CPU:        {c:.2} s ({:.0}% of one core) = {u:.3} us per echo",
            c / wall * 100.0
        );
    }
    println!(
        "  driver CPU:        {driver_cpu:.2} s ({:.0}% of one core)",
        driver_cpu / wall * 100.0
    );
    println!(
        "  cores busy:        {}   (softirq {})   other load: {:.2} cores",
        core_busy
            .iter()
            .map(|b| format!("{:.0}%", b * 100.0))
            .collect::<Vec<_>>()
            .join(" "),
        core_softirq
            .iter()
            .map(|b| format!("{:.0}%", b * 100.0))
            .collect::<Vec<_>>()
            .join(" "),
        other_load.unwrap_or(f64::NAN)
    );
    println!("  bad echoes:        {bad}   connection errors: {conn_errors}");
    println!(
        "  echoes per conn:   min {got_min}, median {got_median}; {stalled} with none, \
         {uneven} under a quarter of the median"
    );
    if uneven > 0 {
        eprintln!(
            "driver: {uneven} of {} connections got under a quarter of the median echoes \
             ({stalled} none): the server did not serve all {} at once, so the per-echo \
             numbers do not describe this load",
            a.connections, a.connections
        );
    }
    let out = json!({
        "mode": "load",
        "server": a.server_name,
        "scenario": a.scenario,
        "repeat": a.repeat,
        "url": a.url,
        "connections": a.connections,
        "inflight": a.inflight,
        "payload": a.payload,
        "opcode": if a.text { "text" } else { "binary" },
        "warmup_s": a.warmup,
        "duration_s": wall,
        "connect_s": connect_secs,
        "echoes": echoes,
        "msgs_per_sec": rate,
        "server_pid": a.server_pid,
        "server_threads": a.server_pid.and_then(proc_threads),
        "clk_tck": tck,
        "server_cpu_s": server_cpu,
        "server_cpu_util": server_cpu.map(|c| c / wall),
        "server_us_per_echo": us_per_echo,
        "driver_cpu_s": driver_cpu,
        "driver_cpu_util": driver_cpu / wall,
        "core_busy": core_busy,
        "core_softirq": core_softirq,
        "other_load_cores": other_load,
        "bad_echoes": bad,
        "conn_errors": conn_errors,
        "stalled_conns": stalled,
        "uneven_conns": uneven,
        "conn_echoes_min": got_min,
        "conn_echoes_median": got_median,
    });
    println!("{out}");
    Ok(())
}

/// One connection's closed loop: send K frames, then one more for every echo received.
#[allow(clippy::too_many_arguments)]
async fn echo_loop(
    counter: Option<&'static AtomicU64>,
    mut tcp: TcpStream,
    leftover: Vec<u8>,
    batch: &[u8],
    frame_len: usize,
    payload: u64,
    k: usize,
    op: u8,
) -> anyhow::Result<()> {
    // Read buffer: big enough to take K echoes in one read, bounded so 500 connections stay
    // cache-friendly. Payload bytes are skipped in place, so the buffer never has to hold a
    // whole frame.
    let cap = (k * frame_len).clamp(4096, 64 * 1024).max(leftover.len());
    let mut buf = vec![0u8; cap];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let (mut start, mut end) = (0usize, leftover.len());
    let mut skip: u64 = 0; // payload bytes of the current echo still to come
    let expect_b0 = 0x80 | op;

    tcp.write_all(batch).await?;
    let mut inflight = k;
    let mut first = true;
    loop {
        if !(first && end > start) {
            let n = tcp.read(&mut buf[end..]).await?;
            if n == 0 {
                bail!("server closed the connection (EOF) with {inflight} messages in flight");
            }
            end += n;
        }
        first = false;
        let mut done = 0usize;
        let mut bad = 0u64;
        loop {
            if skip > 0 {
                let take = skip.min((end - start) as u64);
                start += take as usize;
                skip -= take;
                if skip > 0 {
                    break;
                }
                done += 1;
                continue;
            }
            let avail = end - start;
            if avail < 2 {
                break;
            }
            let (b0, b1) = (buf[start], buf[start + 1]);
            if b1 & 0x80 != 0 {
                bail!("server sent a masked frame");
            }
            let (hlen, len) = match b1 & 0x7f {
                126 => {
                    if avail < 4 {
                        break;
                    }
                    (
                        4,
                        u16::from_be_bytes([buf[start + 2], buf[start + 3]]) as u64,
                    )
                }
                127 => {
                    if avail < 10 {
                        break;
                    }
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[start + 2..start + 10]);
                    (10, u64::from_be_bytes(b))
                }
                l => (2, l as u64),
            };
            let opcode = b0 & 0x0f;
            if opcode >= 0x8 {
                // Control frame (at most 125 bytes): wait for all of it, then skip it.
                if avail < hlen + len as usize {
                    break;
                }
                if opcode == 0x8 {
                    bail!("server sent Close with {inflight} messages in flight");
                }
                start += hlen + len as usize;
                continue;
            }
            if b0 != expect_b0 || len != payload {
                bad += 1;
            }
            start += hlen;
            skip = len;
            if skip == 0 {
                done += 1;
            }
        }
        if start == end {
            start = 0;
            end = 0;
        } else if end == buf.len() || start > buf.len() / 2 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if done == 0 {
            continue;
        }
        ECHOED.fetch_add(done as u64, Relaxed);
        if let Some(c) = counter {
            c.fetch_add(done as u64, Relaxed);
        }
        if bad > 0 {
            BAD_ECHOES.fetch_add(bad, Relaxed);
        }
        if done > inflight {
            bail!("received {done} echoes with only {inflight} messages in flight");
        }
        if STOP.load(Relaxed) {
            inflight -= done;
            if inflight == 0 {
                break;
            }
        } else {
            // Replace every completed echo, in one write (done <= K, so it is a prefix of the
            // pre-encoded batch).
            tcp.write_all(&batch[..done * frame_len]).await?;
        }
    }
    // Close politely: masked Close 1000, then wait for the server to close.
    let close = encode_masked(0x8, &1000u16.to_be_bytes(), [1, 2, 3, 4]);
    tcp.write_all(&close).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut sink = [0u8; 1024];
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Idle mode

#[derive(Debug)]
struct IdleArgs {
    url: String,
    connections: usize,
    server_pid: i32,
    settle: f64,
    concurrency: usize,
    /// How the connections arrived: `storm` (all at once) or `batch` (`concurrency` at a time).
    arrival: &'static str,
    server_name: String,
}

impl IdleArgs {
    fn from(a: &Args) -> anyhow::Result<Self> {
        Ok(Self {
            url: a.req("--url")?.to_string(),
            connections: a.num("--connections", Some(10_000))?,
            server_pid: a.num("--server-pid", None)?,
            settle: a.num("--settle", Some(2.0))?,
            concurrency: if a.flag("--storm") {
                usize::MAX
            } else {
                a.num("--concurrency", Some(64))?
            },
            arrival: if a.flag("--storm") { "storm" } else { "batch" },
            server_name: a.str("--server-name").unwrap_or("server").to_string(),
        })
    }
}

async fn idle(a: IdleArgs) -> anyhow::Result<()> {
    let (addr, host, path) = parse_url(&a.url)?;
    let pid = a.server_pid;
    // Let a freshly started server settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = proc_status_kb(pid, "VmRSS")?;

    let t = Instant::now();
    let (mut conns, errors) = open_many(addr, &host, &path, a.connections, a.concurrency).await;
    let open_secs = t.elapsed().as_secs_f64();
    if !errors.is_empty() {
        eprintln!(
            "driver: {} of {} connections failed to open (driver nofile limit {}); first error: {}",
            errors.len(),
            a.connections,
            nofile_limit(),
            errors[0]
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let rss1 = proc_status_kb(pid, "VmRSS")?;
    let hwm = proc_status_kb(pid, "VmHWM").ok();
    let opened = conns.len();
    let delta = rss1 as i64 - rss0 as i64;
    let per_conn = if opened > 0 {
        delta as f64 * 1024.0 / opened as f64
    } else {
        f64::NAN
    };

    // After the measurement: check that (a sample of) the idle connections still work.
    let sample: Vec<usize> = if opened == 0 {
        Vec::new()
    } else {
        let step = (opened / 100).max(1);
        (0..opened).step_by(step).collect()
    };
    let mut probe_ok = 0usize;
    let frame = encode_masked(OP_BINARY, b"probe", [9, 8, 7, 6]);
    for &i in &sample {
        let (tcp, _) = &mut conns[i];
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            tcp.write_all(&frame).await?;
            let mut b = [0u8; 7];
            tcp.read_exact(&mut b).await?;
            anyhow::Ok(b == [0x82, 5, b'p', b'r', b'o', b'b', b'e'])
        })
        .await;
        if matches!(r, Ok(Ok(true))) {
            probe_ok += 1;
        }
    }
    drop(conns);

    let how = if a.arrival == "storm" {
        "all at once".to_string()
    } else {
        format!("{} at a time", a.concurrency)
    };
    println!(
        "{} idle ({}): {opened} of {} connections open ({} failed) in {open_secs:.2} s ({how})",
        a.server_name,
        a.arrival,
        a.connections,
        errors.len()
    );
    println!(
        "  server VmRSS:      {rss0} kB -> {rss1} kB (delta {delta} kB) after {:.1} s",
        a.settle
    );
    println!("  per connection:    {per_conn:.0} bytes");
    println!(
        "  echo probe:        {probe_ok}/{} sampled connections answered",
        sample.len()
    );
    let out = json!({
        "mode": "idle",
        "server": a.server_name,
        "scenario": format!("idle {}", a.connections),
        "arrival": a.arrival,
        "concurrency": a.concurrency.min(a.connections),
        "url": a.url,
        "connections": a.connections,
        "opened": opened,
        "open_failures": errors.len(),
        "open_s": open_secs,
        "settle_s": a.settle,
        "server_pid": pid,
        "rss_before_kb": rss0,
        "rss_after_kb": rss1,
        "rss_delta_kb": delta,
        "vm_hwm_kb": hwm,
        "bytes_per_conn": per_conn,
        "probe_ok": probe_ok,
        "probe_total": sample.len(),
    });
    println!("{out}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report mode

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn fmt_ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "-".into()
    }
}

fn report(a: &Args) -> anyhow::Result<()> {
    let input = a.req("--input")?;
    let baseline = a.str("--baseline").unwrap_or("fastwebsockets").to_string();
    let ours = a.str("--ours").unwrap_or("switchboard").to_string();
    let cpu_target: f64 = a.num("--cpu-target", Some(0.95))?;
    let idle_target: f64 = a.num("--idle-target-bytes", Some(1024.0))?;
    let text = std::fs::read_to_string(input).with_context(|| format!("reading {input}"))?;
    let runs: Vec<Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("parsing results")?;

    // Keep first-appearance order of scenarios and servers.
    let mut scenarios: Vec<String> = Vec::new();
    let mut servers: Vec<String> = Vec::new();
    let mut load: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    // Idle runs by how the connections arrived (batch before storm), then server.
    let mut idle: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for r in &runs {
        let server = r["server"].as_str().unwrap_or("?").to_string();
        if !servers.contains(&server) {
            servers.push(server.clone());
        }
        match r["mode"].as_str() {
            Some("load") => {
                let sc = r["scenario"].as_str().unwrap_or("?").to_string();
                if !scenarios.contains(&sc) {
                    scenarios.push(sc.clone());
                }
                load.entry((sc, server)).or_default().push(r);
            }
            Some("idle") => {
                // Runs from before the storm test were all batches.
                let arrival = r["arrival"].as_str().unwrap_or("batch").to_string();
                idle.entry((arrival, server)).or_default().push(r);
            }
            _ => {}
        }
    }

    let mut summary_load = Vec::new();
    let mut md = String::new();
    if !load.is_empty() {
        md.push_str(&format!(
            "| scenario | server | server CPU µs/echo | vs {baseline} (min–max) | msgs/s | server CPU | driver CPU | other load | runs | errors |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n"
        ));
    }
    for sc in &scenarios {
        let base = load
            .get(&(sc.clone(), baseline.clone()))
            .map(|v| median(v.iter().map(|r| f(r, "server_us_per_echo")).collect()))
            .unwrap_or(f64::NAN);
        for s in &servers {
            let Some(rs) = load.get(&(sc.clone(), s.clone())) else {
                continue;
            };
            let us = median(rs.iter().map(|r| f(r, "server_us_per_echo")).collect());
            let rate = median(rs.iter().map(|r| f(r, "msgs_per_sec")).collect());
            let sutil = median(rs.iter().map(|r| f(r, "server_cpu_util")).collect());
            let dutil = median(rs.iter().map(|r| f(r, "driver_cpu_util")).collect());
            let other = rs
                .iter()
                .map(|r| f(r, "other_load_cores"))
                .filter(|x| x.is_finite())
                .fold(f64::NAN, f64::max);
            let all_us: Vec<f64> = rs.iter().map(|r| f(r, "server_us_per_echo")).collect();
            let errors: u64 = rs
                .iter()
                .map(|r| {
                    // Unevenly served connections count: the run did not measure the load
                    // it was asked for.
                    r["bad_echoes"].as_u64().unwrap_or(0)
                        + r["conn_errors"].as_u64().unwrap_or(0)
                        + r["uneven_conns"].as_u64().unwrap_or(0)
                })
                .sum();
            // Ratio to the baseline: each run is paired with the baseline's run of the same
            // repeat (run back to back, so slow drifts of the machine cancel out); the median
            // of the paired ratios is reported, with their range. Without repeat numbers:
            // ratio of the medians.
            let base_runs = load.get(&(sc.clone(), baseline.clone()));
            let paired: Vec<f64> = rs
                .iter()
                .filter_map(|r| {
                    let rep = r.get("repeat").and_then(Value::as_u64)?;
                    let b = base_runs?
                        .iter()
                        .find(|b| b.get("repeat").and_then(Value::as_u64) == Some(rep))?;
                    Some(f(r, "server_us_per_echo") / f(b, "server_us_per_echo"))
                })
                .filter(|x| x.is_finite())
                .collect();
            let (ratio, range) = if paired.is_empty() {
                (us / base, String::new())
            } else {
                let lo = paired.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = paired.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let range = if paired.len() > 1 && *s != baseline {
                    format!(" ({lo:.2}–{hi:.2})")
                } else {
                    String::new()
                };
                (median(paired.clone()), range)
            };
            let verdict = if *s == ours && ratio.is_finite() {
                if ratio <= cpu_target {
                    format!(" (target ≤{cpu_target}x: met)")
                } else {
                    format!(" (target ≤{cpu_target}x: **missed**)")
                }
            } else {
                String::new()
            };
            md.push_str(&format!(
                "| {sc} | {s} | {us:.2} | {}{range}{verdict} | {rate:.0} | {:.0}% | {:.0}% | {} | {} | {errors} |\n",
                fmt_ratio(ratio),
                sutil * 100.0,
                dutil * 100.0,
                if other.is_finite() { format!("{:.0}%", other * 100.0) } else { "-".into() },
                rs.len()
            ));
            summary_load.push(json!({
                "scenario": sc, "server": s, "runs": rs.len(),
                "server_us_per_echo_median": us,
                "server_us_per_echo_all": all_us,
                "ratio_vs_baseline": ratio,
                "ratio_vs_baseline_paired": paired,
                "ratio_of_medians": us / base,
                "msgs_per_sec_median": rate,
                "server_cpu_util_median": sutil,
                "driver_cpu_util_median": dutil,
                "other_load_cores_max": other,
                "errors": errors,
            }));
        }
    }

    let mut summary_idle = Vec::new();
    if !idle.is_empty() {
        md.push_str(&format!(
            "\n| idle connections | arrival | server | server RSS per idle connection | vs {baseline} | RSS before → after | opened (s) | echo probe |\n\
             |---|---|---|--:|--:|--:|--:|--:|\n"
        ));
    }
    let mut arrivals: Vec<String> = idle.keys().map(|(a, _)| a.clone()).collect();
    arrivals.dedup();
    for arrival in &arrivals {
        let base = idle
            .get(&(arrival.clone(), baseline.clone()))
            .map(|v| median(v.iter().map(|r| f(r, "bytes_per_conn")).collect()))
            .unwrap_or(f64::NAN);
        for s in &servers {
            let Some(rs) = idle.get(&(arrival.clone(), s.clone())) else {
                continue;
            };
            let b = median(rs.iter().map(|r| f(r, "bytes_per_conn")).collect());
            let r0 = &rs[rs.len() - 1];
            let verdict = if s.starts_with(ours.as_str()) && b.is_finite() {
                if b <= idle_target {
                    format!(" (target ≤{idle_target:.0} B: met)")
                } else {
                    format!(" (target ≤{idle_target:.0} B: **missed**)")
                }
            } else {
                String::new()
            };
            let how = match r0["concurrency"].as_u64() {
                Some(c) if arrival == "batch" => format!("batch ({c} at a time)"),
                _ if arrival == "storm" => "storm (all at once)".to_string(),
                _ => arrival.clone(),
            };
            md.push_str(&format!(
                "| {} | {how} | {s} | {b:.0} B{verdict} | {} | {:.1} → {:.1} MiB | {}/{} ({:.1}) | {}/{} |\n",
                r0["connections"],
                fmt_ratio(b / base),
                f(r0, "rss_before_kb") / 1024.0,
                f(r0, "rss_after_kb") / 1024.0,
                r0["opened"],
                r0["connections"],
                f(r0, "open_s"),
                r0["probe_ok"],
                r0["probe_total"],
            ));
            let all: Vec<f64> = rs.iter().map(|r| f(r, "bytes_per_conn")).collect();
            summary_idle.push(json!({
                "server": s, "arrival": arrival, "runs": rs.len(), "bytes_per_conn_median": b,
                "bytes_per_conn_all": all,
                "ratio_vs_baseline": b / base,
            }));
        }
    }
    print!("{md}");

    let mut meta = serde_json::Map::new();
    for kv in a.values.get("--meta").into_iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        // A value that is a JSON object (run.sh's `host_probe`) is kept as one.
        let v = serde_json::from_str::<Value>(v)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| Value::String(v.to_string()));
        meta.insert(k.to_string(), v);
    }
    if let Some(out) = a.str("--json-out") {
        let doc = json!({
            "meta": meta,
            "baseline": baseline,
            "summary": { "load": summary_load, "idle": summary_idle },
            "markdown": md,
            "runs": runs,
        });
        std::fs::write(out, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {out}"))?;
    }
    Ok(())
}
