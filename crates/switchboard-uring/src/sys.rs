//! The system calls the ring makes itself, outside io_uring: on descriptors it owns.

use std::io;
use std::net::TcpStream as StdTcpStream;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Resets a TCP connection at once (RST, both queues dropped, `connect(2)` to
/// `AF_UNSPEC`): operations still running on it end, where a cancel can miss them.
pub(crate) fn reset(fd: RawFd) {
    // SAFETY: an all-zero sockaddr with family AF_UNSPEC, passed with its own size.
    unsafe {
        let mut addr: libc::sockaddr = std::mem::zeroed();
        addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        let _ = libc::connect(
            fd,
            &addr,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}

/// Wraps a descriptor this crate owns from here on.
pub(crate) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` comes from `into_raw_fd` or a successful `eventfd(2)`, so nothing else
    // owns or closes it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A std stream over a borrowed descriptor, which it never closes.
pub(crate) fn borrowed_std(fd: RawFd) -> std::mem::ManuallyDrop<StdTcpStream> {
    // SAFETY: wrapped in `ManuallyDrop`, so the descriptor is not closed; the caller keeps
    // its owner alive while it uses the stream.
    std::mem::ManuallyDrop::new(unsafe { StdTcpStream::from_raw_fd(fd) })
}

/// `shutdown(2)` of the write side; a peer already gone is not an error.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown(2) on a descriptor the caller owns.
    if unsafe { libc::shutdown(fd, libc::SHUT_WR) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    // The peer is already gone: nothing left to shut down.
    match e.raw_os_error() {
        Some(libc::ENOTCONN) => Ok(()),
        _ => Err(e),
    }
}

/// A fresh non-blocking eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) with valid flags; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned(fd))
}

/// Reads (clears) an eventfd's counter.
pub(crate) fn eventfd_read(fd: RawFd) {
    let mut counter = [0u8; 8];
    // SAFETY: reads 8 bytes into a local buffer from the caller's eventfd.
    let _ = unsafe { libc::read(fd, counter.as_mut_ptr().cast(), 8) };
}

/// Makes an eventfd readable. The caller makes sure the descriptor is still open.
pub(crate) fn eventfd_write(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a local buffer to the caller's eventfd.
    let _ = unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
}
