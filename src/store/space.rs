//! Free space on the recordings' volume (`record.min_free`): which of the oldest segments of
//! any stream go so that a write keeps the reserve. The decision ([`plan`]) is pure; the store
//! measures ([`free_space`], one `statvfs`, a few µs) and applies it.
//!
//! Rules of the plan: oldest first by wall clock (`time_ms`) across all streams, whole segments,
//! never the segment being written (it is not indexed yet), and a live stream keeps at least its
//! newest segment so its playlist never empties. When deleting everything the plan may delete
//! still would not free enough, it deletes nothing: the recording cannot go on either way, and
//! the DVR window stays whole for the viewers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::path::Path;

use super::index::SegmentMeta;

/// Room reserved on top of a write's own size for the index line it appends and directory
/// entries (in file-system blocks): an index line is ~250 bytes, but a file grows by blocks.
pub const SLACK_BLOCKS: u64 = 2;

/// The free space to keep on the recordings' volume (`record.min_free`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    /// Bytes.
    Bytes(u64),
    /// Percent of the volume's size (0 to below 100).
    Percent(f64),
}

impl MinFree {
    /// The reserve in bytes on a volume of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MinFree::Bytes(n) => n,
            MinFree::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

impl fmt::Display for MinFree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinFree::Bytes(n) => write!(f, "{n} bytes"),
            MinFree::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// What `statvfs` says about a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use (`f_bavail`).
    pub free: u64,
    /// Size of the volume.
    pub total: u64,
    /// Allocation unit: files grow by this much.
    pub block: u64,
}

impl Space {
    /// Bytes a file of `len` bytes (plus its index line) takes on this volume.
    pub fn footprint(&self, len: u64) -> u64 {
        let block = self.block.max(1);
        len.div_ceil(block).saturating_add(SLACK_BLOCKS) * block
    }
}

/// Free space of the volume holding `path` (one `statvfs`). `None` where not supported.
#[cfg(unix)]
pub fn free_space(path: &Path) -> std::io::Result<Option<Space>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string; `st` is plain data that statvfs fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = if st.f_frsize > 0 {
        st.f_frsize as u64
    } else {
        st.f_bsize as u64
    };
    Ok(Some(Space {
        free: (st.f_bavail as u64).saturating_mul(frsize),
        total: (st.f_blocks as u64).saturating_mul(frsize),
        block: frsize,
    }))
}

/// Free space of the volume holding `path`. `None` where not supported.
#[cfg(not(unix))]
pub fn free_space(_path: &Path) -> std::io::Result<Option<Space>> {
    Ok(None)
}

/// How many bytes must be freed before writing `incoming` bytes (footprint included) so that
/// `reserve` bytes stay free. `pending` are bytes other writers are writing right now.
pub fn deficit(space: Space, reserve: u64, incoming: u64, pending: u64) -> u64 {
    reserve
        .saturating_add(incoming)
        .saturating_add(pending)
        .saturating_sub(space.free)
}

/// One stream as the plan sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub segments: &'a VecDeque<SegmentMeta>,
    /// A live stream keeps its newest segment.
    pub live: bool,
}

/// Segments to delete from one stream: every segment with `seq < before`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Position of the stream in the candidates.
    pub stream: usize,
    pub before: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub segments: usize,
    pub bytes: u64,
}

/// The cuts that free at least `need` bytes, oldest segments first across all streams; `None`
/// when even every deletable segment would not be enough. An empty plan when `need == 0`.
pub fn plan(streams: &[Candidate<'_>], need: u64) -> Option<Vec<Cut>> {
    if need == 0 {
        return Some(Vec::new());
    }
    // Per stream: how many segments it has given up so far.
    let mut taken = vec![0usize; streams.len()];
    let mut heap = BinaryHeap::new();
    let deletable = |i: usize, taken: usize| {
        let c = &streams[i];
        let keep = usize::from(c.live);
        c.segments.len() > taken + keep
    };
    for (i, c) in streams.iter().enumerate() {
        if deletable(i, 0) {
            heap.push(Reverse((c.segments[0].time_ms, i)));
        }
    }
    let mut freed = 0u64;
    while freed < need {
        let Reverse((_, i)) = heap.pop()?;
        freed = freed.saturating_add(streams[i].segments[taken[i]].length);
        taken[i] += 1;
        if deletable(i, taken[i]) {
            heap.push(Reverse((streams[i].segments[taken[i]].time_ms, i)));
        }
    }
    let cuts = taken
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n > 0)
        .map(|(i, &n)| {
            let segs = streams[i].segments;
            let gone = segs.range(..n);
            Cut {
                stream: i,
                before: segs[n - 1].seq + 1,
                first_seq: segs[0].seq,
                last_seq: segs[n - 1].seq,
                segments: n,
                bytes: gone.map(|s| s.length).sum(),
            }
        })
        .collect();
    Some(cuts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::tests::seg;

    /// `n` segments of 1000 bytes starting at wall time `t0`, every 2 s.
    fn segs(first_seq: u64, n: u64, t0: i64) -> VecDeque<SegmentMeta> {
        (first_seq..first_seq + n)
            .map(|s| seg(s, 0, t0 + (s - first_seq) as i64 * 2000, 2000))
            .collect()
    }

    #[test]
    fn nothing_needed_nothing_cut() {
        let a = segs(0, 3, 0);
        assert_eq!(
            plan(
                &[Candidate {
                    segments: &a,
                    live: true
                }],
                0
            ),
            Some(vec![])
        );
    }

    #[test]
    fn oldest_first_across_streams() {
        // a: t = 0, 2000, 4000, ...; b: t = 3000, 5000, ...
        let a = segs(10, 5, 0);
        let b = segs(0, 5, 3000);
        let c = [
            Candidate {
                segments: &a,
                live: false,
            },
            Candidate {
                segments: &b,
                live: true,
            },
        ];
        // Oldest: a10 (0), a11 (2000), b0 (3000), a12 (4000).
        let p = plan(&c, 3500).unwrap();
        assert_eq!(
            p,
            vec![
                Cut {
                    stream: 0,
                    before: 13,
                    first_seq: 10,
                    last_seq: 12,
                    segments: 3,
                    bytes: 3000
                },
                Cut {
                    stream: 1,
                    before: 1,
                    first_seq: 0,
                    last_seq: 0,
                    segments: 1,
                    bytes: 1000
                },
            ]
        );
        // Whole segments: 1 byte needs one segment.
        assert_eq!(plan(&c, 1).unwrap()[0].segments, 1);
    }

    #[test]
    fn live_keeps_newest_ended_may_empty() {
        let a = segs(0, 3, 0);
        let b = segs(0, 3, 100_000);
        let c = [
            Candidate {
                segments: &a,
                live: true,
            },
            Candidate {
                segments: &b,
                live: false,
            },
        ];
        // 2 from a (its newest stays) + 3 from b = 5000 bytes at most.
        let p = plan(&c, 5000).unwrap();
        assert_eq!(p[0].before, 2);
        assert_eq!(p[1].before, 3);
        assert_eq!(plan(&c, 5001), None, "not enough: nothing is cut");
        let one = segs(0, 1, 0);
        assert_eq!(
            plan(
                &[Candidate {
                    segments: &one,
                    live: true
                }],
                1
            ),
            None
        );
        assert_eq!(plan(&[], 1), None);
    }

    #[test]
    fn deficit_counts_reserve_incoming_and_pending() {
        let s = Space {
            free: 10_000,
            total: 100_000,
            block: 4096,
        };
        assert_eq!(deficit(s, 5_000, 4_000, 0), 0);
        assert_eq!(deficit(s, 5_000, 4_000, 2_000), 1_000);
        assert_eq!(s.footprint(1), 3 * 4096);
        assert_eq!(s.footprint(4096), 3 * 4096);
        assert_eq!(MinFree::Percent(5.0).bytes(100_000), 5_000);
        assert_eq!(MinFree::Bytes(7).bytes(100_000), 7);
    }

    #[test]
    fn statvfs_is_cheap_and_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let Some(s) = free_space(dir.path()).unwrap() else {
            return;
        };
        assert!(s.total >= s.free && s.block > 0, "{s:?}");
        let n = 1000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            free_space(dir.path()).unwrap();
        }
        let each = t.elapsed() / n;
        eprintln!("statvfs: {each:?} per call");
        assert!(each < std::time::Duration::from_millis(1), "{each:?}");
    }
}
