//! The in-memory time index of one stream, and the records of its on-disk `index.jsonl`.
//!
//! Invariants:
//! - `segments` is ordered by `seq` and by `time_ms`; `seq` grows by one per segment and is
//!   never reused, across periods, restarts and retention (`next_seq` survives all three).
//! - Every segment's `period` is in `periods`; periods are ordered by `id`.
//! - `bytes` is the sum of `length` over `segments` (media segments only).
//!
//! Lookups by seq are O(log n) binary searches; playlists and windows are ranges of the deque,
//! so a 24-hour window (43,200 segments) is rendered without copying the index.

use std::collections::VecDeque;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// One period: what an init segment describes (codecs, resolution). A republish or a codec
/// change starts a new one (`EXT-X-DISCONTINUITY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodMeta {
    pub id: u32,
    pub codecs: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Media timeline position where the period starts.
    pub start_ms: u64,
    /// Wall clock (unix ms) at `start_ms`.
    pub time_ms: i64,
    /// xxh3 of the init segment (its ETag).
    pub init_hash: u64,
    pub init_length: u64,
}

impl PeriodMeta {
    /// The period has a video track (its segments can have thumbnails).
    pub fn has_video(&self) -> bool {
        self.width.is_some()
            || ["avc1", "avc3", "hvc1", "hev1", "av01", "vp09"]
                .iter()
                .any(|c| self.codecs.contains(c))
    }
}

/// One media segment (moof + mdat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub seq: u64,
    pub period: u32,
    /// Position on the stream's media timeline (continuous across periods).
    pub start_ms: u64,
    pub duration_ms: u64,
    /// Wall clock at ingest (unix ms) of the segment's first frame; relays keep it unchanged.
    pub time_ms: i64,
    pub length: u64,
    /// xxh3 of the bytes (the strong ETag; identical at every hop).
    pub hash: u64,
}

impl SegmentMeta {
    /// Wall-clock end (unix ms).
    pub fn end_ms(&self) -> i64 {
        self.time_ms
            .saturating_add(i64::try_from(self.duration_ms).unwrap_or(i64::MAX))
    }
}

/// One part of a segment (LL-HLS `EXT-X-PART`): a byte range of the segment, whose bytes are
/// its parts joined in order. Parts live in memory only (the open segment's and those of the
/// last [`PART_HISTORY`] segments); they are never written to the index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    pub duration_ms: u64,
    /// Where the part's bytes are in its segment.
    pub offset: u64,
    pub length: u64,
    /// Starts with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
    /// xxh3 of the part's bytes (its ETag).
    pub hash: u64,
}

/// The segment being written, as far as its parts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSegment {
    pub seq: u64,
    pub period: u32,
    pub start_ms: u64,
    /// Wall clock of its first frame (may still move by a few ms when the segment is sealed).
    pub time_ms: i64,
    pub parts: Vec<PartMeta>,
}

impl OpenSegment {
    /// Sum of the parts' durations.
    pub fn duration_ms(&self) -> u64 {
        self.parts.iter().map(|p| p.duration_ms).sum()
    }

    /// Bytes of the parts so far.
    pub fn length(&self) -> u64 {
        self.parts.last().map_or(0, |p| p.offset + p.length)
    }
}

/// How many sealed segments keep their part list (playlists list parts for the newest few:
/// RFC 8216bis 4.4.4.9 asks for those within 3 target durations of the end).
pub const PART_HISTORY: usize = 4;

/// A line of `index.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum Record {
    #[serde(rename = "period")]
    Period(PeriodMeta),
    #[serde(rename = "seg")]
    Segment(SegmentMeta),
    /// Retention removed every segment with `seq < before`. `longest_ms` carries the longest
    /// segment the stream has had, so `EXT-X-TARGETDURATION` survives the deletion of that
    /// segment and a restart (older nodes ignore the field; 0 = not given).
    #[serde(rename = "drop")]
    Drop {
        before: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        longest_ms: u64,
    },
    /// The next segment gets at least `seq`: a segment whose parts were announced was lost in
    /// a crash before it was sealed, so its seq (and its parts' names, which a CDN may hold)
    /// is never used again.
    #[serde(rename = "next")]
    Next { seq: u64 },
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Record {
    /// A drop of every segment below `before` (without a longest-segment mark).
    pub fn drop_before(before: u64) -> Record {
        Record::Drop {
            before,
            longest_ms: 0,
        }
    }

    /// The record as one JSON line (without newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The time index of one stream.
#[derive(Debug, Clone, Default)]
pub struct StreamIndex {
    pub periods: Vec<PeriodMeta>,
    pub segments: VecDeque<SegmentMeta>,
    /// The seq the next segment gets.
    pub next_seq: u64,
    /// A publisher is recording now.
    pub live: bool,
    /// Sum of segment lengths.
    pub bytes: u64,
    /// Longest segment duration seen (for EXT-X-TARGETDURATION).
    pub max_duration_ms: u64,
    /// LL-HLS: the segment being written, once it has a part.
    pub open: Option<OpenSegment>,
    /// LL-HLS: the part lists of the newest sealed segments (seq, parts), oldest first, at
    /// most [`PART_HISTORY`].
    pub sealed_parts: VecDeque<(u64, Vec<PartMeta>)>,
    /// LL-HLS part target of the recording (the origin's `record.part_target`, a relay's
    /// upstream's); `None`: no parts.
    pub part_target_ms: Option<u64>,
}

/// Result of a time lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The segment at this position in `segments` contains the time (or is the first one after
    /// it, when the time falls into a gap between periods).
    Found(usize),
    /// Before the first or after the live edge (or no segments).
    Outside,
}

impl StreamIndex {
    /// Applies one record (recovery, live recording and relays go through the same code).
    /// Returns the segments and periods a `Drop` removed (nothing for other records).
    pub fn apply(&mut self, record: Record) -> (Vec<SegmentMeta>, Vec<PeriodMeta>) {
        match record {
            Record::Period(p) => {
                if self.periods.last().is_none_or(|last| p.id > last.id) {
                    self.periods.push(p);
                }
                (Vec::new(), Vec::new())
            }
            Record::Segment(s) => {
                self.push_segment(s);
                (Vec::new(), Vec::new())
            }
            Record::Drop { before, longest_ms } => {
                let gone = self.drop_before(before);
                self.next_seq = self.next_seq.max(before);
                self.max_duration_ms = self.max_duration_ms.max(longest_ms);
                gone
            }
            Record::Next { seq } => {
                self.next_seq = self.next_seq.max(seq);
                (Vec::new(), Vec::new())
            }
        }
    }

    /// Adds a part to the open segment `seq` (starting it when it is another one). Parts of a
    /// seq already sealed, or not the next one in order, are ignored.
    pub fn push_part(&mut self, open: &OpenSegment, part: PartMeta) {
        if open.seq < self.next_seq {
            return;
        }
        let current = self.open.as_mut().filter(|o| o.seq == open.seq);
        let current = match current {
            Some(c) => c,
            None => self.open.insert(OpenSegment {
                parts: Vec::new(),
                ..open.clone()
            }),
        };
        if current.length() == part.offset {
            current.parts.push(part);
        }
    }

    /// The part `index` of segment `seq`, if it exists (in the open segment or a recent one).
    pub fn part(&self, seq: u64, index: usize) -> Option<&PartMeta> {
        match &self.open {
            Some(o) if o.seq == seq => o.parts.get(index),
            _ => self
                .sealed_parts
                .iter()
                .find(|(s, _)| *s == seq)
                .and_then(|(_, parts)| parts.get(index)),
        }
    }

    /// The parts of segment `seq`: the open one's, or a recent sealed one's.
    pub fn parts_of(&self, seq: u64) -> Option<&[PartMeta]> {
        match &self.open {
            Some(o) if o.seq == seq => Some(&o.parts),
            _ => self
                .sealed_parts
                .iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, p)| p.as_slice()),
        }
    }

    /// Sets the part list of sealed segment `seq` (a relay takes it from its upstream's
    /// listing); empty = it has none. Kept for the newest [`PART_HISTORY`] segments only.
    pub fn set_parts(&mut self, seq: u64, parts: Vec<PartMeta>) {
        self.sealed_parts.retain(|(s, _)| *s != seq);
        if parts.is_empty() || self.segment(seq).is_none() {
            return;
        }
        let at = self.sealed_parts.partition_point(|(s, _)| *s < seq);
        self.sealed_parts.insert(at, (seq, parts));
        while self.sealed_parts.len() > PART_HISTORY {
            self.sealed_parts.pop_front();
        }
    }

    /// The recording ended: there is no open segment any more.
    pub fn close_open(&mut self) {
        self.open = None;
    }

    /// Appends a segment; out-of-order or repeated seqs are ignored. When it is the open
    /// segment, its parts move to [`StreamIndex::sealed_parts`].
    pub fn push_segment(&mut self, s: SegmentMeta) {
        if s.seq < self.next_seq {
            return;
        }
        if let Some(open) = self.open.take() {
            if open.seq == s.seq && open.length() == s.length && !open.parts.is_empty() {
                self.sealed_parts.push_back((s.seq, open.parts));
                while self.sealed_parts.len() > PART_HISTORY {
                    self.sealed_parts.pop_front();
                }
            } else if open.seq > s.seq {
                self.open = Some(open);
            }
        }
        self.next_seq = s.seq + 1;
        self.bytes += s.length;
        self.max_duration_ms = self.max_duration_ms.max(s.duration_ms);
        self.segments.push_back(s);
    }

    /// Removes segments with `seq < before` (and periods no segment refers to any more, except
    /// the newest). Returns what was removed.
    pub fn drop_before(&mut self, before: u64) -> (Vec<SegmentMeta>, Vec<PeriodMeta>) {
        let mut gone = Vec::new();
        self.sealed_parts.retain(|(seq, _)| *seq >= before);
        while self.segments.front().is_some_and(|s| s.seq < before) {
            if let Some(s) = self.segments.pop_front() {
                self.bytes -= s.length;
                gone.push(s);
            }
        }
        let keep_from = self
            .segments
            .front()
            .map(|s| s.period)
            .or(self.periods.last().map(|p| p.id));
        let mut gone_periods = Vec::new();
        if let Some(keep_from) = keep_from {
            let split = self.periods.partition_point(|p| p.id < keep_from);
            gone_periods = self.periods.drain(..split).collect();
        }
        (gone, gone_periods)
    }

    pub fn period(&self, id: u32) -> Option<&PeriodMeta> {
        self.periods
            .binary_search_by_key(&id, |p| p.id)
            .ok()
            .map(|i| &self.periods[i])
    }

    /// The segment with this seq.
    pub fn segment(&self, seq: u64) -> Option<&SegmentMeta> {
        self.position(seq).map(|i| &self.segments[i])
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.segments.binary_search_by_key(&seq, |s| s.seq).ok()
    }

    /// Wall clock of the first segment.
    pub fn start_ms(&self) -> Option<i64> {
        self.segments.front().map(|s| s.time_ms)
    }

    /// The live edge: end of the newest segment.
    pub fn live_edge_ms(&self) -> Option<i64> {
        self.segments.back().map(SegmentMeta::end_ms)
    }

    /// Sum of segment durations.
    pub fn duration_ms(&self) -> u64 {
        self.segments.iter().map(|s| s.duration_ms).sum()
    }

    /// Positions of segments with `seq > after`.
    pub fn after(&self, after: u64) -> Range<usize> {
        let from = self.segments.partition_point(|s| s.seq <= after);
        from..self.segments.len()
    }

    /// The segment containing wall-clock `t_ms`. A time in a gap between periods maps to the
    /// next segment; the live edge itself maps to the last segment.
    pub fn lookup(&self, t_ms: i64) -> Lookup {
        let (Some(first), Some(edge)) = (self.start_ms(), self.live_edge_ms()) else {
            return Lookup::Outside;
        };
        if t_ms < first || t_ms > edge {
            return Lookup::Outside;
        }
        let i = self.segments.partition_point(|s| s.end_ms() <= t_ms);
        Lookup::Found(i.min(self.segments.len() - 1))
    }

    /// Positions of the segments overlapping the wall-clock window `[from_ms, to_ms)`.
    pub fn window(&self, from_ms: i64, to_ms: i64) -> Range<usize> {
        let start = self.segments.partition_point(|s| s.end_ms() <= from_ms);
        let end = self
            .segments
            .partition_point(|s| s.time_ms < to_ms)
            .max(start);
        start..end
    }

    /// Positions of the last `window_ms` of the DVR window (what the live playlist lists).
    pub fn tail(&self, window_ms: u64) -> Range<usize> {
        let Some(edge) = self.live_edge_ms() else {
            return 0..0;
        };
        let from = edge.saturating_sub(i64::try_from(window_ms).unwrap_or(i64::MAX));
        let start = self.segments.partition_point(|s| s.time_ms < from);
        // Always list at least the newest segment.
        start.min(self.segments.len().saturating_sub(1))..self.segments.len()
    }

    /// Parses `index.jsonl` text. Returns the index and the byte length of the valid prefix:
    /// a torn last line (a crash mid-append) and anything after it is not part of the index.
    pub fn from_jsonl(text: &[u8]) -> (StreamIndex, usize) {
        let mut index = StreamIndex::default();
        let mut valid = 0;
        for line in text.split_inclusive(|&b| b == b'\n') {
            if line.last() != Some(&b'\n') {
                break;
            }
            let Ok(record) = serde_json::from_slice::<Record>(line) else {
                break;
            };
            index.apply(record);
            valid += line.len();
        }
        (index, valid)
    }

    /// The index as compact `index.jsonl` lines (periods still referenced, segments, and a drop
    /// marker that keeps `next_seq` when everything was dropped).
    pub fn to_records(&self) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::with_capacity(self.periods.len() + self.segments.len() + 1);
        let first = self.segments.front().map_or(self.next_seq, |s| s.seq);
        out.push(Record::Drop {
            before: first,
            longest_ms: self.max_duration_ms,
        });
        let mut periods = self.periods.iter().peekable();
        for s in &self.segments {
            while let Some(p) = periods.next_if(|p| p.id <= s.period) {
                out.push(Record::Period(p.clone()));
            }
            out.push(Record::Segment(s.clone()));
        }
        out.extend(periods.cloned().map(Record::Period));
        if self
            .segments
            .back()
            .is_some_and(|s| s.seq + 1 < self.next_seq)
        {
            out.push(Record::Next { seq: self.next_seq });
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn period(id: u32, start_ms: u64, time_ms: i64) -> PeriodMeta {
        PeriodMeta {
            id,
            codecs: "avc1.4d401e,mp4a.40.2".into(),
            width: Some(640),
            height: Some(360),
            start_ms,
            time_ms,
            init_hash: 1,
            init_length: 700,
        }
    }

    pub fn seg(seq: u64, period: u32, time_ms: i64, duration_ms: u64) -> SegmentMeta {
        SegmentMeta {
            seq,
            period,
            start_ms: seq * 2000,
            duration_ms,
            time_ms,
            length: 1000,
            hash: seq,
        }
    }

    fn sample() -> StreamIndex {
        let mut ix = StreamIndex::default();
        ix.apply(Record::Period(period(0, 0, 10_000)));
        for seq in 0..5 {
            ix.apply(Record::Segment(seg(
                seq,
                0,
                10_000 + seq as i64 * 2000,
                2000,
            )));
        }
        // A gap (unpublished for 5 s), then period 1.
        ix.apply(Record::Period(period(1, 10_000, 25_000)));
        for seq in 5..8 {
            ix.apply(Record::Segment(seg(
                seq,
                1,
                25_000 + (seq as i64 - 5) * 2000,
                2000,
            )));
        }
        ix
    }

    #[test]
    fn lookups() {
        let ix = sample();
        assert_eq!(ix.start_ms(), Some(10_000));
        assert_eq!(ix.live_edge_ms(), Some(31_000));
        assert_eq!(ix.lookup(9_999), Lookup::Outside);
        assert_eq!(ix.lookup(10_000), Lookup::Found(0));
        assert_eq!(ix.lookup(11_999), Lookup::Found(0));
        assert_eq!(ix.lookup(12_000), Lookup::Found(1));
        assert_eq!(
            ix.lookup(22_000),
            Lookup::Found(5),
            "gap maps to the next segment"
        );
        assert_eq!(
            ix.lookup(31_000),
            Lookup::Found(7),
            "live edge is the last segment"
        );
        assert_eq!(ix.lookup(31_001), Lookup::Outside);
        assert_eq!(ix.after(5), 6..8);
        assert_eq!(ix.after(100), 8..8);
        assert_eq!(ix.window(11_000, 15_000), 0..3);
        assert_eq!(ix.window(40_000, 50_000), 8..8);
        assert_eq!(ix.tail(4_000), 6..8);
        assert_eq!(ix.tail(1), 7..8);
        assert_eq!(ix.segment(6).map(|s| s.seq), Some(6));
        assert_eq!(ix.bytes, 8000);
    }

    #[test]
    fn drops_keep_seq_and_prune_periods() {
        let mut ix = sample();
        let (gone, gone_p) = ix.drop_before(6);
        assert_eq!(gone.len(), 6);
        assert_eq!(gone_p.iter().map(|p| p.id).collect::<Vec<_>>(), vec![0]);
        assert_eq!(ix.bytes, 2000);
        ix.drop_before(100);
        assert!(ix.segments.is_empty());
        assert_eq!(ix.periods.len(), 1, "the newest period stays");
        assert_eq!(ix.next_seq, 8);
    }

    #[test]
    fn jsonl_round_trip_and_torn_tail() {
        let ix = sample();
        let mut text = String::new();
        for r in ix.to_records() {
            text.push_str(&r.to_line());
            text.push('\n');
        }
        let full = text.len();
        text.push_str("{\"t\":\"seg\",\"seq\":8,\"per");
        let (back, valid) = StreamIndex::from_jsonl(text.as_bytes());
        assert_eq!(valid, full);
        assert_eq!(back.segments, ix.segments);
        assert_eq!(back.periods, ix.periods);
        assert_eq!(back.next_seq, 8);

        let mut dropped = ix.clone();
        dropped.drop_before(100);
        let lines: Vec<String> = dropped.to_records().iter().map(Record::to_line).collect();
        let (back, _) = StreamIndex::from_jsonl((lines.join("\n") + "\n").as_bytes());
        assert_eq!(back.next_seq, 8, "seq survives a full drop");
    }
}
