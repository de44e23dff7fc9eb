//! The tokio pump: accepts RTMP connections and drives one [`ServerSession`] per socket.
//!
//! Each connection is one task looping read -> `handle_input` -> act on outputs in order.
//! The task owns every timeout ([`Limits`]) and the publish channel: a `PublishRequest` is
//! answered by [`PublishHandler::publish`], media goes to the returned sender (awaiting when it
//! is full, which slows only this publisher's socket), and the sender is dropped on unpublish,
//! disconnect, error or shutdown. A protocol error ends that connection only (logged at warn);
//! a peer that simply went away (reset, broken pipe, EOF mid-message) is logged at info, since
//! encoders routinely close that way after unpublishing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tracing::{debug, field, info, info_span, warn, Instrument, Span};

use super::session::{Output, ServerSession};
use super::{Error, PublishHandler};
use crate::media::flv::Tag;

/// Bytes read from the socket per `handle_input` call.
const READ_BUFFER: usize = 64 * 1024;
/// After a refusal, how long unread client bytes are drained so closing does not reset the
/// connection (which could discard the onStatus before the client reads it).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Timeouts and bounds of the ingest server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept until the handshake completes (default 10 s): frees slots held by
    /// port scanners and stalled clients.
    pub handshake_timeout: Duration,
    /// Longest silence from a handshaken client (default 30 s); encoders send media
    /// continuously, so silence means a dead peer or a half-open connection.
    pub idle_timeout: Duration,
    /// Longest a single write may take (default 10 s); replies are small, so a stall means
    /// the client stopped reading.
    pub write_timeout: Duration,
    /// Most concurrent connections (default 256); further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How long shutdown waits for connection tasks before aborting them (default 5 s).
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How accepted sockets become RTMP byte streams.
#[derive(Clone, Default)]
pub enum Transport {
    /// RTMP over plain TCP.
    #[default]
    Plain,
    /// RTMPS: a TLS handshake first, within the same `handshake_timeout` as the RTMP one.
    Tls(tokio_rustls::TlsAcceptor),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Plain => "rtmp",
            Transport::Tls(_) => "rtmps",
        })
    }
}

/// What a shutdown found (also logged): connections still open when it began, and how many
/// of them had to be aborted after `shutdown_grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    pub closed: usize,
    pub aborted: usize,
}

/// Serves RTMP ingest on `listener` until `shutdown` completes, then stops accepting, closes
/// every connection (dropping their senders) and returns once their tasks have ended, or after
/// `limits.shutdown_grace` with the stragglers aborted.
pub async fn serve<H: PublishHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Stopped {
    serve_on(listener, Transport::Plain, handler, limits, shutdown).await
}

/// [`serve`] over a chosen [`Transport`] (RTMPS with [`Transport::Tls`]).
pub async fn serve_on<H: PublishHandler>(
    listener: TcpListener,
    transport: Transport,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Stopped {
    let (stop_tx, stop_rx) = watch::channel(());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    (socket, peer)
                }
                Err(err) => {
                    warn!(%err, "rtmp accept failed");
                    sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let stop = stop_rx.clone();
        let span = info_span!("rtmp", %peer, stream = field::Empty, transport = ?transport);
        let transport = transport.clone();
        tasks.spawn(
            async move {
                let _permit = permit;
                let result = match transport {
                    Transport::Plain => connection(socket, peer, &*handler, limits, stop).await,
                    Transport::Tls(acceptor) => {
                        let deadline = Instant::now() + limits.handshake_timeout;
                        match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
                            Ok(Ok(tls)) => connection(tls, peer, &*handler, limits, stop).await,
                            Ok(Err(e)) => Err(Error::Io(e)),
                            Err(_) => Err(Error::Timeout("TLS handshake")),
                        }
                    }
                };
                match result {
                    Ok(()) => debug!("connection closed"),
                    Err(err) if is_disconnect(&err) => info!(%err, "connection closed by peer"),
                    Err(err) => warn!(%err, "connection ended"),
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    // The set still holds connections that ended on their own since the last accept (it is
    // only reaped per accept): only those still running are closed by the shutdown.
    while tasks.try_join_next().is_some() {}
    let open = tasks.len();
    drop(stop_tx);
    let mut aborted = 0;
    if timeout(limits.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        aborted = tasks.len();
        warn!(
            remaining = aborted,
            "rtmp connections did not close in time; aborting"
        );
        tasks.shutdown().await;
    }
    info!(closed = open, aborted, "rtmp ingest stopped");
    Stopped {
        closed: open,
        aborted,
    }
}

/// The peer went away (reset, broken pipe, EOF mid-message): an ordinary end, not a fault.
fn is_disconnect(err: &Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err,
        Error::Io(e) if matches!(
            e.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionAborted
        )
    )
}

/// One connection, from handshake to close. `Ok` for an orderly end (EOF, refusal, shutdown).
async fn connection<H: PublishHandler, S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    peer: SocketAddr,
    handler: &H,
    limits: Limits,
    mut stop: watch::Receiver<()>,
) -> Result<(), Error> {
    debug!("connection accepted");
    let mut session = ServerSession::new();
    let mut sender: Option<mpsc::Sender<Tag>> = None;
    let mut buf = vec![0u8; READ_BUFFER];
    let handshake_deadline = Instant::now() + limits.handshake_timeout;
    loop {
        let (deadline, what) = if session.handshake_done() {
            (Instant::now() + limits.idle_timeout, "idle read")
        } else {
            (handshake_deadline, "handshake")
        };
        let n = tokio::select! {
            r = socket.read(&mut buf) => r?,
            _ = sleep_until(deadline) => return Err(Error::Timeout(what)),
            // The sender side is dropped at shutdown.
            _ = stop.changed() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let mut input = buf.get(..n).unwrap_or_default();
        // A publish decision pauses parsing; run again to process what came after it.
        loop {
            let outputs = session.handle_input(input)?;
            input = &[];
            let mut answered = false;
            for output in outputs {
                match output {
                    Output::Send(bytes) => write(&mut socket, &bytes, limits).await?,
                    Output::PublishRequest { app, stream } => {
                        answered = true;
                        // Never log the ?key=... part.
                        let name = stream.split('?').next().unwrap_or_default();
                        Span::current().record("stream", name);
                        let decided = match handler.authorize(&app, &stream, peer).await {
                            Ok(()) => handler.publish(&app, &stream, peer),
                            Err(refusal) => Err(refusal),
                        };
                        match decided {
                            Ok(tx) => {
                                info!(%app, "publish started");
                                sender = Some(tx);
                                send_all(&mut socket, session.accept_publish(), limits).await?;
                            }
                            Err(refusal) => {
                                info!(code = refusal.code.as_str(), reason = %refusal.description, "publish refused");
                                send_all(&mut socket, session.reject_publish(&refusal), limits)
                                    .await?;
                                linger_close(socket).await;
                                return Ok(());
                            }
                        }
                    }
                    Output::Media(tag) => {
                        if let Some(tx) = &sender {
                            tokio::select! {
                                r = tx.send(tag) => r.map_err(|_| Error::ReceiverGone)?,
                                _ = stop.changed() => return Ok(()),
                            }
                        }
                    }
                    Output::Unpublished => {
                        sender = None;
                        info!("publish ended");
                    }
                }
            }
            if !answered {
                break;
            }
        }
    }
}

async fn write<S: AsyncWrite + Unpin>(
    socket: &mut S,
    bytes: &[u8],
    limits: Limits,
) -> Result<(), Error> {
    timeout(limits.write_timeout, socket.write_all(bytes))
        .await
        .map_err(|_| Error::Timeout("write"))??;
    Ok(())
}

/// Writes the `Send` outputs of an accept or reject (they produce nothing else).
async fn send_all<S: AsyncWrite + Unpin>(
    socket: &mut S,
    outputs: Vec<Output>,
    limits: Limits,
) -> Result<(), Error> {
    for output in outputs {
        if let Output::Send(bytes) = output {
            write(socket, &bytes, limits).await?;
        }
    }
    Ok(())
}

/// Half-closes, then drains the client's bytes until it closes or [`REFUSAL_LINGER`] passes.
async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(mut socket: S) {
    let _ = socket.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = timeout(REFUSAL_LINGER, async {
        while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod disconnect_tests {
    use super::*;
    use std::io::{self, ErrorKind};

    #[test]
    fn peer_going_away_is_a_disconnect() {
        for kind in [
            ErrorKind::ConnectionReset,
            ErrorKind::BrokenPipe,
            ErrorKind::UnexpectedEof,
            ErrorKind::ConnectionAborted,
        ] {
            assert!(is_disconnect(&Error::Io(io::Error::from(kind))), "{kind:?}");
        }
        for err in [
            Error::Io(io::Error::from(ErrorKind::PermissionDenied)),
            Error::Protocol("publish before connect"),
            Error::BadVersion(6),
            Error::Timeout("idle read"),
        ] {
            assert!(!is_disconnect(&err), "{err}");
        }
    }
}
