//! What a writer uploads next: the pure mapping from its local recording onto the archive.
//!
//! The archive has its own seqs and period ids. A writer that has written the archive all
//! along maps its recording one to one (its local seqs *are* the archive's). A writer that
//! takes over aligns by time: its first segment uploaded is the first local one that starts
//! no earlier than half a segment before the archive's end, numbered `archive last + 1`, under
//! a new archive period (EXT-X-DISCONTINUITY) unless it is the very period the archive already
//! has. So after a takeover the timeline has no overlap and no gap larger than one segment.
//!
//! [`Mapping`] is derived again whenever it stops fitting (the wanted local segment was
//! deleted by local retention during a long store outage): the archive's seq still grows by
//! one per segment.

use crate::store::{PeriodMeta, Record, SegmentMeta, StreamIndex};

/// How local seqs and periods map onto the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// archive seq = local seq + `delta`; `None` until aligned.
    delta: Option<i64>,
    /// archive `start_ms` = local `start_ms` + `start_delta`.
    start_delta: i64,
    /// archive `time_ms` = local `time_ms` + `time_delta`: after a takeover, the new writer's
    /// first segment starts exactly where the archive ends when their wall clocks disagree
    /// by less than half a segment (two machines' clocks never agree to the millisecond).
    time_delta: i64,
    /// Local period id -> archive period id.
    periods: Vec<(u32, u32)>,
}

/// One object to copy before the batch's chunk is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    Init { local_period: u32, hash: u64 },
    Segment { local_seq: u64, seq: u64, hash: u64 },
}

/// The next chunk's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub uploads: Vec<Upload>,
    pub records: Vec<Record>,
}

impl Mapping {
    /// The local seq that becomes the archive's next one.
    pub fn wanted(&self, archive: &StreamIndex) -> Option<u64> {
        let d = self.delta?;
        u64::try_from(archive.next_seq as i64 - d).ok()
    }

    /// Seqs and the media timeline map one to one (periods may be reused).
    fn identity(&self) -> bool {
        self.delta == Some(0) && self.start_delta == 0
    }

    fn time(&self, local_ms: i64) -> i64 {
        local_ms.saturating_add(self.time_delta)
    }

    /// Aligns the local recording with the archive's end; `false` when no local segment
    /// follows it yet.
    fn align(&mut self, local: &StreamIndex, archive: &StreamIndex) -> bool {
        let Some(first) = local.segments.front() else {
            return false;
        };
        let (delta, start_delta, time_delta) = match archive.segments.back() {
            None => ((archive.next_seq as i64 - first.seq as i64).max(0), 0, 0),
            Some(last) => match local.segment(last.seq) {
                // Ours: one to one.
                Some(s) if s.hash == last.hash && s.time_ms == last.time_ms => (0, 0, 0),
                _ => {
                    let tolerance = (last.duration_ms / 2) as i64;
                    let from = last.end_ms() - tolerance;
                    let Some(b) = local.segments.iter().find(|s| s.time_ms >= from) else {
                        return false;
                    };
                    let start = (last.start_ms + last.duration_ms) as i64 - b.start_ms as i64;
                    let delta = (last.seq + 1) as i64 - b.seq as i64;
                    let late = b.time_ms - last.end_ms();
                    let time = if late.abs() <= tolerance { -late } else { 0 };
                    (delta, start, time)
                }
            },
        };
        *self = Mapping {
            delta: Some(delta),
            start_delta,
            time_delta,
            periods: Vec::new(),
        };
        true
    }

    fn archive_period(&self, local: u32, archive: &StreamIndex) -> Option<u32> {
        self.periods
            .iter()
            .find(|(l, _)| *l == local)
            .map(|(_, a)| *a)
            .filter(|a| archive.period(*a).is_some())
    }
}

/// The next batch of at most `max` segments to upload (`None`: nothing to do now). `mapping` is
/// (re)aligned as needed; the batch's new periods are recorded in it.
pub fn next_batch(
    local: &StreamIndex,
    archive: &StreamIndex,
    mapping: &mut Mapping,
    max: usize,
) -> Option<Batch> {
    let fits = |m: &Mapping| {
        m.wanted(archive)
            .is_some_and(|w| local.segment(w).is_some() || local.next_seq <= w)
    };
    if !fits(mapping) && !mapping.align(local, archive) {
        return None;
    }
    let wanted = mapping.wanted(archive)?;
    let delta = mapping.delta?;
    let mut batch = Batch::default();
    let mut next_period = archive.periods.last().map_or(0, |p| p.id + 1);
    let from = local.segments.partition_point(|s| s.seq < wanted);
    for s in local.segments.range(from..).take(max) {
        let Some(p) = local.period(s.period) else {
            break;
        };
        let period = match mapping.archive_period(s.period, archive) {
            Some(a) => a,
            None if batch_period(&batch, s.period).is_some() => {
                batch_period(&batch, s.period).unwrap_or_default()
            }
            None => {
                let reuse = mapping.identity()
                    && archive
                        .period(p.id)
                        .is_some_and(|a| a.init_hash == p.init_hash);
                if reuse {
                    mapping.periods.push((p.id, p.id));
                    p.id
                } else {
                    let id = if mapping.identity() {
                        p.id.max(next_period)
                    } else {
                        next_period
                    };
                    next_period = id + 1;
                    batch
                        .records
                        .push(Record::Period(mapped_period(p, s, id, mapping)));
                    batch.uploads.push(Upload::Init {
                        local_period: p.id,
                        hash: p.init_hash,
                    });
                    mapping.periods.push((p.id, id));
                    id
                }
            }
        };
        let seq = u64::try_from(s.seq as i64 + delta).ok()?;
        batch.uploads.push(Upload::Segment {
            local_seq: s.seq,
            seq,
            hash: s.hash,
        });
        batch.records.push(Record::Segment(SegmentMeta {
            seq,
            period,
            start_ms: u64::try_from(s.start_ms as i64 + mapping.start_delta).unwrap_or(0),
            time_ms: mapping.time(s.time_ms),
            ..s.clone()
        }));
    }
    (!batch.records.is_empty()).then_some(batch)
}

/// The archive id given in this batch to local period `local`.
fn batch_period(batch: &Batch, local: u32) -> Option<u32> {
    let mut locals = batch.uploads.iter().filter_map(|u| match u {
        Upload::Init { local_period, .. } => Some(*local_period),
        _ => None,
    });
    let pos = locals.position(|l| l == local)?;
    batch
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Period(p) => Some(p.id),
            _ => None,
        })
        .nth(pos)
}

/// The archive's record of local period `p`, first uploaded with segment `s`.
fn mapped_period(p: &PeriodMeta, s: &SegmentMeta, id: u32, m: &Mapping) -> PeriodMeta {
    if m.identity() && m.time_delta == 0 {
        PeriodMeta { id, ..p.clone() }
    } else {
        PeriodMeta {
            id,
            start_ms: u64::try_from(s.start_ms as i64 + m.start_delta).unwrap_or(0),
            time_ms: m.time(s.time_ms),
            ..p.clone()
        }
    }
}

/// Local segments not yet in the archive under `mapping` (count, bytes).
pub fn backlog(local: &StreamIndex, archive: &StreamIndex, mapping: &Mapping) -> (u64, u64) {
    let wanted = match mapping.wanted(archive) {
        Some(w) => w,
        None if archive.segments.is_empty() && archive.next_seq == 0 => 0,
        None => return (0, 0),
    };
    let from = local.segments.partition_point(|s| s.seq < wanted);
    let pending = local.segments.range(from..);
    (pending.len() as u64, pending.map(|s| s.length).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::tests::{period, seg};

    /// A local recording: periods `(id, init_hash)` and segments `(seq, period, time_ms)`.
    fn recording(periods: &[(u32, u64)], segs: &[(u64, u32, i64)]) -> StreamIndex {
        let mut ix = StreamIndex::default();
        for &(id, hash) in periods {
            let mut p = period(id, 0, 0);
            p.init_hash = hash;
            p.init_length = 10;
            ix.apply(Record::Period(p));
        }
        for &(seq, p, t) in segs {
            let mut s = seg(seq, p, t, 2000);
            s.start_ms = (t - 1_000_000) as u64;
            s.length = 100;
            s.hash = seq * 1000 + t as u64;
            ix.apply(Record::Segment(s));
        }
        ix
    }

    fn apply(archive: &mut StreamIndex, batch: &Batch) {
        for r in &batch.records {
            archive.apply(r.clone());
        }
    }

    fn seqs(batch: &Batch) -> Vec<u64> {
        batch
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Segment(s) => Some(s.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_writer_maps_one_to_one_in_batches() {
        let local = recording(
            &[(0, 7)],
            &[(0, 0, 1_000_000), (1, 0, 1_002_000), (2, 0, 1_004_000)],
        );
        let mut archive = StreamIndex::default();
        let mut m = Mapping::default();
        assert_eq!(backlog(&local, &archive, &m), (3, 300));
        let b = next_batch(&local, &archive, &mut m, 2).unwrap();
        assert_eq!(seqs(&b), [0, 1]);
        assert_eq!(
            b.uploads[0],
            Upload::Init {
                local_period: 0,
                hash: 7
            }
        );
        assert_eq!(b.records[0], Record::Period(local.periods[0].clone()));
        apply(&mut archive, &b);
        assert_eq!(backlog(&local, &archive, &m), (1, 100));
        let b = next_batch(&local, &archive, &mut m, 2).unwrap();
        assert_eq!(seqs(&b), [2]);
        assert_eq!(b.records[0], Record::Segment(local.segments[2].clone()));
        apply(&mut archive, &b);
        assert_eq!(next_batch(&local, &archive, &mut m, 2), None);
        assert_eq!(backlog(&local, &archive, &m), (0, 0));
    }

    #[test]
    fn a_restarted_writer_resumes_after_what_the_bucket_has() {
        let local = recording(
            &[(0, 7)],
            &[(0, 0, 1_000_000), (1, 0, 1_002_000), (2, 0, 1_004_000)],
        );
        let mut archive = StreamIndex::default();
        let first = next_batch(&local, &archive, &mut Mapping::default(), 2).unwrap();
        apply(&mut archive, &first);
        // A fresh mapping (after a restart) finds its own segment 1 at the archive's end.
        let mut m = Mapping::default();
        let b = next_batch(&local, &archive, &mut m, 8).unwrap();
        assert_eq!(seqs(&b), [2]);
        assert_eq!(b.uploads.len(), 1, "period 0 is the archive's already");
    }

    #[test]
    fn a_takeover_aligns_by_time_under_a_new_period() {
        // The archive (writer A) ends with seq 11 covering [1_022_000, 1_024_000).
        let a = recording(&[(0, 7), (1, 7)], &[(10, 1, 1_020_000), (11, 1, 1_022_000)]);
        let mut archive = a.clone();
        // B numbered its recording differently and started a bit off.
        let b_local = recording(
            &[(0, 9)],
            &[
                (3, 0, 1_019_990),
                (4, 0, 1_021_990),
                (5, 0, 1_023_990),
                (6, 0, 1_025_990),
            ],
        );
        let mut m = Mapping::default();
        let batch = next_batch(&b_local, &archive, &mut m, 8).unwrap();
        assert_eq!(seqs(&batch), [12, 13], "B's 5 and 6 follow A's 11");
        let Record::Period(p) = &batch.records[0] else {
            panic!("a new period first")
        };
        assert_eq!(p.id, 2);
        assert_eq!(
            p.time_ms, 1_024_000,
            "the takeover starts where the archive ends"
        );
        let Record::Segment(s) = &batch.records[1] else {
            panic!()
        };
        assert_eq!(
            s.start_ms,
            a.segments[1].start_ms + 2000,
            "media timeline continues"
        );
        assert_eq!(s.period, 2);
        apply(&mut archive, &batch);
        assert_eq!(archive.next_seq, 14);
        assert_eq!(next_batch(&b_local, &archive, &mut m, 8), None);
    }

    #[test]
    fn a_standby_with_the_same_numbering_continues_without_a_discontinuity() {
        let a = recording(&[(0, 7)], &[(0, 0, 1_000_000), (1, 0, 1_002_000)]);
        let mut archive = a.clone();
        // B recorded the same feed: same seqs and media times, its own bytes (hashes differ).
        let mut b_local = recording(
            &[(0, 7)],
            &[(0, 0, 1_000_003), (1, 0, 1_002_003), (2, 0, 1_004_003)],
        );
        for s in b_local.segments.iter_mut() {
            s.start_ms -= 3;
            s.hash += 1;
        }
        let mut m = Mapping::default();
        let batch = next_batch(&b_local, &archive, &mut m, 8).unwrap();
        assert_eq!(seqs(&batch), [2]);
        assert_eq!(batch.records.len(), 1, "period 0 reused");
        let Record::Segment(s) = &batch.records[0] else {
            panic!()
        };
        assert_eq!(
            s.time_ms, 1_004_000,
            "B's clock, 3 ms off, aligned to the archive's end"
        );
        apply(&mut archive, &batch);
    }

    #[test]
    fn segments_lost_locally_during_an_outage_do_not_leave_a_seq_gap() {
        let local = recording(&[(0, 7)], &[(0, 0, 1_000_000), (1, 0, 1_002_000)]);
        let mut archive = StreamIndex::default();
        let mut m = Mapping::default();
        let first = next_batch(&local, &archive, &mut m, 1).unwrap();
        apply(&mut archive, &first);
        // Local retention dropped 1..=4 before they were uploaded; 5 and 6 exist.
        let mut later = recording(&[(0, 7)], &[(5, 0, 1_010_000), (6, 0, 1_012_000)]);
        later.next_seq = 7;
        let b = next_batch(&later, &archive, &mut m, 8).unwrap();
        assert_eq!(seqs(&b), [1, 2], "numbering continues");
    }

    #[test]
    fn nothing_to_do_until_a_segment_follows_the_archive_end() {
        let archive = recording(&[(0, 7)], &[(0, 0, 1_000_000), (1, 0, 1_002_000)]);
        let behind = recording(&[(0, 9)], &[(0, 0, 1_000_050)]);
        let mut m = Mapping::default();
        assert_eq!(next_batch(&behind, &archive, &mut m, 8), None);
        assert_eq!(backlog(&behind, &archive, &m), (0, 0));
    }
}
