//! What a server does to a connection's socket besides reading and writing it.

use std::io;

/// Socket controls a server needs on every transport: bound what the kernel holds for a
/// connection, and let go of a connection it gave up on at once.
///
/// Implemented for tokio's `TcpStream`, for `UringStream` (feature `io-uring`) and for
/// TLS streams over either.
///
/// ```no_run
/// use switchboard_tokio::SocketControl;
/// # async fn run(tcp: tokio::net::TcpStream) -> std::io::Result<()> {
/// tcp.set_send_buffer(256 * 1024)?; // at most 256 KiB in the kernel's send queue
/// // ... the peer stopped reading, and the close handshake timed out:
/// tcp.reset_on_drop();
/// drop(tcp); // RST: the kernel frees the connection's buffers now
/// # Ok(()) }
/// ```
pub trait SocketControl {
    /// Caps the kernel's send buffer for this connection at `bytes`, as the kernel counts
    /// them (its bookkeeping included: `SO_SNDBUF` is set to half, which the kernel
    /// doubles; it also turns off the kernel's autotuning, which grows the buffer to
    /// `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default, for a peer that does not read).
    ///
    /// # Errors
    /// As `setsockopt(2)`.
    fn set_send_buffer(&self, bytes: usize) -> io::Result<()>;

    /// Makes dropping the stream reset the connection (an RST, `SO_LINGER` 0) instead of
    /// closing it gracefully, so the kernel frees its buffers at once rather than trying
    /// for minutes to deliver what it still holds to a peer that does not read.
    fn reset_on_drop(&self);
}

/// The `SO_SNDBUF` value that makes the kernel's send buffer `bytes`.
pub(crate) fn sndbuf_value(bytes: usize) -> usize {
    (bytes / 2).max(1)
}

impl SocketControl for tokio::net::TcpStream {
    fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        socket2::SockRef::from(self).set_send_buffer_size(sndbuf_value(bytes))
    }

    fn reset_on_drop(&self) {
        let _ = self.set_zero_linger();
    }
}

#[cfg(all(feature = "io-uring", target_os = "linux"))]
impl SocketControl for switchboard_uring::UringStream {
    fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        socket2::SockRef::from(self).set_send_buffer_size(sndbuf_value(bytes))
    }

    fn reset_on_drop(&self) {
        switchboard_uring::UringStream::reset_on_drop(self);
    }
}

#[cfg(feature = "rustls")]
impl<S: SocketControl> SocketControl for tokio_rustls::server::TlsStream<S> {
    fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        self.get_ref().0.set_send_buffer(bytes)
    }

    fn reset_on_drop(&self) {
        self.get_ref().0.reset_on_drop();
    }
}

#[cfg(test)]
mod tests {
    use super::SocketControl;

    /// The kernel's send buffer ends up at the size asked for (it doubles `SO_SNDBUF`).
    #[tokio::test]
    async fn the_send_buffer_is_what_was_asked() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        c.set_send_buffer(128 * 1024).unwrap();
        let got = socket2::SockRef::from(&c).send_buffer_size().unwrap();
        assert_eq!(got, 128 * 1024);
    }
}
