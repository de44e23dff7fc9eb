//! Which segments of a recorded stream have a thumbnail on disk, in memory, so `thumbs.vtt`
//! lists them without a stat per segment.
//!
//! Invariants: a seq is inserted only after its JPEG was renamed into place (the thumbnail
//! worker does it); retention raises the floor (dropping the seqs below it) *before* it
//! deletes the files, and [`ThumbSet::insert`] refuses a seq below the floor, whose file the
//! worker then deletes itself. So whichever runs first, a thumbnail never outlives its
//! segment and the set never names a file that retention removed. At startup the set is filled from the
//! `thumbs/` folder, keeping only seqs the index still lists. Bounded by the index: one
//! entry per indexed segment at most.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// The seqs with a thumbnail. std `Mutex`: short sections, never held across `.await`.
#[derive(Debug, Default)]
pub struct ThumbSet {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seqs: BTreeSet<u64>,
    /// Seqs below it were dropped by retention.
    floor: u64,
}

impl ThumbSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A set holding `seqs`.
    pub fn of(seqs: impl IntoIterator<Item = u64>) -> ThumbSet {
        ThumbSet {
            inner: Mutex::new(Inner {
                seqs: seqs.into_iter().collect(),
                floor: 0,
            }),
        }
    }

    /// Segment `seq` has a thumbnail now. `false` when its segment was dropped already: the
    /// caller deletes the file.
    #[must_use]
    pub fn insert(&self, seq: u64) -> bool {
        let mut s = self.lock();
        if seq < s.floor {
            return false;
        }
        s.seqs.insert(seq);
        true
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.lock().seqs.contains(&seq)
    }

    /// Forgets every seq below `before` (their segments were dropped) and refuses them from
    /// now on.
    pub fn remove_before(&self, before: u64) {
        let mut s = self.lock();
        s.floor = s.floor.max(before);
        let keep = s.seqs.split_off(&before);
        s.seqs = keep;
    }

    /// The seqs in `first..=last`.
    pub fn in_range(&self, first: u64, last: u64) -> BTreeSet<u64> {
        if first > last {
            return BTreeSet::new();
        }
        self.lock().seqs.range(first..=last).copied().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().seqs.is_empty()
    }
}

/// The seqs of the `N.jpg` files in `dir` (a missing folder is empty). Blocking.
pub fn scan(dir: &std::path::Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_suffix(".jpg")?;
            if n.is_empty() || n.len() > 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            n.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_range_and_drop() {
        let s = ThumbSet::of([1, 2, 5]);
        assert!(s.insert(7));
        assert!(s.contains(5));
        assert_eq!(s.in_range(2, 6).into_iter().collect::<Vec<_>>(), [2, 5]);
        assert!(s.in_range(6, 2).is_empty());
        s.remove_before(5);
        assert_eq!(
            s.in_range(0, u64::MAX).into_iter().collect::<Vec<_>>(),
            [5, 7]
        );
    }

    #[test]
    fn scan_reads_numbered_jpegs_only() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["3.jpg", "10.jpg", "x.jpg", "4.jpg.tmp", "+1.jpg", "5.png"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let mut seqs = scan(dir.path());
        seqs.sort();
        assert_eq!(seqs, [3, 10]);
        assert!(scan(&dir.path().join("missing")).is_empty());
    }
}
