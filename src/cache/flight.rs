//! One in-progress fetch of a cache entry, shared by every request that wants it.
//!
//! Invariants:
//! - Bytes become visible to readers as they arrive, except the chunk that completes the
//!   entry: it is held back until the whole entry is verified (length and, when known, hash),
//!   so no reader ever receives a complete body that turned out to be wrong.
//! - Arriving chunks are copied into one buffer of the entry's length, allocated with the first
//!   byte, which becomes the cached `Bytes` without another copy: a fetch costs its length in
//!   memory, whatever the chunking of the transfer (no allocator-fragmenting chunk lists, no
//!   second copy to make it contiguous). Readers of an unfinished entry get copies of at most
//!   [`READ_PIECE`] bytes at a time; once verified, zero-copy slices of the entry.
//! - A [`Sink`] never accepts more than the expected length.
//! - The outcome is set once; readers that see an error end their stream with it. A fetch that
//!   stops without finishing (its task panicked) is abandoned, so no reader waits forever.
//! - The flight holds its memory [`Charge`] while bytes arrive; once verified, the bytes are the
//!   cache entry's (readers hold a handle of that entry, so eviction sees them). It counts its
//!   [`Reader`]s so that a fetch still queued for memory is given up when nobody wants it.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::watch;

use super::budget::Charge;

/// Why an entry could not be fetched; readers' bodies end with it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{msg}")]
pub struct PullError {
    msg: Arc<str>,
    timed_out: bool,
}

impl PullError {
    pub fn new(msg: impl Into<String>) -> PullError {
        PullError {
            msg: msg.into().into(),
            timed_out: false,
        }
    }

    /// The upstream did not answer or deliver in time (a 504 rather than a 502).
    pub fn timed_out(msg: impl Into<String>) -> PullError {
        PullError {
            msg: msg.into().into(),
            timed_out: true,
        }
    }

    pub fn is_timeout(&self) -> bool {
        self.timed_out
    }
}

impl From<String> for PullError {
    fn from(msg: String) -> PullError {
        PullError::new(msg)
    }
}

/// Largest piece a reader copies out of an unfinished entry at once (bounds its copy).
pub const READ_PIECE: usize = 64 << 10;

#[derive(Debug, Default)]
struct State {
    /// The bytes received so far (capacity: the entry's length).
    buf: BytesMut,
    /// One chunk that was the whole entry at once (a disk-tier read): kept as it is.
    whole: Option<Bytes>,
    /// Bytes readers may have (`received` less a held-back completing chunk).
    visible: u64,
    /// After verification: the cached entry, which readers slice.
    done: Option<Bytes>,
    received: u64,
    outcome: Option<Result<(), PullError>>,
    /// The memory this fetch is charged for; released with the flight.
    charge: Option<Charge>,
}

/// Shared state of one fetch.
#[derive(Debug)]
pub(crate) struct Flight {
    expected: u64,
    state: Mutex<State>,
    changed: watch::Sender<()>,
    /// Live [`Reader`] handles (requests that still want the entry).
    readers: watch::Sender<usize>,
}

impl Flight {
    pub(crate) fn new(expected: u64) -> Arc<Flight> {
        Arc::new(Flight {
            expected,
            state: Mutex::default(),
            changed: watch::channel(()).0,
            readers: watch::channel(0).0,
        })
    }

    /// Keeps `charge` until the flight is gone.
    pub(crate) fn hold(&self, charge: Charge) {
        self.lock().charge = Some(charge);
    }

    /// Resolves once no [`Reader`] of this flight is left.
    pub(crate) async fn unwanted(&self) {
        let mut rx = self.readers.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies what arrived and publishes the outcome. On success returns the whole entry
    /// (one contiguous `Bytes`, for the cache); readers go on with `share(whole)`, a handle of
    /// the cached entry, so the cache can tell they still hold it. The memory charge ends here:
    /// from now on the bytes are the cache's to count.
    pub(crate) fn finish(
        &self,
        result: Result<(), PullError>,
        hash: Option<u64>,
        share: impl FnOnce(&Bytes) -> Bytes,
    ) -> Result<Bytes, PullError> {
        let mut st = self.lock();
        let verdict = match result {
            Err(e) => Err(e),
            Ok(()) if st.received != self.expected => Err(PullError::new(format!(
                "got {} of {} bytes",
                st.received, self.expected
            ))),
            Ok(()) => {
                let whole = match st.whole.take() {
                    Some(w) => w,
                    None => std::mem::take(&mut st.buf).freeze(),
                };
                match hash {
                    Some(h) if xxhash_rust::xxh3::xxh3_64(&whole) != h => {
                        Err(PullError::new("content hash differs from the index"))
                    }
                    _ => Ok(whole),
                }
            }
        };
        match &verdict {
            Ok(whole) => {
                st.done = Some(share(whole));
                st.visible = self.expected;
                st.charge = None;
                st.outcome = Some(Ok(()));
            }
            Err(e) => {
                // Freed at once; readers part-way through end with the error.
                st.buf = BytesMut::new();
                st.whole = None;
                st.visible = 0;
                st.outcome = Some(Err(e.clone()));
            }
        }
        drop(st);
        self.changed.send_replace(());
        verdict
    }

    /// Ends a fetch that stopped without [`Flight::finish`]: readers get an error. No-op after
    /// `finish`.
    pub(crate) fn abandon(&self) {
        let mut st = self.lock();
        if st.outcome.is_some() {
            return;
        }
        st.outcome = Some(Err(PullError::new("fetch abandoned")));
        drop(st);
        self.changed.send_replace(());
    }

    /// Waits until the first bytes are readable or the fetch is over. `Err`: it failed before
    /// any byte became readable.
    pub(crate) async fn started(&self) -> Result<(), PullError> {
        // Subscribed before looking, so a change in between is not missed.
        let mut rx = self.changed.subscribe();
        loop {
            {
                let st = self.lock();
                match &st.outcome {
                    Some(Err(e)) if st.visible == 0 => return Err(e.clone()),
                    Some(_) => return Ok(()),
                    None if st.visible > 0 => return Ok(()),
                    None => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(PullError::new("fetch abandoned"));
            }
        }
    }

    /// Waits until the fetch is over: `Ok` once every byte arrived and was verified.
    pub(crate) async fn finished(&self) -> Result<(), PullError> {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(outcome) = &self.lock().outcome {
                return outcome.clone();
            }
            if rx.changed().await.is_err() {
                return Err(PullError::new("fetch abandoned"));
            }
        }
    }

    /// A stream of bytes `first..=last` of the entry as they arrive.
    pub(crate) fn read(
        self: &Arc<Self>,
        first: u64,
        last: u64,
    ) -> impl Stream<Item = Result<Bytes, PullError>> + use<> {
        struct Cursor {
            flight: Arc<Flight>,
            rx: watch::Receiver<()>,
            /// Next byte to send.
            pos: u64,
        }
        let cursor = Cursor {
            flight: self.clone(),
            rx: self.changed.subscribe(),
            pos: first,
        };
        futures_util::stream::unfold(Some(cursor), move |cursor| async move {
            let mut c = cursor?;
            loop {
                if c.pos > last {
                    return None;
                }
                let step = {
                    let st = c.flight.lock();
                    let end = (last + 1).min(st.visible);
                    let (from, to) = (c.pos as usize, end as usize);
                    let piece = match &st.done {
                        Some(whole) if c.pos < end => Some(whole.slice(from..to)),
                        None if c.pos < end => st
                            .buf
                            .get(from..to.min(from + READ_PIECE))
                            .map(Bytes::copy_from_slice),
                        _ => None,
                    };
                    piece.ok_or_else(|| st.outcome.clone())
                };
                match step {
                    Ok(part) => {
                        c.pos += part.len() as u64;
                        return Some((Ok(part), Some(c)));
                    }
                    Err(Some(Ok(()))) => return None,
                    Err(Some(Err(e))) => return Some((Err(e), None)),
                    Err(None) => {
                        if c.rx.changed().await.is_err() {
                            return Some((Err(PullError::new("fetch abandoned")), None));
                        }
                    }
                }
            }
        })
    }
}

/// Where a puller writes an entry's bytes.
#[derive(Debug)]
pub struct Sink {
    flight: Arc<Flight>,
}

/// The puller sent more than the entry's expected length.
#[derive(Debug, thiserror::Error)]
#[error("body longer than the expected {expected} bytes")]
pub struct Oversized {
    pub expected: u64,
}

impl Sink {
    pub(crate) fn new(flight: Arc<Flight>) -> Sink {
        Sink { flight }
    }

    /// Appends a chunk; refuses to go beyond the expected length.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), Oversized> {
        if chunk.is_empty() {
            return Ok(());
        }
        let expected = self.flight.expected;
        {
            let mut st = self.flight.lock();
            if st.outcome.is_some() {
                return Ok(());
            }
            let total = st.received + chunk.len() as u64;
            if total > expected {
                return Err(Oversized { expected });
            }
            if st.received == 0 && total == expected {
                st.whole = Some(chunk);
            } else {
                if st.buf.capacity() == 0 {
                    st.buf = BytesMut::with_capacity(usize::try_from(expected).unwrap_or(0));
                }
                st.buf.extend_from_slice(&chunk);
            }
            // The completing chunk stays invisible until the entry is verified.
            st.visible = if total == expected {
                st.received
            } else {
                total
            };
            st.received = total;
        }
        self.flight.changed.send_replace(());
        Ok(())
    }

    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.flight.lock().received
    }

    /// The entry's length.
    pub fn expected(&self) -> u64 {
        self.flight.expected
    }
}

/// Bytes of an entry being fetched, shared with every other request for it.
#[derive(Debug)]
pub struct Reader {
    flight: Arc<Flight>,
}

impl Clone for Reader {
    fn clone(&self) -> Reader {
        Reader::new(self.flight.clone())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.flight
            .readers
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Reader {
    pub(crate) fn new(flight: Arc<Flight>) -> Reader {
        flight.readers.send_modify(|n| *n += 1);
        Reader { flight }
    }

    /// Bytes `first..=last`, as they arrive.
    pub fn range(
        &self,
        first: u64,
        last: u64,
    ) -> impl Stream<Item = Result<Bytes, PullError>> + Send + use<> {
        self.flight.read(first, last)
    }

    /// The whole entry, as it arrives.
    pub fn all(&self) -> impl Stream<Item = Result<Bytes, PullError>> + Send + use<> {
        self.flight.read(0, self.flight.expected.saturating_sub(1))
    }

    /// Waits until the first bytes are readable or the fetch is over. `Err`: it failed before
    /// sending anything, so a response can still say so in its status.
    pub async fn started(&self) -> Result<(), PullError> {
        self.flight.started().await
    }

    /// Waits until the fetch is over: `Ok` once the whole entry arrived and was verified
    /// (what a relay waits for before it announces an LL-HLS part).
    pub async fn finished(&self) -> Result<(), PullError> {
        self.flight.finished().await
    }

    pub fn len(&self) -> u64 {
        self.flight.expected
    }

    pub fn is_empty(&self) -> bool {
        self.flight.expected == 0
    }
}
