//! Periods: when the first period starts (both sequence headers, or [`PREROLL_MS`] of one
//! track), the queue before it, and the switch to a new period on a changed or appearing
//! sequence header (at the next video keyframe; audio-only: the next audio frame), with audio of
//! a changed config stashed meanwhile. Every buffer here is capped by [`MAX_QUEUED_FRAMES`] and
//! [`MAX_QUEUED_BYTES`].

use bytes::Bytes;

use super::cutting::Open;
use super::timeline::{ticks_to_ms, to_i64, Frame, Placed, VIDEO_TICKS_PER_MS};
use super::{Error, Output, Remuxer};
use crate::media::aac::AudioSpecificConfig;
use crate::media::avc::AvcConfig;
use crate::media::fmp4::{self, Codec, Track};

/// How long one track is buffered waiting for the other's sequence header before a
/// single-track period starts: encoders send both headers before any media, so this only
/// delays truly single-track streams.
pub const PREROLL_MS: i64 = 500;
/// Frames held before the first period or across a codec change. Over it, the oldest waiting
/// frame (before a period) or the new frame (across a change) is dropped.
pub const MAX_QUEUED_FRAMES: usize = 2048;
/// Bytes held before the first period or across a codec change.
pub const MAX_QUEUED_BYTES: usize = 32 << 20;

/// The current period: its configs and init segment.
pub(super) struct Active {
    pub(super) video: Option<AvcConfig>,
    pub(super) audio: Option<AudioSpecificConfig>,
    pub(super) init: Bytes,
    pub(super) codecs: String,
    pub(super) announced: bool,
}

impl Active {
    pub(super) fn video_id(&self) -> u32 {
        1
    }
    pub(super) fn audio_id(&self) -> u32 {
        if self.video.is_some() {
            2
        } else {
            1
        }
    }
}

pub(super) fn same_record<T>(a: &Option<T>, b: &Option<T>, record: impl Fn(&T) -> &Bytes) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => record(a) == record(b),
        (None, None) => true,
        _ => false,
    }
}

impl Remuxer {
    pub(super) fn on_config(&mut self) -> Result<Vec<Output>, Error> {
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

    pub(super) fn queue_full(&self, add_bytes: usize) -> bool {
        !self.queue.is_empty()
            && (self.queue.len() >= MAX_QUEUED_FRAMES
                || self.queued_bytes.saturating_add(add_bytes) > MAX_QUEUED_BYTES)
    }

    pub(super) fn enqueue(&mut self, frame: Frame) {
        self.queued_bytes = self.queued_bytes.saturating_add(frame.len());
        self.queue.push_back(frame);
    }

    pub(super) fn dequeue(&mut self) -> Option<Frame> {
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
    pub(super) fn try_start(&mut self, force: bool) -> Result<Vec<Output>, Error> {
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
        self.open = Open::at(self.timeline_start_ms);
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

    pub(super) fn begin_period(
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

    pub(super) fn on_frame_pending(&mut self, frame: Frame) -> Result<Vec<Output>, Error> {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{Error, Remuxer};
    use crate::media::avc::tests::{high_profile_sps, record};
    use crate::media::flv::{self, AudioBody, Tag, TagKind};
    use bytes::Bytes;

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
        assert!((9_950..=10_100).contains(&total_ms(&s)), "{}", total_ms(&s));
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
}
