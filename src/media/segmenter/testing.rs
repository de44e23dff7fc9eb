//! Test helpers shared by the segmenter's tests: the fixture, a one-shot remux, and a checker
//! that parses every output with mp4-atom and asserts the structural invariants.

use mp4_atom::{Any, Decode, Moof, Moov};

use super::{Output, Part, Period, RemuxOptions, Remuxer, Segment};
use crate::media::flv::{self, Tag};

pub(super) const FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/testsrc.flv");

pub(super) fn fixture() -> Vec<Tag> {
    flv::parse_file(FIXTURE).expect("fixture parses")
}

pub(super) fn opts(timeline_start_ms: u64, first_sequence: u32) -> RemuxOptions {
    RemuxOptions {
        segment_target_ms: 2000,
        timeline_start_ms,
        first_sequence,
        part_target_ms: None,
    }
}

pub(super) fn remux(tags: &[Tag], opts: RemuxOptions) -> Vec<Output> {
    let mut r = Remuxer::new(opts);
    let mut out = Vec::new();
    for tag in tags {
        out.extend(r.push_tag(tag).expect("fixture tags are good"));
    }
    out.extend(r.finish());
    out
}

/// Publishes `tags`, unpublishes, and publishes them again on one remuxer (a republish).
pub(super) fn remux_twice(tags: &[Tag], opts: RemuxOptions) -> Vec<Output> {
    let mut r = Remuxer::new(opts);
    let mut out = Vec::new();
    for _ in 0..2 {
        for tag in tags {
            out.extend(r.push_tag(tag).expect("good tag"));
        }
        out.extend(r.finish());
    }
    out
}

#[derive(Debug, Default)]
pub(super) struct Summary {
    pub(super) periods: Vec<Period>,
    pub(super) segments: Vec<Segment>,
    /// Per period: (track id, timescale, is video).
    pub(super) tracks: Vec<Vec<(u32, u32, bool)>>,
    /// Composition offsets seen that are non-zero.
    pub(super) cts: usize,
    /// Per segment and track: (track id, tfdt, sum of durations).
    pub(super) fragments: Vec<Vec<(u32, u64, u64)>>,
    /// Per segment: its parts (empty with parts off).
    pub(super) parts: Vec<Vec<Part>>,
}

/// Parses every output with mp4-atom and checks the structural invariants.
pub(super) fn check(outputs: &[Output], first_sequence: u32) -> Summary {
    let mut s = Summary::default();
    let mut sequence = first_sequence;
    let mut next_tfdt: Vec<(u32, u64)> = Vec::new();
    let mut parts: Vec<Part> = Vec::new();
    for output in outputs {
        match output {
            Output::Period(p) => {
                if let Some(last) = s.segments.last() {
                    assert_eq!(p.start_ms, last.start_ms + last.duration_ms);
                }
                let mut buf = p.init.as_ref();
                mp4_atom::Ftyp::decode(&mut buf).expect("ftyp");
                let moov = Moov::decode(&mut buf).expect("moov");
                let trex = moov.mvex.expect("mvex").trex;
                assert_eq!(trex.len(), moov.trak.len());
                let tracks: Vec<_> = moov
                    .trak
                    .iter()
                    .map(|t| {
                        let video = t.mdia.hdlr.handler == mp4_atom::FourCC::new(b"vide");
                        (t.tkhd.track_id, t.mdia.mdhd.timescale, video)
                    })
                    .collect();
                let ids: Vec<_> = tracks.iter().map(|t| t.0).collect();
                assert_eq!(ids, (1..=tracks.len() as u32).collect::<Vec<_>>());
                s.tracks.push(tracks);
                s.periods.push(p.clone());
                next_tfdt.clear();
            }
            Output::Part(part) => {
                assert!(!s.periods.is_empty(), "part before any period");
                let seg_start = s
                    .segments
                    .last()
                    .map_or(s.periods[0].start_ms, |l| l.start_ms + l.duration_ms);
                let expected_start = parts
                    .last()
                    .map_or(seg_start, |l: &Part| l.start_ms + l.duration_ms);
                assert_eq!(part.index as usize, parts.len(), "part index");
                assert_eq!(part.start_ms, expected_start, "parts tile their segment");
                assert!(part.duration_ms > 0, "empty part {part:?}");
                parts.push(part.clone());
            }
            Output::Segment(seg) => {
                assert!(!s.periods.is_empty(), "segment before any period");
                if let Some(last) = s.segments.last() {
                    assert_eq!(seg.start_ms, last.start_ms + last.duration_ms, "tiling");
                } else {
                    assert_eq!(seg.start_ms, s.periods[0].start_ms);
                }
                assert!(seg.duration_ms > 0);
                if !parts.is_empty() {
                    let joined: Vec<u8> = parts.iter().flat_map(|p| p.data.to_vec()).collect();
                    assert!(joined == seg.data.as_ref(), "segment = its parts joined");
                    let last = parts.last().expect("part");
                    assert_eq!(
                        last.start_ms + last.duration_ms,
                        seg.start_ms + seg.duration_ms
                    );
                    assert_eq!(parts[0].independent, seg.keyframe);
                }
                let tracks = s.tracks.last().expect("tracks");
                // Per track: (id, first tfdt, sum of durations) over the segment's chunks.
                let mut frags: Vec<(u32, u64, u64)> = Vec::new();
                let mut buf = seg.data.as_ref();
                let mut chunk = 0;
                while !buf.is_empty() {
                    let before = buf.len();
                    let moof = Moof::decode(&mut buf).expect("moof");
                    let moof_len = before - buf.len();
                    let Any::Mdat(mdat) = Any::decode(&mut buf).expect("mdat") else {
                        panic!("no mdat");
                    };
                    assert_eq!(moof.mfhd.sequence_number, sequence);
                    sequence += 1;
                    let mut offset = moof_len + 8;
                    for (i, traf) in moof.traf.iter().enumerate() {
                        let id = traf.tfhd.track_id;
                        let &(_, timescale, video) =
                            tracks.iter().find(|t| t.0 == id).expect("known track");
                        assert!(traf.tfhd.default_base_is_moof);
                        let tfdt = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
                        if let Some(&(_, expected)) = next_tfdt.iter().find(|t| t.0 == id) {
                            assert_eq!(tfdt, expected, "tfdt continuity of track {id}");
                        }
                        let trun = &traf.trun[0];
                        assert_eq!(trun.data_offset, Some(offset as i32));
                        let mut sum = 0u64;
                        for (j, e) in trun.samples.iter().enumerate() {
                            sum += u64::from(e.duration.expect("duration"));
                            offset += e.size.expect("size") as usize;
                            let sync = e.flags.expect("flags") & 0x0001_0000 == 0;
                            if video && j == 0 && chunk == 0 && seg.keyframe {
                                assert!(sync, "segment starts with a sync sample");
                            }
                            if video && j == 0 && chunk < parts.len() && parts[chunk].independent {
                                assert!(sync, "an independent part starts with a sync sample");
                            }
                            if e.cts.expect("cts") != 0 {
                                s.cts += 1;
                            }
                        }
                        if chunk == 0 && i == 0 && (video || tracks.len() == 1) {
                            // start_ms is the primary track's tfdt in ms.
                            assert_eq!(tfdt * 1000 / u64::from(timescale), seg.start_ms);
                        }
                        next_tfdt.retain(|t| t.0 != id);
                        next_tfdt.push((id, tfdt + sum));
                        match frags.iter_mut().find(|f| f.0 == id) {
                            Some(f) => f.2 += sum,
                            None => frags.push((id, tfdt, sum)),
                        }
                    }
                    assert_eq!(offset, moof_len + 8 + mdat.data.len());
                    chunk += 1;
                }
                if !parts.is_empty() {
                    assert_eq!(chunk, parts.len(), "one moof per part");
                }
                s.fragments.push(frags);
                s.parts.push(std::mem::take(&mut parts));
                s.segments.push(seg.clone());
            }
        }
    }
    assert!(parts.is_empty(), "parts without their segment");
    s
}

pub(super) fn total_ms(s: &Summary) -> u64 {
    s.segments.iter().map(|x| x.duration_ms).sum()
}
