//! `switchboard connect` and `switchboard bench` through real proxies (Debian's tinyproxy and
//! microsocks) to an in-process server: `--proxy`, the environment variables, `--no-proxy`,
//! the errors, and `--trace`'s proxy phase.
//!
//! A test whose proxy program is not installed is skipped with a message on stderr
//! (scripts/test.sh installs both).

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use switchboard_server::{Server, ServerConfig};
use switchboard_testkit::proxies::{microsocks, Tinyproxy};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Every variable the client reads, removed from the children's environment unless a test
/// sets it.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
];

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

fn server(config: ServerConfig) -> Srv {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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

/// A TLS server with a self-signed certificate for "localhost", and the certificate's path.
fn tls_server(dir: &std::path::Path) -> (Srv, String) {
    std::fs::create_dir_all(dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let acceptor = switchboard_tokio::tls::acceptor_from_pem(&cert_path, &key_path).unwrap();
    let srv = server(ServerConfig::default().tls(acceptor));
    (srv, cert_path.to_str().unwrap().to_string())
}

/// Runs `switchboard ARGS` with `stdin`, and only the proxy variables in `env`:
/// (status, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
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

/// A local address nobody listens on.
fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn connect_through_tinyproxy_and_microsocks_with_proxy_option() {
    let srv = server(ServerConfig::default());
    let dir = std::env::temp_dir().join(format!("sb-cli-proxy-{}", std::process::id()));
    let (tls, ca) = tls_server(&dir);
    let ports = [srv.addr.port(), tls.addr.port()];
    let Some(tp) = (Tinyproxy {
        connect_ports: &ports,
        basic_auth: Some(("alice", "s3cret")),
    })
    .start() else {
        return;
    };
    let Some(socks) = microsocks(Some(("bob", "pa55"))) else {
        return;
    };
    let ws = format!("ws://{}/echo", srv.addr);
    let wss = format!("wss://localhost:{}/echo", tls.addr.port());
    let http = format!("http://alice:s3cret@127.0.0.1:{}", tp.port());
    let socks5 = format!("socks5://bob:pa55@127.0.0.1:{}", socks.port());
    for proxy in [&http, &socks5] {
        for url in [&ws, &wss] {
            let (code, out, err) = run(
                &["connect", "--proxy", proxy, "--ca", &ca, url],
                &[],
                "hello\n",
            );
            assert_eq!((code, out.as_str()), (0, "hello\n"), "{proxy} {url}: {err}");
        }
    }
    let log = tp.log();
    assert!(
        log.contains(&format!("CONNECT localhost:{}", tls.addr.port())),
        "{log}"
    );
    // Wrong credentials: one error line, exit 6, no password in it.
    let wrong = format!("http://alice:nope@127.0.0.1:{}", tp.port());
    let (code, _, err) = run(&["connect", "--proxy", &wrong, &ws], &[], "x\n");
    assert_eq!(code, 6, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("wants authentication"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("nope"), "{err}");
    let none = format!("http://127.0.0.1:{}", tp.port());
    let (code, _, err) = run(&["connect", "--proxy", &none, &ws], &[], "x\n");
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("407") && err.contains("user:password"),
        "{err}"
    );
    let socks_wrong = format!("socks5://bob:nope@127.0.0.1:{}", socks.port());
    let (code, _, err) = run(&["connect", "--proxy", &socks_wrong, &ws], &[], "x\n");
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("refused the user name and password"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connect_reads_the_proxy_variables_unless_told_not_to() {
    let srv = server(ServerConfig::default());
    let dir = std::env::temp_dir().join(format!("sb-cli-proxy-env-{}", std::process::id()));
    let (tls, ca) = tls_server(&dir);
    let Some(socks) = microsocks(None) else {
        return;
    };
    let ws = format!("ws://{}/echo", srv.addr);
    let wss = format!("wss://localhost:{}/echo", tls.addr.port());
    let socks5 = format!("socks5h://127.0.0.1:{}", socks.port());
    let dead = format!("http://{}", dead_addr());
    // wss:// takes HTTPS_PROXY (working); ws:// takes ALL_PROXY (dead).
    let env = [
        ("HTTPS_PROXY", socks5.as_str()),
        ("ALL_PROXY", dead.as_str()),
    ];
    let (code, out, err) = run(&["connect", "--ca", &ca, &wss], &env, "via env\n");
    assert_eq!((code, out.as_str()), (0, "via env\n"), "{err}");
    let (code, _, err) = run(&["connect", &ws], &env, "x\n");
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("cannot connect to the proxy") && err.contains("from ALL_PROXY"),
        "{err}"
    );
    // --no-proxy ignores them; NO_PROXY exempts the host.
    let (code, out, err) = run(&["connect", "--no-proxy", &ws], &env, "direct\n");
    assert_eq!((code, out.as_str()), (0, "direct\n"), "{err}");
    let env_np = [("all_proxy", dead.as_str()), ("no_proxy", "127.0.0.1")];
    let (code, out, err) = run(&["connect", &ws], &env_np, "exempt\n");
    assert_eq!((code, out.as_str()), (0, "exempt\n"), "{err}");
    // --proxy wins over the variables.
    let (code, out, err) = run(&["connect", "--proxy", &socks5, &ws], &env, "explicit\n");
    assert_eq!((code, out.as_str()), (0, "explicit\n"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_proxy_urls_are_usage_errors() {
    let (code, _, err) = run(
        &["connect", "--proxy", "ftp://u:pw@h:1", "ws://127.0.0.1:1/"],
        &[],
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--proxy") && err.contains("unsupported proxy scheme"),
        "{err}"
    );
    assert!(!err.contains("pw"), "{err}");
    let env = [("HTTP_PROXY", "socks4://h:1")];
    let (code, _, err) = run(&["connect", "ws://127.0.0.1:1/"], &env, "");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("HTTP_PROXY") && err.contains("--no-proxy"),
        "{err}"
    );
    let (code, _, err) = run(
        &[
            "connect",
            "--proxy",
            "h:1",
            "--no-proxy",
            "ws://127.0.0.1:1/",
        ],
        &[],
        "",
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn connect_trace_shows_the_proxy_phase() {
    let srv = server(ServerConfig::default());
    let Some(tp) = (Tinyproxy {
        connect_ports: &[srv.addr.port()],
        basic_auth: Some(("alice", "s3cret")),
    })
    .start() else {
        return;
    };
    let ws = format!("ws://{}/echo", srv.addr);
    let proxy = format!("http://alice:s3cret@127.0.0.1:{}", tp.port());
    let (code, _, err) = run(&["connect", "--trace", "--proxy", &proxy, &ws], &[], "hi\n");
    assert_eq!(code, 0, "{err}");
    let want = [
        format!(
            "client ───▶ proxy   TCP connect 127.0.0.1:{}, HTTP proxy",
            tp.port()
        ),
        format!("client ───▶ proxy   CONNECT {} HTTP/1.1", srv.addr),
        "Proxy-Authorization: Basic *** (user alice)".to_string(),
        "client ◀─── proxy   HTTP/1.0 200 Connection established".to_string(),
        format!("═══ tunnel to {} open ═══", srv.addr),
        "client ───▶ server  GET /echo HTTP/1.1".to_string(),
    ];
    let mut at = 0;
    for w in &want {
        let found = err[at..].find(w.as_str());
        assert!(found.is_some(), "{w:?} not in order in:\n{err}");
        at += found.unwrap_or(0);
    }
    assert!(
        !err.contains("s3cret") && !err.contains("YWxpY2U6czNjcmV0"),
        "{err}"
    );
    // Refused: the status line in the trace too.
    let (code, _, err) = run(
        &[
            "connect",
            "--trace-json",
            "--proxy",
            &proxy,
            "ws://127.0.0.1:9/",
        ],
        &[],
        "",
    );
    assert_eq!(code, 6, "{err}");
    let events: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds,
        ["proxy_connect", "proxy", "proxy", "tunnel_failed"],
        "{err}"
    );
    assert_eq!(events[2]["line"], "HTTP/1.1 403 Access violation", "{err}");
    assert!(
        err.contains(r#"answered \"HTTP/1.1 403 Access violation\""#)
            || err.contains(r#"answered "HTTP/1.1 403 Access violation""#),
        "{err}"
    );
}

#[test]
fn bench_connect_goes_through_the_proxy() {
    let srv = server(ServerConfig::default());
    let Some(socks) = microsocks(None) else {
        return;
    };
    let ws = format!("ws://{}/echo", srv.addr);
    let proxy = format!("socks5://127.0.0.1:{}", socks.port());
    let env = [("ALL_PROXY", proxy.as_str())];
    let args = [
        "bench",
        "connect",
        &ws,
        "--connections",
        "2",
        "--duration",
        "1s",
        "--json",
        "--quiet",
    ];
    let (code, out, err) = run(&args, &env, "");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains(&format!("through {proxy} (from ALL_PROXY")),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(json["received"].as_u64().unwrap() > 0, "{json}");
    // With the proxy gone, every attempt fails naming it; --no-proxy goes direct.
    drop(socks);
    let (code, out, _) = run(&args, &env, "");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot connect to the proxy"), "{out}");
    let mut direct = args.to_vec();
    direct.push("--no-proxy");
    let (code, out, err) = run(&direct, &env, "");
    assert_eq!(code, 0, "{out}\n{err}");
}
