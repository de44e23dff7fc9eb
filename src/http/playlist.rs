//! HLS media playlist rendering (fMP4), pure: index range in, text out.
//!
//! Invariants: `EXT-X-MEDIA-SEQUENCE` is the first listed `seq`; `EXT-X-DISCONTINUITY-SEQUENCE`
//! is the first listed segment's period id (period ids grow by one per period, so the count of
//! discontinuities before it stays stable as retention trims the front); every period change
//! gets `EXT-X-DISCONTINUITY` and its own `EXT-X-MAP`; every segment carries its ingest wall
//! clock as `EXT-X-PROGRAM-DATE-TIME`.
//!
//! [`map_uris`] rewrites every URI of a rendered playlist (URI lines and every `URI="..."`
//! attribute, whatever the tag), so per-viewer query parameters are added to the shared
//! rendering at answer time, for tags added later too.

use std::fmt::Write;
use std::ops::Range;

use crate::store::layout::Object;
use crate::store::StreamIndex;

/// How to render.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `EXT-X-START:TIME-OFFSET` in ms from the start of the first listed segment.
    pub start_offset_ms: Option<u64>,
    /// Append `EXT-X-ENDLIST` (the stream has ended, or the window lies in the past).
    pub endlist: bool,
    /// The configured segment target, the floor of `EXT-X-TARGETDURATION`.
    pub target_ms: u64,
    /// Low-latency HLS (a live stream with parts): the part target in ms.
    pub part_target_ms: Option<u64>,
    /// LL-HLS delta update (`_HLS_skip=YES`): segments older than `CAN-SKIP-UNTIL` from the
    /// end are replaced by `EXT-X-SKIP`.
    pub skip: bool,
}

/// Seconds with three decimals, as playlist attributes spell durations.
fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// `CAN-SKIP-UNTIL` in ms: six target durations (RFC 8216bis 4.4.3.8: at least six).
pub fn skip_until_ms(target_s: u64) -> u64 {
    target_s * 6 * 1000
}

/// `EXT-X-TARGETDURATION` in seconds: the longest segment the stream has had (not only the
/// listed ones, so it never goes down between reloads as a long segment leaves the window),
/// at least the configured target, rounded up (RFC 8216: no segment may exceed it).
pub fn target_duration_s(ix: &StreamIndex, floor_ms: u64) -> u64 {
    ix.max_duration_ms.max(floor_ms).div_ceil(1000).max(1)
}

/// Renders the segments `range` of `ix`.
pub fn render(ix: &StreamIndex, range: Range<usize>, opts: &Options) -> String {
    let listed = ix.segments.range(range.clone());
    let mut out = String::with_capacity(256 + range.len() * 96);
    let target_s = target_duration_s(ix, opts.target_ms);
    let first = ix.segments.get(range.start);
    let ll = opts.part_target_ms;
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{target_s}\n",
        if ll.is_some() { 9 } else { 7 }
    );
    if let Some(part_ms) = ll {
        // RFC 8216bis 4.4.3.8: PART-HOLD-BACK at least twice the part target (three times
        // recommended); CAN-SKIP-UNTIL at least six target durations.
        let _ = write!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={},CAN-SKIP-UNTIL={}\n\
             #EXT-X-PART-INF:PART-TARGET={}\n",
            secs(part_ms * 3),
            secs(skip_until_ms(target_s)),
            secs(part_ms)
        );
    }
    let _ = write!(
        out,
        "#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        first.map_or(ix.next_seq, |s| s.seq),
        first.map_or(0, |s| s.period)
    );
    if let Some(off) = opts.start_offset_ms {
        let _ = writeln!(
            out,
            "#EXT-X-START:TIME-OFFSET={}.{:03},PRECISE=YES",
            off / 1000,
            off % 1000
        );
    }
    // The live tail with parts: the open segment follows the newest listed one.
    let tail = ll.is_some() && range.end == ix.segments.len();
    let open = ix.open.as_ref().filter(|o| tail && !o.parts.is_empty());
    // Parts are listed for segments ending within three target durations of the end
    // (RFC 8216bis 4.4.4.9 lets older ones go).
    let end_ms = match (open, ix.segments.get(range.end.wrapping_sub(1))) {
        (Some(o), _) => o.start_ms + o.duration_ms(),
        (None, Some(s)) => s.start_ms + s.duration_ms,
        (None, None) => 0,
    };
    let parts_from_ms = end_ms.saturating_sub(target_s * 3000);
    let mut period = None;
    let mut skipped = 0usize;
    if opts.skip && ll.is_some() {
        // Skip the oldest segments while what stays lasts at least CAN-SKIP-UNTIL.
        let until = skip_until_ms(target_s);
        let mut kept_ms = 0u64;
        let mut kept = 0usize;
        for s in ix.segments.range(range.clone()).rev() {
            if kept_ms >= until {
                break;
            }
            kept_ms += s.duration_ms;
            kept += 1;
        }
        skipped = range.len() - kept;
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
            period = ix.segments.get(range.start + skipped - 1).map(|s| s.period);
            // The first segment after the skip carries its map again.
            if let Some(s) = ix.segments.get(range.start + skipped) {
                if period == Some(s.period) {
                    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", Object::Init(s.period));
                }
            }
        }
    }
    for s in listed.skip(skipped) {
        if period != Some(s.period) {
            if period.is_some() {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", Object::Init(s.period));
            period = Some(s.period);
        }
        out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
        crate::time::write_rfc3339(&mut out, s.time_ms);
        out.push('\n');
        if tail && s.start_ms + s.duration_ms > parts_from_ms {
            if let Some(parts) = ix.parts_of(s.seq) {
                write_parts(&mut out, s.seq, parts);
            }
        }
        let _ = write!(
            out,
            "#EXTINF:{}.{:03},\n{}\n",
            s.duration_ms / 1000,
            s.duration_ms % 1000,
            Object::Segment(s.seq)
        );
    }
    if ll.is_some() && tail && !opts.endlist {
        let (seq, next_part) = match open {
            Some(o) => {
                if period != Some(o.period) {
                    if period.is_some() {
                        out.push_str("#EXT-X-DISCONTINUITY\n");
                    }
                    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", Object::Init(o.period));
                }
                out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
                crate::time::write_rfc3339(&mut out, o.time_ms);
                out.push('\n');
                write_parts(&mut out, o.seq, &o.parts);
                (o.seq, o.parts.len())
            }
            None => (ix.next_seq, 0),
        };
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            part_uri(seq, next_part)
        );
    }
    if opts.endlist {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// The URI of part `index` of segment `seq`, relative to the stream.
pub fn part_uri(seq: u64, index: usize) -> String {
    format!("parts/{seq}.{index}.m4s")
}

fn write_parts(out: &mut String, seq: u64, parts: &[crate::store::PartMeta]) {
    for (i, p) in parts.iter().enumerate() {
        let _ = writeln!(
            out,
            "#EXT-X-PART:DURATION={},URI=\"{}\"{}",
            secs(p.duration_ms),
            part_uri(seq, i),
            if p.independent {
                ",INDEPENDENT=YES"
            } else {
                ""
            }
        );
    }
}

/// `text` with every URI replaced by `f(uri)`: each line that is not a tag or blank, and the
/// value of each `URI="..."` attribute of a tag line (EXT-X-MAP, EXT-X-PART,
/// EXT-X-PRELOAD-HINT, ...).
pub fn map_uris(text: &str, f: impl Fn(&str) -> String) -> String {
    const ATTR: &str = "URI=\"";
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    for line in text.split_inclusive('\n') {
        let (body, eol) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if !body.starts_with('#') {
            if !body.is_empty() {
                out.push_str(&f(body));
            }
        } else {
            let mut rest = body;
            while let Some(at) = rest.find(ATTR) {
                let (head, tail) = rest.split_at(at + ATTR.len());
                // An attribute name ending in `URI` (e.g. a hypothetical `XURI=`) is not one.
                let named = head[..at].ends_with([':', ',']);
                let Some(end) = tail.find('"') else { break };
                out.push_str(head);
                if named {
                    out.push_str(&f(&tail[..end]));
                } else {
                    out.push_str(&tail[..end]);
                }
                rest = &tail[end..];
            }
            out.push_str(rest);
        }
        out.push_str(eol);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::tests::{period, seg};
    use crate::store::Record;

    #[test]
    fn renders_periods_and_start() {
        let mut ix = StreamIndex::default();
        ix.apply(Record::Period(period(0, 0, 1_796_051_045_250)));
        ix.apply(Record::Segment(seg(0, 0, 1_796_051_045_250, 2000)));
        ix.apply(Record::Segment(seg(1, 0, 1_796_051_047_250, 2500)));
        ix.apply(Record::Period(period(1, 4500, 1_796_051_060_000)));
        ix.apply(Record::Segment(seg(2, 1, 1_796_051_060_000, 1999)));
        let text = render(
            &ix,
            1..3,
            &Options {
                start_offset_ms: Some(1250),
                endlist: true,
                target_ms: 2000,
                ..Options::default()
            },
        );
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:1\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-START:TIME-OFFSET=1.250,PRECISE=YES\n\
             #EXT-X-MAP:URI=\"init/0.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-30T15:04:07.250Z\n#EXTINF:2.500,\nsegments/1.m4s\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init/1.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-30T15:04:20.000Z\n#EXTINF:1.999,\nsegments/2.m4s\n\
             #EXT-X-ENDLIST\n"
        );
        let empty = render(&ix, 3..3, &Options::default());
        assert!(empty.contains("#EXT-X-MEDIA-SEQUENCE:3\n"), "{empty}");
    }

    #[test]
    fn target_duration_never_goes_down_as_a_long_segment_leaves_the_window() {
        let mut ix = StreamIndex::default();
        ix.apply(Record::Period(period(0, 0, 1_796_051_045_250)));
        let opts = Options {
            target_ms: 2000,
            ..Options::default()
        };
        let mut targets = Vec::new();
        let mut t = 1_796_051_045_250;
        for seq in 0..8u64 {
            let d = if seq == 1 { 4100 } else { 2000 };
            ix.apply(Record::Segment(seg(seq, 0, t, d)));
            t += d as i64;
            // A window of the newest three, as a live playlist lists.
            let n = ix.segments.len();
            let text = render(&ix, n.saturating_sub(3)..n, &opts);
            let target: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
                .and_then(|v| v.parse().ok())
                .unwrap();
            targets.push(target);
        }
        assert_eq!(targets, [2, 5, 5, 5, 5, 5, 5, 5]);
        assert_eq!(target_duration_s(&StreamIndex::default(), 2000), 2);
    }

    /// RFC 8216bis 4.4.3.7/4.4.3.8/4.4.4.9/4.4.5.3 as they apply to one live playlist.
    #[test]
    fn low_latency_tags_hold_backs_and_skip() {
        use crate::store::{OpenSegment, PartMeta};
        let mut ix = StreamIndex {
            live: true,
            part_target_ms: Some(500),
            ..StreamIndex::default()
        };
        ix.apply(Record::Period(period(0, 0, 1_796_051_045_250)));
        let part = |offset: u64, independent| PartMeta {
            duration_ms: 500,
            offset,
            length: 10,
            independent,
            hash: 0,
        };
        for seq in 0..12u64 {
            let open = OpenSegment {
                seq,
                period: 0,
                start_ms: seq * 2000,
                time_ms: 1_796_051_045_250 + seq as i64 * 2000,
                parts: Vec::new(),
            };
            for i in 0..4 {
                ix.push_part(&open, part(i * 10, i == 0));
            }
            let mut s = seg(seq, 0, open.time_ms, 2000);
            s.start_ms = seq * 2000;
            s.length = 40;
            ix.apply(Record::Segment(s));
        }
        let open = OpenSegment {
            seq: 12,
            period: 0,
            start_ms: 24_000,
            time_ms: 1_796_051_045_250 + 24_000,
            parts: Vec::new(),
        };
        ix.push_part(&open, part(0, true));
        let opts = Options {
            target_ms: 2000,
            part_target_ms: Some(500),
            ..Options::default()
        };
        let n = ix.segments.len();
        let text = render(&ix, 0..n, &opts);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "#EXT-X-VERSION:9");
        // PART-HOLD-BACK: at least 2 (we use 3) part targets; CAN-SKIP-UNTIL: at least six
        // target durations.
        assert!(lines.contains(
            &"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500,CAN-SKIP-UNTIL=12.000"
        ));
        assert!(lines.contains(&"#EXT-X-PART-INF:PART-TARGET=0.500"));
        // Parts of the segments within three target durations of the end, each segment's
        // parts before its URI; then the open segment's parts and the hint for the next one.
        let parts: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("#EXT-X-PART:"))
            .collect();
        assert_eq!(parts.len(), 4 * 3 + 1, "{text}");
        assert_eq!(
            lines[lines.len() - 9..],
            [
                "#EXT-X-PART:DURATION=0.500,URI=\"parts/11.0.m4s\",INDEPENDENT=YES",
                "#EXT-X-PART:DURATION=0.500,URI=\"parts/11.1.m4s\"",
                "#EXT-X-PART:DURATION=0.500,URI=\"parts/11.2.m4s\"",
                "#EXT-X-PART:DURATION=0.500,URI=\"parts/11.3.m4s\"",
                "#EXTINF:2.000,",
                "segments/11.m4s",
                "#EXT-X-PROGRAM-DATE-TIME:2026-11-30T15:04:29.250Z",
                "#EXT-X-PART:DURATION=0.500,URI=\"parts/12.0.m4s\",INDEPENDENT=YES",
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"parts/12.1.m4s\"",
            ]
        );
        // Delta update: only the last CAN-SKIP-UNTIL (12 s = 6 segments) is listed.
        let delta = render(&ix, 0..n, &Options { skip: true, ..opts });
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=6\n"),
            "{delta}"
        );
        assert!(!delta.contains("segments/5.m4s\n") && delta.contains("segments/6.m4s\n"));
        assert!(
            delta.contains("#EXT-X-MEDIA-SEQUENCE:0\n"),
            "the sequence counts skipped ones"
        );
        assert_eq!(
            delta.lines().filter(|l| l.starts_with("segments/")).count(),
            6
        );
        // An ended stream: no LL tags are needed, no hint.
        let ended = render(
            &ix,
            0..n,
            &Options {
                endlist: true,
                ..opts
            },
        );
        assert!(!ended.contains("PRELOAD-HINT") && ended.ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn every_uri_is_mapped() {
        let text = "#EXTM3U\n#EXT-X-MAP:URI=\"init/0.mp4\"\n#EXTINF:2.000,\nsegments/1.m4s\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"parts/2.0.m4s\",INDEPENDENT=YES\n\
                    #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"parts/2.1.m4s\"\n\
                    #EXT-X-X:XURI=\"no\"\n\n#EXT-X-ENDLIST";
        let mapped = map_uris(text, |u| format!("{u}?t=1"));
        assert_eq!(
            mapped,
            "#EXTM3U\n#EXT-X-MAP:URI=\"init/0.mp4?t=1\"\n#EXTINF:2.000,\nsegments/1.m4s?t=1\n\
             #EXT-X-PART:DURATION=0.5,URI=\"parts/2.0.m4s?t=1\",INDEPENDENT=YES\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"parts/2.1.m4s?t=1\"\n\
             #EXT-X-X:XURI=\"no\"\n\n#EXT-X-ENDLIST"
        );
        // Unterminated attributes and odd lines do not panic or lose text.
        for odd in ["#X:URI=\"abc", "#X:URI=", "URI=\"", "\n\n", ""] {
            let same = map_uris(odd, |u| u.to_owned());
            assert_eq!(same, odd);
        }
    }
}
