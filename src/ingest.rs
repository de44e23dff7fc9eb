//! Ingest policy and recording: the application side of RTMP (and of the built-in test source).
//!
//! [`Ingest::publish`] decides whether a publish may start (app, name, key, already live), then
//! spawns one recorder task per publish that owns the stream's [`Recording`]: tags in (bounded
//! channel), [`Remuxer`] in the middle, durable periods and segments out, then announcement
//! (cache insert, events) — in that order, so nothing is announced before it is on disk.
//!
//! Wall clock ([`WallClock`]): a session's wall anchor is the arrival time of its first tag
//! (never earlier than the recording's previous end, so `time` grows across republishes), and a
//! segment's `time_ms` is the anchor plus its media time, so wall clock and media time agree
//! while the publisher sends in real time. A publisher sending faster than real time (ffmpeg
//! without `-re`, an encoder flushing its buffer) would put segments in the future; instead,
//! when a segment would end after the wall clock at the moment it is recorded, the anchor moves
//! back so that it ends then, and later segments follow the moved anchor (so they tile again
//! once the publisher is back to real time). Times never go back: no segment's `time_ms` (or
//! end) is below the previous one's; where that would put a segment's end after the wall clock
//! (a longer segment right after a shorter one in a burst), the segment is announced only once
//! its end has passed, so the live edge is never ahead of the wall clock. A period's `time_ms` is
//! its first segment's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::cache::{Cache, Key};
use crate::events::{Bus, Code, Event};
use crate::media::flv::Tag;
use crate::media::segmenter::{Output, RemuxOptions, Remuxer};
use crate::metrics::{self, Metrics};
use crate::rtmp::{PublishHandler, Refusal};
use crate::store::{PartOf, PeriodMeta, Recording, SegmentMeta, Store};

/// Tags queued between a publisher and its recorder. About 10 s of 30 fps video plus audio:
/// absorbs an fsync stall; when full, only that publisher's connection is slowed (TCP
/// backpressure), never another's.
pub const TAG_QUEUE: usize = 1024;

/// How far past the wall clock a segment may end when it is placed; the recorder announces it
/// once its end has passed, so readers never see a live edge ahead of the wall clock. Absorbs
/// network jitter (a publisher whose first tag arrived late looks a little early from then on)
/// without moving the anchor, so a real-time publisher's segments tile exactly. A segment further
/// ahead (a burst) moves the anchor so that it ends when it is recorded.
pub const ANNOUNCE_HOLD_MS: i64 = 100;

/// Places one publish session's segments on the wall clock (see the module doc).
///
/// Pure: the caller passes the wall clock. `time_ms` and `time_ms + duration_ms` never decrease
/// from one [`WallClock::place`] to the next (the index is searched by both), and a segment
/// never ends more than [`ANNOUNCE_HOLD_MS`] after `now_ms` unless that would make its time go
/// back (the clock stepped back, or a longer segment recorded in the same instant as a shorter
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// Wall ms of media time 0: a segment's time is `anchor_ms + start_ms` unless that would be
    /// in the future; moved back (never forward, except to keep times monotonic) when it is.
    anchor_ms: i64,
    /// The previous segment's time (at the start: the recording's previous end).
    floor_ms: i64,
    /// The previous segment's end (at the start: the recording's previous end).
    floor_end_ms: i64,
}

fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl WallClock {
    /// A session whose media time `media_ms` arrived at wall `wall_ms`, continuing a recording
    /// that ended at wall `prev_end_ms` (if any): its times are at or after that end.
    pub fn new(media_ms: u64, wall_ms: i64, prev_end_ms: Option<i64>) -> WallClock {
        let floor = prev_end_ms.unwrap_or(i64::MIN);
        WallClock {
            anchor_ms: wall_ms.max(floor).saturating_sub(ms_i64(media_ms)),
            floor_ms: floor,
            floor_end_ms: floor,
        }
    }

    /// Wall time of media time `media_ms` at the current anchor, not before the previous
    /// segment's time.
    pub fn at(&self, media_ms: u64) -> i64 {
        self.anchor_ms
            .saturating_add(ms_i64(media_ms))
            .max(self.floor_ms)
    }

    /// The wall time of the segment at media `media_start_ms` lasting `duration_ms`, recorded
    /// at wall `now_ms`: the anchor's time when that ends at most [`ANNOUNCE_HOLD_MS`] after
    /// `now_ms`, else earlier so that it ends at `now_ms`; never before the previous segment's
    /// time, nor ending before its end. Moves the anchor to it.
    pub fn place(&mut self, media_start_ms: u64, duration_ms: u64, now_ms: i64) -> i64 {
        let start = ms_i64(media_start_ms);
        let duration = ms_i64(duration_ms);
        let natural = self.anchor_ms.saturating_add(start);
        let ahead = natural.saturating_add(duration).saturating_sub(now_ms);
        let time = if ahead > ANNOUNCE_HOLD_MS {
            now_ms.saturating_sub(duration)
        } else {
            natural
        };
        let time = time
            .max(self.floor_ms)
            .max(self.floor_end_ms.saturating_sub(duration));
        self.anchor_ms = time.saturating_sub(start);
        self.floor_ms = time;
        self.floor_end_ms = self.floor_end_ms.max(time.saturating_add(duration));
        time
    }
}

/// How long a new recording waits for the archive's numbering.
const CONTINUATION_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The ingest side of a node.
#[derive(Debug)]
pub struct Ingest {
    pub store: Arc<Store>,
    pub bus: Bus,
    pub cache: Cache,
    pub metrics: Arc<Metrics>,
    /// RTMP application publishers must use.
    pub app: String,
    pub publish_key: Option<String>,
    pub segment_target_ms: u64,
    /// `record.part_target`: LL-HLS parts of about this duration; `None`: off.
    pub part_target_ms: Option<u64>,
    /// Recorder tasks; the node waits for them on shutdown so the last segment is flushed.
    pub tasks: TaskTracker,
    /// The shared archive: a new recording continues its numbering and media timeline.
    pub archive: Option<Arc<crate::archive::Archive>>,
    /// `access.publish_hook`: asked before a publish is accepted.
    pub publish_hook: Option<crate::hooks::PublishHook>,
    /// `node.name` (told to the publish hook).
    pub node: String,
    /// `record.thumbnails`: the worker segments' thumbnails are offered to.
    pub thumbs: Option<crate::thumbs::Thumbnailer>,
}

impl Ingest {
    fn refuse(&self, name: &str, description: String) -> Refusal {
        metrics::inc(&self.metrics.rtmp_publish_refused);
        let stream = crate::names::is_valid(name).then_some(name);
        self.bus.emit(Event::new(
            Code::PublishBadName,
            stream,
            description.clone(),
        ));
        Refusal {
            code: Code::PublishBadName,
            description,
        }
    }
}

/// The value of `key` in a `a=1&b=2` query.
fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

impl Ingest {
    /// The checks that need no I/O (application, name, publish key): the stream name and the
    /// key given, or the refusal.
    fn check<'a>(&self, app: &str, stream: &'a str) -> Result<(&'a str, &'a str), Refusal> {
        let (name, query) = stream.split_once('?').unwrap_or((stream, ""));
        if app != self.app {
            return Err(self.refuse(
                name,
                format!(
                    "unknown application {app:?}: publish to rtmp://HOST/{}/NAME",
                    self.app
                ),
            ));
        }
        if !crate::names::is_valid(name) {
            return Err(self.refuse(
                name,
                "invalid stream name: use 1 to 64 characters of A-Z a-z 0-9 _ -".into(),
            ));
        }
        if let Some(key) = &self.publish_key {
            match query_value(query, "key") {
                Some(k) if k == key => {}
                Some(_) => return Err(self.refuse(name, "wrong publish key".into())),
                None => {
                    return Err(
                        self.refuse(name, "missing publish key: publish as NAME?key=KEY".into())
                    )
                }
            }
        }
        Ok((name, query_value(query, "key").unwrap_or_default()))
    }
}

impl PublishHandler for Ingest {
    fn authorize<'a>(
        &'a self,
        app: &'a str,
        stream: &'a str,
        peer: SocketAddr,
    ) -> crate::rtmp::Authorization<'a> {
        Box::pin(async move {
            let (name, key) = self.check(app, stream)?;
            let Some(hook) = &self.publish_hook else {
                return Ok(());
            };
            let ask = crate::hooks::PublishAsk {
                action: "publish",
                app,
                name,
                key,
                addr: peer.to_string(),
                node: &self.node,
            };
            hook.ask(&ask).await.map_err(|why| self.refuse(name, why))
        })
    }

    fn publish(
        &self,
        app: &str,
        stream: &str,
        peer: SocketAddr,
    ) -> Result<mpsc::Sender<Tag>, Refusal> {
        let (name, _) = self.check(app, stream)?;
        let recording = match self.store.begin_recording(name) {
            Ok(r) => r,
            Err(crate::store::Error::AlreadyLive(_)) => {
                return Err(self.refuse(name, format!("stream {name:?} is already being published")))
            }
            Err(e) => return Err(self.refuse(name, format!("cannot record: {e}"))),
        };
        let (tx, rx) = mpsc::channel(TAG_QUEUE);
        metrics::inc(&self.metrics.rtmp_publishes);
        self.bus.emit(
            Event::new(
                Code::PublishStart,
                Some(name),
                format!("{name} is now published"),
            )
            .with("peer", peer.to_string()),
        );
        let recorder = Recorder {
            archive: self.archive.clone(),
            store: self.store.clone(),
            bus: self.bus.clone(),
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            name: name.into(),
            recording,
            period: None,
            first_tag_ms: None,
            clock: None,
            recorded: false,
            thumbs: self.thumbs.clone(),
            avc_record: None,
            open: None,
        };
        self.tasks
            .spawn(recorder.run(rx, self.segment_target_ms, self.part_target_ms));
        Ok(tx)
    }
}

/// One publish session's recorder.
struct Recorder {
    archive: Option<Arc<crate::archive::Archive>>,
    store: Arc<Store>,
    bus: Bus,
    cache: Cache,
    metrics: Arc<Metrics>,
    name: Arc<str>,
    recording: Recording,
    /// The period segments are currently written to.
    period: Option<PeriodMeta>,
    /// Wall clock of the session's first tag.
    first_tag_ms: Option<i64>,
    /// Segment wall times, from the session's first period on.
    clock: Option<WallClock>,
    /// At least one period was written (so `Record.Stop` is due).
    recorded: bool,
    thumbs: Option<crate::thumbs::Thumbnailer>,
    /// The current period's avcC (None: audio-only, no thumbnails).
    avc_record: Option<bytes::Bytes>,
    /// LL-HLS: the segment the parts being written belong to.
    open: Option<PartOf>,
}

impl Recorder {
    #[tracing::instrument(name = "recorder", skip_all, fields(stream = %self.name))]
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Tag>,
        segment_target_ms: u64,
        part_target_ms: Option<u64>,
    ) {
        // With [storage], continue where the archive is (other origins may have written it):
        // redundant origins starting together then number and cut alike. Tags wait in the
        // queue meanwhile; a store that does not answer in time is not waited for.
        let mut archive_end_ms = 0;
        if let Some(archive) = &self.archive {
            match tokio::time::timeout(CONTINUATION_WAIT, archive.continuation(&self.name)).await {
                Ok(Some((next_seq, end_ms))) => {
                    self.recording.continue_from(next_seq);
                    archive_end_ms = end_ms;
                }
                Ok(None) => {}
                Err(_) => tracing::warn!(
                    "the archive did not answer in time; numbering from the local recording"
                ),
            }
        }
        let (timeline_start_ms, first_seq) = {
            let ix = self.recording.stream().read();
            let end = ix.segments.back().map(|s| s.start_ms + s.duration_ms);
            (
                end.or(ix.periods.last().map(|p| p.start_ms))
                    .unwrap_or(0)
                    .max(archive_end_ms),
                ix.next_seq,
            )
        };
        self.recording.stream().set_part_target(part_target_ms);
        let mut remux = Remuxer::new(RemuxOptions {
            segment_target_ms,
            timeline_start_ms,
            // mfhd sequence numbers are 32-bit; they only need to grow, and wrap after 270 years.
            first_sequence: first_seq as u32,
            part_target_ms,
        });
        let mut bad_tags = 0u64;
        let mut failed = false;
        while let Some(tag) = rx.recv().await {
            self.first_tag_ms.get_or_insert_with(crate::time::now_ms);
            metrics::inc(&self.metrics.ingest_tags);
            metrics::add(&self.metrics.ingest_bytes, tag.body.len() as u64);
            match remux.push_tag(&tag) {
                Ok(outputs) => {
                    if let Err(e) = self.write_all(outputs).await {
                        self.fail(e);
                        failed = true;
                        break;
                    }
                }
                Err(e) => {
                    bad_tags += 1;
                    metrics::inc(&self.metrics.ingest_bad_tags);
                    if bad_tags <= 5 || bad_tags.is_power_of_two() {
                        tracing::warn!(error = %e, bad_tags, "dropping a tag the remuxer rejected");
                    }
                }
            }
        }
        drop(rx);
        if !failed {
            if let Err(e) = self.write_all(remux.finish()).await {
                self.fail(e);
            }
        }
        let name = self.name.clone();
        let recorded = self.recorded;
        self.recording.finish();
        if recorded {
            self.bus.emit(Event::new(
                Code::RecordStop,
                Some(&name),
                format!("recording of {name} stopped"),
            ));
        }
        self.bus.emit(Event::new(
            Code::UnpublishSuccess,
            Some(&name),
            format!("{name} is now unpublished"),
        ));
    }

    fn fail(&mut self, e: crate::store::Error) {
        self.report_trims();
        metrics::inc(&self.metrics.record_errors);
        tracing::error!(error = %e, "recording failed; ending the publish");
        self.bus.emit(Event::new(
            Code::RecordNoAccess,
            Some(&self.name),
            format!("cannot record: {e}"),
        ));
    }

    /// Announces the segments the store deleted (of any stream) to keep `record.min_free`.
    fn report_trims(&mut self) {
        for t in self.recording.take_trimmed() {
            metrics::add(&self.metrics.segments_deleted, t.segments as u64);
            self.bus.emit(
                Event::new(
                    Code::RecordTrimmed,
                    Some(&t.stream),
                    format!(
                        "deleted segments {}-{} of {} ({} bytes) to keep record.min_free",
                        t.first_seq, t.last_seq, t.stream, t.bytes
                    ),
                )
                .with("first_seq", t.first_seq)
                .with("last_seq", t.last_seq)
                .with("bytes", t.bytes),
            );
        }
    }

    /// Wall times of `outputs` (recorded at `now_ms`), one per output: a segment's from the
    /// [`WallClock`], a period's that of its first segment (which follows it in the same batch).
    fn wall_times(&mut self, outputs: &[Output], now_ms: i64) -> Vec<i64> {
        let mut times = vec![now_ms; outputs.len()];
        for (out, time) in outputs.iter().zip(times.iter_mut()) {
            match out {
                Output::Period(p) => {
                    if self.clock.is_none() {
                        let prev_end = self.recording.stream().read().live_edge_ms();
                        let first = self.first_tag_ms.unwrap_or(now_ms);
                        self.clock = Some(WallClock::new(p.start_ms, first, prev_end));
                    }
                }
                Output::Part(p) => {
                    if let Some(clock) = &self.clock {
                        *time = clock.at(p.start_ms);
                    }
                }
                Output::Segment(s) => {
                    if let Some(clock) = &mut self.clock {
                        *time = clock.place(s.start_ms, s.duration_ms, now_ms);
                    }
                }
            }
        }
        let mut next_segment = None;
        for (out, time) in outputs.iter().zip(times.iter_mut()).rev() {
            match out {
                Output::Segment(_) | Output::Part(_) => next_segment = Some(*time),
                Output::Period(p) => {
                    *time = next_segment
                        .or(self.clock.map(|c| c.at(p.start_ms)))
                        .unwrap_or(now_ms);
                }
            }
        }
        times
    }

    async fn write_all(&mut self, outputs: Vec<Output>) -> Result<(), crate::store::Error> {
        let times = self.wall_times(&outputs, crate::time::now_ms());
        for (out, time_ms) in outputs.into_iter().zip(times) {
            match out {
                Output::Period(p) => {
                    let meta = PeriodMeta {
                        id: 0,
                        codecs: p.codecs,
                        width: p.width,
                        height: p.height,
                        start_ms: p.start_ms,
                        time_ms,
                        init_hash: 0,
                        init_length: 0,
                    };
                    let init = p.init;
                    self.avc_record = p.avc_record;
                    let meta = self.recording.add_period(init.clone(), meta).await?;
                    self.report_trims();
                    self.cache
                        .insert(
                            Key::Init {
                                stream: self.name.clone(),
                                period: meta.id,
                            },
                            init,
                        )
                        .await;
                    let warning = crate::media::avc::browser_warning(&meta.codecs);
                    if let Some(warning) = warning {
                        tracing::warn!(period = meta.id, codecs = %meta.codecs, "{warning}");
                    }
                    if !self.recorded {
                        self.recorded = true;
                        let mut event = Event::new(
                            Code::RecordStart,
                            Some(&self.name),
                            format!("recording {}", self.name),
                        )
                        .with("period", meta.id)
                        .with("codecs", meta.codecs.clone());
                        if let Some(warning) = warning {
                            event = event.with("warning", warning);
                        }
                        self.bus.emit(event);
                    } else {
                        tracing::info!(period = meta.id, codecs = %meta.codecs, "new period (codec or resolution change)");
                    }
                    self.period = Some(meta);
                }
                Output::Part(p) => {
                    let Some(period) = &self.period else {
                        tracing::warn!("part before any period; dropped");
                        continue;
                    };
                    if p.index == 0 {
                        self.open = Some(PartOf {
                            period: period.id,
                            start_ms: p.start_ms,
                            time_ms,
                        });
                    }
                    let Some(of) = self.open.filter(|o| o.period == period.id) else {
                        continue;
                    };
                    // Not held like segments: a part is announced as soon as it is durable
                    // (a burst's parts may carry a provisional time ahead of the wall clock
                    // until their segment is placed).
                    let index = p.index;
                    let data = p.data.clone();
                    let written = self
                        .recording
                        .add_part(p.data, of, p.duration_ms, p.independent)
                        .await?;
                    self.report_trims();
                    if written.is_some() {
                        metrics::inc(&self.metrics.parts_written);
                        let seq = self.recording.stream().read().next_seq;
                        self.cache
                            .insert(
                                Key::Part {
                                    stream: self.name.clone(),
                                    seq,
                                    index,
                                },
                                data,
                            )
                            .await;
                    }
                }
                Output::Segment(s) => {
                    self.open = None;
                    let Some(period) = &self.period else {
                        tracing::warn!("segment before any period; dropped");
                        continue;
                    };
                    let meta = SegmentMeta {
                        seq: 0,
                        period: period.id,
                        start_ms: s.start_ms,
                        duration_ms: s.duration_ms,
                        time_ms,
                        length: 0,
                        hash: 0,
                    };
                    // The live edge is never ahead of the wall clock: WallClock ends a segment at
                    // most ANNOUNCE_HOLD_MS after it is recorded (more only where its time would
                    // otherwise go back: in a burst, a longer segment right after a shorter
                    // one), and it is announced once its end has passed. Bounded by its
                    // duration (a clock stepping back).
                    let ahead = meta.end_ms().saturating_sub(crate::time::now_ms());
                    if ahead > 0 {
                        let hold = u64::try_from(ahead).unwrap_or(0).min(s.duration_ms);
                        tokio::time::sleep(std::time::Duration::from_millis(hold)).await;
                    }
                    let started = Instant::now();
                    let meta = self.recording.add_segment(s.data.clone(), meta).await?;
                    self.report_trims();
                    metrics::add(
                        &self.metrics.segment_write_us,
                        started.elapsed().as_micros() as u64,
                    );
                    metrics::inc(&self.metrics.segments_written);
                    metrics::add(&self.metrics.segment_bytes_written, meta.length);
                    self.cache
                        .insert(
                            Key::Segment {
                                stream: self.name.clone(),
                                seq: meta.seq,
                            },
                            s.data,
                        )
                        .await;
                    tracing::debug!(
                        seq = meta.seq,
                        duration_ms = meta.duration_ms,
                        bytes = meta.length,
                        "segment recorded"
                    );
                    let stream = self.recording.stream().clone();
                    // After the announcement, never waiting: a busy worker skips this one.
                    if let (Some(thumbs), Some(avc_record), Some(sample)) =
                        (&self.thumbs, &self.avc_record, s.first_keyframe)
                    {
                        thumbs.offer(crate::thumbs::Job {
                            avc_record: avc_record.clone(),
                            sample,
                            path: stream.thumb_path(meta.seq),
                            seq: meta.seq,
                            made: stream.thumbs().clone(),
                        });
                    }
                    match self
                        .store
                        .enforce_retention(&stream, crate::time::now_ms())
                        .await
                    {
                        Ok(n) => metrics::add(&self.metrics.segments_deleted, n as u64),
                        Err(e) => tracing::warn!(error = %e, "retention failed"),
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values() {
        assert_eq!(query_value("key=k3y", "key"), Some("k3y"));
        assert_eq!(query_value("a=1&key=k&b", "key"), Some("k"));
        assert_eq!(query_value("keys=1", "key"), None);
        assert_eq!(query_value("", "key"), None);
    }

    /// Places `durations` back to back from media `start_ms`, recording segment `i` at
    /// `now(i)`; returns `(time, duration, now)` per segment.
    fn run(
        clock: &mut WallClock,
        start_ms: u64,
        durations: &[u64],
        mut now: impl FnMut(usize, u64) -> i64,
    ) -> Vec<(i64, u64, i64)> {
        let mut media = start_ms;
        let mut out = Vec::new();
        for (i, &d) in durations.iter().enumerate() {
            let n = now(i, media + d);
            out.push((clock.place(media, d, n), d, n));
            media += d;
        }
        out
    }

    fn assert_monotonic(placed: &[(i64, u64, i64)]) {
        for w in placed.windows(2) {
            let ((t0, d0, _), (t1, d1, _)) = (w[0], w[1]);
            assert!(t1 >= t0, "time goes back: {w:?}");
            assert!(t1 + d1 as i64 >= t0 + d0 as i64, "end goes back: {w:?}");
        }
    }

    fn assert_tiles(placed: &[(i64, u64, i64)]) {
        for w in placed.windows(2) {
            assert_eq!(w[1].0, w[0].0 + w[0].1 as i64, "tiling: {w:?}");
        }
    }

    /// Largest `time + duration - now` seen: > 0 is a live edge in the future.
    fn max_ahead(placed: &[(i64, u64, i64)]) -> i64 {
        placed
            .iter()
            .map(|&(t, d, n)| t + d as i64 - n)
            .max()
            .unwrap_or(i64::MIN)
    }

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn real_time_publisher_is_unchanged() {
        let mut clock = WallClock::new(40_000, T0, Some(T0 - 5_000));
        let durations = [2000, 2000, 1999, 2001, 2000, 2000, 1500];
        // Each segment is recorded a little after its end arrived (the next keyframe).
        let placed = run(&mut clock, 40_000, &durations, |i, end| {
            T0 + (end - 40_000) as i64 + (i as i64 * 7) % 50
        });
        let mut media = 40_000;
        for &(t, d, _) in &placed {
            assert_eq!(t, T0 + (media - 40_000) as i64);
            media += d;
        }
        assert_tiles(&placed);
        assert!(max_ahead(&placed) <= 0);
        assert_eq!(clock.at(media), T0 + (media - 40_000) as i64);

        // The first tag arrived 80 ms late: every later segment looks 80 ms early, still
        // within the hold, so the anchor stays and the segments tile.
        let mut clock = WallClock::new(0, T0 + 80, None);
        let placed = run(&mut clock, 0, &durations, |_, end| T0 + end as i64);
        assert_tiles(&placed);
        assert_eq!(placed[0].0, T0 + 80);
        assert!(max_ahead(&placed) <= ANNOUNCE_HOLD_MS);
    }

    #[test]
    fn burst_is_never_ahead_of_now_and_monotonic() {
        let mut clock = WallClock::new(0, T0, None);
        // 60 s of media at 10x real time: a 2 s segment every 200 ms, durations jittering.
        let durations: Vec<u64> = (0..30).map(|i| [2000, 1999, 2001, 2000][i % 4]).collect();
        let placed = run(&mut clock, 0, &durations, |i, _| T0 + 200 * (i as i64 + 1));
        let ahead = max_ahead(&placed);
        assert!(
            ahead <= ANNOUNCE_HOLD_MS,
            "live edge {ahead} ms in the future"
        );
        assert_monotonic(&placed);
        // Each ends when it was recorded: the live edge is now, nothing is held.
        assert!(
            placed.iter().all(|&(t, d, n)| t + d as i64 == n),
            "{placed:?}"
        );
    }

    #[test]
    fn after_a_burst_real_time_segments_tile_again() {
        let mut clock = WallClock::new(0, T0, None);
        let burst = run(&mut clock, 0, &[2000; 10], |i, _| T0 + 200 * (i as i64 + 1));
        let (t, d, n) = *burst.last().expect("burst");
        assert_eq!(t + d as i64, n);
        // Back to real time: each segment's end arrives `duration` after the previous one's.
        let mut live_now = n;
        let durations = [2000, 2000, 1999, 2001, 2000];
        let live = run(&mut clock, 20_000, &durations, |i, _| {
            live_now += durations[i] as i64;
            live_now
        });
        assert_eq!(
            live[0].0, n,
            "the first live segment starts where the burst ended"
        );
        assert_tiles(&live);
        assert!(max_ahead(&live) <= 0);
        let mut all = burst.clone();
        all.extend(&live);
        assert_monotonic(&all);
    }

    #[test]
    fn clock_steps() {
        let real_time = |from: i64| move |_: usize, end: u64| from + end as i64;
        // Forward: media keeps pacing the times (no gap, nothing in the future).
        let mut clock = WallClock::new(0, T0, None);
        let mut placed = run(&mut clock, 0, &[2000; 5], real_time(T0));
        placed.extend(run(
            &mut clock,
            10_000,
            &[2000; 5],
            real_time(T0 + 3_600_000),
        ));
        assert_tiles(&placed);
        assert!(max_ahead(&placed) <= 0);

        // Back by an hour: times hold still rather than go back ...
        let mut clock = WallClock::new(0, T0, None);
        let before = run(&mut clock, 0, &[2000; 5], real_time(T0));
        let stepped = T0 - 3_600_000;
        let during = run(&mut clock, 10_000, &[2000; 5], real_time(stepped));
        let mut all = before.clone();
        all.extend(&during);
        assert_monotonic(&all);
        assert!(
            during.iter().all(|&(t, _, _)| t == before[4].0),
            "{during:?}"
        );
        // ... until the clock is past them again; from then on nothing is in the future and
        // real-time segments tile.
        let after = run(&mut clock, 20_000, &[2000; 5], real_time(T0 + 1_000));
        all.extend(&after);
        assert_monotonic(&all);
        assert!(max_ahead(&after) <= 0, "{after:?}");
        assert_tiles(&after);
    }

    #[test]
    fn republish_keeps_time_at_or_after_the_previous_end() {
        // The previous publish ended (wall) at T0; the new one's first tag arrives earlier
        // (the wall clock stepped back) and it bursts.
        let prev_end = T0;
        let mut clock = WallClock::new(20_000, T0 - 10_000, Some(prev_end));
        assert!(clock.at(20_000) >= prev_end);
        let placed = run(&mut clock, 20_000, &[2000; 5], |i, _| {
            T0 - 9_000 + 100 * i as i64
        });
        assert!(placed.iter().all(|&(t, _, _)| t >= prev_end), "{placed:?}");
        assert_monotonic(&placed);
        // An ordinary republish: a first tag after the end, in real time.
        let mut clock = WallClock::new(20_000, T0 + 3_000, Some(prev_end));
        let placed = run(&mut clock, 20_000, &[2000; 3], |_, end| {
            T0 + 3_000 + (end - 20_000) as i64
        });
        assert_eq!(placed[0].0, T0 + 3_000);
        assert_tiles(&placed);
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let mut clock = WallClock::new(u64::MAX, i64::MIN, Some(i64::MAX));
        let _ = clock.place(u64::MAX, u64::MAX, i64::MIN);
        let _ = clock.place(0, 0, i64::MAX);
        let _ = clock.at(u64::MAX);
        let mut clock = WallClock::new(0, i64::MAX, None);
        let _ = clock.place(u64::MAX, 1, i64::MIN);
    }
}
