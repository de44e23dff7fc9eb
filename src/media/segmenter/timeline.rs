//! Timeline: publisher timestamps (32-bit ms, any start, may wrap) unwrapped and mapped onto the
//! stream timeline, jumps absorbed, frames placed per track, and tick conversions.
//!
//! The offset (timeline ms = publisher ms + offset) is fixed at the first period's first frame
//! and moved only by a jump (see [`JUMP_FORWARD_MS`], [`JUMP_BACKWARD_MS`]). Video dts are
//! 90 kHz ticks (exact for ms) and strictly increase; audio dts are samples at the period's rate
//! and run contiguously unless the publisher is more than [`AUDIO_RESYNC_MS`] ahead.

use bytes::Bytes;

use super::Remuxer;
use crate::media::aac::AudioSpecificConfig;
use crate::media::fmp4::VIDEO_TIMESCALE;

/// A forward jump in publisher time beyond this is absorbed instead of becoming a gap.
pub const JUMP_FORWARD_MS: i64 = 10_000;
/// A backward step beyond this is a clock reset (audio/video interleaving stays well below).
pub const JUMP_BACKWARD_MS: i64 = 1_000;
/// Audio runs contiguously until the publisher's time is this far ahead of it.
pub const AUDIO_RESYNC_MS: i64 = 100;
/// Video ticks per millisecond (90 kHz).
pub(super) const VIDEO_TICKS_PER_MS: u64 = VIDEO_TIMESCALE as u64 / 1000;

/// A media frame as received, with its unwrapped publisher time.
#[derive(Debug, Clone)]
pub(super) enum Frame {
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
    pub(super) fn ext_ms(&self) -> i64 {
        match self {
            Frame::Video { ext_ms, .. } | Frame::Audio { ext_ms, .. } => *ext_ms,
        }
    }
    pub(super) fn len(&self) -> usize {
        match self {
            Frame::Video { data, .. } | Frame::Audio { data, .. } => data.len(),
        }
    }
    pub(super) fn is_video(&self) -> bool {
        matches!(self, Frame::Video { .. })
    }
}

/// A frame placed on the timeline.
pub(super) enum Placed {
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

/// Unwraps 32-bit publisher timestamps into a monotonic-ish 64-bit count.
#[derive(Default)]
pub(super) struct Unwrap {
    last_raw: Option<u32>,
    ext_ms: i64,
}

impl Unwrap {
    pub(super) fn push(&mut self, raw: u32) -> i64 {
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

pub(super) fn ms_to_ticks(ms: u64, rate: u32) -> u64 {
    let t = (u128::from(ms) * u128::from(rate)).div_ceil(1000);
    u64::try_from(t).unwrap_or(u64::MAX)
}

pub(super) fn ticks_to_ms(ticks: u64, rate: u32) -> u64 {
    let ms = u128::from(ticks) * 1000 / u128::from(rate.max(1));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// `ticks` at `rate` in ms, rounded up: an end time that must not fall before the last sample.
pub(super) fn ticks_to_ms_ceil(ticks: u64, rate: u32) -> u64 {
    let ms = (u128::from(ticks) * 1000).div_ceil(u128::from(rate.max(1)));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Remuxer {
    /// Maps a publisher time onto the timeline, absorbing jumps; `expected_ms` is where the
    /// track would continue.
    pub(super) fn timeline_ms(&mut self, ext_ms: i64, expected_ms: Option<i64>) -> i64 {
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
    pub(super) fn audio_next_at(&self, rate: u32) -> Option<u64> {
        self.audio_next.map(|(ticks, r)| {
            if r == rate {
                ticks
            } else {
                ms_to_ticks(ticks_to_ms(ticks, r), rate)
            }
        })
    }

    /// Maps a frame's publisher time onto the timeline (see [`Remuxer::timeline_ms`]).
    pub(super) fn map(&mut self, frame: &Frame, audio: Option<&AudioSpecificConfig>) -> i64 {
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

    pub(super) fn place(&mut self, frame: Frame, audio: Option<&AudioSpecificConfig>) -> Placed {
        let at_ms = self.map(&frame, audio);
        self.place_at(frame, at_ms, audio)
    }

    /// Places a frame mapped to `at_ms` (audio at `audio`'s rate), keeping each track
    /// monotonic and never before the open segment's start.
    pub(super) fn place_at(
        &self,
        frame: Frame,
        at_ms: i64,
        audio: Option<&AudioSpecificConfig>,
    ) -> Placed {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::media::flv::Tag;

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
}
