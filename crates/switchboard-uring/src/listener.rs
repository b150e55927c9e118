//! [`UringListener`]: accepting connections for the ring without tokio's epoll driver.

use std::io;
use std::net::TcpStream as StdTcpStream;

use tokio::io::unix::AsyncFd;

/// A listening socket whose connections come out as plain `std` streams, ready for
/// [`UringStream::new`](crate::UringStream::new): unlike `tokio::net::TcpListener::accept`, an accepted connection
/// is never registered with tokio's epoll driver it would not use (that costs two
/// `epoll_ctl` calls and a registration per connection).
#[derive(Debug)]
pub struct UringListener {
    fd: AsyncFd<std::net::TcpListener>,
}

impl UringListener {
    /// Takes over a tokio listener (call it inside a runtime).
    ///
    /// # Errors
    /// When the listener cannot be registered for readiness.
    pub fn from_tokio(listener: tokio::net::TcpListener) -> io::Result<Self> {
        // `into_std` keeps the socket non-blocking, as readiness-driven accepts need.
        let listener = listener.into_std()?;
        // SAFETY: the AsyncFd owns the listener, so its descriptor stays open (and is not
        // reused) for as long as it is registered.
        let fd =
            unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
                .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self { fd })
    }

    /// Waits for the next connection.
    ///
    /// # Errors
    /// As `accept(2)` (for example `EMFILE` when out of descriptors).
    pub async fn accept(&self) -> io::Result<(StdTcpStream, std::net::SocketAddr)> {
        loop {
            let mut ready = self.fd.readable().await?;
            if let Ok(r) = ready.try_io(|l| l.get_ref().accept()) {
                return r;
            }
        }
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.fd.get_ref().local_addr()
    }
}
