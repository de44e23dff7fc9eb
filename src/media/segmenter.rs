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

use std::collections::VecDeque;

use bytes::Bytes;

use crate::media::aac::{self, AudioSpecificConfig};
use crate::media::avc::{self, AvcConfig};
use crate::media::flv::{self, AudioBody, Tag, TagKind, VideoBody};
use crate::media::fmp4::{self, Codec, Fragment, Sample, Track, VIDEO_TIMESCALE};

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
}

/// What the remuxer produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A new period begins: its segments follow and need this init segment.
    Period(Period),
    /// A finished media segment of the current period.
    Segment(Segment),
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

/// How long one track is buffered waiting for the other's sequence header before a
/// single-track period starts: encoders send both headers before any media, so this only
/// delays truly single-track streams.
pub const PREROLL_MS: i64 = 500;
/// Frames held before the first period or across a codec change. Over it, the oldest waiting
/// frame (before a period) or the new frame (across a change) is dropped.
pub const MAX_QUEUED_FRAMES: usize = 2048;
/// Bytes held before the first period or across a codec change.
pub const MAX_QUEUED_BYTES: usize = 32 << 20;
/// A segment is cut early (at any frame) beyond this size: a stream without keyframes, or whose
/// video stalled while audio goes on, would otherwise grow one segment without bound. 64 MiB
/// is ~60 s at 8 Mbit/s, far above any sane segment.
pub const MAX_SEGMENT_BYTES: usize = 64 << 20;
/// A segment is cut early beyond this much media, for the same reason as
/// [`MAX_SEGMENT_BYTES`], and so players and the DVR index never see hour-long segments.
pub const MAX_SEGMENT_MS: u64 = 60_000;
/// A segment is cut early beyond this many samples: tiny frames must not make `trun` huge.
pub const MAX_SEGMENT_SAMPLES: usize = 32_768;
/// A forward jump in publisher time beyond this is absorbed instead of becoming a gap.
pub const JUMP_FORWARD_MS: i64 = 10_000;
/// A backward step beyond this is a clock reset (audio/video interleaving stays well below).
pub const JUMP_BACKWARD_MS: i64 = 1_000;
/// Audio runs contiguously until the publisher's time is this far ahead of it.
pub const AUDIO_RESYNC_MS: i64 = 100;
/// Cap on how early before the target a keyframe may still cut: half a frame at 30 fps. Encoders
/// that round their frame times (OBS puts 2 s keyframes 1,999 ms apart) land a hair short of the
/// target; without slack such a keyframe is skipped and the segment doubles. Half a frame keeps
/// a genuinely shorter GOP (a whole frame or more short) from cutting early.
pub const MAX_CUT_TOLERANCE_MS: u64 = 16;
/// Share of the target a keyframe may fall short of it and still cut (1 %), so short targets
/// get proportionally less slack than [`MAX_CUT_TOLERANCE_MS`].
const CUT_TOLERANCE_DIVISOR: u64 = 100;
/// Duration given to a lone video frame whose successor never came (1/30 s at 90 kHz).
const DEFAULT_VIDEO_DURATION: u64 = 3_000;
const VIDEO_TICKS_PER_MS: u64 = VIDEO_TIMESCALE as u64 / 1000;

/// A media frame as received, with its unwrapped publisher time.
#[derive(Debug, Clone)]
enum Frame {
    Video {
        ext_ms: i64,
        keyframe: bool,
        cts_ms: i32,
        data: Bytes,
    },
    Audio {
        ext_ms: i64,
        data: Bytes,
    },
}

impl Frame {
    fn ext_ms(&self) -> i64 {
        match self {
            Frame::Video { ext_ms, .. } | Frame::Audio { ext_ms, .. } => *ext_ms,
        }
    }
    fn len(&self) -> usize {
        match self {
            Frame::Video { data, .. } | Frame::Audio { data, .. } => data.len(),
        }
    }
    fn is_video(&self) -> bool {
        matches!(self, Frame::Video { .. })
    }
}

/// A frame placed on the timeline.
enum Placed {
    /// `dts` in 90 kHz ticks, `cts` in 90 kHz ticks.
    Video {
        dts: u64,
        cts: i32,
        keyframe: bool,
        data: Bytes,
    },
    /// `dts` in samples at the period's audio rate.
    Audio { dts: u64, data: Bytes },
}

struct VideoSample {
    dts: u64,
    cts: i32,
    keyframe: bool,
    data: Bytes,
}

struct AudioSample {
    dts: u64,
    data: Bytes,
}

/// The segment being filled.
#[derive(Default)]
struct Open {
    start_ms: u64,
    video: Vec<VideoSample>,
    audio: Vec<AudioSample>,
    bytes: usize,
}

impl Open {
    fn is_empty(&self) -> bool {
        self.video.is_empty() && self.audio.is_empty()
    }

    fn over_cap(&self, add_bytes: usize, at_ms: u64) -> bool {
        self.bytes.saturating_add(add_bytes) > MAX_SEGMENT_BYTES
            || self.video.len() + self.audio.len() >= MAX_SEGMENT_SAMPLES
            || at_ms.saturating_sub(self.start_ms) >= MAX_SEGMENT_MS
    }
}

/// The current period: its configs and init segment.
struct Active {
    video: Option<AvcConfig>,
    audio: Option<AudioSpecificConfig>,
    init: Bytes,
    codecs: String,
    announced: bool,
}

impl Active {
    fn video_id(&self) -> u32 {
        1
    }
    fn audio_id(&self) -> u32 {
        if self.video.is_some() {
            2
        } else {
            1
        }
    }
}

/// Unwraps 32-bit publisher timestamps into a monotonic-ish 64-bit count.
#[derive(Default)]
struct Unwrap {
    last_raw: Option<u32>,
    ext_ms: i64,
}

impl Unwrap {
    fn push(&mut self, raw: u32) -> i64 {
        if let Some(last) = self.last_raw {
            // The signed 32-bit difference is right across a wrap and for small steps back.
            let step = raw.wrapping_sub(last) as i32;
            self.ext_ms = self.ext_ms.saturating_add(i64::from(step));
        } else {
            self.ext_ms = i64::from(raw);
        }
        self.last_raw = Some(raw);
        self.ext_ms
    }
}

/// Remuxes one publish session's FLV tags into CMAF periods and segments.
pub struct Remuxer {
    target_ms: u64,
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

fn ms_to_ticks(ms: u64, rate: u32) -> u64 {
    let t = (u128::from(ms) * u128::from(rate)).div_ceil(1000);
    u64::try_from(t).unwrap_or(u64::MAX)
}

fn ticks_to_ms(ticks: u64, rate: u32) -> u64 {
    let ms = u128::from(ticks) * 1000 / u128::from(rate.max(1));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// How far short of `target_ms` a video keyframe may be and still cut the segment: 1 % of the
/// target, at most [`MAX_CUT_TOLERANCE_MS`].
pub fn cut_tolerance_ms(target_ms: u64) -> u64 {
    (target_ms / CUT_TOLERANCE_DIVISOR).min(MAX_CUT_TOLERANCE_MS)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn same_record<T>(a: &Option<T>, b: &Option<T>, record: impl Fn(&T) -> &Bytes) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => record(a) == record(b),
        (None, None) => true,
        _ => false,
    }
}

impl Remuxer {
    /// A remuxer for one publish session.
    pub fn new(opts: RemuxOptions) -> Self {
        Remuxer {
            target_ms: opts.segment_target_ms,
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
            open: Open::default(),
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
        if self.period.is_some() && !self.open.is_empty() {
            let video_end = self.open.video.last().map(|v| {
                let duration = self.video_last.map_or(DEFAULT_VIDEO_DURATION, |(_, d)| d);
                v.dts.saturating_add(duration) / VIDEO_TICKS_PER_MS
            });
            let audio_end = self.open.audio.last().and_then(|a| {
                let asc = self.period.as_ref()?.audio.as_ref()?;
                let end = a.dts.saturating_add(u64::from(asc.samples_per_frame));
                Some(ticks_to_ms(end, asc.sample_rate))
            });
            let end_ms = video_end
                .or(audio_end)
                .unwrap_or(self.open.start_ms)
                .max(self.open.start_ms.saturating_add(1));
            match self.cut(end_ms, None, true) {
                Ok(o) => out.extend(o),
                Err(err) => tracing::warn!(%err, "last segment dropped"),
            }
        }
        let next = Remuxer::new(RemuxOptions {
            segment_target_ms: self.target_ms,
            timeline_start_ms: self.end_ms,
            first_sequence: self.next_sequence,
        });
        *self = next;
        out
    }

    fn on_config(&mut self) -> Result<Vec<Output>, Error> {
        match &self.period {
            Some(p) => {
                let same = same_record(&p.video, &self.avc, |c| &c.record)
                    && same_record(&p.audio, &self.aac, |c| &c.record);
                self.pending_change |= !same;
                Ok(Vec::new())
            }
            None => self.try_start(false),
        }
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

    fn queue_full(&self, add_bytes: usize) -> bool {
        !self.queue.is_empty()
            && (self.queue.len() >= MAX_QUEUED_FRAMES
                || self.queued_bytes.saturating_add(add_bytes) > MAX_QUEUED_BYTES)
    }

    fn enqueue(&mut self, frame: Frame) {
        self.queued_bytes = self.queued_bytes.saturating_add(frame.len());
        self.queue.push_back(frame);
    }

    fn dequeue(&mut self) -> Option<Frame> {
        let frame = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(frame.len());
        Some(frame)
    }

    /// Publisher-time span of the queued frames of one kind.
    fn queued_span_ms(&self, video: bool) -> i64 {
        let mut times = self
            .queue
            .iter()
            .filter(|f| f.is_video() == video)
            .map(Frame::ext_ms);
        let Some(first) = times.next() else {
            return 0;
        };
        let (min, max) = times.fold((first, first), |(lo, hi), t| (lo.min(t), hi.max(t)));
        max.saturating_sub(min)
    }

    /// Starts the first period once the track set is known and its anchor frame is queued;
    /// `force` starts it with whatever tracks are known (the queue is full, or unpublish).
    fn try_start(&mut self, force: bool) -> Result<Vec<Output>, Error> {
        let full = force || self.queue.len() >= MAX_QUEUED_FRAMES;
        let with_video = self.avc.is_some()
            && (self.aac.is_some() || full || self.queued_span_ms(true) >= PREROLL_MS);
        let with_audio = self.aac.is_some()
            && (self.avc.is_some() || full || self.queued_span_ms(false) >= PREROLL_MS);
        if !with_video && !with_audio {
            return Ok(Vec::new());
        }
        let anchor = self.queue.iter().find_map(|f| match f {
            Frame::Video {
                ext_ms,
                keyframe: true,
                ..
            } if with_video => Some(*ext_ms),
            Frame::Audio { ext_ms, .. } if !with_video => Some(*ext_ms),
            _ => None,
        });
        let Some(anchor_ms) = anchor else {
            if with_video {
                // Frames before the first keyframe can never be decoded.
                let frames = std::mem::take(&mut self.queue);
                self.queued_bytes = 0;
                for f in frames.into_iter().filter(|f| !f.is_video()) {
                    self.enqueue(f);
                }
            }
            return Ok(Vec::new());
        };
        self.offset_ms = to_i64(self.timeline_start_ms).saturating_sub(anchor_ms);
        self.open = Open {
            start_ms: self.timeline_start_ms,
            ..Open::default()
        };
        let video = if with_video { self.avc.clone() } else { None };
        let audio = if with_audio { self.aac.clone() } else { None };
        self.begin_period(video, audio)?;
        let frames = std::mem::take(&mut self.queue);
        self.queued_bytes = 0;
        let mut out = Vec::new();
        let mut seen_keyframe = false;
        for frame in frames {
            if frame.ext_ms() < anchor_ms {
                continue;
            }
            if let Frame::Video { keyframe, .. } = frame {
                if !with_video || !(seen_keyframe || keyframe) {
                    continue;
                }
                seen_keyframe = true;
            } else if !with_audio {
                continue;
            }
            self.ingest_logged(frame, &mut out);
        }
        Ok(out)
    }

    fn ingest_logged(&mut self, frame: Frame, out: &mut Vec<Output>) {
        match self.ingest(frame) {
            Ok(o) => out.extend(o),
            Err(err) => tracing::warn!(%err, "buffered frame dropped"),
        }
    }

    fn begin_period(
        &mut self,
        video: Option<AvcConfig>,
        audio: Option<AudioSpecificConfig>,
    ) -> Result<(), Error> {
        let mut tracks = Vec::new();
        let mut codecs = Vec::new();
        if let Some(v) = &video {
            codecs.push(v.codec());
            tracks.push(Track {
                id: 1,
                codec: Codec::Avc(v.clone()),
            });
        }
        if let Some(a) = &audio {
            codecs.push(a.codec());
            tracks.push(Track {
                id: if video.is_some() { 2 } else { 1 },
                codec: Codec::Aac(a.clone()),
            });
        }
        let init = fmp4::init_segment(&tracks)?;
        self.period = Some(Active {
            video,
            audio,
            init,
            codecs: codecs.join(","),
            announced: false,
        });
        self.pending_change = false;
        Ok(())
    }

    fn on_frame_pending(&mut self, frame: Frame) -> Result<Vec<Output>, Error> {
        let Some(period) = &self.period else {
            return Ok(Vec::new());
        };
        let video_changed = !same_record(&period.video, &self.avc, |c| &c.record);
        let audio_changed = !same_record(&period.audio, &self.aac, |c| &c.record);
        match &frame {
            Frame::Video { keyframe: true, .. } => self.switch_period(frame, audio_changed),
            Frame::Video { .. } if video_changed => Err(Error::AwaitingKeyframe),
            Frame::Audio { .. } if self.avc.is_none() => self.switch_period(frame, audio_changed),
            Frame::Audio { .. } if audio_changed => {
                let full = !self.stash.is_empty()
                    && (self.stash.len() >= MAX_QUEUED_FRAMES
                        || self.stashed_bytes.saturating_add(frame.len()) > MAX_QUEUED_BYTES);
                if full {
                    return Err(Error::BufferFull);
                }
                // Mapped now, in arrival order, so that replaying it after the next keyframe
                // is not mistaken for a jump back in time.
                let audio = self.aac.clone();
                let at_ms = self.map(&frame, audio.as_ref());
                self.stashed_bytes = self.stashed_bytes.saturating_add(frame.len());
                self.stash.push_back((frame, at_ms));
                Ok(Vec::new())
            }
            _ => self.ingest(frame),
        }
    }

    /// Ends the current period at `frame` and starts the next with the latest configs.
    fn switch_period(&mut self, frame: Frame, audio_changed: bool) -> Result<Vec<Output>, Error> {
        let video = self.avc.clone();
        let audio = self.aac.clone();
        let mut placed = self.place(frame, audio.as_ref());
        let (at_ms, next_video) = match &mut placed {
            Placed::Video { dts, .. } => {
                // The closing segment must keep a non-zero duration.
                if !self.open.is_empty() && *dts / VIDEO_TICKS_PER_MS <= self.open.start_ms {
                    *dts = self.open.start_ms.saturating_add(1) * VIDEO_TICKS_PER_MS;
                }
                (*dts / VIDEO_TICKS_PER_MS, Some(*dts))
            }
            Placed::Audio { dts, .. } => {
                let rate = audio.as_ref().map_or(1000, |a| a.sample_rate);
                (ticks_to_ms(*dts, rate), None)
            }
        };
        let mut out = self.cut(at_ms, next_video, audio_changed)?;
        self.begin_period(video, audio.clone())?;
        // Stashed audio came before the keyframe: it goes first, contiguous with the old audio.
        let stash = std::mem::take(&mut self.stash);
        self.stashed_bytes = 0;
        for (frame, at_ms) in stash {
            let placed = self.place_at(frame, at_ms, audio.as_ref());
            match self.add(placed) {
                Ok(o) => out.extend(o),
                Err(err) => tracing::warn!(%err, "stashed frame dropped"),
            }
        }
        out.extend(self.add(placed)?);
        Ok(out)
    }

    fn ingest(&mut self, frame: Frame) -> Result<Vec<Output>, Error> {
        let audio = self.period.as_ref().and_then(|p| p.audio.clone());
        let placed = self.place(frame, audio.as_ref());
        self.add(placed)
    }

    /// Maps a publisher time onto the timeline, absorbing jumps; `expected_ms` is where the
    /// track would continue.
    fn timeline_ms(&mut self, ext_ms: i64, expected_ms: Option<i64>) -> i64 {
        let mut at = ext_ms.saturating_add(self.offset_ms);
        if let Some(head) = self.head_ms {
            let jumped = at > head.saturating_add(JUMP_FORWARD_MS)
                || at < head.saturating_sub(JUMP_BACKWARD_MS);
            if jumped {
                let target = expected_ms.map_or(head, |e| e.max(head));
                tracing::debug!(from = at, to = target, "publisher time jump absorbed");
                self.offset_ms = target.saturating_sub(ext_ms);
                at = target;
            }
        }
        self.head_ms = Some(self.head_ms.map_or(at, |h| h.max(at)));
        at
    }

    /// The next contiguous audio dts, converted to `rate`.
    fn audio_next_at(&self, rate: u32) -> Option<u64> {
        self.audio_next.map(|(ticks, r)| {
            if r == rate {
                ticks
            } else {
                ms_to_ticks(ticks_to_ms(ticks, r), rate)
            }
        })
    }

    /// Maps a frame's publisher time onto the timeline (see [`Remuxer::timeline_ms`]).
    fn map(&mut self, frame: &Frame, audio: Option<&AudioSpecificConfig>) -> i64 {
        let expected = match frame {
            Frame::Video { .. } => self
                .video_last
                .map(|(dts, d)| to_i64(dts.saturating_add(d) / VIDEO_TICKS_PER_MS)),
            Frame::Audio { .. } => {
                let rate = audio.map_or(1000, |a| a.sample_rate);
                self.audio_next_at(rate)
                    .map(|t| to_i64(ticks_to_ms(t, rate)))
            }
        };
        self.timeline_ms(frame.ext_ms(), expected)
    }

    fn place(&mut self, frame: Frame, audio: Option<&AudioSpecificConfig>) -> Placed {
        let at_ms = self.map(&frame, audio);
        self.place_at(frame, at_ms, audio)
    }

    /// Places a frame mapped to `at_ms` (audio at `audio`'s rate), keeping each track
    /// monotonic and never before the open segment's start.
    fn place_at(&self, frame: Frame, at_ms: i64, audio: Option<&AudioSpecificConfig>) -> Placed {
        match frame {
            Frame::Video {
                keyframe,
                cts_ms,
                data,
                ..
            } => {
                let mut dts_ms = to_u64(at_ms).max(self.open.start_ms);
                if let Some((last, _)) = self.video_last {
                    dts_ms = dts_ms.max(last / VIDEO_TICKS_PER_MS + 1);
                }
                // 2^23 ms * 90 fits an i32.
                let cts = cts_ms.saturating_mul(VIDEO_TICKS_PER_MS as i32);
                Placed::Video {
                    dts: dts_ms.saturating_mul(VIDEO_TICKS_PER_MS),
                    cts,
                    keyframe,
                    data,
                }
            }
            Frame::Audio { data, .. } => {
                let rate = audio.map_or(1000, |a| a.sample_rate);
                let at = ms_to_ticks(to_u64(at_ms), rate);
                let dts = match self.audio_next_at(rate) {
                    Some(next) => {
                        let expected = to_i64(ticks_to_ms(next, rate));
                        // A gap is only taken while the previous frame is still buffered, so
                        // that it can absorb the gap and tfdt stays contiguous.
                        if at_ms.saturating_sub(expected) > AUDIO_RESYNC_MS
                            && !self.open.audio.is_empty()
                        {
                            at
                        } else {
                            next
                        }
                    }
                    None => at.max(ms_to_ticks(self.open.start_ms, rate)),
                };
                Placed::Audio { dts, data }
            }
        }
    }

    /// Adds a placed frame to the open segment, cutting first when due.
    fn add(&mut self, placed: Placed) -> Result<Vec<Output>, Error> {
        let Some(period) = &self.period else {
            return Ok(Vec::new());
        };
        let has_video = period.video.is_some();
        let audio = period
            .audio
            .as_ref()
            .map(|a| (a.sample_rate, a.samples_per_frame));
        let mut out = Vec::new();
        match placed {
            Placed::Video {
                dts,
                cts,
                keyframe,
                data,
            } => {
                if !has_video {
                    return Err(Error::MissingConfig("video"));
                }
                let dts_ms = dts / VIDEO_TICKS_PER_MS;
                let min_ticks = self
                    .target_ms
                    .saturating_sub(cut_tolerance_ms(self.target_ms))
                    .saturating_mul(VIDEO_TICKS_PER_MS);
                let due =
                    self.open.video.first().is_some_and(|first| {
                        keyframe && dts.saturating_sub(first.dts) >= min_ticks
                    });
                if !self.open.is_empty() && (due || self.open.over_cap(data.len(), dts_ms)) {
                    out = self.cut(dts_ms, Some(dts), false)?;
                }
                let interval = self
                    .video_last
                    .map_or(DEFAULT_VIDEO_DURATION, |(last, _)| dts.saturating_sub(last));
                self.video_last = Some((dts, interval));
                self.open.bytes = self.open.bytes.saturating_add(data.len());
                self.open.video.push(VideoSample {
                    dts,
                    cts,
                    keyframe,
                    data,
                });
            }
            Placed::Audio { dts, data } => {
                let Some((rate, samples_per_frame)) = audio else {
                    return Err(Error::MissingConfig("audio"));
                };
                let dts_ms = ticks_to_ms(dts, rate);
                let due = !has_video
                    && self.open.audio.first().is_some_and(|first| {
                        dts.saturating_sub(first.dts) >= ms_to_ticks(self.target_ms, rate)
                    });
                if !self.open.is_empty() && (due || self.open.over_cap(data.len(), dts_ms)) {
                    let at_ms = dts_ms.max(self.open.start_ms.saturating_add(1));
                    out = self.cut(at_ms, None, false)?;
                }
                self.audio_next = Some((dts.saturating_add(u64::from(samples_per_frame)), rate));
                self.open.bytes = self.open.bytes.saturating_add(data.len());
                self.open.audio.push(AudioSample { dts, data });
            }
        }
        Ok(out)
    }

    /// Closes the open segment at `end_ms` and opens the next one there.
    ///
    /// `next_video` is the dts of the video frame that follows (the last frame's duration
    /// runs to it; without it, the previous interval). Audio frames at or after `end_ms` move
    /// to the next segment unless `keep_audio` (their config is ending with this period).
    fn cut(
        &mut self,
        end_ms: u64,
        next_video: Option<u64>,
        keep_audio: bool,
    ) -> Result<Vec<Output>, Error> {
        let mut open = std::mem::replace(
            &mut self.open,
            Open {
                start_ms: end_ms,
                ..Open::default()
            },
        );
        let Some(period) = self.period.as_mut() else {
            return Ok(Vec::new());
        };
        let (rate, samples_per_frame) = period
            .audio
            .as_ref()
            .map_or((1000, 1024), |a| (a.sample_rate, a.samples_per_frame));
        if !keep_audio {
            let end_ticks = ms_to_ticks(end_ms, rate);
            let split = open.audio.partition_point(|a| a.dts < end_ticks);
            let moved = open.audio.split_off(split);
            for a in &moved {
                self.open.bytes = self.open.bytes.saturating_add(a.data.len());
            }
            self.open.audio = moved;
        }
        if open.is_empty() {
            return Ok(Vec::new());
        }

        let mut fragments = Vec::with_capacity(2);
        if let Some(first) = open.video.first() {
            let last_interval = self.video_last.map_or(DEFAULT_VIDEO_DURATION, |(_, d)| d);
            let base = first.dts;
            let nexts: Vec<Option<u64>> = open
                .video
                .iter()
                .skip(1)
                .map(|v| Some(v.dts))
                .chain([next_video])
                .collect();
            let samples = open
                .video
                .drain(..)
                .zip(nexts)
                .map(|(v, next)| {
                    let duration = next.map_or(last_interval, |n| n.saturating_sub(v.dts));
                    Sample {
                        duration: u32::try_from(duration).unwrap_or(u32::MAX),
                        composition_offset: v.cts,
                        sync: v.keyframe,
                        data: v.data,
                    }
                })
                .collect();
            fragments.push(Fragment {
                track_id: period.video_id(),
                base_decode_time: base,
                samples,
            });
        }
        if let Some(first) = open.audio.first() {
            let base = first.dts;
            let following = self.open.audio.first().map(|a| a.dts);
            let nexts: Vec<Option<u64>> = open
                .audio
                .iter()
                .skip(1)
                .map(|a| Some(a.dts))
                .chain([following])
                .collect();
            let samples = open
                .audio
                .drain(..)
                .zip(nexts)
                .map(|(a, next)| {
                    let duration =
                        next.map_or(u64::from(samples_per_frame), |n| n.saturating_sub(a.dts));
                    Sample {
                        duration: u32::try_from(duration).unwrap_or(u32::MAX),
                        composition_offset: 0,
                        sync: true,
                        data: a.data,
                    }
                })
                .collect();
            fragments.push(Fragment {
                track_id: period.audio_id(),
                base_decode_time: base,
                samples,
            });
        }
        let keyframe = match fragments.first() {
            Some(f) if period.video.is_some() && f.track_id == period.video_id() => {
                f.samples.first().is_some_and(|s| s.sync)
            }
            _ => period.video.is_none(),
        };
        let data = fmp4::media_segment(self.next_sequence, &fragments)?;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        let mut out = Vec::with_capacity(2);
        if !period.announced {
            period.announced = true;
            out.push(Output::Period(Period {
                init: period.init.clone(),
                codecs: period.codecs.clone(),
                width: period.video.as_ref().map(AvcConfig::width),
                height: period.video.as_ref().map(AvcConfig::height),
                start_ms: open.start_ms,
            }));
        }
        out.push(Output::Segment(Segment {
            start_ms: open.start_ms,
            duration_ms: end_ms.saturating_sub(open.start_ms),
            data,
            keyframe,
        }));
        self.end_ms = end_ms;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc::tests::{high_profile_sps, record};
    use mp4_atom::{Any, Decode, Moof, Moov};

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/testsrc.flv");

    fn fixture() -> Vec<Tag> {
        flv::parse_file(FIXTURE).expect("fixture parses")
    }

    fn opts(timeline_start_ms: u64, first_sequence: u32) -> RemuxOptions {
        RemuxOptions {
            segment_target_ms: 2000,
            timeline_start_ms,
            first_sequence,
        }
    }

    fn remux(tags: &[Tag], opts: RemuxOptions) -> Vec<Output> {
        let mut r = Remuxer::new(opts);
        let mut out = Vec::new();
        for tag in tags {
            out.extend(r.push_tag(tag).expect("fixture tags are good"));
        }
        out.extend(r.finish());
        out
    }

    #[derive(Debug, Default)]
    struct Summary {
        periods: Vec<Period>,
        segments: Vec<Segment>,
        /// Per period: (track id, timescale, is video).
        tracks: Vec<Vec<(u32, u32, bool)>>,
        /// Composition offsets seen that are non-zero.
        cts: usize,
        /// Per segment and track: (track id, tfdt, sum of durations).
        fragments: Vec<Vec<(u32, u64, u64)>>,
    }

    /// Parses every output with mp4-atom and checks the structural invariants.
    fn check(outputs: &[Output], first_sequence: u32) -> Summary {
        let mut s = Summary::default();
        let mut sequence = first_sequence;
        let mut next_tfdt: Vec<(u32, u64)> = Vec::new();
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
                Output::Segment(seg) => {
                    assert!(!s.periods.is_empty(), "segment before any period");
                    if let Some(last) = s.segments.last() {
                        assert_eq!(seg.start_ms, last.start_ms + last.duration_ms, "tiling");
                    } else {
                        assert_eq!(seg.start_ms, s.periods[0].start_ms);
                    }
                    assert!(seg.duration_ms > 0);
                    let mut buf = seg.data.as_ref();
                    let moof = Moof::decode(&mut buf).expect("moof");
                    let moof_len = seg.data.len() - buf.len();
                    let Any::Mdat(mdat) = Any::decode(&mut buf).expect("mdat") else {
                        panic!("no mdat");
                    };
                    assert!(buf.is_empty());
                    assert_eq!(moof.mfhd.sequence_number, sequence);
                    sequence += 1;
                    let tracks = s.tracks.last().expect("tracks");
                    let mut offset = moof_len + 8;
                    let mut frags = Vec::new();
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
                            if video && j == 0 && seg.keyframe {
                                assert!(sync, "segment starts with a sync sample");
                            }
                            if e.cts.expect("cts") != 0 {
                                s.cts += 1;
                            }
                        }
                        if i == 0 && (video || tracks.len() == 1) {
                            // start_ms is the primary track's tfdt in ms.
                            assert_eq!(tfdt * 1000 / u64::from(timescale), seg.start_ms);
                        }
                        next_tfdt.retain(|t| t.0 != id);
                        next_tfdt.push((id, tfdt + sum));
                        frags.push((id, tfdt, sum));
                    }
                    assert_eq!(offset, moof_len + 8 + mdat.data.len());
                    s.fragments.push(frags);
                    s.segments.push(seg.clone());
                }
            }
        }
        s
    }

    fn total_ms(s: &Summary) -> u64 {
        s.segments.iter().map(|x| x.duration_ms).sum()
    }

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
        assert!((9_950..=10_050).contains(&total_ms(&s)), "{durations:?}");
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

    #[test]
    fn keyframes_a_hair_short_of_the_target_still_cut() {
        // OBS-like: 30 fps, 2 s keyframes stamped 1,999 ms apart.
        let tags = fixture();
        let video = |key: bool| {
            tags.iter()
                .find(|t| {
                    t.kind == TagKind::Video
                        && matches!(
                            flv::parse_video(&t.body),
                            Ok(VideoBody::AvcFrame(f)) if f.keyframe == key
                        )
                })
                .expect("frame")
                .clone()
        };
        let header = tags
            .iter()
            .find(|t| {
                t.kind == TagKind::Video
                    && matches!(flv::parse_video(&t.body), Ok(VideoBody::AvcConfig(_)))
            })
            .expect("header")
            .clone();
        let (key, delta) = (video(true), video(false));
        let mut feed = vec![Tag {
            timestamp_ms: 0,
            ..header
        }];
        for i in 0..600u32 {
            let (gop, j) = (i / 60, i % 60);
            let frame = if j == 0 { &key } else { &delta };
            feed.push(Tag {
                timestamp_ms: gop * 1999 + j * 33,
                ..frame.clone()
            });
        }
        let s = check(&remux(&feed, opts(0, 0)), 0);
        let durations: Vec<_> = s.segments.iter().map(|x| x.duration_ms).collect();
        assert_eq!(durations.len(), 10, "{durations:?}");
        assert!(durations[..9].iter().all(|d| *d == 1999), "{durations:?}");
        assert_eq!(cut_tolerance_ms(2000), 16);
        assert_eq!(cut_tolerance_ms(500), 5);
    }

    #[test]
    fn audio_only() {
        let tags: Vec<_> = fixture()
            .into_iter()
            .filter(|t| t.kind == TagKind::Audio)
            .collect();
        let out = remux(&tags, opts(500, 0));
        let s = check(&out, 0);
        assert_eq!(s.periods.len(), 1);
        assert_eq!(s.periods[0].codecs, "mp4a.40.2");
        assert_eq!(s.periods[0].width, None);
        assert_eq!(s.tracks[0], [(1, 44_100, false)]);
        assert_eq!(s.segments[0].start_ms, 500);
        let durations: Vec<_> = s.segments.iter().map(|x| x.duration_ms).collect();
        assert!(durations.len() >= 5, "{durations:?}");
        assert!(
            durations[..4].iter().all(|d| (2000..2050).contains(d)),
            "{durations:?}"
        );
        assert!((9_900..=10_100).contains(&total_ms(&s)), "{durations:?}");
    }

    #[test]
    fn video_only() {
        let tags: Vec<_> = fixture()
            .into_iter()
            .filter(|t| t.kind == TagKind::Video)
            .collect();
        let out = remux(&tags, opts(0, 0));
        let s = check(&out, 0);
        assert_eq!(s.periods.len(), 1);
        assert_eq!(s.periods[0].codecs, "avc1.4d401e");
        assert_eq!(s.tracks[0], [(1, 90_000, true)]);
        assert_eq!(s.segments.len(), 5);
        assert!((9_950..=10_050).contains(&total_ms(&s)));
    }

    #[test]
    fn timestamp_wrap_is_invisible() {
        let tags = fixture();
        let shifted: Vec<_> = tags
            .iter()
            .map(|t| Tag {
                timestamp_ms: t
                    .timestamp_ms
                    .wrapping_add((1u64 << 32).wrapping_sub(5000) as u32),
                ..t.clone()
            })
            .collect();
        assert!(shifted.iter().any(|t| t.timestamp_ms < 1000));
        assert_eq!(remux(&shifted, opts(0, 0)), remux(&tags, opts(0, 0)));
    }

    #[test]
    fn publisher_restart_keeps_timeline_continuous() {
        let tags = fixture();
        let mut feed: Vec<_> = tags
            .iter()
            .filter(|t| t.timestamp_ms < 5000)
            .cloned()
            .collect();
        feed.extend(tags.iter().cloned());
        let out = remux(&feed, opts(0, 0));
        let s = check(&out, 0);
        assert_eq!(s.periods.len(), 1, "same configs: same period");
        assert!(
            (14_900..=15_100).contains(&total_ms(&s)),
            "{}",
            total_ms(&s)
        );
        assert!(s.segments.iter().all(|x| x.duration_ms <= 3000));
    }

    #[test]
    fn forward_jump_is_absorbed() {
        let tags: Vec<_> = fixture()
            .into_iter()
            .map(|mut t| {
                if t.timestamp_ms >= 5000 {
                    t.timestamp_ms += 60_000;
                }
                t
            })
            .collect();
        let s = check(&remux(&tags, opts(0, 0)), 0);
        assert!((9_950..=10_100).contains(&total_ms(&s)), "{}", total_ms(&s));
    }

    #[test]
    fn resolution_change_starts_a_period() {
        let tags = fixture();
        let sps = high_profile_sps(120, 68, 4);
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend_from_slice(&record(&sps, &[0x68, 0xee, 0x3c, 0x80]));
        let new_header = Tag {
            kind: TagKind::Video,
            timestamp_ms: 5000,
            body: Bytes::from(body),
        };
        let mut feed: Vec<_> = tags
            .iter()
            .filter(|t| t.timestamp_ms < 5000)
            .cloned()
            .collect();
        feed.push(new_header);
        feed.extend(tags.iter().filter(|t| t.timestamp_ms >= 5000).cloned());
        let out = remux(&feed, opts(0, 0));
        let s = check(&out, 0);
        assert_eq!(s.periods.len(), 2);
        let p = &s.periods[1];
        assert_eq!(p.codecs, "avc1.640028,mp4a.40.2");
        assert_eq!((p.width, p.height), (Some(1920), Some(1080)));
        assert_eq!(p.start_ms, 5000);
        assert!((9_950..=10_050).contains(&total_ms(&s)));
        assert!(s.segments.iter().all(|x| x.keyframe));
    }

    fn asc_tag(timestamp_ms: u32, asc: &[u8]) -> Tag {
        let mut body = vec![0xaf, 0];
        body.extend_from_slice(asc);
        Tag {
            kind: TagKind::Audio,
            timestamp_ms,
            body: Bytes::from(body),
        }
    }

    #[test]
    fn audio_config_change_waits_for_a_keyframe() {
        let tags = fixture();
        let mut feed = Vec::new();
        for tag in &tags {
            if tag.kind == TagKind::Audio && tag.timestamp_ms >= 4000 && feed.len() < 1000 {
                // AAC-LC 48 kHz mono from here on.
                feed.push(asc_tag(tag.timestamp_ms, &[0x11, 0x88]));
                feed.reserve(1000);
            }
            let mut tag = tag.clone();
            // No keyframe at 5 s: the audio waits ~2 s for the one at 6 s.
            if tag.kind == TagKind::Video && tag.timestamp_ms == 5000 {
                let mut body = tag.body.to_vec();
                body[0] = 0x27;
                tag.body = Bytes::from(body);
            }
            feed.push(tag);
        }
        let out = remux(&feed, opts(0, 0));
        let s = check(&out, 0);
        assert_eq!(s.periods.len(), 2);
        assert_eq!(s.periods[1].start_ms, 6000);
        assert_eq!(s.tracks[1], [(1, 90_000, true), (2, 48_000, false)]);
        assert!((9_950..=10_050).contains(&total_ms(&s)), "{}", total_ms(&s));
        // The new period's first audio continues right after the old period's last.
        let cut = s
            .segments
            .iter()
            .position(|x| x.start_ms == 6000)
            .expect("cut");
        let audio_of = |f: &Vec<(u32, u64, u64)>| f.iter().find(|t| t.0 == 2).copied();
        let last_old = s.fragments[..cut]
            .iter()
            .rev()
            .find_map(audio_of)
            .expect("old");
        let first_new = s.fragments[cut..].iter().find_map(audio_of).expect("new");
        let old_end_ms = (last_old.1 + last_old.2) * 1000 / 44_100;
        let new_start_ms = first_new.1 * 1000 / 48_000;
        assert!(
            old_end_ms.abs_diff(new_start_ms) <= 1,
            "{old_end_ms} vs {new_start_ms}"
        );
    }

    #[test]
    fn audio_only_config_change() {
        let mut feed: Vec<_> = fixture()
            .into_iter()
            .filter(|t| t.kind == TagKind::Audio)
            .collect();
        let at = feed
            .iter()
            .position(|t| t.timestamp_ms >= 5000)
            .expect("5 s");
        feed.insert(at, asc_tag(5000, &[0x11, 0x88]));
        let s = check(&remux(&feed, opts(0, 0)), 0);
        assert_eq!(s.periods.len(), 2);
        assert_eq!(s.tracks[1], [(1, 48_000, false)]);
        assert!((9_900..=10_100).contains(&total_ms(&s)), "{}", total_ms(&s));
    }

    #[test]
    fn track_appearing_later_starts_a_period() {
        let tags = fixture();
        let header = tags
            .iter()
            .find(|t| t.kind == TagKind::Video)
            .expect("header");
        // A stray video frame before its header, then the header late, at 3 s.
        let stray = tags
            .iter()
            .filter(|t| t.kind == TagKind::Video)
            .nth(1)
            .expect("frame");
        let mut feed = Vec::new();
        for tag in &tags {
            if tag.kind == TagKind::Video && tag.timestamp_ms == 3000 && feed.len() > 1 {
                feed.push(Tag {
                    timestamp_ms: 3000,
                    ..header.clone()
                });
            }
            if tag.kind == TagKind::Video && tag.timestamp_ms == 1000 {
                feed.push(stray.clone());
            }
            if tag.kind == TagKind::Audio || tag.timestamp_ms >= 3000 {
                feed.push(tag.clone());
            }
        }
        let mut r = Remuxer::new(opts(0, 0));
        let mut out = Vec::new();
        let mut errors = 0;
        for tag in &feed {
            match r.push_tag(tag) {
                Ok(o) => out.extend(o),
                Err(Error::MissingConfig("video")) => errors += 1,
                Err(e) => panic!("{e}"),
            }
        }
        out.extend(r.finish());
        assert!(errors > 0, "frames before the video header are refused");
        let s = check(&out, 0);
        assert_eq!(s.periods.len(), 2);
        assert_eq!(s.periods[0].codecs, "mp4a.40.2");
        assert_eq!(s.periods[1].codecs, "avc1.4d401e,mp4a.40.2");
        // The audio-only period anchored the timeline on the first audio frame.
        let first_audio_ms = feed
            .iter()
            .find(|t| matches!(flv::parse_audio(&t.body), Ok(AudioBody::AacFrame(_))))
            .map(|t| u64::from(t.timestamp_ms))
            .expect("audio");
        assert_eq!(s.periods[1].start_ms, 3000 - first_audio_ms);
        assert!((9_900..=10_100).contains(&total_ms(&s)), "{}", total_ms(&s));
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
    fn short_single_track_publish_is_flushed() {
        let tags: Vec<_> = fixture()
            .into_iter()
            .filter(|t| t.kind == TagKind::Video && t.timestamp_ms < 300)
            .collect();
        let s = check(&remux(&tags, opts(0, 0)), 0);
        assert_eq!(s.periods.len(), 1);
        assert_eq!(s.segments.len(), 1);
        assert!((290..=310).contains(&total_ms(&s)), "{}", total_ms(&s));
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
