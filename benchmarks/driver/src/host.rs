//! `driver host`: what this machine is, and what its kernel charges for the operations an
//! echo server repeats per message.
//!
//! The paired CPU ratios moved from 0.90x to 1.06x between hosts of the same kind (2-vCPU
//! Firecracker guests, AMD EPYC or Intel Xeon, kernel 6.18.44 in different builds) with the
//! same binaries, and which transport won moved with them. These probes make a host's kind
//! visible next to the ratios it produced:
//!
//! - `syscall_ns`: one `getppid`, the bare cost of entering and leaving the kernel;
//! - `recv_eagain_ns`: one `recv` on an empty non-blocking TCP socket (entry, fd lookup,
//!   socket lock), what a readiness-driven server pays when it reads too early;
//! - `tcp_syscalls_ns`: `send` of 20 bytes on one end of a loopback TCP connection and
//!   `recv` of them on the other, with system calls (the TCP work of half an echo);
//! - `tcp_uring_ns`: the same send and receive as two linked io_uring entries, submitted
//!   and reaped with one `io_uring_enter`;
//! - `tcp_uring_over_syscalls`: the second over the first;
//! - `uring_nop_ns`: one NOP per `io_uring_enter`; `uring_nop_batch_ns`: per NOP, with 32
//!   per enter.
//!
//! Each figure is the best of 5 timed runs (the two TCP ones: of 10 shorter runs, taking
//! turns), so short interruptions do not count.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use anyhow::{bail, Context};
use io_uring::{opcode, squeue, types, IoUring};
use serde_json::{json, Value};

const RUNS: usize = 5;

/// One timed run of `f` (`n` operations): nanoseconds per op, to 0.1 ns.
fn timed(n: u64, f: &mut impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    f(n)?;
    Ok((t.elapsed().as_nanos() as f64 / n as f64 * 10.0).round() / 10.0)
}

/// Runs `f` (which does `n` operations) `RUNS` times; the fastest run's nanoseconds per op.
fn best(n: u64, mut f: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..RUNS {
        best = best.min(timed(n, &mut f)?);
    }
    Ok(best)
}

fn tcp_pair() -> anyhow::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let a = TcpStream::connect(l.local_addr()?)?;
    let (b, _) = l.accept()?;
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    Ok((a, b))
}

/// The value of the first `key: value` line of `text` (as /proc/cpuinfo writes them).
fn line_of(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn vulnerability(name: &str) -> Value {
    std::fs::read_to_string(format!("/sys/devices/system/cpu/vulnerabilities/{name}"))
        .map(|s| Value::String(s.trim().to_string()))
        .unwrap_or(Value::Null)
}

pub fn host() -> anyhow::Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model_name = line_of(&cpuinfo, "model name").unwrap_or_default();
    let cpu = json!({
        "model_name": model_name,
        "family": line_of(&cpuinfo, "cpu family"),
        "model": line_of(&cpuinfo, "model\t"),
        "stepping": line_of(&cpuinfo, "stepping"),
        "mhz": line_of(&cpuinfo, "cpu MHz"),
        "spectre_v2": vulnerability("spectre_v2"),
        "spec_rstack_overflow": vulnerability("spec_rstack_overflow"),
    });

    let syscall_ns = best(2_000_000, |n| {
        for _ in 0..n {
            // SAFETY: getppid has no preconditions.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        Ok(())
    })?;

    let (mut a, mut b) = tcp_pair()?;
    b.set_nonblocking(true)?;
    let mut buf = [0u8; 64];
    let recv_eagain_ns = best(1_000_000, |n| {
        for _ in 0..n {
            // SAFETY: a valid socket and buffer.
            let r = unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r >= 0 {
                bail!("recv on an empty socket returned {r}");
            }
        }
        Ok(())
    })?;
    b.set_nonblocking(false)?;

    // The two ways of moving 20 B take turns, run by run, so a host whose speed drifts
    // (as these do, by tens of percent within minutes) drifts under both alike.
    let msg = [7u8; 20];
    let (afd, bfd) = (a.as_raw_fd(), b.as_raw_fd());
    let mut by_syscalls = |n: u64| -> anyhow::Result<()> {
        for _ in 0..n {
            a.write_all(&msg)?;
            b.read_exact(&mut buf[..20])?;
        }
        Ok(())
    };
    let mut ring: IoUring = IoUring::builder().setup_coop_taskrun().build(64)?;
    let mut rbuf = [0u8; 20];
    let rptr = rbuf.as_mut_ptr();
    let mut by_uring = |n: u64| -> anyhow::Result<()> {
        for _ in 0..n {
            let send = opcode::Send::new(types::Fd(afd), msg.as_ptr(), 20)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(1);
            let recv = opcode::Recv::new(types::Fd(bfd), rptr, 20)
                .build()
                .user_data(2);
            // SAFETY: both buffers outlive the operations, which complete before the next
            // loop turn (submit_and_wait(2) reaps both).
            unsafe {
                let mut sq = ring.submission();
                sq.push(&send).ok().context("submission queue full")?;
                sq.push(&recv).ok().context("submission queue full")?;
            }
            ring.submit_and_wait(2)?;
            for c in ring.completion() {
                if c.result() != 20 {
                    bail!("io_uring {} returned {}", c.user_data(), c.result());
                }
            }
        }
        Ok(())
    };
    let (mut tcp_syscalls_ns, mut tcp_uring_ns) = (f64::MAX, f64::MAX);
    for _ in 0..2 * RUNS {
        tcp_syscalls_ns = tcp_syscalls_ns.min(timed(100_000, &mut by_syscalls)?);
        tcp_uring_ns = tcp_uring_ns.min(timed(100_000, &mut by_uring)?);
    }

    let mut nops = |n: u64, per: u64| -> anyhow::Result<()> {
        for _ in 0..n / per {
            for _ in 0..per {
                let e = opcode::Nop::new().build();
                // SAFETY: a NOP points at no memory.
                unsafe { ring.submission().push(&e) }
                    .ok()
                    .context("submission queue full")?;
            }
            ring.submit_and_wait(per as usize)?;
            ring.completion().for_each(drop);
        }
        Ok(())
    };
    let uring_nop_ns = best(1_000_000, |n| nops(n, 1))?;
    let uring_nop_batch_ns = best(3_200_000, |n| nops(n, 32))?;

    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    // Above 1: io_uring's send and receive cost more than the system calls they replace.
    let uring_over = (tcp_uring_ns / tcp_syscalls_ns * 1000.0).round() / 1000.0;
    let out = json!({
        "mode": "host",
        "kernel": kernel,
        // Online CPUs of the machine, not of this process: the probe runs pinned to one.
        "cpus": cpus,
        "cpu": cpu,
        "syscall_ns": syscall_ns,
        "recv_eagain_ns": recv_eagain_ns,
        "tcp_syscalls_ns": tcp_syscalls_ns,
        "tcp_uring_ns": tcp_uring_ns,
        "tcp_uring_over_syscalls": uring_over,
        "uring_nop_ns": uring_nop_ns,
        "uring_nop_batch_ns": uring_nop_batch_ns,
    });
    println!(
        "host: {model_name}, {cpus} CPUs, kernel {kernel}; syscall {syscall_ns} ns, recv EAGAIN {recv_eagain_ns} ns, \
         20 B over loopback TCP: {tcp_syscalls_ns} ns with syscalls, {tcp_uring_ns} ns with \
         io_uring ({uring_over}x); io_uring NOP {uring_nop_ns} ns alone, {uring_nop_batch_ns} ns in 32s"
    );
    println!("{out}");
    Ok(())
}
