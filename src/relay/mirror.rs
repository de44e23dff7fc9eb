//! How an upstream's index maps onto a relay's own timeline, as a pure function:
//! `Mirror::apply(state, the relay's timeline tail, one upstream answer) -> Changes`. No I/O, no
//! locks, no tasks: the [`Proxy`](super::Proxy) follow task owns the `Mirror` and applies the
//! changes (records to the timeline, locators to its segment map).
//!
//! Rules (each has a unit test below):
//! 1. **Numbering.** The relay's first segment takes the upstream's seq (a relay of one origin
//!    shows the origin's numbers). Every later segment takes the relay's own next seq, whatever
//!    the upstream's numbers, so a failover to an upstream that numbers differently neither
//!    repeats nor skips a seq.
//! 2. **Cursor.** On one upstream, segments at or below the last upstream seq taken are
//!    skipped (an answer repeating itself adds nothing). [`Mirror::resync`] (after a failover)
//!    forgets the cursor and the period map; the next answer is aligned by wall clock.
//! 3. **Wall-clock alignment, after a resync only.** Until the new upstream gives a segment the
//!    relay does not have, a segment whose `time` is not past the middle of the relay's newest
//!    segment is already relayed (two upstreams timestamp the same feed a little apart, and a
//!    lagging upstream lists the relay's newest segments again); it only moves the cursor. On
//!    one upstream, seq order alone decides: segments of a burst (a publisher faster than real
//!    time) may overlap in wall time and are all relayed; a segment whose `time` goes back
//!    before the previous one's is left out (the timeline stays ordered by time).
//! 4. **Continuity.** After a resync (or on the first answer), before any period of this
//!    upstream is mapped, an upstream period maps onto the relay's current period when its init
//!    hash and codecs are the same and its media time continues the relay's newest segment
//!    (within [`ALIGN_SLACK_MS`]): a failover is not a discontinuity. Any other new upstream
//!    period starts a new relay period (a discontinuity) whose init segment comes from that
//!    upstream; so does every period change of the upstream being followed, even with the same
//!    init (a republish with the same encoder settings is still a discontinuity downstream).
//! 5. **Hostile numbers.** A segment with an unreadable time or an unknown period, or of a
//!    period without an init length, is left out; all arithmetic saturates. An answer is
//!    validated before it gets here ([`crate::wire::Index::validate`]), but nothing here relies
//!    on that to stay panic-free.
//! 6. **Nothing listed.** A resync whose answer gave the relay nothing new follows on from the
//!    upstream's newest listed seq; an empty answer leaves the cursor unset.
//! 7. **Parts (LL-HLS).** The upstream's open segment is mirrored only when it is the one right
//!    after the last segment taken from this upstream (so it gets the relay seq the segment
//!    will get when sealed), or when the relay has nothing and the upstream has no sealed
//!    segment yet (it starts the relay's numbering like a first segment); never while
//!    aligning after a resync: the relay's parts resume with the next segment then. [`Changes::open`] offers the parts the relay has not
//!    announced; the proxy announces each once its bytes are verified and says so
//!    ([`Mirror::announced`]). A sealed segment's parts are ranges of the segment. A part name
//!    never names two bodies: when an upstream lists, under a relay seq whose parts were
//!    announced, parts that do not start with those (a failover to another feed, an origin
//!    that lost its open segment in a crash), that seq gets no parts at all.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::{OpenSegment, PartMeta, PeriodMeta, Record, SegmentMeta, StreamIndex};
use crate::wire::{parse_hash, Index};

/// Slack for aligning two upstreams' media times on failover (they timestamp the same feed at
/// slightly different arrival times).
pub const ALIGN_SLACK_MS: u64 = 50;

/// Where a relay segment's (or init segment's) bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    /// Index of the upstream that listed it, and the path below that upstream's base.
    pub upstream: usize,
    pub path: Arc<str>,
    pub offset: u64,
    pub length: u64,
    /// The content hash to verify, when the upstream publishes one.
    pub verify: Option<u64>,
}

/// What the relay's timeline holds now, as far as mapping needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// The newest segment.
    pub last: Option<SegmentMeta>,
    /// The newest period.
    pub period: Option<PeriodMeta>,
    pub next_seq: u64,
}

impl Tail {
    pub fn of(ix: &StreamIndex) -> Tail {
        Tail {
            last: ix.segments.back().cloned(),
            period: ix.periods.last().cloned(),
            next_seq: ix.next_seq,
        }
    }
}

/// What one upstream answer changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The relay's numbering starts here (its first segment ever).
    pub start_seq: Option<u64>,
    /// New periods and segments, in order, for the timeline.
    pub records: Vec<Record>,
    /// Where the new segments' bytes are, by relay seq (oldest first).
    pub segments: Vec<(u64, Locator)>,
    /// Where the new periods' init segments are, by relay period id.
    pub inits: Vec<(u32, Locator)>,
    /// The parts of each new segment (by relay seq, same order as `segments`; empty = none).
    pub sealed_parts: Vec<(u64, Vec<(PartMeta, Locator)>)>,
    /// The open segment's parts the relay has not announced yet.
    pub open: Option<OpenParts>,
}

/// Parts of the upstream's open segment, for the relay's open segment `segment.seq`.
#[derive(Debug, PartialEq, Eq)]
pub struct OpenParts {
    /// The relay's open segment (its `parts` empty).
    pub segment: OpenSegment,
    /// The index of the first of `parts` in the segment.
    pub first: usize,
    /// In order, from the first the relay has not announced.
    pub parts: Vec<(PartMeta, Locator)>,
}

/// The mapping state of one relayed stream, for the upstream in use.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// `streams/{remote}/`: what an index's relative URLs are relative to.
    root: String,
    /// Upstream period id -> relay period id.
    periods: HashMap<u32, u32>,
    /// Last upstream seq taken; `None` = align the next answer by wall clock.
    cursor: Option<u64>,
    /// Since the last resync, no segment was taken from this upstream: align by wall clock.
    aligning: bool,
    /// The upstream's open segment (its seq) and how many parts it listed: what to long-poll
    /// for (`&part=K`).
    open_seen: Option<(u64, u64)>,
    /// The relay seq whose parts were announced, and those parts (relay-side, kept across a
    /// resync: they are the relay's own names).
    announced: Option<(u64, Vec<PartMeta>)>,
}

impl Mirror {
    pub fn new(remote: &str) -> Mirror {
        Mirror {
            root: format!("streams/{remote}/"),
            periods: HashMap::new(),
            cursor: None,
            aligning: true,
            open_seen: None,
            announced: None,
        }
    }

    /// How many parts of the segment after the cursor the relay knows, to long-poll for the
    /// next one (`&part=K`).
    pub fn known_parts(&self) -> u64 {
        match (self.cursor, self.open_seen) {
            (Some(c), Some((seq, n))) if c.checked_add(1) == Some(seq) => n,
            _ => 0,
        }
    }

    /// Last upstream seq taken (what to long-poll after); `None` before any, and after
    /// [`Mirror::resync`].
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// Another upstream is next: its numbers and period ids mean nothing here.
    pub fn resync(&mut self) {
        self.cursor = None;
        self.periods.clear();
        self.aligning = true;
        self.open_seen = None;
    }

    /// Maps answer `ix` of upstream number `up` onto a timeline whose end is `tail`.
    pub fn apply(&mut self, tail: &Tail, up: usize, ix: &Index) -> Changes {
        let mut out = Changes::default();
        let resync = self.cursor.is_none();
        let mut walk = Walk {
            next_seq: tail.next_seq,
            prev: tail.last.clone(),
            period: tail.period.clone(),
            next_period: tail.period.as_ref().map_or(0, |p| p.id.saturating_add(1)),
        };
        if tail.last.is_none() {
            if let Some(first) = ix.segments.first() {
                out.start_seq = Some(first.seq);
                walk.next_seq = walk.next_seq.max(first.seq);
            }
        }
        for s in &ix.segments {
            if self.cursor.is_some_and(|c| s.seq <= c) {
                continue;
            }
            let Some(time_ms) = crate::time::parse_rfc3339(&s.time) else {
                continue;
            };
            if let Some(p) = &walk.prev {
                let already = if self.aligning {
                    time_ms <= p.time_ms.saturating_add((p.duration_ms / 2) as i64)
                } else {
                    time_ms < p.time_ms
                };
                if already {
                    self.cursor = Some(s.seq);
                    continue;
                }
            }
            let Some(relay_period) =
                self.map_period(&mut out, &mut walk, up, ix, s.period, s.start_ms, time_ms)
            else {
                continue;
            };
            let verify = parse_hash(s.hash.as_deref());
            let seq = walk.next_seq;
            let meta = SegmentMeta {
                seq,
                period: relay_period,
                start_ms: s.start_ms,
                duration_ms: s.duration_ms,
                time_ms,
                length: s.length,
                hash: verify.unwrap_or_else(|| pseudo_hash(&s.url, s.length, up)),
            };
            let path: Arc<str> = format!("{}{}", self.root, s.url).into();
            // Parts of a sealed segment are ranges of it: pulled from the immutable segment
            // URL, which outlives the upstream's part list.
            let parts: Vec<_> = s
                .parts
                .iter()
                .map(|p| {
                    let (meta, mut loc) = self.part(up, p);
                    loc.path = path.clone();
                    loc.offset = s.offset.saturating_add(p.offset);
                    (meta, loc)
                })
                .collect();
            let parts = self.unless_renamed(seq, parts);
            if self.announced.as_ref().is_some_and(|(a, _)| *a == seq) {
                self.announced = None;
            }
            out.sealed_parts.push((seq, parts));
            out.segments.push((
                seq,
                Locator {
                    upstream: up,
                    path,
                    offset: s.offset,
                    length: s.length,
                    verify,
                },
            ));
            walk.next_seq = seq.saturating_add(1);
            self.cursor = Some(s.seq);
            self.aligning = false;
            walk.prev = Some(meta.clone());
            out.records.push(Record::Segment(meta));
        }
        if resync && self.cursor.is_none() {
            self.cursor = ix.segments.last().map(|s| s.seq);
        }
        out.open = self.open(&mut out, &mut walk, up, ix);
        out
    }

    /// The upstream's open segment, when it is the one after the last taken: its parts the
    /// relay has not announced yet (rule 7).
    fn open(
        &mut self,
        out: &mut Changes,
        walk: &mut Walk,
        up: usize,
        ix: &Index,
    ) -> Option<OpenParts> {
        let o = ix.open.as_ref()?;
        let next = self.cursor.and_then(|c| c.checked_add(1)) == Some(o.seq);
        if next {
            // Even when its parts are not taken (aligning): the long-poll then waits for the
            // next part or segment instead of coming back at once.
            self.open_seen = Some((o.seq, o.parts.len() as u64));
        }
        let follows = !self.aligning && next;
        // A relay that has nothing yet, of an upstream stream whose first segment is still
        // being written: that segment starts the relay's numbering.
        let first = walk.prev.is_none() && self.cursor.is_none() && ix.segments.is_empty();
        if !(follows || first) {
            return None;
        }
        if first {
            out.start_seq = Some(o.seq);
            walk.next_seq = walk.next_seq.max(o.seq);
        }
        let time_ms = crate::time::parse_rfc3339(&o.time)?;
        if walk.prev.as_ref().is_some_and(|p| time_ms < p.time_ms) {
            return None;
        }
        let period = self.map_period(out, walk, up, ix, o.period, o.start_ms, time_ms)?;
        let seq = walk.next_seq;
        let parts: Vec<_> = o.parts.iter().map(|p| self.part(up, p)).collect();
        let mut parts = self.unless_renamed(seq, parts);
        let announced = self
            .announced
            .as_ref()
            .filter(|(a, _)| *a == seq)
            .map_or(0, |(_, known)| known.len());
        let first = announced.min(parts.len());
        parts.drain(..first);
        Some(OpenParts {
            first,
            segment: OpenSegment {
                seq,
                period,
                start_ms: o.start_ms,
                time_ms,
                parts: Vec::new(),
            },
            parts,
        })
    }

    /// A part as the relay lists it, and where its bytes are upstream.
    fn part(&self, up: usize, p: &crate::wire::Part) -> (PartMeta, Locator) {
        let verify = parse_hash(p.hash.as_deref());
        let meta = PartMeta {
            duration_ms: p.duration_ms,
            offset: p.offset,
            length: p.length,
            independent: p.independent,
            hash: verify.unwrap_or_else(|| pseudo_hash(&p.url, p.length, up)),
        };
        let loc = Locator {
            upstream: up,
            path: format!("{}{}", self.root, p.url).into(),
            offset: 0,
            length: p.length,
            verify,
        };
        (meta, loc)
    }

    /// `parts` for relay segment `seq`, or none when the relay announced other parts under
    /// that seq (rule 7: a part name never names two different bodies).
    fn unless_renamed(
        &self,
        seq: u64,
        parts: Vec<(PartMeta, Locator)>,
    ) -> Vec<(PartMeta, Locator)> {
        match &self.announced {
            Some((a, known)) if *a == seq => {
                if parts.is_empty() {
                    return parts;
                }
                let same = known.len() <= parts.len()
                    && known.iter().zip(&parts).all(|(k, (p, _))| k == p);
                if same {
                    parts
                } else {
                    tracing::info!(
                        seq,
                        "the upstream's parts differ from those announced; not listing them"
                    );
                    Vec::new()
                }
            }
            _ => parts,
        }
    }

    /// The proxy announced `part` (its bytes are verified) as part of relay segment `seq`.
    pub fn announced(&mut self, seq: u64, part: PartMeta) {
        match &mut self.announced {
            Some((a, known)) if *a == seq => known.push(part),
            _ => self.announced = Some((seq, vec![part])),
        }
    }

    /// The relay period of upstream period `up_period` (whose first segment here starts at
    /// `start_ms` / `time_ms`), mapping it on first sight (rule 4). `None`: unusable.
    #[allow(clippy::too_many_arguments)]
    fn map_period(
        &mut self,
        out: &mut Changes,
        walk: &mut Walk,
        up: usize,
        ix: &Index,
        up_period: u32,
        start_ms: u64,
        time_ms: i64,
    ) -> Option<u32> {
        if let Some(&id) = self.periods.get(&up_period) {
            return Some(id);
        }
        let p = ix.periods.iter().find(|p| p.id == up_period)?;
        let init_hash = parse_hash(p.hash.as_deref());
        let continues = match (&walk.period, &walk.prev) {
            _ if !self.periods.is_empty() => false,
            (Some(cp), Some(prev)) => {
                Some(cp.init_hash) == init_hash
                    && prev
                        .start_ms
                        .saturating_add(prev.duration_ms)
                        .abs_diff(start_ms)
                        <= ALIGN_SLACK_MS
                    && cp.codecs == p.codecs
            }
            _ => false,
        };
        let id = match (&walk.period, continues) {
            (Some(cp), true) => cp.id,
            _ => {
                let Some(length) = p.length else {
                    tracing::warn!(
                        period = p.id,
                        "upstream period without init length; skipped"
                    );
                    return None;
                };
                let meta = PeriodMeta {
                    id: walk.next_period,
                    codecs: p.codecs.clone(),
                    width: p.width,
                    height: p.height,
                    start_ms,
                    time_ms,
                    init_hash: init_hash.unwrap_or_else(|| pseudo_hash(&p.init, length, up)),
                    init_length: length,
                };
                out.inits.push((
                    meta.id,
                    Locator {
                        upstream: up,
                        path: format!("{}{}", self.root, p.init).into(),
                        offset: 0,
                        length,
                        verify: init_hash,
                    },
                ));
                walk.next_period = walk.next_period.saturating_add(1);
                walk.period = Some(meta.clone());
                out.records.push(Record::Period(meta));
                walk.next_period - 1
            }
        };
        self.periods.insert(up_period, id);
        Some(id)
    }
}

/// Where the mapping of one answer stands.
struct Walk {
    /// The relay seq the next segment gets.
    next_seq: u64,
    /// The newest relay segment and period so far.
    prev: Option<SegmentMeta>,
    period: Option<PeriodMeta>,
    next_period: u32,
}

/// A stand-in content hash for an upstream that does not publish one: changes whenever the
/// URL, length or upstream does, so ETags never name two different bodies.
fn pseudo_hash(url: &str, length: u64, upstream: usize) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{url}|{length}|{upstream}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::format_rfc3339;
    use crate::wire::{format_hash, Period, Segment};

    const T0: i64 = 1_764_000_000_000;

    /// An upstream answer: periods `(id, init hash, codecs)`, segments
    /// `(seq, period, start_ms, time_ms)` of 2 s each.
    fn answer(periods: &[(u32, u64, &str)], segments: &[(u64, u32, u64, i64)]) -> Index {
        Index {
            stream: "cam".into(),
            live: true,
            target_duration_ms: 2_000,
            periods: periods
                .iter()
                .map(|&(id, hash, codecs)| Period {
                    id,
                    init: format!("init/{id}.mp4"),
                    codecs: codecs.into(),
                    width: None,
                    height: None,
                    start_ms: 0,
                    hash: Some(format_hash(hash)),
                    length: Some(700),
                })
                .collect(),
            segments: segments
                .iter()
                .map(|&(seq, period, start_ms, time_ms)| Segment {
                    seq,
                    period,
                    start_ms,
                    duration_ms: 2_000,
                    time: format_rfc3339(time_ms),
                    url: format!("segments/{seq}.m4s"),
                    offset: 0,
                    length: 1_000 + seq % 1_000,
                    hash: Some(format_hash(0xbeef ^ seq)),
                    parts: Vec::new(),
                })
                .collect(),
            part_target_ms: None,
            open: None,
        }
    }

    /// `n` segments of one period, seqs from `first`, starting at media 0 / wall `T0`.
    fn run(first: u64, n: u64) -> Vec<(u64, u32, u64, i64)> {
        (0..n)
            .map(|i| (first + i, 0, i * 2_000, T0 + i as i64 * 2_000))
            .collect()
    }

    /// A relay timeline that applies changes as the proxy does.
    #[derive(Default)]
    struct Relay {
        ix: StreamIndex,
        locators: Vec<(u64, Locator)>,
        inits: Vec<(u32, Locator)>,
    }

    impl Relay {
        fn feed(&mut self, m: &mut Mirror, up: usize, answer: &Index) -> usize {
            let c = m.apply(&Tail::of(&self.ix), up, answer);
            if let Some(seq) = c.start_seq {
                if self.ix.segments.is_empty() {
                    self.ix.next_seq = self.ix.next_seq.max(seq);
                }
            }
            for r in c.records {
                self.ix.apply(r);
            }
            self.inits.extend(c.inits);
            let n = c.segments.len();
            self.locators.extend(c.segments);
            n
        }

        fn seqs(&self) -> Vec<u64> {
            self.ix.segments.iter().map(|s| s.seq).collect()
        }
    }

    #[test]
    fn first_segment_takes_the_upstream_numbering() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        assert_eq!(r.feed(&mut m, 0, &answer(&[(0, 1, "c")], &run(41, 3))), 3);
        assert_eq!(r.seqs(), [41, 42, 43]);
        assert_eq!(m.cursor(), Some(43));
        let loc = &r.locators[0].1;
        assert_eq!(&*loc.path, "streams/cam/segments/41.m4s");
        assert_eq!(
            (loc.upstream, loc.length, loc.verify),
            (0, 1_041, Some(0xbeef ^ 41))
        );
        assert_eq!(&*r.inits[0].1.path, "streams/cam/init/0.mp4");
        assert_eq!(
            r.ix.segments[0].time_ms, T0,
            "time is the upstream's, unchanged"
        );
    }

    #[test]
    fn the_cursor_skips_what_was_taken() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        let a = answer(&[(0, 1, "c")], &run(1, 3));
        r.feed(&mut m, 0, &a);
        assert_eq!(
            r.feed(&mut m, 0, &a),
            0,
            "the same answer again adds nothing"
        );
        assert_eq!(r.feed(&mut m, 0, &answer(&[(0, 1, "c")], &run(1, 5))), 2);
        assert_eq!(r.seqs(), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn failover_aligns_by_wall_clock_and_keeps_numbering() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        r.feed(&mut m, 0, &answer(&[(0, 7, "c")], &run(100, 3)));
        m.resync();
        assert_eq!(m.cursor(), None);
        // The backup numbers the same feed from 5 and timestamps it 30 ms later; it also lists
        // the segments the relay already has.
        let backup: Vec<_> = run(5, 5)
            .into_iter()
            .map(|(seq, _, start, time)| (seq, 3, start, time + 30))
            .collect();
        assert_eq!(r.feed(&mut m, 1, &answer(&[(3, 7, "c")], &backup)), 2);
        assert_eq!(r.seqs(), [100, 101, 102, 103, 104], "no repeat, no skip");
        assert_eq!(
            r.ix.periods.len(),
            1,
            "same init and media time: one period"
        );
        assert_eq!(r.locators[3].1.upstream, 1);
        assert_eq!(&*r.locators[3].1.path, "streams/cam/segments/8.m4s");
        assert_eq!(m.cursor(), Some(9));
    }

    #[test]
    fn a_lagging_upstream_repeating_the_newest_segments_adds_nothing() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        r.feed(&mut m, 0, &answer(&[(0, 1, "c")], &run(1, 4)));
        m.resync();
        assert_eq!(r.feed(&mut m, 1, &answer(&[(0, 1, "c")], &run(1, 2))), 0);
        assert_eq!(
            m.cursor(),
            Some(2),
            "skipped segments still move the cursor"
        );
        assert_eq!(r.seqs(), [1, 2, 3, 4]);
    }

    #[test]
    fn a_burst_on_one_upstream_is_relayed_whole() {
        // A publisher faster than real time: 2 s segments recorded 100 ms apart.
        let burst: Vec<_> = (0..5u64)
            .map(|i| (i + 1, 0, i * 2_000, T0 + i as i64 * 100))
            .collect();
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        assert_eq!(r.feed(&mut m, 0, &answer(&[(0, 1, "c")], &burst[..2])), 2);
        assert_eq!(r.feed(&mut m, 0, &answer(&[(0, 1, "c")], &burst[2..])), 3);
        assert_eq!(r.seqs(), [1, 2, 3, 4, 5]);
        // After a failover, the same burst from a backup is aligned by time: nothing new.
        m.resync();
        assert_eq!(r.feed(&mut m, 1, &answer(&[(0, 1, "c")], &burst)), 0);
    }

    #[test]
    fn time_going_back_on_one_upstream_is_left_out() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        let segs = [
            (1, 0, 0, T0),
            (2, 0, 2_000, T0 - 1),
            (3, 0, 4_000, T0 + 4_000),
        ];
        assert_eq!(r.feed(&mut m, 0, &answer(&[(0, 1, "c")], &segs)), 2);
        assert_eq!(r.seqs(), [1, 2]);
        assert_eq!(r.ix.segments[1].time_ms, T0 + 4_000);
        assert_eq!(m.cursor(), Some(3));
    }

    #[test]
    fn another_init_or_media_time_is_a_new_period() {
        // Another init hash.
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        r.feed(&mut m, 0, &answer(&[(0, 1, "c")], &run(1, 2)));
        m.resync();
        let later = [(1, 0, 4_000, T0 + 4_000)];
        r.feed(&mut m, 1, &answer(&[(0, 2, "c")], &later));
        assert_eq!(r.ix.periods.len(), 2);
        assert_eq!(r.ix.segments[2].period, 1);
        assert_eq!(r.inits[1].1.upstream, 1);
        // Same init, but the media time jumps (the upstreams' timelines differ).
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        r.feed(&mut m, 0, &answer(&[(0, 1, "c")], &run(1, 2)));
        m.resync();
        let jumped = [(9, 0, 90_000, T0 + 4_000)];
        r.feed(&mut m, 1, &answer(&[(0, 1, "c")], &jumped));
        assert_eq!(r.ix.periods.len(), 2);
        // An upstream period change on one upstream.
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        let mut segs = run(1, 2);
        segs.push((3, 1, 4_000, T0 + 4_000));
        r.feed(&mut m, 0, &answer(&[(0, 1, "c"), (1, 2, "d")], &segs));
        assert_eq!(r.ix.periods.len(), 2);
        assert_eq!(r.ix.periods[1].codecs, "d");
        assert_eq!(r.ix.periods[1].start_ms, 4_000);
        // A republish on one upstream: same init and codecs, media time continuing, but the
        // upstream says new period; downstream it is a discontinuity too.
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        r.feed(&mut m, 0, &answer(&[(0, 1, "c")], &run(1, 2)));
        let republished = [(3, 1, 4_000, T0 + 60_000)];
        r.feed(
            &mut m,
            0,
            &answer(&[(0, 1, "c"), (1, 1, "c")], &republished),
        );
        assert_eq!(r.ix.periods.len(), 2);
        assert_eq!(r.ix.segments[2].period, 1);
    }

    #[test]
    fn hostile_answers_are_left_out_without_panicking() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        let mut a = answer(&[(0, 1, "c"), (1, 2, "c")], &run(1, 5));
        a.segments[0].time = "not a time".into();
        a.segments[1].period = 9; // unknown period
        a.periods[1].length = None;
        a.segments[2].period = 1; // a period without init length
        a.segments[3].duration_ms = u64::MAX;
        a.segments[3].start_ms = u64::MAX;
        a.segments[4].seq = u64::MAX;
        a.segments[4].start_ms = u64::MAX;
        r.feed(&mut m, 0, &a);
        // Segments 3 and 4 are usable (huge numbers, but no overflow).
        assert_eq!(r.ix.segments.len(), 2);
        assert_eq!(m.cursor(), Some(u64::MAX));
        // The next answer still maps: saturating arithmetic, no wrap.
        let mut b = answer(&[(0, 1, "c")], &[(u64::MAX, 0, 0, T0 + 100_000)]);
        b.segments[0].duration_ms = u64::MAX;
        m.resync();
        r.feed(&mut m, 0, &b);
        assert!(r.seqs().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn nothing_new_at_a_resync_follows_from_the_newest() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        let empty = answer(&[(0, 1, "c")], &[]);
        assert_eq!(r.feed(&mut m, 0, &empty), 0);
        assert_eq!(m.cursor(), None, "empty: nothing to long-poll after");
        let mut unusable = answer(&[(0, 1, "c")], &run(1, 3));
        for s in &mut unusable.segments {
            s.time = "?".into();
        }
        r.feed(&mut m, 0, &unusable);
        assert_eq!(m.cursor(), Some(3));
    }

    #[test]
    fn without_upstream_hashes_etags_still_differ() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        let mut a = answer(&[(0, 1, "c")], &run(1, 2));
        for s in &mut a.segments {
            s.hash = None;
        }
        a.periods[0].hash = None;
        r.feed(&mut m, 0, &a);
        assert_ne!(r.ix.segments[0].hash, r.ix.segments[1].hash);
        assert_eq!(r.locators[0].1.verify, None, "nothing to verify against");
        assert_ne!(r.ix.periods[0].init_hash, 0);
    }

    /// Parts of `n` x 100 bytes for segment `seq`, hashes from `salt`.
    fn parts(seq: u64, n: u64, salt: u64) -> Vec<crate::wire::Part> {
        (0..n)
            .map(|i| crate::wire::Part {
                duration_ms: 500,
                url: format!("parts/{seq}.{i}.m4s"),
                offset: i * 100,
                length: 100,
                independent: i == 0,
                hash: Some(format_hash(salt ^ (seq << 8) ^ i)),
            })
            .collect()
    }

    fn open(seq: u64, n: u64, salt: u64) -> crate::wire::Open {
        crate::wire::Open {
            seq,
            period: 0,
            start_ms: (seq - 1) * 2_000,
            time: format_rfc3339(T0 + (seq as i64 - 1) * 2_000),
            parts: parts(seq, n, salt),
        }
    }

    #[test]
    fn the_open_segment_after_the_cursor_offers_its_new_parts() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        let mut a = answer(&[(0, 1, "c")], &run(1, 3));
        a.open = Some(open(4, 2, 0));
        let c = m.apply(&Tail::of(&r.ix), 0, &a);
        let o = c.open.expect("open segment 4 follows the cursor 3");
        assert_eq!((o.segment.seq, o.segment.period, o.first), (4, 0, 0));
        assert_eq!(o.parts.len(), 2);
        assert_eq!(&*o.parts[1].1.path, "streams/cam/parts/4.1.m4s");
        assert_eq!((o.parts[1].1.offset, o.parts[1].1.length), (0, 100));
        assert_eq!(o.parts[1].1.verify, Some((4 << 8) ^ 1));
        assert!(o.parts[0].0.independent && !o.parts[1].0.independent);
        assert_eq!(m.known_parts(), 2, "long-poll for the third part");
        // The relay applied the segments; it announced part 0 only (part 1 failed).
        r.feed(
            &mut Mirror::new("cam"),
            0,
            &answer(&[(0, 1, "c")], &run(1, 3)),
        );
        m.announced(4, o.parts[0].0.clone());
        a.segments.clear();
        a.open = Some(open(4, 3, 0));
        let o = m.apply(&Tail::of(&r.ix), 0, &a).open.expect("still open");
        assert_eq!(
            o.first, 1,
            "from the first not announced: part 1 is tried again"
        );
        assert_eq!(o.parts.len(), 2);
        assert_eq!(m.known_parts(), 3);
    }

    #[test]
    fn an_open_segment_is_not_mirrored_while_aligning_or_out_of_turn() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        r.feed(&mut m, 0, &answer(&[(0, 1, "c")], &run(1, 3)));
        // Not the segment after the cursor (the upstream skipped one).
        let mut a = answer(&[(0, 1, "c")], &[]);
        a.open = Some(open(5, 1, 0));
        assert_eq!(m.apply(&Tail::of(&r.ix), 0, &a).open, None);
        assert_eq!(m.known_parts(), 0);
        // After a failover, until a segment is taken from the new upstream.
        m.resync();
        let mut b = answer(&[(0, 1, "c")], &run(1, 3));
        b.open = Some(open(4, 1, 0));
        let c = m.apply(&Tail::of(&r.ix), 1, &b);
        assert!(c.records.is_empty());
        assert_eq!(c.open, None, "parts resume with the next segment");
        assert_eq!(
            m.known_parts(),
            1,
            "but the long-poll waits for what is new"
        );
    }

    #[test]
    fn a_sealed_segments_parts_are_ranges_of_it() {
        let (mut m, r) = (Mirror::new("cam"), Relay::default());
        let mut a = answer(&[(0, 1, "c")], &run(1, 2));
        a.segments[1].length = 300;
        a.segments[1].parts = parts(2, 3, 0);
        let c = m.apply(&Tail::of(&r.ix), 0, &a);
        assert_eq!(c.sealed_parts.len(), 2);
        assert!(c.sealed_parts[0].1.is_empty(), "segment 1 has no parts");
        let (seq, p) = &c.sealed_parts[1];
        assert_eq!((*seq, p.len()), (2, 3));
        assert_eq!(&*p[2].1.path, "streams/cam/segments/2.m4s");
        assert_eq!((p[2].1.offset, p[2].1.length), (200, 100));
        assert_eq!(
            p[2].0.offset, 200,
            "the relay lists it where it is in the segment"
        );
    }

    /// A part name never names two bodies: after a failover, the backup's parts are listed
    /// under a relay seq whose parts were announced only if they begin with those.
    #[test]
    fn parts_announced_under_a_seq_are_never_renamed() {
        for (salt, listed) in [(0, 3), (0x5a5a, 0)] {
            let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
            let mut a = answer(&[(0, 1, "c")], &run(1, 3));
            a.open = Some(open(4, 2, 0));
            let o = m.apply(&Tail::of(&r.ix), 0, &a).open.expect("open");
            r.feed(
                &mut Mirror::new("cam"),
                0,
                &answer(&[(0, 1, "c")], &run(1, 3)),
            );
            for (p, _) in o.parts {
                m.announced(4, p);
            }
            m.resync();
            // The backup seals segment 4 (the same feed: same hashes; another: others).
            let mut seg4 = run(1, 4);
            seg4.iter_mut().for_each(|s| s.3 += 20);
            let mut b = answer(&[(0, 1, "c")], &seg4);
            b.segments[3].length = 300;
            b.segments[3].parts = parts(4, 3, salt);
            let c = m.apply(&Tail::of(&r.ix), 1, &b);
            assert_eq!(c.segments.len(), 1);
            assert_eq!(c.sealed_parts[0].0, 4);
            assert_eq!(c.sealed_parts[0].1.len(), listed, "salt {salt}");
        }
    }

    #[test]
    fn a_first_segment_still_being_written_starts_the_relay() {
        let (mut m, mut r) = (Mirror::new("cam"), Relay::default());
        let mut a = answer(&[(0, 1, "c")], &[]);
        a.open = Some(open(7, 1, 0));
        let c = m.apply(&Tail::of(&r.ix), 0, &a);
        assert_eq!(c.start_seq, Some(7));
        let o = c.open.expect("the first segment's parts");
        assert_eq!((o.segment.seq, o.parts.len()), (7, 1));
        m.announced(7, o.parts[0].0.clone());
        assert_eq!(m.cursor(), None, "no long-poll before a sealed segment");
        // Sealed, it keeps that seq and its announced part.
        r.ix.next_seq = 7;
        let mut b = answer(&[(0, 1, "c")], &[(7, 0, 12_000, T0 + 12_000)]);
        b.segments[0].length = 200;
        b.segments[0].parts = parts(7, 2, 0);
        let c = m.apply(&Tail::of(&r.ix), 0, &b);
        assert_eq!(c.segments[0].0, 7);
        assert_eq!(c.sealed_parts[0].1.len(), 2);
    }
}
