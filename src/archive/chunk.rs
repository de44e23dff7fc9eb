//! Index chunks: the archive's append-only time index, one create-only object per chunk
//! (`<stream>/index/<n>.json`, n = 0, 1, 2, ...), and [`ArchiveIndex`], the pure state a reader
//! or writer rebuilds from them.
//!
//! A chunk carries the records of `index.jsonl` (periods, segments, drops) with archive seqs,
//! the lease epoch of its writer, and whether that writer is still recording. Invariants:
//! - chunk `n` exists only if every chunk below it exists (a writer creates `n` only after
//!   reading `n - 1`), and is never rewritten (create-only), so readers follow by GETting
//!   `n + 1`; no LIST on the playback path.
//! - Two writers racing for `n`: the store lets exactly one create win. The loser reads the
//!   winner's chunk and goes on from `n + 1`, or stops if the winner holds a newer epoch.
//! - Fencing: a chunk whose epoch is below one already accepted is ignored, so a writer that
//!   lost its lease can add nothing, even with a write that was in flight when it lost it.
//! - A snapshot (`<stream>/snapshot/<n>.json`) is the whole index after the chunks below `n`,
//!   written by the writer every [`SNAPSHOT_EVERY`] chunks: a new reader LISTs the snapshots
//!   once, loads the newest and reads on from chunk `n`, so starting costs the same after a
//!   day as after a minute.
//! - Records are checked before they are applied (the bucket is input like any other): a seq
//!   that does not grow, a segment of an unknown period, sizes out of bounds are skipped.

use serde::{Deserialize, Serialize};

use crate::store::{Record, StreamIndex};
use crate::wire::{MAX_SEGMENT_BYTES, MAX_SEGMENT_DURATION_MS};

/// Largest chunk object accepted.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;
/// Most records a writer puts in one chunk (a backlog drains in chunks of this many).
pub const MAX_RECORDS_PER_CHUNK: usize = 64;

/// A snapshot is written after this many chunks.
pub const SNAPSHOT_EVERY: u64 = 512;
/// Largest snapshot object accepted (a 24-hour index of 2 s segments is about 8 MiB).
pub const MAX_SNAPSHOT_BYTES: usize = 128 << 20;

/// The whole index after the chunks below `next_chunk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub next_chunk: u64,
    pub epoch: u64,
    pub writer: Option<String>,
    pub live: bool,
    pub records: Vec<Record>,
}

impl Snapshot {
    pub fn to_bytes(&self) -> bytes::Bytes {
        to_doc(self)
    }

    pub fn parse(bytes: &[u8]) -> Result<Snapshot, String> {
        parse_doc(bytes, MAX_SNAPSHOT_BYTES, "index snapshot")
    }
}

/// An archive object's JSON.
pub(crate) fn to_doc<T: Serialize>(doc: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(doc).unwrap_or_default())
}

/// Parses an archive object's JSON (`what` names it in errors), refusing one over `max` bytes
/// before parsing: the bucket is input like any other.
pub(crate) fn parse_doc<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    max: usize,
    what: &str,
) -> Result<T, String> {
    if bytes.len() > max {
        return Err(format!("{what} of {} bytes is too large", bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("not an {what}: {e}"))
}

/// One index chunk object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The lease epoch its writer held.
    pub epoch: u64,
    /// `node.name` of the writer.
    pub writer: String,
    /// The writer was still recording when it wrote this chunk.
    pub live: bool,
    pub records: Vec<Record>,
}

impl Chunk {
    pub fn to_bytes(&self) -> bytes::Bytes {
        to_doc(self)
    }

    pub fn parse(bytes: &[u8]) -> Result<Chunk, String> {
        parse_doc(bytes, MAX_CHUNK_BYTES, "index chunk")
    }
}

/// What applying a chunk did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Accepted: these records (the valid ones) were applied.
    Accepted {
        records: Vec<Record>,
        /// The chunk starts a newer epoch than the last accepted one written by another node
        /// (a takeover): the previous writer.
        takeover_from: Option<String>,
    },
    /// Written under an older epoch than one already accepted: ignored.
    Fenced,
}

/// The archive's view of one stream, rebuilt from its chunks in order.
#[derive(Debug, Clone, Default)]
pub struct ArchiveIndex {
    /// The archive timeline (archive seqs and period ids).
    pub index: StreamIndex,
    /// The next chunk number to read (or write).
    pub next_chunk: u64,
    /// The newest epoch accepted.
    pub epoch: u64,
    /// The writer of the last accepted chunk.
    pub writer: Option<String>,
    /// The last accepted chunk's writer was recording.
    pub live: bool,
    /// Records skipped as invalid (for logs).
    pub skipped: u64,
    /// The snapshots were looked for (once, before the first chunk is read).
    pub looked_for_snapshot: bool,
    /// The chunk number of the newest snapshot known (loaded or written).
    pub snapshot_at: Option<u64>,
}

impl ArchiveIndex {
    /// Applies chunk `n` (which must be [`ArchiveIndex::next_chunk`]).
    pub fn apply(&mut self, chunk: Chunk) -> Applied {
        self.next_chunk += 1;
        if chunk.epoch < self.epoch {
            return Applied::Fenced;
        }
        let takeover_from = match &self.writer {
            Some(w) if chunk.epoch > self.epoch && *w != chunk.writer => Some(w.clone()),
            _ => None,
        };
        self.epoch = chunk.epoch;
        self.writer = Some(chunk.writer);
        self.live = chunk.live;
        let mut accepted = Vec::with_capacity(chunk.records.len());
        for r in chunk.records {
            if self.valid(&r) {
                self.index.apply(r.clone());
                accepted.push(r);
            } else {
                self.skipped += 1;
            }
        }
        Applied::Accepted {
            records: accepted,
            takeover_from,
        }
    }

    /// The index as a snapshot (before chunk [`ArchiveIndex::next_chunk`]).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            next_chunk: self.next_chunk,
            epoch: self.epoch,
            writer: self.writer.clone(),
            live: self.live,
            records: self.index.to_records(),
        }
    }

    /// The index a snapshot describes (its records checked like a chunk's).
    pub fn from_snapshot(s: Snapshot) -> ArchiveIndex {
        let mut ax = ArchiveIndex {
            epoch: s.epoch,
            writer: s.writer,
            live: s.live,
            looked_for_snapshot: true,
            snapshot_at: Some(s.next_chunk),
            ..ArchiveIndex::default()
        };
        for r in s.records {
            if ax.valid(&r) {
                ax.index.apply(r);
            } else {
                ax.skipped += 1;
            }
        }
        ax.next_chunk = s.next_chunk;
        ax
    }

    /// Whether a record read from the bucket fits the index (see the module invariants).
    fn valid(&self, r: &Record) -> bool {
        let ix = &self.index;
        match r {
            Record::Period(p) => {
                ix.periods.last().is_none_or(|last| p.id > last.id)
                    && p.init_length > 0
                    && p.init_length <= MAX_SEGMENT_BYTES
            }
            Record::Segment(s) => {
                s.seq >= ix.next_seq
                    && s.seq < crate::wire::MAX_INDEX_NUMBER
                    && ix.periods.last().is_some_and(|p| p.id == s.period)
                    && s.length > 0
                    && s.length <= MAX_SEGMENT_BYTES
                    && s.duration_ms <= MAX_SEGMENT_DURATION_MS
                    && ix
                        .segments
                        .back()
                        .is_none_or(|last| s.time_ms >= last.time_ms && s.start_ms >= last.start_ms)
            }
            Record::Drop { before, .. } => *before < crate::wire::MAX_INDEX_NUMBER,
            Record::Next { seq } => *seq < crate::wire::MAX_INDEX_NUMBER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::tests::{period, seg};

    fn chunk(epoch: u64, writer: &str, records: Vec<Record>) -> Chunk {
        Chunk {
            epoch,
            writer: writer.into(),
            live: true,
            records,
        }
    }

    fn seg_rec(seq: u64, time_ms: i64) -> Record {
        let mut s = seg(seq, 0, time_ms, 2000);
        s.start_ms = seq * 2000;
        s.length = 100;
        Record::Segment(s)
    }

    fn period_rec() -> Record {
        let mut p = period(0, 0, 0);
        p.init_length = 10;
        Record::Period(p)
    }

    #[test]
    fn chunks_round_trip_and_apply_in_order() {
        let c = chunk(1, "a", vec![period_rec(), seg_rec(0, 0), seg_rec(1, 2000)]);
        let parsed = Chunk::parse(&c.to_bytes()).unwrap();
        assert_eq!(parsed, c);
        let mut ix = ArchiveIndex::default();
        assert!(matches!(
            ix.apply(parsed),
            Applied::Accepted {
                takeover_from: None,
                ..
            }
        ));
        assert_eq!(ix.next_chunk, 1);
        assert_eq!(ix.index.next_seq, 2);
        assert_eq!(ix.writer.as_deref(), Some("a"));
        assert!(Chunk::parse(b"{\"epoch\":1}").is_err());
        assert!(Chunk::parse(&vec![b' '; MAX_CHUNK_BYTES + 1]).is_err());
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_newer_writer_is_a_takeover() {
        let mut ix = ArchiveIndex::default();
        ix.apply(chunk(1, "a", vec![period_rec(), seg_rec(0, 0)]));
        let took = ix.apply(chunk(2, "b", vec![seg_rec(1, 2000)]));
        assert_eq!(
            took,
            Applied::Accepted {
                records: vec![seg_rec(1, 2000)],
                takeover_from: Some("a".into())
            }
        );
        // The old writer's write that was in flight when it lost the lease.
        assert_eq!(
            ix.apply(chunk(1, "a", vec![seg_rec(2, 4000)])),
            Applied::Fenced
        );
        assert_eq!(ix.index.next_seq, 2);
        assert_eq!(ix.next_chunk, 3, "a fenced chunk is still read past");
        // The same writer under a new epoch (it re-acquired after a release) is no takeover.
        let again = ix.apply(chunk(3, "b", vec![]));
        assert!(matches!(
            again,
            Applied::Accepted {
                takeover_from: None,
                ..
            }
        ));
    }

    #[test]
    fn a_snapshot_restores_the_index_and_the_chunk_position() {
        let mut ix = ArchiveIndex::default();
        ix.apply(chunk(
            1,
            "a",
            vec![period_rec(), seg_rec(0, 0), seg_rec(1, 2000)],
        ));
        ix.apply(chunk(
            1,
            "a",
            vec![Record::drop_before(1), seg_rec(2, 4000)],
        ));
        let snap = Snapshot::parse(&ix.snapshot().to_bytes()).unwrap();
        let back = ArchiveIndex::from_snapshot(snap);
        assert_eq!(back.next_chunk, 2);
        assert_eq!(back.index.segments, ix.index.segments);
        assert_eq!(back.index.periods, ix.index.periods);
        assert_eq!(back.index.next_seq, 3);
        assert_eq!(
            (back.epoch, back.writer.as_deref(), back.live),
            (1, Some("a"), true)
        );
        assert_eq!(back.snapshot_at, Some(2));
    }

    #[test]
    fn invalid_records_from_the_bucket_are_skipped() {
        let mut ix = ArchiveIndex::default();
        let mut huge = seg(1, 0, 2000, 2000);
        huge.length = MAX_SEGMENT_BYTES + 1;
        let mut orphan = seg(2, 7, 4000, 2000);
        orphan.length = 10;
        let applied = ix.apply(chunk(
            1,
            "a",
            vec![
                seg_rec(0, 0), // before any period
                period_rec(),
                seg_rec(0, 0),
                seg_rec(0, 0), // repeated seq
                Record::Segment(huge),
                Record::Segment(orphan),
                seg_rec(3, -5), // time going back
                seg_rec(4, 8000),
            ],
        ));
        let Applied::Accepted { records, .. } = applied else {
            panic!("accepted")
        };
        assert_eq!(records.len(), 3);
        assert_eq!(ix.skipped, 5);
        assert_eq!(ix.index.segments.len(), 2);
    }
}
