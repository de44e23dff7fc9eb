//! Keeping `record.min_free` on the recordings' volume: the check every write makes before it
//! writes, and the trimming it triggers (see [`space`](super::space) for the pure decision).
//!
//! Every writer (one [`Recording`](super::Recording) per live stream) asks [`Room::make_room`]
//! for the bytes it is about to write. The check and the trim run under one async lock, so two
//! writers never plan over the same free space; bytes that passed the check but are still being
//! written count as used ([`Reservation`]) until the write ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::space::{self, Candidate, MinFree};
use super::{blocking, io_err, Error, Stream};

/// Segments deleted from one stream to keep `record.min_free` (a `NetStream.Record.Trimmed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trim {
    pub stream: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub segments: usize,
    pub bytes: u64,
}

/// The free-space guard of one recordings folder. Shared by the store and its recordings.
#[derive(Debug)]
pub struct Room {
    dir: PathBuf,
    min_free: MinFree,
    /// The store's streams (the same map as `Store::streams`).
    streams: Arc<RwLock<HashMap<String, Arc<Stream>>>>,
    /// Serializes check-and-trim. tokio `Mutex`: held across the trim's storage calls.
    lock: tokio::sync::Mutex<()>,
    /// Bytes of writes that passed the check and have not finished yet.
    pending: AtomicU64,
}

/// Bytes a writer is writing; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    room: Arc<Room>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.room.pending.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Room {
    pub(super) fn new(
        dir: PathBuf,
        min_free: MinFree,
        streams: Arc<RwLock<HashMap<String, Arc<Stream>>>>,
    ) -> Room {
        Room {
            dir,
            min_free,
            streams,
            lock: tokio::sync::Mutex::new(()),
            pending: AtomicU64::new(0),
        }
    }

    /// Makes sure `len` bytes (plus `extra`, asked for on a retry) can be written while
    /// `record.min_free` stays free, deleting the oldest segments of any stream when needed.
    /// [`Error::NoSpace`] when not even deleting every deletable segment would be enough (then
    /// nothing is deleted).
    pub async fn make_room(
        self: &Arc<Self>,
        len: u64,
        extra: u64,
    ) -> Result<(Reservation, Vec<Trim>), Error> {
        let _serial = self.lock.lock().await;
        let (bytes, trims) = self.check_and_trim(len, extra).await?;
        self.pending.fetch_add(bytes, Ordering::Relaxed);
        Ok((
            Reservation {
                room: self.clone(),
                bytes,
            },
            trims,
        ))
    }

    /// Returns the bytes to reserve and what was trimmed. The caller holds `lock`.
    async fn check_and_trim(&self, len: u64, extra: u64) -> Result<(u64, Vec<Trim>), Error> {
        let dir = self.dir.clone();
        let space = blocking(move || {
            space::free_space(&dir).map_err(io_err(format!(
                "cannot read the free space of {}",
                dir.display()
            )))
        })
        .await?;
        let Some(space) = space else {
            return Ok((len, Vec::new()));
        };
        let incoming = space.footprint(len).saturating_add(extra);
        let reserve = self.min_free.bytes(space.total);
        let need = space::deficit(
            space,
            reserve,
            incoming,
            self.pending.load(Ordering::Relaxed),
        );
        if need == 0 {
            return Ok((incoming, Vec::new()));
        }
        let mut streams: Vec<Arc<Stream>> = self
            .streams
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        streams.sort_by(|a, b| a.name.cmp(&b.name));
        let cuts = {
            let guards: Vec<_> = streams.iter().map(|s| s.read()).collect();
            let candidates: Vec<Candidate<'_>> = guards
                .iter()
                .map(|ix| Candidate {
                    segments: &ix.segments,
                    live: ix.live,
                })
                .collect();
            space::plan(&candidates, need)
        };
        let Some(cuts) = cuts else {
            return Err(Error::NoSpace(format!(
                "{} has {} free, below record.min_free ({}) with the next {} bytes, and \
                 deleting every deletable recorded segment would not free enough (other files \
                 fill the volume)",
                self.dir.display(),
                mib(space.free),
                match self.min_free {
                    MinFree::Percent(p) => format!("{p}% = {}", mib(reserve)),
                    MinFree::Bytes(_) => mib(reserve),
                },
                len
            )));
        };
        let mut trims = Vec::with_capacity(cuts.len());
        for cut in cuts {
            let stream = &streams[cut.stream];
            let gone = stream.drop_before_durably(cut.before).await?;
            let (Some(first), Some(last)) = (gone.first(), gone.last()) else {
                continue;
            };
            trims.push(Trim {
                stream: stream.name.clone(),
                first_seq: first.seq,
                last_seq: last.seq,
                segments: gone.len(),
                bytes: gone.iter().map(|s| s.length).sum(),
            });
        }
        Ok((incoming, trims))
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}
