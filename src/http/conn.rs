//! Accepted HTTP connections. A write that makes no progress for [`WRITE_STALL`] fails and the
//! connection closes, so a client that stops reading (or vanished without a FIN) cannot hold a
//! response for ever, nor the evicted cache bytes it is being sent, which count against the
//! in-flight memory budget that other requests wait for.
//!
//! A slow reader is not a stalled one: every write that moves bytes restarts the clock. Idle
//! connections (keep-alive, an SSE stream or long-poll with nothing to say) are not writing,
//! so they are not timed here.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// Longest a response write may wait for the client to take bytes.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// The node's HTTP listener: accepted streams are [`Guarded`].
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    stall: Duration,
}

impl Listener {
    pub fn new(inner: TcpListener, stall: Duration) -> Listener {
        Listener { inner, stall }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (Guarded::new(stream, self.stall), addr);
                }
                // The peer gave up before we accepted: nothing to do.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                // Out of file descriptors or similar: back off instead of spinning.
                Err(e) => {
                    tracing::error!(error = %e, "cannot accept HTTP connections; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The peer address of a request on a [`Listener`] (axum `ConnectInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// An I/O stream whose writes fail with `TimedOut` after `stall` without progress.
#[derive(Debug)]
pub struct Guarded<S> {
    io: S,
    stall: Duration,
    /// Running while a write is pending; reset by every write that moves bytes.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Guarded<S> {
    pub fn new(io: S, stall: Duration) -> Guarded<S> {
        Guarded {
            io,
            stall,
            timer: None,
        }
    }

    /// After the inner write returned `poll`: clears the timer on progress; on `Pending`,
    /// starts it (or checks it) and fails the write once it has run out.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.timer = None;
            return poll;
        }
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no bytes for {} s", stall.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_after_the_limit() {
        let (near, _far) = tokio::io::duplex(1024);
        let mut g = Guarded::new(near, Duration::from_secs(30));
        g.write_all(&[0; 1024]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = g.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_stalled() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut g = Guarded::new(near, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut buf = [0; 512];
            let mut got = 0;
            // 20 s between reads: slower than the limit in total, never stalled for it.
            while got < 8 * 1024 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                got += far.read(&mut buf).await.unwrap();
            }
            got
        });
        g.write_all(&[7; 8 * 1024]).await.unwrap();
        g.flush().await.unwrap();
        drop(g);
        assert!(reader.await.unwrap() >= 8 * 1024);
    }
}
