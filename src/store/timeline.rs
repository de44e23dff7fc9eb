//! The shared timeline of one stream: its [`StreamIndex`] and the change notification. This is
//! what every read endpoint renders, for recorded and relayed streams alike; where segment
//! bytes live is not its business (a relayed stream has a timeline and no disk layout at all).
//!
//! The index is behind a std `RwLock`, never held across `.await`; every change bumps the
//! watch counter after the lock is released, so long-polls wake to a consistent index.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use super::index::{OpenSegment, PartMeta, PeriodMeta, Record, SegmentMeta, StreamIndex};

/// The timeline of one stream.
#[derive(Debug)]
pub struct Timeline {
    pub name: String,
    index: RwLock<StreamIndex>,
    /// Bumped after every change of the index (new segment, live flag): long-polls wait on it.
    changed: watch::Sender<u64>,
}

impl Timeline {
    /// An empty timeline (a relay's view of an upstream stream, before its first index).
    pub fn new(name: &str) -> Timeline {
        Timeline::with_index(name.to_owned(), StreamIndex::default())
    }

    /// A timeline starting from `index` (a recovered recording).
    pub fn with_index(name: String, index: StreamIndex) -> Timeline {
        Timeline {
            name,
            index: RwLock::new(index),
            changed: watch::channel(0).0,
        }
    }

    /// Applies records and wakes watchers. Returns the segments a `Drop` removed.
    pub fn apply(&self, records: Vec<Record>) -> Vec<SegmentMeta> {
        self.apply_records(&records).0
    }

    /// Applies records and wakes watchers. Returns the segments and periods a `Drop` removed.
    pub(super) fn apply_records(&self, records: &[Record]) -> (Vec<SegmentMeta>, Vec<PeriodMeta>) {
        let mut gone = (Vec::new(), Vec::new());
        {
            let mut ix = self.write();
            for r in records {
                let (s, p) = ix.apply(r.clone());
                gone.0.extend(s);
                gone.1.extend(p);
            }
        }
        self.bump();
        gone
    }

    /// Applies a relay's records, then the part lists of the segments they add (by seq), in
    /// one change: a reload never sees a new segment without its parts.
    pub fn apply_relayed(
        &self,
        records: Vec<Record>,
        parts: Vec<(u64, Vec<PartMeta>)>,
    ) -> Vec<SegmentMeta> {
        let mut gone = Vec::new();
        {
            let mut ix = self.write();
            for r in records {
                gone.extend(ix.apply(r).0);
            }
            for (seq, p) in parts {
                ix.set_parts(seq, p);
            }
        }
        self.bump();
        gone
    }

    /// Replaces the whole index (an archive reader that fell behind the archive's garbage
    /// collection reloads it from a snapshot). The live flag is kept.
    pub fn replace(&self, mut index: StreamIndex) {
        {
            let mut ix = self.write();
            index.live = ix.live;
            index.max_duration_ms = index.max_duration_ms.max(ix.max_duration_ms);
            *ix = index;
        }
        self.bump();
    }

    /// Sets the live flag (relays mirror their upstream's; recordings set it while writing).
    pub fn set_live(&self, live: bool) {
        let changed = {
            let mut ix = self.write();
            if !live {
                ix.close_open();
            }
            std::mem::replace(&mut ix.live, live) != live
        };
        if changed {
            self.bump();
        }
    }

    /// Sets the LL-HLS part target (`None`: off) a recording or its upstream uses.
    pub fn set_part_target(&self, part_target_ms: Option<u64>) {
        self.write().part_target_ms = part_target_ms;
        self.bump();
    }

    /// Announces a part of the open segment (LL-HLS) and wakes watchers.
    pub fn add_part(&self, open: &OpenSegment, part: PartMeta) {
        self.write().push_part(open, part);
        self.bump();
    }

    /// Raises the longest-segment mark (a relay takes its upstream's target duration, so every
    /// node of a chain announces the same `EXT-X-TARGETDURATION`). Never lowers it.
    pub fn raise_target(&self, duration_ms: u64) {
        let raised = {
            let mut ix = self.write();
            let before = ix.max_duration_ms;
            ix.max_duration_ms = before.max(duration_ms);
            ix.max_duration_ms != before
        };
        if raised {
            self.bump();
        }
    }

    /// Sets where a relay's numbering starts (before its first segment).
    pub fn start_seq_at(&self, seq: u64) {
        let mut ix = self.write();
        if ix.segments.is_empty() && ix.next_seq < seq {
            ix.next_seq = seq;
        }
    }

    /// A read view of the index. Do not hold it across `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, StreamIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes on every index change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A counter that changes whenever the index does (for caches of rendered documents).
    pub fn version(&self) -> u64 {
        *self.changed.borrow()
    }

    /// A write view; the caller bumps after releasing it.
    pub(super) fn write(&self) -> RwLockWriteGuard<'_, StreamIndex> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}
