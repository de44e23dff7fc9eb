//! Retention policy: which of the oldest segments go. Pure; the store applies the plan.
//!
//! A segment goes when it ended more than `retention` ago, or while the stream is over
//! `max_bytes` (oldest first). While a stream is live its newest segment always stays, so a
//! live stream never has an empty playlist.

use std::collections::VecDeque;

use super::index::SegmentMeta;

/// Retention limits of one stream.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub retention_ms: i64,
    pub max_bytes: u64,
}

/// The seq before which segments must be dropped, or `None` when nothing goes.
pub fn plan(
    segments: &VecDeque<SegmentMeta>,
    bytes: u64,
    live: bool,
    now_ms: i64,
    policy: Policy,
) -> Option<u64> {
    let keep_at_least = usize::from(live);
    let mut bytes = bytes;
    let mut drop = 0usize;
    for s in segments {
        if segments.len() - drop <= keep_at_least {
            break;
        }
        let expired = s.end_ms() < now_ms.saturating_sub(policy.retention_ms);
        if !(expired || bytes > policy.max_bytes) {
            break;
        }
        bytes -= s.length;
        drop += 1;
    }
    if drop == 0 {
        None
    } else {
        segments
            .get(drop)
            .map(|s| s.seq)
            .or_else(|| segments.back().map(|s| s.seq + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::tests::seg;

    fn segs(n: u64) -> VecDeque<SegmentMeta> {
        (0..n).map(|i| seg(i, 0, i as i64 * 2000, 2000)).collect()
    }

    #[test]
    fn by_age() {
        let s = segs(10); // ends at 2000, 4000, ..., 20000; 1000 bytes each
        let p = Policy {
            retention_ms: 10_000,
            max_bytes: u64::MAX,
        };
        assert_eq!(
            plan(&s, 10_000, true, 15_000, p),
            Some(2),
            "segments ending before 5000 go"
        );
        assert_eq!(plan(&s, 10_000, true, 5_000, p), None);
        assert_eq!(
            plan(&s, 10_000, true, 1_000_000, p),
            Some(9),
            "live keeps the newest"
        );
        assert_eq!(
            plan(&s, 10_000, false, 1_000_000, p),
            Some(10),
            "ended streams may empty"
        );
    }

    #[test]
    fn by_size() {
        let s = segs(10);
        let p = Policy {
            retention_ms: i64::MAX,
            max_bytes: 3_500,
        };
        assert_eq!(
            plan(&s, 10_000, true, 0, p),
            Some(7),
            "3 segments (3000 bytes) stay"
        );
        let p = Policy {
            retention_ms: i64::MAX,
            max_bytes: 1,
        };
        assert_eq!(plan(&s, 10_000, true, 0, p), Some(9));
        assert_eq!(plan(&VecDeque::new(), 0, true, 0, p), None);
    }
}
