//! Real proxies for the client's tests: Debian's `tinyproxy` (HTTP `CONNECT`) and
//! `microsocks` (SOCKS5), each on a free port of 127.0.0.1, killed when dropped.
//!
//! `scripts/test.sh` installs both when they are missing. A test that needs one and does not
//! find the program is skipped, saying so on stderr; one that is installed but does not come
//! up fails.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a started proxy has to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running proxy process.
#[derive(Debug)]
pub struct ProxyProcess {
    port: u16,
    child: Child,
    /// tinyproxy's configuration directory, removed on drop.
    dir: Option<PathBuf>,
    /// tinyproxy's log, for failed tests.
    log: Option<PathBuf>,
}

impl ProxyProcess {
    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it logged so far (tinyproxy only; empty otherwise).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What tinyproxy allows.
#[derive(Debug, Clone, Default)]
pub struct Tinyproxy<'a> {
    /// `ConnectPort` lines: `CONNECT` only to these ports (none: any port).
    pub connect_ports: &'a [u16],
    /// `BasicAuth user password`: only clients that send these.
    pub basic_auth: Option<(&'a str, &'a str)>,
}

impl Tinyproxy<'_> {
    /// Starts tinyproxy with these settings, or `None` (saying so) when it is not installed.
    ///
    /// # Panics
    /// If it is installed but does not come up on any of a few ports.
    pub fn start(&self) -> Option<ProxyProcess> {
        let bin = find("tinyproxy")?;
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "sb-tinyproxy-{}-{port}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir for tinyproxy");
            let log = dir.join("tinyproxy.log");
            let mut conf = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients 100\n\
                 LogLevel Info\nLogFile \"{}\"\n",
                log.display()
            );
            for p in self.connect_ports {
                conf.push_str(&format!("ConnectPort {p}\n"));
            }
            if let Some((user, password)) = self.basic_auth {
                conf.push_str(&format!("BasicAuth {user} {password}\n"));
            }
            let conf_path = dir.join("tinyproxy.conf");
            std::fs::write(&conf_path, conf).expect("tinyproxy.conf written");
            let child = Command::new(&bin)
                .arg("-d")
                .arg("-c")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("tinyproxy runs");
            match wait_ready(child, port, "tinyproxy") {
                Ok(child) => {
                    return Some(ProxyProcess {
                        port,
                        child,
                        dir: Some(dir),
                        log: Some(log),
                    })
                }
                Err(e) => {
                    last = format!(
                        "{e}; log: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        panic!("tinyproxy did not start: {last}");
    }
}

/// Starts microsocks (SOCKS5) on 127.0.0.1, with `-u user -P password` when `auth` is given,
/// or `None` (saying so) when it is not installed.
///
/// # Panics
/// If it is installed but does not come up on any of a few ports.
pub fn microsocks(auth: Option<(&str, &str)>) -> Option<ProxyProcess> {
    let bin = find("microsocks")?;
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
        if let Some((user, password)) = auth {
            cmd.args(["-u", user, "-P", password]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("microsocks runs");
        match wait_ready(child, port, "microsocks") {
            Ok(child) => {
                return Some(ProxyProcess {
                    port,
                    child,
                    dir: None,
                    log: None,
                })
            }
            Err(e) => last = e,
        }
    }
    panic!("microsocks did not start: {last}");
}

/// The program's path, or `None` after saying on stderr that the test is skipped.
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "skipped: {name} is not installed (`apt-get install {name}`; scripts/test.sh installs it)"
        );
    }
    found
}

/// Waits until `port` accepts connections, or the process ends, or the time is up.
fn wait_ready(mut child: Child, port: u16, name: &str) -> Result<Child, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{name} exited with {status} (port {port})"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{name} not listening on {port} within {READY_TIMEOUT:?}"
            ));
        }
        sleep(Duration::from_millis(20));
    }
}

/// A port of 127.0.0.1 that the system just gave out and took back.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
