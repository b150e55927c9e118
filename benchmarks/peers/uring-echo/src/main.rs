//! Experiment, not a product: Switchboard's sans-IO protocol core (`switchboard-proto`)
//! driven by one io_uring on one thread, with no tokio. It answers one question for
//! benchmarks/README.md: how much server CPU per echo does batching every socket's reads and
//! writes into one `io_uring_enter` save, against the epoll + tokio path that
//! `switchboard serve` and fastwebsockets share?
//!
//! It does what the echo benchmark needs and no more: the handshake at any path, echo of
//! every message, and the close handshake. No heartbeats, timeouts, TLS, limits on
//! connections, or graceful shutdown.
//!
//!     uring-echo --listen 127.0.0.1:9002 [--eager-recv]

use std::io::IoSlice;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};
use switchboard_proto::handshake::server::Request;
use switchboard_proto::{Config, Connection, Event, Role};

const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const RBUF: usize = 64 * 1024;
const MAX_IOV: usize = 8;

struct Conn {
    fd: RawFd,
    /// Receive buffer lent to the kernel while a recv is in flight.
    rbuf: Box<[u8]>,
    /// Handshake bytes so far, then the 101 response being sent.
    hs: Vec<u8>,
    ws: Option<Connection>,
    iov: [libc::iovec; MAX_IOV],
    msg: libc::msghdr,
    sending: bool,
    receiving: bool,
    eof: bool,
}

struct Server {
    ring: IoUring,
    conns: Vec<Option<Box<Conn>>>,
    free: Vec<usize>,
    config: Arc<Config>,
    /// `--eager-recv`: queue a connection's next receive beside its send, instead of once
    /// the send has completed.
    eager_recv: bool,
}

fn user_data(slot: usize, kind: u64) -> u64 {
    ((slot as u64) << 2) | kind
}

impl Server {
    fn push(&mut self, e: squeue::Entry) {
        // SAFETY: every buffer an entry points at lives in a boxed `Conn` that is only freed
        // once no operation of it is in flight.
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            self.ring.submit().expect("io_uring submit");
        }
    }

    fn recv(&mut self, slot: usize) {
        let c = self.conns[slot].as_mut().expect("conn");
        c.receiving = true;
        let e = opcode::Recv::new(types::Fd(c.fd), c.rbuf.as_mut_ptr(), RBUF as u32)
            .build()
            .user_data(user_data(slot, RECV));
        self.push(e);
    }

    /// Sends what is queued (the 101 response, or the connection's frames), if anything.
    fn send(&mut self, slot: usize) {
        let c = self.conns[slot].as_mut().expect("conn");
        let n = match &c.ws {
            None => {
                c.iov[0] = libc::iovec {
                    iov_base: c.hs.as_mut_ptr().cast(),
                    iov_len: c.hs.len(),
                };
                usize::from(!c.hs.is_empty())
            }
            Some(ws) => {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let n = ws.transmit_slices(&mut slices);
                for (v, s) in c.iov.iter_mut().zip(&slices[..n]) {
                    *v = libc::iovec {
                        iov_base: s.as_ptr() as *mut _,
                        iov_len: s.len(),
                    };
                }
                n
            }
        };
        if n == 0 {
            return;
        }
        c.msg.msg_iov = c.iov.as_mut_ptr();
        c.msg.msg_iovlen = n;
        c.sending = true;
        let e = if n == 1 {
            opcode::Send::new(
                types::Fd(c.fd),
                c.iov[0].iov_base.cast(),
                c.iov[0].iov_len as u32,
            )
            .build()
        } else {
            opcode::SendMsg::new(types::Fd(c.fd), &c.msg).build()
        };
        self.push(e.user_data(user_data(slot, SEND)));
    }

    fn close(&mut self, slot: usize) {
        if let Some(c) = self.conns[slot].take() {
            // SAFETY: the descriptor came from accept and is closed once.
            unsafe { libc::close(c.fd) };
            self.free.push(slot);
        }
    }

    /// Handles what the connection has buffered: the handshake, or frames to echo.
    fn process(&mut self, slot: usize) {
        let config = Arc::clone(&self.config);
        let c = self.conns[slot].as_mut().expect("conn");
        match &mut c.ws {
            None => match Request::parse(&c.hs, &config) {
                Ok(None) => {}
                Ok(Some((req, used))) => match req.accept(None, &config, &[]) {
                    Ok(acc) => {
                        let rest = c.hs.split_off(used);
                        c.hs = acc.response;
                        let mut ws = Connection::new(Role::Server, Arc::clone(&config));
                        ws.handle_read(&rest);
                        // The 101 goes first; frames follow once it is written.
                        self.send(slot);
                        let c = self.conns[slot].as_mut().expect("conn");
                        c.ws = Some(ws);
                        return;
                    }
                    Err(_) => c.eof = true,
                },
                Err(_) => c.eof = true,
            },
            Some(ws) => loop {
                match ws.poll_event() {
                    Ok(Some(Event::Message(m))) => {
                        if ws.send(&m).is_err() {
                            break;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            },
        }
        self.send(slot);
    }

    fn after(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_ref() else {
            return;
        };
        let done = c.eof || c.ws.as_ref().is_some_and(|ws| ws.should_close_tcp());
        if done {
            if !c.sending && !c.receiving {
                self.close(slot);
            }
        } else if !c.receiving && (!c.sending || self.eager_recv) {
            // By default the next receive waits for the send: it is submitted a round
            // later, when the peer's next message has usually arrived, and completes at once.
            self.recv(slot);
        }
    }

    fn complete(&mut self, ud: u64, res: i32, listener: RawFd) {
        let slot = (ud >> 2) as usize;
        match ud & 3 {
            ACCEPT => {
                if res >= 0 {
                    let one: libc::c_int = 1;
                    // SAFETY: a valid descriptor and a c_int option value.
                    unsafe {
                        libc::setsockopt(
                            res,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&one as *const libc::c_int).cast(),
                            4,
                        )
                    };
                    let conn = Box::new(Conn {
                        fd: res,
                        rbuf: vec![0; RBUF].into_boxed_slice(),
                        hs: Vec::new(),
                        ws: None,
                        iov: [libc::iovec {
                            iov_base: std::ptr::null_mut(),
                            iov_len: 0,
                        }; MAX_IOV],
                        // SAFETY: an all-zero msghdr is valid (no name, no control data).
                        msg: unsafe { std::mem::zeroed() },
                        sending: false,
                        receiving: false,
                        eof: false,
                    });
                    let s = match self.free.pop() {
                        Some(s) => {
                            self.conns[s] = Some(conn);
                            s
                        }
                        None => {
                            self.conns.push(Some(conn));
                            self.conns.len() - 1
                        }
                    };
                    self.recv(s);
                }
                self.push(
                    opcode::Accept::new(
                        types::Fd(listener),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                    .build()
                    .user_data(ACCEPT),
                );
            }
            RECV => {
                let Some(c) = self.conns[slot].as_mut() else {
                    return;
                };
                c.receiving = false;
                if res <= 0 {
                    c.eof = true;
                } else {
                    let data = &c.rbuf[..res as usize];
                    match &mut c.ws {
                        None => c.hs.extend_from_slice(data),
                        Some(ws) => ws.handle_read(data),
                    }
                    if !c.sending {
                        self.process(slot);
                    }
                }
                self.after(slot);
            }
            SEND => {
                let Some(c) = self.conns[slot].as_mut() else {
                    return;
                };
                c.sending = false;
                if res < 0 {
                    c.eof = true;
                } else {
                    let n = res as usize;
                    match &mut c.ws {
                        Some(ws) if c.hs.is_empty() => ws.advance_transmit(n),
                        _ => {
                            c.hs.drain(..n);
                        }
                    }
                    if !c.hs.is_empty() || c.ws.as_ref().is_some_and(|w| !w.transmit_is_empty()) {
                        self.send(slot);
                    } else {
                        self.process(slot);
                    }
                }
                self.after(slot);
            }
            _ => {}
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:9002".to_string();
    let mut eager_recv = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--eager-recv" => eager_recv = true,
            _ => {
                eprintln!("usage: uring-echo [--listen ADDR] [--eager-recv]");
                std::process::exit(2);
            }
        }
    }
    let listener = TcpListener::bind(&listen).expect("bind");
    let lfd = listener.as_raw_fd();
    let config = Config::default();
    let mut s = Server {
        ring: IoUring::builder()
            .setup_coop_taskrun()
            .setup_single_issuer()
            .build(4096)
            .expect("io_uring"),
        conns: Vec::new(),
        free: Vec::new(),
        config: Arc::new(config),
        eager_recv,
    };
    s.push(
        opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
            .build()
            .user_data(ACCEPT),
    );
    let mut done = Vec::with_capacity(4096);
    loop {
        s.ring.submit_and_wait(1).expect("io_uring_enter");
        done.clear();
        done.extend(s.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &done {
            s.complete(ud, res, lfd);
        }
    }
}
