//! Cutting: the open segment, the decision to cut (a keyframe at least the target less
//! [`cut_tolerance_ms`] after the segment's first video frame; audio-only, a full target; or any
//! frame beyond [`MAX_SEGMENT_BYTES`], [`MAX_SEGMENT_MS`], [`MAX_SEGMENT_SAMPLES`]) and the
//! closing of a segment into `moof` + `mdat`.

use bytes::Bytes;

use super::timeline::{ms_to_ticks, ticks_to_ms, ticks_to_ms_ceil, Placed, VIDEO_TICKS_PER_MS};
use super::{Error, Output, Part, Period, Remuxer, Segment};
use crate::media::avc::AvcConfig;
use crate::media::fmp4::{self, Fragment, Sample, VIDEO_TIMESCALE};

/// A segment is cut early (at any frame) beyond this size: a stream without keyframes, or whose
/// video stalled while audio goes on, would otherwise grow one segment without bound. 64 MiB
/// is ~60 s at 8 Mbit/s, far above any sane segment.
pub const MAX_SEGMENT_BYTES: usize = 64 << 20;
/// A segment is cut early beyond this much media, for the same reason as
/// [`MAX_SEGMENT_BYTES`], and so players and the DVR index never see hour-long segments.
pub const MAX_SEGMENT_MS: u64 = 60_000;
/// A segment is cut early beyond this many samples: tiny frames must not make `trun` huge.
pub const MAX_SEGMENT_SAMPLES: usize = 32_768;
/// Cap on how early before the target a keyframe may still cut: half a frame at 30 fps. Encoders
/// that round their frame times (OBS puts 2 s keyframes 1,999 ms apart) land a hair short of the
/// target; without slack such a keyframe is skipped and the segment doubles. Half a frame keeps
/// a genuinely shorter GOP (a whole frame or more short) from cutting early.
pub const MAX_CUT_TOLERANCE_MS: u64 = 16;
/// Share of the target a keyframe may fall short of it and still cut (1 %), so short targets
/// get proportionally less slack than [`MAX_CUT_TOLERANCE_MS`].
const CUT_TOLERANCE_DIVISOR: u64 = 100;
/// Duration given to a lone video frame whose successor never came (1/30 s at 90 kHz).
pub(super) const DEFAULT_VIDEO_DURATION: u64 = 3_000;

pub(super) struct VideoSample {
    pub(super) dts: u64,
    pub(super) cts: i32,
    pub(super) keyframe: bool,
    pub(super) data: Bytes,
}

pub(super) struct AudioSample {
    pub(super) dts: u64,
    pub(super) data: Bytes,
}

/// The segment being filled: its samples not yet in a part (`video`, `audio`) and the parts
/// already emitted. The segment's bytes are the concatenation of its parts, in order.
#[derive(Default)]
pub(super) struct Open {
    pub(super) start_ms: u64,
    /// Samples not yet emitted in a part, in decode order.
    pub(super) video: Vec<VideoSample>,
    pub(super) audio: Vec<AudioSample>,
    /// Bytes of every sample of the segment (emitted or not).
    pub(super) bytes: usize,
    /// Samples of the segment (emitted or not).
    samples: usize,
    /// The segment's first video and audio dts (the cut decision measures from them).
    first_video_dts: Option<u64>,
    first_audio_dts: Option<u64>,
    /// `moof` + `mdat` of the parts emitted so far.
    parts: Vec<Bytes>,
    /// Timeline ms where the next part begins.
    part_start_ms: u64,
    /// The segment's first video sample is a sync sample (set with its first part).
    keyframe: Option<bool>,
    first_keyframe: Option<Bytes>,
}

impl Open {
    /// An empty segment starting at `start_ms`.
    pub(super) fn at(start_ms: u64) -> Open {
        Open {
            start_ms,
            part_start_ms: start_ms,
            ..Open::default()
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.video.is_empty() && self.audio.is_empty() && self.parts.is_empty()
    }

    pub(super) fn over_cap(&self, add_bytes: usize, at_ms: u64) -> bool {
        self.bytes.saturating_add(add_bytes) > MAX_SEGMENT_BYTES
            || self.samples >= MAX_SEGMENT_SAMPLES
            || at_ms.saturating_sub(self.start_ms) >= MAX_SEGMENT_MS
    }

    fn push_video(&mut self, v: VideoSample) {
        self.first_video_dts.get_or_insert(v.dts);
        self.bytes = self.bytes.saturating_add(v.data.len());
        self.samples += 1;
        self.video.push(v);
    }

    fn push_audio(&mut self, a: AudioSample) {
        self.first_audio_dts.get_or_insert(a.dts);
        self.bytes = self.bytes.saturating_add(a.data.len());
        self.samples += 1;
        self.audio.push(a);
    }
}

/// How far short of `target_ms` a video keyframe may be and still cut the segment: 1 % of the
/// target, at most [`MAX_CUT_TOLERANCE_MS`].
pub fn cut_tolerance_ms(target_ms: u64) -> u64 {
    (target_ms / CUT_TOLERANCE_DIVISOR).min(MAX_CUT_TOLERANCE_MS)
}

/// Whether a part that began at `first` is due before a sample at `at` (all in one timescale)
/// whose predecessor lasted `interval`: with it the part could run past `target`. The next
/// interval is taken as 1/8 longer than the last, since frame times rounded to the ms alternate
/// (33, 34, 33 ms at 30 fps). So a part never exceeds the target while intervals vary by less
/// than that, and falls short of it by less than 1.125 intervals (under 15 % of a 500 ms
/// target down to 15 fps).
pub fn part_due(first: u64, at: u64, interval: u64, target: u64) -> bool {
    let next = interval.saturating_add(interval / 8);
    at.saturating_sub(first).saturating_add(next) > target
}

/// One `moof` + `mdat` and what the segment needs to know of its first sample.
struct Chunk {
    data: Bytes,
    /// The chunk's first video sample is a sync sample (audio-only periods: always).
    independent: bool,
    /// That sample's data when it is a keyframe.
    first_keyframe: Option<Bytes>,
}

impl Remuxer {
    /// Unpublish: closes the open segment at the end of its last frame of any track.
    ///
    /// Audio usually runs past the last video frame (by up to a frame of each); the segment
    /// covers the longer track, rounded up to a whole ms, so that the next publish, which
    /// starts where this one ends, never decodes before what this one already played.
    pub(super) fn cut_last(&mut self) -> Vec<Output> {
        if self.period.is_none() || self.open.is_empty() {
            return Vec::new();
        }
        let last_video = self.open.video.last().map(|v| v.dts).or_else(|| {
            // Every video sample is in a part already: the last one is the newest seen.
            self.open
                .first_video_dts
                .and(self.video_last.map(|(dts, _)| dts))
        });
        let video_end = last_video.map(|dts| {
            let duration = self.video_last.map_or(DEFAULT_VIDEO_DURATION, |(_, d)| d);
            ticks_to_ms_ceil(dts.saturating_add(duration), VIDEO_TIMESCALE)
        });
        let last_audio = self.open.audio.last().map(|a| a.dts).or_else(|| {
            self.open
                .first_audio_dts
                .and(self.audio_next.map(|(next, _)| next))
                .and_then(|next| {
                    let spf = self.period.as_ref()?.audio.as_ref()?.samples_per_frame;
                    Some(next.saturating_sub(u64::from(spf)))
                })
        });
        let audio_end = last_audio.and_then(|dts| {
            let asc = self.period.as_ref()?.audio.as_ref()?;
            let end = dts.saturating_add(u64::from(asc.samples_per_frame));
            Some(ticks_to_ms_ceil(end, asc.sample_rate))
        });
        let end_ms = video_end
            .max(audio_end)
            .unwrap_or(self.open.start_ms)
            .max(self.open.part_start_ms.saturating_add(1))
            .max(self.open.start_ms.saturating_add(1));
        let mut out = Vec::new();
        // Audio running past the last video frame would make the last part longer than the
        // target: the video (with its audio) goes into a part of its own first.
        if let (Some(part_ms), Some(video_end)) = (self.part_target_ms, video_end) {
            if end_ms.saturating_sub(self.open.part_start_ms) > part_ms
                && video_end > self.open.part_start_ms
                && video_end < end_ms
                && !self.open.video.is_empty()
            {
                match self.flush_part(video_end, None) {
                    Ok(o) => out = o,
                    Err(err) => tracing::warn!(%err, "last part dropped"),
                }
            }
        }
        match self.cut(end_ms, None, true) {
            Ok(o) => {
                out.extend(o);
                out
            }
            Err(err) => {
                tracing::warn!(%err, "last segment dropped");
                Vec::new()
            }
        }
    }

    /// Adds a placed frame to the open segment, cutting the segment (or, with parts on, the
    /// part) first when due.
    pub(super) fn add(&mut self, placed: Placed) -> Result<Vec<Output>, Error> {
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
                let due = self
                    .open
                    .first_video_dts
                    .is_some_and(|first| keyframe && dts.saturating_sub(first) >= min_ticks);
                let interval = self
                    .video_last
                    .map_or(DEFAULT_VIDEO_DURATION, |(last, _)| dts.saturating_sub(last));
                if !self.open.is_empty() && (due || self.open.over_cap(data.len(), dts_ms)) {
                    out = self.cut(dts_ms, Some(dts), false)?;
                } else if let (Some(part_ms), Some(first)) =
                    (self.part_target_ms, self.open.video.first())
                {
                    let target = part_ms.saturating_mul(VIDEO_TICKS_PER_MS);
                    if part_due(first.dts, dts, interval, target) {
                        out = self.flush_part(dts_ms, Some(dts))?;
                    }
                }
                self.video_last = Some((dts, interval));
                self.open.push_video(VideoSample {
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
                    && self.open.first_audio_dts.is_some_and(|first| {
                        dts.saturating_sub(first) >= ms_to_ticks(self.target_ms, rate)
                    });
                if !self.open.is_empty() && (due || self.open.over_cap(data.len(), dts_ms)) {
                    let at_ms = dts_ms.max(self.open.start_ms.saturating_add(1));
                    out = self.cut(at_ms, None, false)?;
                } else if let (Some(part_ms), Some(first), false) =
                    (self.part_target_ms, self.open.audio.first(), has_video)
                {
                    let target = ms_to_ticks(part_ms, rate);
                    if part_due(first.dts, dts, u64::from(samples_per_frame), target) {
                        let at_ms = dts_ms.max(self.open.part_start_ms.saturating_add(1));
                        out = self.flush_part(at_ms, None)?;
                    }
                }
                self.audio_next = Some((dts.saturating_add(u64::from(samples_per_frame)), rate));
                self.open.push_audio(AudioSample { dts, data });
            }
        }
        Ok(out)
    }

    /// Emits the samples not yet in a part that lie before `end_ms` as the open segment's next
    /// part, ending at `end_ms` (`next_video`: the dts of the video frame that follows).
    fn flush_part(&mut self, end_ms: u64, next_video: Option<u64>) -> Result<Vec<Output>, Error> {
        let rate = self
            .period
            .as_ref()
            .and_then(|p| p.audio.as_ref())
            .map_or(1000, |a| a.sample_rate);
        let video = std::mem::take(&mut self.open.video);
        let split = self
            .open
            .audio
            .partition_point(|a| a.dts < ms_to_ticks(end_ms, rate));
        let rest = self.open.audio.split_off(split);
        let audio = std::mem::replace(&mut self.open.audio, rest);
        let following = self.open.audio.first().map(|a| a.dts);
        let mut out = Vec::with_capacity(2);
        let mut open = std::mem::take(&mut self.open);
        let emitted = self.emit_part(
            &mut open,
            &mut out,
            end_ms,
            (video, next_video),
            (audio, following),
        );
        self.open = open;
        emitted?;
        Ok(out)
    }

    /// Builds the next part of `open` from these samples, records it there and, with parts
    /// on, pushes it to `out` (after the period, when this is its first media).
    fn emit_part(
        &mut self,
        open: &mut Open,
        out: &mut Vec<Output>,
        end_ms: u64,
        video: (Vec<VideoSample>, Option<u64>),
        audio: (Vec<AudioSample>, Option<u64>),
    ) -> Result<(), Error> {
        let Some(chunk) = self.chunk(video, audio)? else {
            return Ok(());
        };
        self.announce_period(out, open.start_ms);
        if open.parts.is_empty() {
            open.keyframe = Some(chunk.independent);
            open.first_keyframe = chunk.first_keyframe;
        }
        if self.part_target_ms.is_some() {
            out.push(Output::Part(Part {
                index: u32::try_from(open.parts.len()).unwrap_or(u32::MAX),
                start_ms: open.part_start_ms,
                duration_ms: end_ms.saturating_sub(open.part_start_ms),
                data: chunk.data.clone(),
                independent: chunk.independent,
            }));
        }
        open.parts.push(chunk.data);
        open.part_start_ms = end_ms;
        Ok(())
    }

    /// The period's announcement, before its first media.
    fn announce_period(&mut self, out: &mut Vec<Output>, start_ms: u64) {
        let Some(period) = self.period.as_mut() else {
            return;
        };
        if period.announced {
            return;
        }
        period.announced = true;
        out.push(Output::Period(Period {
            init: period.init.clone(),
            codecs: period.codecs.clone(),
            width: period.video.as_ref().map(AvcConfig::width),
            height: period.video.as_ref().map(AvcConfig::height),
            start_ms,
            avc_record: period.video.as_ref().map(|v| v.record.clone()),
        }));
    }

    /// `moof` + `mdat` of these samples (`None` when there are none). Each list comes with the
    /// dts of the sample that follows it, which ends its last sample (without it: the previous
    /// video interval, one audio frame).
    fn chunk(
        &mut self,
        (video, next_video): (Vec<VideoSample>, Option<u64>),
        (audio, next_audio): (Vec<AudioSample>, Option<u64>),
    ) -> Result<Option<Chunk>, Error> {
        let Some(period) = self.period.as_ref() else {
            return Ok(None);
        };
        if video.is_empty() && audio.is_empty() {
            return Ok(None);
        }
        let samples_per_frame = period.audio.as_ref().map_or(1024, |a| a.samples_per_frame);
        let mut fragments = Vec::with_capacity(2);
        if let Some(first) = video.first() {
            let last_interval = self.video_last.map_or(DEFAULT_VIDEO_DURATION, |(_, d)| d);
            let base = first.dts;
            let nexts: Vec<Option<u64>> = video
                .iter()
                .skip(1)
                .map(|v| Some(v.dts))
                .chain([next_video])
                .collect();
            let samples = video
                .into_iter()
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
        if let Some(first) = audio.first() {
            let base = first.dts;
            let nexts: Vec<Option<u64>> = audio
                .iter()
                .skip(1)
                .map(|a| Some(a.dts))
                .chain([next_audio])
                .collect();
            let samples = audio
                .into_iter()
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
        let independent = match fragments.first() {
            Some(f) if period.video.is_some() && f.track_id == period.video_id() => {
                f.samples.first().is_some_and(|s| s.sync)
            }
            _ => period.video.is_none(),
        };
        let first_keyframe = fragments
            .iter()
            .find(|f| period.video.is_some() && f.track_id == period.video_id())
            .and_then(|f| f.samples.first())
            .filter(|s| s.sync)
            .map(|s| s.data.clone());
        let data = fmp4::media_segment(self.next_sequence, &fragments)?;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        Ok(Some(Chunk {
            data,
            independent,
            first_keyframe,
        }))
    }

    /// Closes the open segment at `end_ms` and opens the next one there.
    ///
    /// `next_video` is the dts of the video frame that follows (the last frame's duration
    /// runs to it; without it, the previous interval). Audio frames at or after `end_ms` move
    /// to the next segment unless `keep_audio` (their config is ending with this period).
    /// With parts on, what is not yet in a part becomes the segment's last part.
    pub(super) fn cut(
        &mut self,
        end_ms: u64,
        next_video: Option<u64>,
        keep_audio: bool,
    ) -> Result<Vec<Output>, Error> {
        let mut open = std::mem::replace(&mut self.open, Open::at(end_ms));
        let Some(period) = self.period.as_ref() else {
            return Ok(Vec::new());
        };
        let rate = period.audio.as_ref().map_or(1000, |a| a.sample_rate);
        let audio_only = period.video.is_none();
        if !keep_audio {
            let end_ticks = ms_to_ticks(end_ms, rate);
            let split = open.audio.partition_point(|a| a.dts < end_ticks);
            for a in open.audio.split_off(split) {
                self.open.push_audio(a);
            }
        }
        let mut out = Vec::with_capacity(3);
        let video = std::mem::take(&mut open.video);
        let audio = std::mem::take(&mut open.audio);
        let following = self.open.audio.first().map(|a| a.dts);
        self.emit_part(
            &mut open,
            &mut out,
            end_ms,
            (video, next_video),
            (audio, following),
        )?;
        if open.parts.is_empty() {
            return Ok(out);
        }
        let data = if open.parts.len() == 1 {
            open.parts.swap_remove(0)
        } else {
            let mut buf = bytes::BytesMut::with_capacity(open.parts.iter().map(Bytes::len).sum());
            for p in &open.parts {
                buf.extend_from_slice(p);
            }
            buf.freeze()
        };
        out.push(Output::Segment(Segment {
            start_ms: open.start_ms,
            duration_ms: end_ms.saturating_sub(open.start_ms),
            data,
            keyframe: open.keyframe.unwrap_or(audio_only),
            first_keyframe: open.first_keyframe,
        }));
        self.end_ms = end_ms;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::cut_tolerance_ms;
    use crate::media::flv::{self, Tag, TagKind, VideoBody};

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

    /// Unpublish then republish: the last segment covers every track (audio runs past the last
    /// video frame), so the next period's first `tfdt` of every track is at or after the end of
    /// every track of the previous period, and decode times never go back.
    #[test]
    fn republish_starts_after_every_track_ends() {
        let tags = fixture();
        let s = check(&remux_twice(&tags, opts(0, 0)), 0);
        assert_eq!(s.periods.len(), 2);
        let cut = s
            .segments
            .iter()
            .position(|x| x.start_ms == s.periods[1].start_ms)
            .expect("second period");
        let timescale = |period: usize, id: u32| {
            let t = s.tracks[period].iter().find(|t| t.0 == id).expect("track");
            u128::from(t.1)
        };
        let last = &s.segments[cut - 1];
        let old_end_ms = u128::from(last.start_ms + last.duration_ms);
        let mut overlap_ms = 0f64;
        for &(old_id, _, _) in &s.tracks[0] {
            let end = s.fragments[..cut]
                .iter()
                .flatten()
                .filter(|f| f.0 == old_id)
                .map(|f| u128::from(f.1 + f.2))
                .max()
                .expect("track has samples");
            let old_ts = timescale(0, old_id);
            assert!(
                end * 1000 <= old_end_ms * old_ts,
                "track {old_id} ends after the period's last segment"
            );
            for &(new_id, _, _) in &s.tracks[1] {
                let start = s.fragments[cut..]
                    .iter()
                    .flatten()
                    .find(|f| f.0 == new_id)
                    .map(|f| u128::from(f.1))
                    .expect("track has samples");
                let new_ts = timescale(1, new_id);
                overlap_ms = overlap_ms.max(
                    (end * new_ts) as f64 / (old_ts * new_ts) as f64 * 1000.0
                        - (start * old_ts) as f64 / (old_ts * new_ts) as f64 * 1000.0,
                );
            }
        }
        assert!(
            overlap_ms <= 0.0,
            "the second period starts {overlap_ms:.3} ms before the first one ends"
        );
    }
}
