//! The remuxer of one publish session: FLV tags in, CMAF periods and segments out.
//!
//! Sans-IO: [`Remuxer::push_tag`] and [`Remuxer::finish`] return [`Output`]s and never block.
//!
//! Invariants:
//! - The timeline tiles exactly: each [`Segment`]'s `start_ms + duration_ms` is the next
//!   segment's `start_ms`, across periods too; the first segment starts at
//!   [`RemuxOptions::timeline_start_ms`].
//! - Within a track and period, each segment's `tfdt` is the previous one's plus the sum of its
//!   sample durations (video durations are dts differences; audio runs 1024 samples per frame).
//! - `mfhd` sequence numbers start at [`RemuxOptions::first_sequence`] and grow by one per
//!   segment.
//! - A [`Period`] is output right before its first segment, so its `start_ms` is that
//!   segment's.
//! - [`Remuxer::finish`]'s last segment ends at or after the end of every track's last sample,
//!   so a republish (which starts where that segment ends) never decodes a track before what
//!   the previous period already played.
//! - Every buffer is bounded: the pre-period queue, the stash held across a codec change and the
//!   open segment (see the `MAX_*` constants).
//!
//! Timing: publisher timestamps (32-bit ms, any start, may wrap) are unwrapped and mapped onto
//! the stream timeline by an offset fixed at the first period's first frame (a video keyframe,
//! or the first audio frame for audio-only). A jump of more than [`JUMP_FORWARD_MS`] forward or
//! [`JUMP_BACKWARD_MS`] backward against the newest time seen (a publisher restart, a clock
//! reset) moves the offset so the timeline stays continuous and monotonic. Video uses a
//! 90 kHz timescale (exact for ms), audio its sample rate. Audio decode times run contiguously
//! (one frame's samples per frame) and resync forward only when the publisher is more than
//! [`AUDIO_RESYNC_MS`] ahead; a publisher sending audio faster than its clock stays contiguous.
//!
//! Periods: the first starts when both sequence headers are known, or when one track has
//! [`PREROLL_MS`] of media queued without the other (or at unpublish). Video frames before
//! the first keyframe and audio before it are dropped. A changed sequence header, or a track
//! appearing, ends the period at the next video keyframe (audio-only: the next audio frame);
//! meanwhile non-key frames of a changed video config are refused and audio of a changed config
//! is stashed. Frames of a track without a sequence header are refused.
//!
//! Cuts: at the first video keyframe at least `segment_target_ms` minus [`cut_tolerance_ms`]
//! after the segment's first video frame (audio-only: the first audio frame a full
//! `segment_target_ms` after the first), or at any frame
//! beyond [`MAX_SEGMENT_BYTES`], [`MAX_SEGMENT_MS`] or [`MAX_SEGMENT_SAMPLES`]; such a forced
//! segment may start without a keyframe ([`Segment::keyframe`] is then false).
//!
//! Layout: `timeline` unwraps and maps publisher time and places frames, `periods` decides
//! when periods start and switch, `cutting` fills the open segment and cuts it.

mod cutting;
mod periods;
#[cfg(test)]
mod testing;
mod timeline;

use bytes::Bytes;
use std::collections::VecDeque;

use crate::media::aac::{self, AudioSpecificConfig};
use crate::media::avc::{self, AvcConfig};
use crate::media::flv::{self, AudioBody, Tag, TagKind, VideoBody};
use crate::media::fmp4;

pub use cutting::{
    cut_tolerance_ms, part_due, MAX_CUT_TOLERANCE_MS, MAX_SEGMENT_BYTES, MAX_SEGMENT_MS,
    MAX_SEGMENT_SAMPLES,
};
pub use periods::{MAX_QUEUED_BYTES, MAX_QUEUED_FRAMES, PREROLL_MS};
pub use timeline::{AUDIO_RESYNC_MS, JUMP_BACKWARD_MS, JUMP_FORWARD_MS};

use cutting::Open;
use periods::{same_record, Active};
use timeline::{Frame, Unwrap};

/// Settings of one publish session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemuxOptions {
    /// Segments are cut at the first keyframe at least this long (less [`cut_tolerance_ms`])
    /// after the segment start.
    pub segment_target_ms: u64,
    /// Where this session's timeline begins (the recording's previous end).
    pub timeline_start_ms: u64,
    /// `mfhd` sequence number of the first segment.
    pub first_sequence: u32,
    /// Low-latency HLS parts: each segment is also emitted as parts of about this duration
    /// (see [`part_due`]); `None`: segments only.
    pub part_target_ms: Option<u64>,
}

/// What the remuxer produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A new period begins: its segments follow and need this init segment.
    Period(Period),
    /// A finished part of the segment being written (only with `part_target_ms`). The
    /// segment that follows its last part is the concatenation of its parts.
    Part(Part),
    /// A finished media segment of the current period.
    Segment(Segment),
}

/// One part of the open segment (LL-HLS `EXT-X-PART`): `moof` + `mdat` of the samples since
/// the previous part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// 0 for a segment's first part.
    pub index: u32,
    /// Timeline start; parts tile their segment.
    pub start_ms: u64,
    pub duration_ms: u64,
    pub data: Bytes,
    /// Starts with a video keyframe (audio-only: always): `INDEPENDENT=YES`.
    pub independent: bool,
}

/// A run of segments sharing one init segment (same codecs and configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// Init segment (`ftyp` + `moov`).
    pub init: Bytes,
    /// RFC 6381 codecs, video first, e.g. `avc1.4d401e,mp4a.40.2`.
    pub codecs: String,
    /// Video width in pixels, if the period has video.
    pub width: Option<u32>,
    /// Video height in pixels, if the period has video.
    pub height: Option<u32>,
    /// Timeline position of the period's first segment.
    pub start_ms: u64,
    /// The video's AVCDecoderConfigurationRecord (SPS/PPS), for thumbnails.
    pub avc_record: Option<Bytes>,
}

/// One media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Timeline start: the first video `tfdt` in ms (audio-only: the first audio `tfdt`).
    pub start_ms: u64,
    /// The next segment's `start_ms` minus this one's.
    pub duration_ms: u64,
    /// `moof` + `mdat`.
    pub data: Bytes,
    /// The first video sample is a sync sample (always true without video).
    pub keyframe: bool,
    /// The first video sample (AVCC, length-prefixed NAL units) when it is a keyframe.
    pub first_keyframe: Option<Bytes>,
}

/// Why a tag was dropped. The publish goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Flv(#[from] flv::Error),
    #[error(transparent)]
    Avc(#[from] avc::Error),
    #[error(transparent)]
    Aac(#[from] aac::Error),
    #[error(transparent)]
    Fmp4(#[from] fmp4::Error),
    #[error("{0} frame before its sequence header")]
    MissingConfig(&'static str),
    #[error("video frame dropped: waiting for a keyframe after a codec change")]
    AwaitingKeyframe,
    #[error("frame dropped: too much media buffered across a codec change")]
    BufferFull,
}

/// Remuxes one publish session's FLV tags into CMAF periods and segments.
pub struct Remuxer {
    target_ms: u64,
    part_target_ms: Option<u64>,
    next_sequence: u32,
    /// Where the next first period starts (the session start, then each `finish`'s end).
    timeline_start_ms: u64,
    /// End of the last emitted segment.
    end_ms: u64,
    unwrap: Unwrap,
    /// Timeline ms = publisher ms + offset, once the first period is anchored.
    offset_ms: i64,
    /// Newest timeline time seen, for jump detection.
    head_ms: Option<i64>,
    /// Latest sequence headers.
    avc: Option<AvcConfig>,
    aac: Option<AudioSpecificConfig>,
    period: Option<Active>,
    /// A sequence header differs from the current period's: a new period is due.
    pending_change: bool,
    /// Frames waiting for the first period.
    queue: VecDeque<Frame>,
    queued_bytes: usize,
    /// Frames of a changed audio config waiting for the next period, with their timeline ms.
    stash: VecDeque<(Frame, i64)>,
    stashed_bytes: usize,
    open: Open,
    /// Last video dts and the interval before it, both in 90 kHz ticks.
    video_last: Option<(u64, u64)>,
    /// Next contiguous audio dts, in samples at the given rate.
    audio_next: Option<(u64, u32)>,
}

impl Remuxer {
    /// A remuxer for one publish session.
    pub fn new(opts: RemuxOptions) -> Self {
        Remuxer {
            target_ms: opts.segment_target_ms,
            part_target_ms: opts.part_target_ms,
            next_sequence: opts.first_sequence,
            timeline_start_ms: opts.timeline_start_ms,
            end_ms: opts.timeline_start_ms,
            unwrap: Unwrap::default(),
            offset_ms: 0,
            head_ms: None,
            avc: None,
            aac: None,
            period: None,
            pending_change: false,
            queue: VecDeque::new(),
            queued_bytes: 0,
            stash: VecDeque::new(),
            stashed_bytes: 0,
            open: Open::at(opts.timeline_start_ms),
            video_last: None,
            audio_next: None,
        }
    }

    /// The `mfhd` sequence number the next segment will carry.
    pub fn next_sequence(&self) -> u32 {
        self.next_sequence
    }

    /// End of the last segment output so far (the session start before any).
    pub fn timeline_end_ms(&self) -> u64 {
        self.end_ms
    }

    /// Bad tags are an Err: the caller logs and drops that tag; the publish goes on.
    pub fn push_tag(&mut self, tag: &Tag) -> Result<Vec<Output>, Error> {
        match tag.kind {
            TagKind::Script => Ok(Vec::new()),
            TagKind::Video => match flv::parse_video(&tag.body)? {
                VideoBody::AvcConfig(record) => {
                    let config = AvcConfig::parse(record)?;
                    if same_record(&self.avc, &Some(config.clone()), |c| &c.record) {
                        return Ok(Vec::new());
                    }
                    self.avc = Some(config);
                    self.on_config()
                }
                VideoBody::AvcFrame(f) => {
                    let frame = Frame::Video {
                        ext_ms: self.unwrap.push(tag.timestamp_ms),
                        keyframe: f.keyframe,
                        cts_ms: f.composition_time_ms,
                        data: f.data,
                    };
                    self.on_frame(frame)
                }
                VideoBody::EndOfSequence | VideoBody::Ignored => Ok(Vec::new()),
            },
            TagKind::Audio => match flv::parse_audio(&tag.body)? {
                AudioBody::AacConfig(record) => {
                    let config = AudioSpecificConfig::parse(record)?;
                    if same_record(&self.aac, &Some(config.clone()), |c| &c.record) {
                        return Ok(Vec::new());
                    }
                    self.aac = Some(config);
                    self.on_config()
                }
                AudioBody::AacFrame(data) => {
                    let frame = Frame::Audio {
                        ext_ms: self.unwrap.push(tag.timestamp_ms),
                        data,
                    };
                    self.on_frame(frame)
                }
                AudioBody::Ignored => Ok(Vec::new()),
            },
        }
    }

    /// Unpublish: flush what is buffered as a last segment.
    ///
    /// The remuxer is then reset: a later publish starts a new period where this one ended,
    /// with the sequence numbers continuing.
    pub fn finish(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if self.period.is_none() && !self.queue.is_empty() {
            // A publish shorter than the preroll still gets its media recorded.
            match self.try_start(true) {
                Ok(o) => out = o,
                Err(err) => tracing::warn!(%err, "buffered media dropped"),
            }
        }
        out.extend(self.cut_last());
        let next = Remuxer::new(RemuxOptions {
            segment_target_ms: self.target_ms,
            timeline_start_ms: self.end_ms,
            first_sequence: self.next_sequence,
            part_target_ms: self.part_target_ms,
        });
        *self = next;
        out
    }

    fn on_frame(&mut self, frame: Frame) -> Result<Vec<Output>, Error> {
        let known = if frame.is_video() {
            self.avc.is_some()
        } else {
            self.aac.is_some()
        };
        if !known {
            return Err(Error::MissingConfig(if frame.is_video() {
                "video"
            } else {
                "audio"
            }));
        }
        if self.period.is_none() {
            while self.queue_full(frame.len()) {
                self.dequeue();
            }
            self.enqueue(frame);
            return self.try_start(false);
        }
        if self.pending_change {
            return self.on_frame_pending(frame);
        }
        self.ingest(frame)
    }

    fn ingest(&mut self, frame: Frame) -> Result<Vec<Output>, Error> {
        let audio = self.period.as_ref().and_then(|p| p.audio.clone());
        let placed = self.place(frame, audio.as_ref());
        self.add(placed)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use mp4_atom::{Decode, Moof};

    #[test]
    fn fixture_round_trip() {
        let out = remux(&fixture(), opts(1_000_000, 7));
        let s = check(&out, 7);
        assert_eq!(s.periods.len(), 1);
        let p = &s.periods[0];
        assert_eq!(p.codecs, "avc1.4d401e,mp4a.40.2");
        assert_eq!((p.width, p.height), (Some(640), Some(360)));
        assert_eq!(p.start_ms, 1_000_000);
        assert_eq!(s.tracks[0], [(1, 90_000, true), (2, 44_100, false)]);
        let durations: Vec<_> = s.segments.iter().map(|x| x.duration_ms).collect();
        assert_eq!(durations.len(), 5, "{durations:?}");
        assert!(durations[..4].iter().all(|d| *d == 2000), "{durations:?}");
        // The last segment runs to the end of the audio, which ends ~76 ms after the video.
        assert!((9_950..=10_100).contains(&total_ms(&s)), "{durations:?}");
        assert!(s.segments.iter().all(|x| x.keyframe));
        assert!(s.cts > 0, "B-frames need composition offsets");
        // Every segment carries both tracks.
        assert!(s.fragments.iter().all(|f| f.len() == 2));
    }

    /// Writes init + segments to a file, decodes it with ffmpeg (which must print nothing) and
    /// returns ffprobe's duration in seconds; `None` when ffmpeg is missing (outside CI).
    fn ffmpeg_decode(out: &[Output]) -> Option<f64> {
        use std::io::Write;
        use std::process::Command;
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if Command::new("ffmpeg").arg("-version").output().is_err() {
            assert!(!ci, "ffmpeg is required when CI=true");
            eprintln!("skipped: ffmpeg not found");
            return None;
        }
        let mut file = tempfile::NamedTempFile::with_suffix(".mp4").expect("temp file");
        for o in out {
            match o {
                Output::Period(p) => file.write_all(&p.init).expect("write"),
                Output::Segment(s) => file.write_all(&s.data).expect("write"),
                Output::Part(_) => {}
            }
        }
        file.flush().expect("flush");
        let decode = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(file.path())
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg runs");
        let stderr = String::from_utf8_lossy(&decode.stderr);
        assert!(decode.status.success(), "ffmpeg failed: {stderr}");
        assert!(
            stderr.trim().is_empty() && decode.stdout.is_empty(),
            "ffmpeg: {stderr}"
        );
        let probe = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
            ])
            .arg(file.path())
            .output()
            .expect("ffprobe runs");
        let duration = String::from_utf8_lossy(&probe.stdout)
            .trim()
            .parse()
            .expect("duration");
        Some(duration)
    }

    #[test]
    fn decodes_with_ffmpeg() {
        let tags = fixture();
        let Some(duration) = ffmpeg_decode(&remux(&tags, opts(0, 0))) else {
            return;
        };
        assert!((9.8..=10.3).contains(&duration), "duration {duration}");
        for kind in [TagKind::Audio, TagKind::Video] {
            let one: Vec<_> = tags.iter().filter(|t| t.kind == kind).cloned().collect();
            let duration = ffmpeg_decode(&remux(&one, opts(0, 0))).unwrap_or_default();
            assert!(
                (9.8..=10.3).contains(&duration),
                "{kind:?} duration {duration}"
            );
        }
        let mut restart: Vec<_> = tags
            .iter()
            .filter(|t| t.timestamp_ms < 5000)
            .cloned()
            .collect();
        restart.extend(tags.iter().cloned());
        let duration = ffmpeg_decode(&remux(&restart, opts(0, 0))).unwrap_or_default();
        assert!(
            (14.8..=15.3).contains(&duration),
            "restart duration {duration}"
        );
    }

    fn with_parts(part_ms: u64) -> RemuxOptions {
        RemuxOptions {
            part_target_ms: Some(part_ms),
            ..opts(0, 0)
        }
    }

    /// RFC 8216bis 4.4.4.9: "Each Partial Segment MUST have a duration less than or equal to
    /// the Part Target Duration ... the duration of each Partial Segment MUST be at least 85%
    /// of the Part Target Duration, with the exception of Partial Segments with the
    /// INDEPENDENT=YES attribute and the final Partial Segment of any Parent Segment."
    fn assert_part_durations(s: &Summary, part_ms: u64) {
        let mut parts = 0;
        for (seg, list) in s.segments.iter().zip(&s.parts) {
            assert!(!list.is_empty(), "segment {} has no parts", seg.start_ms);
            assert!(
                list[0].independent,
                "a segment's first part starts with a keyframe"
            );
            for (i, p) in list.iter().enumerate() {
                assert!(
                    p.duration_ms <= part_ms,
                    "part {i} of {}: {} ms",
                    seg.start_ms,
                    p.duration_ms
                );
                let last = i + 1 == list.len();
                if !last && !p.independent {
                    assert!(
                        p.duration_ms * 100 >= part_ms * 85,
                        "part {i}: {} ms",
                        p.duration_ms
                    );
                }
                parts += 1;
            }
        }
        assert!(parts >= s.segments.len() * 2, "{parts} parts");
    }

    #[test]
    fn parts_tile_segments_and_keep_the_spec_durations() {
        let tags = fixture();
        for part_ms in [500, 333, 1000] {
            let out = remux(&tags, with_parts(part_ms));
            let s = check(&out, 0);
            assert_part_durations(&s, part_ms);
            // Every segment but the last is 2 s, as without parts.
            let plain = check(&remux(&tags, opts(0, 0)), 0);
            let d = |s: &Summary| s.segments.iter().map(|x| x.duration_ms).collect::<Vec<_>>();
            assert_eq!(d(&s), d(&plain), "parts do not move segment cuts");
            // A part is independent when a keyframe starts it (`check` verifies the sync
            // flag): at least every segment's first.
            let independent: usize = s.parts.iter().flatten().filter(|p| p.independent).count();
            assert!(
                independent >= s.segments.len(),
                "{independent} independent parts"
            );
        }
        // Audio-only and video-only feeds, and a republish.
        for kind in [TagKind::Audio, TagKind::Video] {
            let one: Vec<_> = tags.iter().filter(|t| t.kind == kind).cloned().collect();
            let s = check(&remux(&one, with_parts(500)), 0);
            assert_part_durations(&s, 500);
        }
        let s = check(&remux_twice(&tags, with_parts(500)), 0);
        assert_eq!(s.periods.len(), 2);
        assert_part_durations(&s, 500);
    }

    #[test]
    fn parts_off_emits_single_fragment_segments() {
        let out = remux(&fixture(), opts(0, 0));
        assert!(out.iter().all(|o| !matches!(o, Output::Part(_))));
        let s = check(&out, 0);
        assert!(s.parts.iter().all(Vec::is_empty));
    }

    #[test]
    fn a_stream_in_parts_decodes_with_ffmpeg() {
        let out = remux(&fixture(), with_parts(500));
        // Parts joined are the segments, so writing the parts instead of the segments decodes.
        let parts_only: Vec<Output> = out
            .iter()
            .filter_map(|o| match o {
                Output::Part(p) => Some(Output::Segment(Segment {
                    start_ms: p.start_ms,
                    duration_ms: p.duration_ms,
                    data: p.data.clone(),
                    keyframe: p.independent,
                    first_keyframe: None,
                })),
                Output::Period(_) => Some(o.clone()),
                Output::Segment(_) => None,
            })
            .collect();
        for stream in [out, parts_only] {
            if let Some(duration) = ffmpeg_decode(&stream) {
                assert!((9.8..=10.3).contains(&duration), "duration {duration}");
            }
        }
    }

    #[test]
    fn finish_then_republish_continues() {
        let tags = fixture();
        let mut r = Remuxer::new(opts(0, 3));
        let mut out = Vec::new();
        for tag in &tags {
            out.extend(r.push_tag(tag).expect("good tag"));
        }
        out.extend(r.finish());
        let end = r.timeline_end_ms();
        for tag in &tags {
            out.extend(r.push_tag(tag).expect("good tag"));
        }
        out.extend(r.finish());
        let s = check(&out, 3);
        assert_eq!(s.periods.len(), 2);
        assert_eq!(s.periods[1].start_ms, end);
        assert_eq!(r.next_sequence(), 3 + s.segments.len() as u32);
        assert_eq!(r.timeline_end_ms(), total_ms(&s));
    }

    #[test]
    fn bad_tags_are_errors() {
        let mut r = Remuxer::new(opts(0, 0));
        let bad = |kind, body: &'static [u8]| Tag {
            kind,
            timestamp_ms: 0,
            body: Bytes::from_static(body),
        };
        assert!(matches!(
            r.push_tag(&bad(TagKind::Video, &[0x12, 0])),
            Err(Error::Flv(flv::Error::VideoCodec(2)))
        ));
        assert!(matches!(
            r.push_tag(&bad(TagKind::Video, &[0x17, 0, 0, 0, 0, 1])),
            Err(Error::Avc(_))
        ));
        assert!(matches!(
            r.push_tag(&bad(TagKind::Audio, &[0xaf, 1, 5])),
            Err(Error::MissingConfig("audio"))
        ));
        assert_eq!(r.push_tag(&bad(TagKind::Script, &[2, 0])), Ok(vec![]));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn arb_tag() -> impl Strategy<Value = Tag> {
            let kind = prop_oneof![
                Just(TagKind::Audio),
                Just(TagKind::Video),
                Just(TagKind::Script)
            ];
            let prefix = prop_oneof![
                Just(vec![]),
                Just(vec![0xaf, 1]),
                Just(vec![0xaf, 0, 0x12, 0x10]),
                Just(vec![0x17, 1, 0, 0, 0]),
                Just(vec![0x27, 1, 0, 0, 0]),
            ];
            (
                kind,
                any::<u32>(),
                prefix,
                proptest::collection::vec(any::<u8>(), 0..24),
            )
                .prop_map(|(kind, timestamp_ms, mut body, rest)| {
                    body.extend(rest);
                    Tag {
                        kind,
                        timestamp_ms,
                        body: Bytes::from(body),
                    }
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn random_tags_do_not_panic(tags in proptest::collection::vec(arb_tag(), 0..64)) {
                let mut r = Remuxer::new(opts(0, u32::MAX - 2));
                for tag in &tags {
                    let _ = r.push_tag(tag);
                }
                let _ = r.finish();
            }

            #[test]
            fn mutated_fixture_does_not_panic(
                edits in proptest::collection::vec((0usize..800, 0usize..64, any::<u8>(), any::<u32>()), 1..16),
            ) {
                let mut tags = fixture();
                tags.truncate(400);
                for (i, at, value, ts) in edits {
                    let Some(tag) = tags.get_mut(i % 400) else { continue };
                    let mut body = tag.body.to_vec();
                    if let Some(b) = body.get_mut(at) { *b = value; }
                    tag.body = Bytes::from(body);
                    if value % 4 == 0 { tag.timestamp_ms = ts; }
                }
                let mut r = Remuxer::new(opts(0, 0));
                let mut out = Vec::new();
                for tag in &tags {
                    if let Ok(o) = r.push_tag(tag) { out.extend(o); }
                }
                out.extend(r.finish());
                // Tiling and the sequence survive hostile input.
                let mut seq = 0;
                let mut end = None;
                for o in &out {
                    if let Output::Segment(s) = o {
                        if let Some(end) = end { prop_assert_eq!(s.start_ms, end); }
                        end = Some(s.start_ms + s.duration_ms);
                        let moof = Moof::decode(&mut s.data.as_ref()).expect("moof");
                        prop_assert_eq!(moof.mfhd.sequence_number, seq);
                        seq += 1;
                    }
                }
            }
        }
    }
}
