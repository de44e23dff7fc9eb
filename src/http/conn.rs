//! Accepted HTTP connections. A write that makes no progress for [`WRITE_STALL`] fails and the
//! connection closes, so a client that stops reading (or vanished without a FIN) cannot hold a
//! response for ever, nor the evicted cache bytes it is being sent, which count against the
//! in-flight memory budget that other requests wait for.
//!
//! A slow reader is not a stalled one: every write that moves bytes restarts the clock. Idle
//! connections (keep-alive, an SSE stream or long-poll with nothing to say) are not writing,
//! so they are not timed here.
//!
//! [`TlsListener`] is the HTTPS variant: the same guarded streams, over TLS.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;

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
        let (stream, addr) = accept_tcp(&self.inner).await;
        (Guarded::new(stream, self.stall), addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Accepts the next TCP connection, riding out errors that concern one client or the moment.
async fn accept_tcp(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                return (stream, addr);
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

/// Most TLS handshakes in progress at once; further clients wait in the listen backlog.
pub const MAX_HANDSHAKES: usize = 512;

/// The node's HTTPS listener. Handshakes run in tasks of their own (each bounded by
/// [`crate::tls::HANDSHAKE_TIMEOUT`]), so a client that stalls mid-handshake or sends garbage
/// delays nobody; `accept` hands axum only finished handshakes. The certificate comes from
/// [`crate::tls::Certs`] at each handshake, so a reload applies to the next connection.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    stall: Duration,
    /// Accepts and handshakes; aborted when the listener is dropped (server shutdown).
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(
        inner: TcpListener,
        config: Arc<rustls::ServerConfig>,
        stall: Duration,
        metrics: Arc<Metrics>,
    ) -> io::Result<TlsListener> {
        let local = inner.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(handshakes(inner, TlsAcceptor::from(config), tx, metrics));
        Ok(TlsListener {
            ready,
            local,
            stall,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Accepts connections and runs their handshakes until the listener is gone.
async fn handshakes(
    inner: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = accept_tcp(&inner).await;
        if ready.is_closed() {
            return;
        }
        let (acceptor, ready, metrics) = (acceptor.clone(), ready.clone(), metrics.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    crate::metrics::add(&metrics.tls_handshakes, 1);
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    crate::metrics::add(&metrics.tls_handshake_failures, 1);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    crate::metrics::add(&metrics.tls_handshake_failures, 1);
                    tracing::debug!(%peer, "TLS handshake did not finish in time");
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Guarded<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some((tls, peer)) => (Guarded::new(tls, self.stall), peer),
            // The acceptor task only ends when aborted (drop); nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
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
