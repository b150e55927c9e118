//! A real `redis-server` for the tests: on a free port of 127.0.0.1, without persistence
//! (`--save "" --appendonly no`), killed when dropped.
//!
//! `scripts/test.sh` installs the Debian package `redis-server` when it is missing; a test
//! that needs it and does not find it fails saying so (it is never skipped).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a started server has to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server` (or a stopped one that keeps its port for [`restart`]).
///
/// [`restart`]: RedisServer::restart
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is not installed, or no server came up after a few ports.
    pub fn start() -> Self {
        require_redis_server();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self { port, child: None };
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on (kept across [`stop`](Self::stop) and
    /// [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (its data is gone: nothing is saved). The port stays reserved for
    /// [`restart`](Self::restart) in the sense that this value remembers it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server must be able to die.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty, and waits until it answers `PING`.
    ///
    /// # Panics
    /// If it does not come up.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(err) if Instant::now() > deadline => {
                    panic!("redis-server did not restart on port {}: {err}", self.port)
                }
                Err(_) => sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing answers, as when
    /// Redis hangs or the network drops packets.
    ///
    /// # Panics
    /// If the server is not running or the signal cannot be sent.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [paused](Self::pause) server go on (`SIGCONT`).
    ///
    /// # Panics
    /// If the server is not running or the signal cannot be sent.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("redis-server on port {} is not running", self.port));
        let ok = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} {pid} failed");
    }

    /// Sends one command on a fresh connection and returns its reply, flattened: each
    /// simple string, error (with its `-`), integer and bulk string in order (`nil` for a
    /// null). `PUBSUB NUMSUB ch` gives `["ch", "1"]`, `CLIENT KILL …` gives `["2"]`.
    pub fn command(&self, args: &[&str]) -> std::io::Result<Vec<String>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = std::io::BufReader::new(stream);
        let mut out = Vec::new();
        read_reply(&mut reader, &mut out)?;
        Ok(out)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server exited with {status} (port {})",
                    self.port
                ));
            }
            if ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no PONG on port {} within {READY_TIMEOUT:?}",
                    self.port
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Panics, saying how to install it, unless `redis-server` runs.
pub fn require_redis_server() {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "redis-server is not installed: `apt-get install redis-server` (scripts/test.sh installs it)"
    );
}

/// Reads one RESP2 reply, appending its scalars to `out`.
fn read_reply(reader: &mut impl std::io::BufRead, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end();
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad reply {line:?}"),
        )
    };
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    match kind {
        "+" | ":" => out.push(rest.to_owned()),
        "-" => out.push(line.to_owned()),
        "$" => {
            let Ok(len) = usize::try_from(rest.parse::<i64>().map_err(|_| bad())?) else {
                out.push("nil".to_owned());
                return Ok(());
            };
            let mut data = vec![0u8; len + 2];
            reader.read_exact(&mut data)?;
            data.truncate(len);
            out.push(String::from_utf8_lossy(&data).into_owned());
        }
        "*" => {
            let count = rest.parse::<i64>().map_err(|_| bad())?;
            for _ in 0..count.max(0) {
                read_reply(reader, out)?;
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
