//! Ingest policy and recording: the application side of RTMP (and of the built-in test source).
//!
//! [`Ingest::publish`] decides whether a publish may start (app, name, key, already live), then
//! spawns one recorder task per publish that owns the stream's [`Recording`]: tags in (bounded
//! channel), [`Remuxer`] in the middle, durable periods and segments out, then announcement
//! (cache insert, events) — in that order, so nothing is announced before it is on disk.
//!
//! Wall clock: a period's `time_ms` is the arrival time of the session's first tag (never earlier
//! than the recording's previous end, so `time` grows monotonically across republishes); a
//! segment's `time_ms` is its period's plus its media offset, so wall clock and media time agree.

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
use crate::store::{PeriodMeta, Recording, SegmentMeta, Store};

/// Tags queued between a publisher and its recorder. About 10 s of 30 fps video plus audio:
/// absorbs an fsync stall; when full, only that publisher's connection is slowed (TCP
/// backpressure), never another's.
pub const TAG_QUEUE: usize = 1024;

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
    /// Recorder tasks; the node waits for them on shutdown so the last segment is flushed.
    pub tasks: TaskTracker,
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

impl PublishHandler for Ingest {
    fn publish(
        &self,
        app: &str,
        stream: &str,
        peer: SocketAddr,
    ) -> Result<mpsc::Sender<Tag>, Refusal> {
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
            store: self.store.clone(),
            bus: self.bus.clone(),
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            name: name.into(),
            recording,
            period: None,
            first_tag_ms: None,
            recorded: false,
        };
        self.tasks.spawn(recorder.run(rx, self.segment_target_ms));
        Ok(tx)
    }
}

/// One publish session's recorder.
struct Recorder {
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
    /// At least one period was written (so `Record.Stop` is due).
    recorded: bool,
}

impl Recorder {
    #[tracing::instrument(name = "recorder", skip_all, fields(stream = %self.name))]
    async fn run(mut self, mut rx: mpsc::Receiver<Tag>, segment_target_ms: u64) {
        let (timeline_start_ms, first_seq) = {
            let ix = self.recording.stream().read();
            let end = ix.segments.back().map(|s| s.start_ms + s.duration_ms);
            (
                end.or(ix.periods.last().map(|p| p.start_ms)).unwrap_or(0),
                ix.next_seq,
            )
        };
        let mut remux = Remuxer::new(RemuxOptions {
            segment_target_ms,
            timeline_start_ms,
            // mfhd sequence numbers are 32-bit; they only need to grow, and wrap after 270 years.
            first_sequence: first_seq as u32,
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

    async fn write_all(&mut self, outputs: Vec<Output>) -> Result<(), crate::store::Error> {
        for out in outputs {
            match out {
                Output::Period(p) => {
                    let time_ms = match &self.period {
                        Some(prev) => prev.time_ms + (p.start_ms as i64 - prev.start_ms as i64),
                        None => {
                            let prev_end = self
                                .recording
                                .stream()
                                .read()
                                .live_edge_ms()
                                .unwrap_or(i64::MIN);
                            self.first_tag_ms
                                .unwrap_or_else(crate::time::now_ms)
                                .max(prev_end)
                        }
                    };
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
                Output::Segment(s) => {
                    let Some(period) = &self.period else {
                        tracing::warn!("segment before any period; dropped");
                        continue;
                    };
                    let meta = SegmentMeta {
                        seq: 0,
                        period: period.id,
                        start_ms: s.start_ms,
                        duration_ms: s.duration_ms,
                        time_ms: period.time_ms + (s.start_ms as i64 - period.start_ms as i64),
                        length: 0,
                        hash: 0,
                    };
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
}
