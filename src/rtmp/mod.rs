//! RTMP ingest. The sans-IO half (handshake, chunk, amf0, session) never touches sockets;
//! `server` is the tokio pump that owns sockets and timeouts.
//!
//! Flow: socket bytes -> [`session::ServerSession`] ([`handshake`], then [`chunk::Decoder`]
//! into messages, [`amf0`] commands answered in place) -> [`session::Output`]s, which
//! [`server`] writes back or hands to the application as [`Tag`]s on a bounded channel.
//! Everything read from a peer is bounded by named caps (see [`chunk`], [`amf0`], [`session`]).
//!
//! Policy (is the name valid, is the key right, is it already live) is not decided here: the
//! session reports a publish request and the application answers through [`PublishHandler`].

use std::net::SocketAddr;

use tokio::sync::mpsc;

use crate::events::Code;
use crate::media::flv::Tag;

/// Why a publish was refused; sent to the client as an onStatus error, then the connection closes.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: Code,
    pub description: String,
}

/// A boxed future of [`PublishHandler::authorize`] (no async-trait crate).
pub type Authorization<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Refusal>> + Send + 'a>>;

/// The application side of ingest.
pub trait PublishHandler: Send + Sync + 'static {
    /// Asked before [`PublishHandler::publish`], and awaited by this connection's task only
    /// (a slow answer stalls no other publisher): decisions that need I/O, such as a publish
    /// hook. The default allows.
    fn authorize<'a>(
        &'a self,
        _app: &'a str,
        _stream: &'a str,
        _peer: SocketAddr,
    ) -> Authorization<'a> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// A client asks to publish `stream` (as sent, possibly with `?key=...`) in `app`.
    /// On success the session forwards every audio, video and script tag to the returned
    /// bounded sender (awaiting when it is full, which backpressures only this publisher)
    /// and drops it on unpublish or disconnect.
    fn publish(
        &self,
        app: &str,
        stream: &str,
        peer: SocketAddr,
    ) -> Result<mpsc::Sender<Tag>, Refusal>;
}

pub mod amf0;
pub mod chunk;
pub mod handshake;
pub mod server;
pub mod session;

pub use server::{serve, Limits};
pub use session::{Output, ServerSession};

/// Why an RTMP connection ended abnormally. A protocol error ends that connection only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// C0 asked for a protocol version other than 3 (plain RTMP).
    #[error("unsupported RTMP version {0}")]
    BadVersion(u8),
    /// Set Chunk Size outside `1..=chunk::MAX_CHUNK_SIZE`.
    #[error("chunk size {0} outside 1..={max}", max = chunk::MAX_CHUNK_SIZE)]
    BadChunkSize(u32),
    /// A message header declared a length over `chunk::MAX_MESSAGE_LEN`.
    #[error("message length {0} over the {max} byte cap", max = chunk::MAX_MESSAGE_LEN)]
    MessageTooLong(u32),
    /// More than `chunk::MAX_CHUNK_STREAMS` chunk stream ids in use.
    #[error("more than {max} chunk streams", max = chunk::MAX_CHUNK_STREAMS)]
    TooManyChunkStreams,
    /// Partial messages across chunk streams exceed `chunk::MAX_BUFFERED_BYTES`.
    #[error("partial messages exceed {max} bytes", max = chunk::MAX_BUFFERED_BYTES)]
    BufferedTooMuch,
    /// A compressed (type 1-3) chunk header on a chunk stream that never had a full one.
    #[error("chunk stream {0} has no previous header")]
    NoPreviousHeader(u32),
    /// The peer broke the command sequence (e.g. publish before connect).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// Input kept arriving while a publish decision was pending.
    #[error("input piled up while a publish decision was pending")]
    InputOverflow,
    /// Socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A read or write deadline passed (`what` names it).
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The application dropped the receiving end of the publish channel.
    #[error("media receiver closed")]
    ReceiverGone,
}

#[cfg(test)]
mod test_util;
