//! Cutting: the open segment, the decision to cut (a keyframe at least the target less
//! [`cut_tolerance_ms`] after the segment's first video frame; audio-only, a full target; or any
//! frame beyond [`MAX_SEGMENT_BYTES`], [`MAX_SEGMENT_MS`], [`MAX_SEGMENT_SAMPLES`]) and the
//! closing of a segment into `moof` + `mdat`.

use bytes::Bytes;

use super::timeline::{ms_to_ticks, ticks_to_ms, ticks_to_ms_ceil, Placed, VIDEO_TICKS_PER_MS};
use super::{Error, Output, Period, Remuxer, Segment};
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

/// The segment being filled.
#[derive(Default)]
pub(super) struct Open {
    pub(super) start_ms: u64,
    pub(super) video: Vec<VideoSample>,
    pub(super) audio: Vec<AudioSample>,
    pub(super) bytes: usize,
}

impl Open {
    pub(super) fn is_empty(&self) -> bool {
        self.video.is_empty() && self.audio.is_empty()
    }

    pub(super) fn over_cap(&self, add_bytes: usize, at_ms: u64) -> bool {
        self.bytes.saturating_add(add_bytes) > MAX_SEGMENT_BYTES
            || self.video.len() + self.audio.len() >= MAX_SEGMENT_SAMPLES
            || at_ms.saturating_sub(self.start_ms) >= MAX_SEGMENT_MS
    }
}

/// How far short of `target_ms` a video keyframe may be and still cut the segment: 1 % of the
/// target, at most [`MAX_CUT_TOLERANCE_MS`].
pub fn cut_tolerance_ms(target_ms: u64) -> u64 {
    (target_ms / CUT_TOLERANCE_DIVISOR).min(MAX_CUT_TOLERANCE_MS)
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
        let video_end = self.open.video.last().map(|v| {
            let duration = self.video_last.map_or(DEFAULT_VIDEO_DURATION, |(_, d)| d);
            ticks_to_ms_ceil(v.dts.saturating_add(duration), VIDEO_TIMESCALE)
        });
        let audio_end = self.open.audio.last().and_then(|a| {
            let asc = self.period.as_ref()?.audio.as_ref()?;
            let end = a.dts.saturating_add(u64::from(asc.samples_per_frame));
            Some(ticks_to_ms_ceil(end, asc.sample_rate))
        });
        let end_ms = video_end
            .max(audio_end)
            .unwrap_or(self.open.start_ms)
            .max(self.open.start_ms.saturating_add(1));
        match self.cut(end_ms, None, true) {
            Ok(o) => o,
            Err(err) => {
                tracing::warn!(%err, "last segment dropped");
                Vec::new()
            }
        }
    }

    /// Adds a placed frame to the open segment, cutting first when due.
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
    pub(super) fn cut(
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
        let first_keyframe = fragments
            .iter()
            .find(|f| period.video.is_some() && f.track_id == period.video_id())
            .and_then(|f| f.samples.first())
            .filter(|s| s.sync)
            .map(|s| s.data.clone());
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
                avc_record: period.video.as_ref().map(|v| v.record.clone()),
            }));
        }
        out.push(Output::Segment(Segment {
            start_ms: open.start_ms,
            duration_ms: end_ms.saturating_sub(open.start_ms),
            data,
            keyframe,
            first_keyframe,
        }));
        self.end_ms = end_ms;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::Remuxer;
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
        let mut r = Remuxer::new(opts(0, 0));
        let mut out = Vec::new();
        for _ in 0..2 {
            for tag in &tags {
                out.extend(r.push_tag(tag).expect("good tag"));
            }
            out.extend(r.finish());
        }
        let s = check(&out, 0);
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
