//! `switchboard connect` and `switchboard bench` as users run them: the real binary against an
//! in-process server.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use switchboard_server::{Server, ServerConfig};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

struct Srv {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Srv {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A local address nobody listens on (a port the system just gave out and took back).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn server(config: ServerConfig) -> Srv {
    server_on("127.0.0.1:0".parse().unwrap(), config)
}

fn server_on(addr: SocketAddr, config: ServerConfig) -> Srv {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind(addr).await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let _ = Server::new(config)
                .run(l, async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    Srv {
        addr: rx.recv().unwrap(),
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Starts `switchboard connect ARGS` with its standard streams piped.
fn spawn_connect(args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `switchboard connect ARGS` with `stdin` as its input: (status, stdout, stderr).
fn connect(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = spawn_connect(args);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn connect_in_a_pipe_round_trips_and_exits_0() {
    let srv = server(ServerConfig::default());
    let url = format!("ws://{}/echo", srv.addr);
    let (code, out, err) = connect(&[&url], "hello\n//slash\n/binary hex 00ff\n");
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "hello\n/slash\nbase64:AP8=\n");
}

#[test]
fn connect_exit_status_follows_how_the_session_ended() {
    let mut ws = switchboard_proto::Config::default();
    ws = ws.max_message_size(100).max_frame_size(100);
    let srv = server(ServerConfig::default().ws(ws));
    let base = format!("ws://{}", srv.addr);
    // The server closes with 1009: status 3, and stderr says so.
    let big = "x".repeat(200);
    let (code, _, err) = connect(&[&format!("{base}/ws")], &format!("{big}\n"));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("1009"), "{err}");
    // We close with 4000: the server echoes 4000; the session ended as asked: 0.
    let (code, _, err) = connect(&[&format!("{base}/echo")], "/close 4000 done\n");
    assert_eq!(code, 0, "{err}");
    // HTTP status instead of 101: 5, with the status and the body's first line.
    let (code, _, err) = connect(&[&format!("{base}/nope")], "");
    assert_eq!(code, 5);
    assert!(
        err.contains("HTTP 404") && err.contains("no WebSocket endpoint"),
        "{err}"
    );
    // Nobody listening: 6.
    let free = free_addr();
    let (code, _, err) = connect(&[&format!("ws://{free}/")], "");
    assert_eq!(code, 6);
    assert!(err.contains("connection refused"), "{err}");
    // Not a WebSocket server at all (an HTTP server answering 200): 5.
    let http_addr = answers(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n");
    let (code, _, err) = connect(&[&format!("ws://{http_addr}/")], "");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("HTTP 200"), "{err}");
}

/// Normalizes what changes from run to run: times, ports, keys.
fn normalize(trace: &str, port: u16) -> String {
    trace
        .lines()
        .map(|l| {
            let l = match l.find(" ms] ") {
                Some(i) if l.starts_with('[') => format!("[t]{}", &l[i + 4..]),
                _ => l.to_string(),
            };
            let l = l.replace(&port.to_string(), "PORT");
            for key in ["Sec-WebSocket-Key: ", "Sec-WebSocket-Accept: "] {
                if let Some(i) = l.find(key) {
                    return format!("{}{key}…", &l[..i]);
                }
            }
            l
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn connect_trace_matches_the_golden_file() {
    let srv = server(ServerConfig::default());
    let url = format!("ws://{}/echo", srv.addr);
    let mut child = spawn_connect(&["--trace", "--compress", "off", &url]);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // One step at a time, each after the previous one's answer, so the order is fixed.
    stdin.write_all(b"hello\n").unwrap();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
    stdin.write_all(b"/ping are you there\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"/close 1000 bye\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let got = normalize(&String::from_utf8_lossy(&out.stderr), srv.addr.port());
    let golden_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/connect-trace.txt"
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path, &got).unwrap();
    }
    let want = std::fs::read_to_string(golden_path).unwrap();
    assert_eq!(
        got, want,
        "trace differs from {golden_path} (UPDATE_GOLDEN=1 rewrites it)"
    );
}

#[test]
fn connect_trace_json_is_one_object_per_line() {
    let srv = server(ServerConfig::default());
    let url = format!("ws://{}/echo", srv.addr);
    let (code, _, err) = connect(&["--trace-json", &url], "hi\n");
    assert_eq!(code, 0);
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(&kinds[..4], ["connect", "request", "response", "open"]);
    assert_eq!(kinds.last(), Some(&"closed"));
    assert!(events.iter().any(|e| e["event"] == "frame"
        && e["dir"] == "out"
        && e["masked"] == true
        && e["preview"] == "\"hi\""));
    assert!(events
        .iter()
        .any(|e| e["event"] == "tcp_closed" && e["by"] == "server"));
}

/// Runs `switchboard bench ARGS --quiet` to the end.
fn bench(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--quiet")
        .output()
        .unwrap()
}

/// Runs `switchboard bench ARGS --json`, which must succeed: its JSON line.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = bench(&[args, &["--json"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn bench_echo_counts_add_up() {
    let srv = server(ServerConfig::default());
    let url = format!("ws://{}/echo", srv.addr);
    let j = bench_json(&[
        "echo",
        &url,
        "--connections",
        "4",
        "--inflight",
        "2",
        "--duration",
        "1",
    ]);
    assert_eq!(j["errors"], 0);
    assert!(j["sent"].as_u64().unwrap() > 100);
    assert_eq!(j["sent"], j["received"]);
    let lat = &j["latency_us"];
    assert!(lat["p50"].as_u64().unwrap() <= lat["p99"].as_u64().unwrap());
    // A fixed count, open loop.
    let j = bench_json(&[
        "echo",
        &url,
        "-c",
        "3",
        "--rate",
        "300",
        "--count",
        "100",
        "--duration",
        "5",
    ]);
    assert_eq!(
        (
            j["sent"].as_u64(),
            j["received"].as_u64(),
            j["errors"].as_u64()
        ),
        (Some(100), Some(100), Some(0))
    );
}

#[test]
fn bench_broadcast_delivers_every_publish_to_every_subscriber() {
    let srv = server(ServerConfig::default());
    let url = format!("ws://{}/ws", srv.addr);
    let j = bench_json(&[
        "broadcast",
        &url,
        "--subscribers",
        "40",
        "--rate",
        "50",
        "--count",
        "20",
    ]);
    assert_eq!(j["errors"], 0);
    assert_eq!(j["publishes"], 20);
    assert_eq!(j["deliveries"], 800);
    assert_eq!(j["expected_deliveries"], 800);
    assert_eq!(j["complete_publishes"], 20);
}

#[test]
fn bench_connect_counts_handshakes() {
    let srv = server(ServerConfig::default());
    let url = format!("ws://{}/echo", srv.addr);
    let j = bench_json(&[
        "connect",
        &url,
        "-c",
        "2",
        "--duration",
        "500ms",
        "--hold",
        "5ms",
    ]);
    assert_eq!(j["errors"], 0);
    assert!(j["received"].as_u64().unwrap() > 10);
    assert_eq!(j["close_codes"]["1000"], j["received"]);
}

#[test]
fn connect_reconnects_after_the_server_goes_away() {
    let srv = server(ServerConfig::default());
    let addr = srv.addr;
    let mut child = spawn_connect(&["--reconnect", &format!("ws://{addr}/echo")]);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stdin.write_all(b"one\n").unwrap();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    // The server shuts down (1001 to everyone): the client says it reconnects.
    drop(srv);
    line.clear();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("1001"), "{line}");
    line.clear();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("reconnecting in"), "{line}");
    // A server is back on the same port: the next line goes through the new connection.
    let _srv = server_on(addr, ServerConfig::default());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        line.clear();
        stderr.read_line(&mut line).unwrap();
        if line.contains("reconnected to") {
            break;
        }
        assert!(
            line.contains("reconnecting in") || line.contains("refused"),
            "{line}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no reconnect within 20 s"
        );
    }
    stdin.write_all(b"two\n").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "two\n");
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn connect_over_tls_with_a_ca_file_or_insecure() {
    let dir = std::env::temp_dir().join(format!("sb-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let acceptor = switchboard_tokio::tls::acceptor_from_pem(&cert_path, &key_path).unwrap();
    let srv = server(ServerConfig::default().tls(acceptor));
    let url = format!("wss://localhost:{}/echo", srv.addr.port());
    // A self-signed certificate is refused by default, with a hint.
    let (code, _, err) = connect(&[&url], "x\n");
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("TLS") && err.contains("--insecure"), "{err}");
    let (code, out, err) = connect(&["--ca", cert_path.to_str().unwrap(), &url], "over tls\n");
    assert_eq!((code, out.as_str()), (0, "over tls\n"), "{err}");
    let (code, out, err) = connect(&["--insecure", &url], "anyway\n");
    assert_eq!((code, out.as_str()), (0, "anyway\n"), "{err}");
    let (code, out, err) = connect(&["-k", &url], "short flag\n");
    assert_eq!((code, out.as_str()), (0, "short flag\n"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_names_the_limit_that_refused_it() {
    let mut limits = switchboard_server::Limits::default();
    limits.max_connections_per_ip = 2;
    let srv = server(ServerConfig::default().limits(limits));
    let url = format!("ws://{}/echo", srv.addr);
    let (code, stdout, _) = bench_run(&["echo", &url, "-c", "4", "--duration", "0.5"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("2 × connect: handshake refused with HTTP 503"),
        "{stdout}"
    );
    assert!(stdout.contains("--max-connections-per-ip"), "{stdout}");
}

/// `connect` in a pseudo-terminal, as a person at a terminal runs it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod terminal {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// A child process on the slave side of a pseudo-terminal; what it writes is collected,
    /// and cursor-position queries are answered as a terminal would.
    pub(super) struct Term {
        master: std::fs::File,
        /// Kept to read the terminal's settings after the child is gone.
        slave: std::fs::File,
        pub(super) child: Child,
        output: Arc<Mutex<Vec<u8>>>,
    }

    impl Term {
        pub(super) fn spawn(args: &[&str]) -> Term {
            let (mut master, mut slave) = (0, 0);
            let size = libc::winsize {
                ws_row: 40,
                ws_col: 200,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: openpty writes two descriptors into the integers given; the name and
            // termios pointers may be null and the window size outlives the call.
            let r = unsafe {
                libc::openpty(
                    &mut master,
                    &mut slave,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    &size,
                )
            };
            assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
            // SAFETY: both descriptors were just opened and are owned by nobody else.
            let (master, slave) = unsafe {
                (
                    std::fs::File::from_raw_fd(master),
                    std::fs::File::from_raw_fd(slave),
                )
            };
            let mut cmd = Command::new(super::BIN);
            cmd.args(args)
                .env("TERM", "xterm")
                .stdin(slave.try_clone().unwrap())
                .stdout(slave.try_clone().unwrap())
                .stderr(slave.try_clone().unwrap());
            // SAFETY: setsid and ioctl are async-signal-safe; they make the terminal the
            // child's controlling terminal, so Ctrl-C reaches it as a terminal's would.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    libc::ioctl(0, libc::TIOCSCTTY, 0);
                    Ok(())
                });
            }
            let child = cmd.spawn().unwrap();
            drop(cmd);
            let output = Arc::new(Mutex::new(Vec::new()));
            let (out, mut reader, mut answer) = (
                Arc::clone(&output),
                master.try_clone().unwrap(),
                master.try_clone().unwrap(),
            );
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let chunk = &buf[..n];
                    // "Where is the cursor?": a terminal answers; say column 1.
                    if chunk.windows(4).any(|w| w == b"\x1b[6n") {
                        let _ = answer.write_all(b"\x1b[1;1R");
                    }
                    out.lock().unwrap().extend_from_slice(chunk);
                }
            });
            Term {
                master,
                slave,
                child,
                output,
            }
        }

        /// Whether the terminal is in its normal (canonical, echoing) mode.
        pub(super) fn is_cooked(&self) -> bool {
            use std::os::fd::AsRawFd;
            // SAFETY: tcgetattr fills the termios it is given; zeroed is a valid value of
            // this plain C struct.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) };
            assert_eq!(r, 0, "tcgetattr: {}", std::io::Error::last_os_error());
            t.c_lflag & libc::ICANON != 0 && t.c_lflag & libc::ECHO != 0
        }

        pub(super) fn write(&mut self, bytes: &[u8]) {
            self.master.write_all(bytes).unwrap();
        }

        pub(super) fn text(&self) -> String {
            String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
        }

        /// Waits until the output has every one of `want`; panics with the output if not.
        pub(super) fn wait_for(&self, want: &[&str], within: Duration) -> String {
            let deadline = Instant::now() + within;
            loop {
                let text = self.text();
                if want.iter().all(|w| text.contains(w)) {
                    return text;
                }
                assert!(
                    Instant::now() < deadline,
                    "waited {within:?} for {want:?}; the terminal shows:\n{text:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Types `/close`; the session must end with status 0 within 10 s.
        pub(super) fn close_ok(&mut self) {
            self.write(b"/close\n");
            let code = self.wait_exit(Duration::from_secs(10));
            assert_eq!(code, Some(0), "{}", self.text());
        }

        /// Waits for the child to end, at most `within`.
        pub(super) fn wait_exit(&mut self, within: Duration) -> Option<i32> {
            let deadline = Instant::now() + within;
            loop {
                if let Some(s) = self.child.try_wait().unwrap() {
                    return s.code();
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    panic!("still running after {within:?}:\n{:?}", self.text());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Term {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `switchboard connect FLAGS URL` in a terminal, URL the `/echo` of a server started for it,
/// once it says it is connected.
#[cfg(target_os = "linux")]
fn connected_terminal(flags: &[&str]) -> (Srv, terminal::Term) {
    let srv = server(ServerConfig::default());
    let url = format!("ws://{}/echo", srv.addr);
    let args = [&["connect"], flags, &[url.as_str()]].concat();
    let t = terminal::Term::spawn(&args);
    t.wait_for(&["connected to"], Duration::from_secs(10));
    (srv, t)
}

/// Item 9: three lines pasted at once (one write to the terminal) are three messages.
#[cfg(target_os = "linux")]
#[test]
fn connect_in_a_terminal_sends_every_pasted_line() {
    let (_srv, mut t) = connected_terminal(&[]);
    t.write(b"first line\nsecond line\nthird line\n");
    t.wait_for(
        &["< first line", "< second line", "< third line"],
        Duration::from_secs(5),
    );
    t.close_ok();
}

/// Item 9: a terminal that brackets pastes (`ESC [200~ … ESC [201~`, what xterm and most
/// terminals send when they were asked to) still gets one message per pasted line.
#[cfg(target_os = "linux")]
#[test]
fn connect_in_a_terminal_sends_every_line_of_a_bracketed_paste() {
    let (_srv, mut t) = connected_terminal(&[]);
    t.write(b"\x1b[200~alpha\nbeta\ngamma\x1b[201~\r");
    let text = t.wait_for(&["< alpha", "< beta", "< gamma"], Duration::from_secs(5));
    assert!(!text.contains("< alpha\n"), "sent as one message: {text:?}");
    t.close_ok();
}

/// The trace as the terminal shows it: escape sequences out, carriage returns honoured, so
/// each line is what a person sees on that row.
#[cfg(target_os = "linux")]
fn screen_lines(raw: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut at_left = false;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters final-byte.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            // Back to column 0: text that follows overwrites the row (the tests only care
            // that a line starts at the left, so the row starts afresh).
            '\r' => at_left = true,
            '\n' => {
                lines.push(String::new());
                at_left = false;
            }
            c => {
                if let Some(l) = lines.last_mut() {
                    if at_left {
                        l.clear();
                        at_left = false;
                    }
                    l.push(c);
                }
            }
        }
    }
    lines
}

/// Asserts that `lines` has a trace line (one starting with `[` or `═`) containing each of
/// `want`, in that order.
#[cfg(target_os = "linux")]
fn assert_trace_lines_in_order(lines: &[String], want: &[&str]) {
    let mut at = 0;
    for w in want {
        let found = lines[at..].iter().position(|l| {
            l.contains(w) && (l.trim_start().starts_with('[') || l.trim_start().starts_with('═'))
        });
        let Some(i) = found else {
            panic!(
                "no line with {w:?} (in order, at the start of a row):\n{}",
                lines.join("\n")
            );
        };
        at += i + 1;
    }
}

/// Item 9: Ctrl-C in a terminal under --trace closes with 1000 and shows every closing step,
/// each on its own line.
#[cfg(target_os = "linux")]
#[test]
fn connect_in_a_terminal_traces_the_close_after_ctrl_c() {
    // With -n too: only the end of input keeps the session open, not Ctrl-C.
    for extra in [None, Some("-n")] {
        ctrl_c_closes(extra);
    }
}

#[cfg(target_os = "linux")]
fn ctrl_c_closes(extra: Option<&str>) {
    let mut flags = vec!["--trace", "--compress", "off"];
    flags.extend(extra);
    let (_srv, mut t) = connected_terminal(&flags);
    t.write(b"hello\n");
    t.wait_for(&["< hello"], Duration::from_secs(5));
    t.write(b"\x03");
    let code = t.wait_exit(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    let raw = t.text();
    let lines = screen_lines(&raw);
    let want = [
        "═══ closing: client sent close first ═══",
        "client ───▶ server  CLOSE  fin rsv=000 masked   len=2 code=1000",
        "client ◀─── server  CLOSE  fin rsv=000 unmasked len=2 code=1000",
        "client ─ ✕ ─ server  TCP closed by the server",
        "═══ closed: 1000, initiated by the client ═══",
    ];
    assert_trace_lines_in_order(&lines, &want);
    assert_eq!(code, Some(0), "{extra:?}: {}", lines.join("\n"));
}

/// Item 9: `/close CODE REASON` in a terminal under --trace: the same, with the code asked for.
#[cfg(target_os = "linux")]
#[test]
fn connect_in_a_terminal_traces_a_close_command() {
    let (_srv, mut t) = connected_terminal(&["--trace", "--compress", "off"]);
    t.write(b"/close 4000 done\n");
    let code = t.wait_exit(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    let lines = screen_lines(&t.text());
    let want = [
        "client ───▶ server  TCP connect 127.0.0.1:",
        "client ───▶ server  GET /echo HTTP/1.1",
        "client ◀─── server  HTTP/1.1 101 Switching Protocols",
        "═══ closing: client sent close first ═══",
        "client ───▶ server  CLOSE  fin rsv=000 masked   len=6 code=4000 reason=\"done\"",
        "client ◀─── server  CLOSE  fin rsv=000 unmasked len=2 code=4000 reason=\"\"",
        "client ─ ✕ ─ server  TCP closed by the server",
        "═══ closed: 4000, initiated by the client ═══",
    ];
    assert_trace_lines_in_order(&lines, &want);
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
}

/// `switchboard serve` run as a user runs it; stopped (killed) when dropped.
struct Served {
    child: std::process::Child,
    /// The log up to and including the "listening on" line.
    log: String,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `switchboard serve ARGS` with `env` set, its stderr piped.
fn serve_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Starts `switchboard serve ARGS` with `env` set; waits for "listening on".
#[allow(clippy::zombie_processes)] // `Served`'s drop waits for it.
fn serve_bin(args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut child = serve_command(args, env)
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("serve {args:?} ended before listening:\n{log}");
        }
        log.push_str(&line);
        if let Some(i) = line.find("listening on http://") {
            let rest = &line[i + "listening on http://".len()..];
            let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            // Keep draining the log so the server never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
            return Served { child, log, addr };
        }
    }
}

/// Runs `switchboard serve ARGS` expecting it to refuse to start: (status, stderr).
fn serve_refused(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut child = serve_command(args, env).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {args:?} {env:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Item 13: `--listen :PORT` and `localhost:PORT`; times as `10s`/`500ms` on flags, in the
/// environment and in the file.
#[test]
fn serve_takes_short_listen_addresses_and_durations_with_units() {
    let s = serve_bin(
        &[
            "--listen",
            ":0",
            "--ping-interval",
            "10s",
            "--pong-timeout",
            "500ms",
            "--shutdown-timeout",
            "2s",
        ],
        &[("SWITCHBOARD_IDLE_TIMEOUT", "1h")],
    );
    assert!(s.addr.ip().is_loopback(), "{}", s.log);
    let (code, out, err) = connect(
        &["--timeout", "2s", &format!("ws://{}/echo", s.addr)],
        "units\n",
    );
    assert_eq!((code, out.as_str()), (0, "units\n"), "{err}");
    let s = serve_bin(&["--listen", "localhost:0"], &[]);
    assert!(s.addr.ip().is_loopback(), "{}", s.log);
    let file = temp_file(
        "durations.toml",
        "listen = \":0\"\nping_interval = \"500ms\"\nidle_timeout = \"2m\"\nshutdown_timeout = 1\n",
    );
    let s = serve_bin(&["--config", file.to_str().unwrap()], &[]);
    assert!(s.addr.ip().is_loopback(), "{}", s.log);
}

/// Item 14: the start log says the version, the workers, the transport and the config file.
#[test]
fn serve_start_log_names_version_workers_transport_and_config_file() {
    let s = serve_bin(&["--listen", "127.0.0.1:0", "--workers", "3"], &[]);
    let version = format!("switchboard {}", env!("CARGO_PKG_VERSION"));
    assert!(s.log.contains(&version), "{}", s.log);
    assert!(s.log.contains("3 workers"), "{}", s.log);
    assert!(
        s.log.contains("sockets: io_uring") || s.log.contains("sockets: epoll"),
        "{}",
        s.log
    );
    assert!(s.log.contains("config file: none"), "{}", s.log);
    let file = temp_file("start-log.toml", "listen = \"127.0.0.1:0\"\nworkers = 1\n");
    let s = serve_bin(
        &["--config", file.to_str().unwrap(), "--io-uring", "false"],
        &[],
    );
    assert!(s.log.contains("1 worker,"), "{}", s.log);
    assert!(s.log.contains("sockets: epoll"), "{}", s.log);
    let shown = std::fs::canonicalize(&file).unwrap();
    assert!(
        s.log.contains(&format!("config file: {}", shown.display())),
        "{}",
        s.log
    );
}

/// Item 13: allowed origins have one name: --allow-origin, SWITCHBOARD_ALLOW_ORIGIN,
/// allow_origin in the file; the old names are refused with the new one.
#[test]
fn serve_allow_origin_has_one_name_everywhere() {
    let check = |s: &Served, origin: &str| {
        let (code, _, err) = connect(&["--origin", origin, &format!("ws://{}/echo", s.addr)], "");
        (code, err)
    };
    let s = serve_bin(
        &["--listen", "127.0.0.1:0"],
        &[(
            "SWITCHBOARD_ALLOW_ORIGIN",
            "https://env.example,https://env2.example",
        )],
    );
    assert_eq!(check(&s, "https://env2.example").0, 0);
    let (code, err) = check(&s, "https://elsewhere.example");
    assert_eq!(code, 5, "{err}");
    let file = temp_file(
        "origins.toml",
        "listen = \"127.0.0.1:0\"\nallow_origin = [\"https://file.example\"]\n",
    );
    let s = serve_bin(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(check(&s, "https://file.example").0, 0);
    let (code, err) = serve_refused(&[], &[("SWITCHBOARD_ALLOW_ORIGINS", "https://x.example")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("SWITCHBOARD_ALLOW_ORIGIN "), "{err}");
    let old = temp_file("old.toml", "allowed_origins = [\"https://x.example\"]\n");
    let (code, err) = serve_refused(&["--config", old.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`allow_origin`"), "{err}");
}

/// Item 13: a bad value from the environment is named as the variable; workers = 0 is
/// refused on the flag, in the environment and in the file; each is one `error:` line.
#[test]
fn serve_option_errors_name_their_source_and_refuse_zero_workers() {
    let (code, err) = serve_refused(&[], &[("SWITCHBOARD_WORKERS", "many")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("SWITCHBOARD_WORKERS"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let (code, err) = serve_refused(&[], &[("SWITCHBOARD_PING_INTERVAL", "soon")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("SWITCHBOARD_PING_INTERVAL") && err.contains("10s"),
        "{err}"
    );
    let (code, err) = serve_refused(&[], &[("SWITCHBOARD_SLOW_CONSUMER", "sometimes")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("SWITCHBOARD_SLOW_CONSUMER") && err.contains("disconnect, drop-oldest"),
        "{err}"
    );
    let (code, err) = serve_refused(&["--workers", "0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--workers"), "{err}");
    let (code, err) = serve_refused(&[], &[("SWITCHBOARD_WORKERS", "0")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("SWITCHBOARD_WORKERS"), "{err}");
    let zero = temp_file("zero.toml", "workers = 0\n");
    let (code, err) = serve_refused(&["--config", zero.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("workers must be at least 1"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// A namespace mistake in the config file is one `error:` line naming the fix (exit 2).
#[test]
fn serve_refuses_a_bad_namespace_in_one_line() {
    let bad = temp_file("ns.toml", "[namespaces.private]\nsubscribe = \"tokens\"\n");
    let (code, err) = serve_refused(&["--config", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("error: ")
            && err.contains(r#"[namespaces.private] subscribe = "tokens": write "anyone""#),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// A WebSocket server for one connection that runs `script` after the handshake.
fn scripted<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(switchboard_tokio::WebSocket<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let (tcp, _) = l.accept().await.unwrap();
            let ws = switchboard_tokio::accept(tcp, switchboard_proto::Config::default())
                .await
                .unwrap();
            script(ws).await;
        });
    });
    rx.recv().unwrap()
}

/// A plain TCP server that answers one connection with `answer`, whatever it was sent.
fn answers(answer: &'static [u8]) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = [0u8; 2048];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = s.write_all(answer);
        }
    });
    addr
}

/// Item 10: -n/--no-close keeps the connection after stdin ends, until the server closes.
#[test]
fn connect_no_close_stays_open_after_stdin_ends() {
    for flag in ["-n", "--no-close"] {
        let addr = scripted(|mut ws| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = ws.send(&switchboard_proto::Message::text("late")).await;
            let _ = ws.close(switchboard_proto::CloseCode::NORMAL, "").await;
        });
        let (code, out, err) = connect(&[flag, &format!("ws://{addr}/")], "");
        assert_eq!((code, out.as_str()), (0, "late\n"), "{flag}: {err}");
    }
}

/// Item 10: --ping-interval pings the server while the connection is quiet.
#[test]
fn connect_ping_interval_keeps_the_connection_alive() {
    let addr = scripted(|mut ws| async move {
        let mut pings = 0;
        let end = tokio::time::Instant::now() + Duration::from_millis(1000);
        loop {
            tokio::select! {
                ev = ws.next_event() => match ev {
                    Ok(Some(switchboard_proto::Event::Ping(_))) => pings += 1,
                    Ok(Some(_)) => {}
                    _ => return,
                },
                () = tokio::time::sleep_until(end) => break,
            }
        }
        let _ = ws
            .send(&switchboard_proto::Message::text(format!("pings {pings}")))
            .await;
        let _ = ws.close(switchboard_proto::CloseCode::NORMAL, "").await;
    });
    let (code, out, err) = connect(
        &["-n", "--ping-interval", "100ms", &format!("ws://{addr}/")],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let pings: u32 = out.trim().strip_prefix("pings ").unwrap().parse().unwrap();
    assert!((5..=12).contains(&pings), "{pings} pings in 1 s at 100ms");
}

/// Item 10: wss:// to a plain server says to try ws://; an HTTP/1.0 or other non-101 answer
/// shows its status line; something that is not HTTP shows what it said.
#[test]
fn connect_explains_wrong_scheme_and_shows_the_status_line() {
    let srv = server(ServerConfig::default());
    let (code, _, err) = connect(&[&format!("wss://{}/echo", srv.addr)], "");
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains(&format!("try ws://{}/echo", srv.addr)),
        "{err}"
    );
    let addr = answers(b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nno entry\n");
    let (code, _, err) = connect(&[&format!("ws://{addr}/")], "");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("HTTP/1.0 403 Forbidden"), "{err}");
    let addr = answers(b"HTTP/1.0 200 OK\r\n\r\n<html>hello</html>");
    let (code, _, err) = connect(&[&format!("ws://{addr}/")], "");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("HTTP/1.0 200 OK"), "{err}");
    let addr = answers(b"SSH-2.0-OpenSSH_9.2p1\r\n");
    let (code, _, err) = connect(&[&format!("ws://{addr}/")], "");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("SSH-2.0-OpenSSH_9.2p1"), "{err}");
}

/// Item 10: usage mistakes exit 2 with one `error:` line, whatever RUST_BACKTRACE says;
/// failures are `error:` lines too.
#[test]
fn connect_errors_are_one_line_with_the_documented_status() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("connect")
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["foo://example.com/"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("error: ") && err.contains("ws"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let (code, err) = run(&["-H", "no colon", "ws://127.0.0.1:1/"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("Name: value"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let free = free_addr();
    let (code, err) = run(&[&format!("ws://{free}/")]);
    assert_eq!(code, 6, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("is the server running"),
        "{err}"
    );
}

/// Runs `switchboard bench ARGS --quiet`: (status, stdout, how long it ran).
fn bench_run(args: &[&str]) -> (i32, String, Duration) {
    let t0 = std::time::Instant::now();
    let out = bench(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        t0.elapsed(),
    )
}

/// Item 12: `bench echo` aimed at an endpoint that does not echo stops early and says why,
/// instead of reporting a throughput and a latency of failures.
#[test]
fn bench_echo_at_a_non_echo_endpoint_stops_early_and_says_why() {
    let srv = server(ServerConfig::default());
    let url = format!("ws://{}/chat", srv.addr);
    let (code, out, took) = bench_run(&["echo", &url, "-c", "4", "--duration", "10s"]);
    assert_eq!(code, 1, "{out}");
    assert!(took < Duration::from_secs(5), "ran {took:?}:\n{out}");
    assert!(out.contains("stopped early"), "{out}");
    assert!(out.contains("not echoes") && out.contains("/echo"), "{out}");
    assert!(
        !out.lines()
            .any(|l| l.starts_with("throughput") || l.starts_with("latency")),
        "{out}"
    );
}

/// Item 12: a refused target asks whether the server is running; no rate is reported.
#[test]
fn bench_at_a_refused_target_asks_if_the_server_is_running() {
    let free = free_addr();
    let url = format!("ws://{free}/echo");
    for scenario in ["echo", "connect"] {
        let (code, out, took) = bench_run(&[scenario, &url, "-c", "2", "--duration", "10s"]);
        assert_eq!(code, 1, "{out}");
        assert!(
            took < Duration::from_secs(5),
            "{scenario} ran {took:?}:\n{out}"
        );
        assert!(out.contains("is the server running"), "{scenario}: {out}");
        assert!(
            !out.lines().any(|l| l.starts_with("throughput")),
            "{scenario}: {out}"
        );
    }
}

/// Item 12: memory per connection measured over a few connections says it is noise.
#[test]
fn bench_broadcast_memory_from_few_connections_is_called_noise() {
    let s = serve_bin(&["--listen", "127.0.0.1:0", "--workers", "1"], &[]);
    let pid = s.child.id().to_string();
    let (code, out, _) = bench_run(&[
        "broadcast",
        &format!("ws://{}/ws", s.addr),
        "--subscribers",
        "20",
        "--rate",
        "50",
        "--count",
        "5",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("server RSS"))
        .unwrap_or_else(|| panic!("no memory line:\n{out}"));
    assert!(
        line.contains("noise") && line.contains("1000 or more"),
        "{line}"
    );
}

/// When the server ends the session while the line editor runs, what it said is shown and the
/// terminal is left in its normal mode (not raw, where typing shows nothing).
#[cfg(target_os = "linux")]
#[test]
fn connect_in_a_terminal_restores_it_when_the_server_closes() {
    let (srv, mut t) = connected_terminal(&[]);
    assert!(
        !t.is_cooked(),
        "the editor should have the terminal in raw mode"
    );
    // Shutting down sends 1001 Going Away.
    drop(srv);
    assert_eq!(
        t.wait_exit(Duration::from_secs(10)),
        Some(3),
        "{}",
        t.text()
    );
    std::thread::sleep(Duration::from_millis(200));
    let lines = screen_lines(&t.text());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("closed by the server with 1001")),
        "{}",
        lines.join("\n")
    );
    assert!(t.is_cooked(), "the terminal was left in raw mode");
}
