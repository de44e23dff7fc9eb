//! RTMP ingest. The sans-IO half (handshake, chunk, amf0, session) never touches sockets;
//! `server` is the tokio pump that owns sockets and timeouts.
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

/// The application side of ingest.
pub trait PublishHandler: Send + Sync + 'static {
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
