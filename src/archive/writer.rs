//! The writer side: one task per stream recorded on this node, copying it to the archive while
//! holding the stream's lease, or standing by while another origin holds it.
//!
//! Each step reads the archive's new chunks, then (as writer) renews the lease when due and
//! uploads the next [`plan::next_batch`]: objects first (create-only, content-named, so a
//! retry or a peer's copy is harmless), then the chunk naming them (create-only at the next
//! number: the commit point). A failed step is retried with backoff; nothing of the local
//! recording waits for it. The backlog is the difference of the two indexes, so it survives a
//! restart without being stored anywhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::bucket::{Put, Version};
use super::chunk::{ArchiveIndex, Chunk, MAX_RECORDS_PER_CHUNK};
use super::lease::{Lease, Timing, Watch};
use super::plan::{self, Mapping, Upload};
use super::{follow, keys, Archive, Error};
use crate::events::{Code, Event};
use crate::store::Stream;

/// What the writer task of one stream reports (status JSON and metrics).
#[derive(Debug, Default)]
pub struct State {
    inner: Mutex<Report>,
}

/// A snapshot of [`State`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The lease holder as last seen (`None`: nobody writes).
    pub writer: Option<String>,
    /// The newest seq in the archive.
    pub archived_seq: Option<u64>,
    /// Segments (and bytes) recorded here and not yet uploaded by this node.
    pub backlog: (u64, u64),
    /// This node holds the lease.
    pub holding: bool,
}

impl State {
    pub fn report(&self) -> Report {
        self.inner.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn backlog(&self) -> (u64, u64) {
        self.report().backlog
    }

    fn set(&self, f: impl FnOnce(&mut Report)) {
        if let Ok(mut r) = self.inner.lock() {
            f(&mut r);
        }
    }
}

/// The lease as held by this node.
#[derive(Debug)]
struct Held {
    lease: Lease,
    version: Version,
    /// When to renew next.
    renew_at: Instant,
    /// Past this, this node may write nothing more (see `lease`).
    valid_until: Instant,
}

/// What to do after a step.
enum Next {
    /// Step again at once.
    Now,
    /// Wait this long (or until the local recording changes).
    Wait(Duration),
}

/// The writer task of one stream; returns at `shutdown`.
pub async fn run(
    archive: Arc<Archive>,
    stream: Arc<Stream>,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let mut w = Writer {
        timing: Timing::of(archive.lease),
        archive,
        stream,
        state,
        ax: ArchiveIndex::default(),
        mapping: Mapping::default(),
        watch: Watch::default(),
        held: None,
        first_seen: HashMap::new(),
    };
    let mut changes = w.stream.timeline().subscribe();
    let mut failures = 0u32;
    loop {
        let wait = match w.step().await {
            Ok(Next::Now) => {
                failures = 0;
                continue;
            }
            Ok(Next::Wait(d)) => {
                failures = 0;
                d
            }
            Err(e) => {
                crate::metrics::inc(&w.archive.stats.upload_failures);
                w.archive.note_health("archive", &Err::<(), _>(e.clone()));
                failures = failures.saturating_add(1);
                tracing::debug!(stream = %w.stream.name, error = %e, "archive step failed; retrying");
                backoff(failures).min(w.held_wait())
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = changes.changed() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    w.state.set(|r| r.holding = false);
}

/// Backoff after `n` consecutive failures: 200 ms doubling up to 5 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << n.min(5).saturating_sub(1)))
        .min(Duration::from_secs(5))
}

struct Writer {
    archive: Arc<Archive>,
    stream: Arc<Stream>,
    state: Arc<State>,
    timing: Timing,
    ax: ArchiveIndex,
    mapping: Mapping,
    watch: Watch,
    held: Option<Held>,
    /// When each local segment (by local seq) was first seen here (≈ its announcement).
    first_seen: HashMap<u64, Instant>,
}

impl Writer {
    fn name(&self) -> &str {
        &self.stream.name
    }

    /// While holding, never sleep past the next renewal.
    fn held_wait(&self) -> Duration {
        match &self.held {
            Some(h) => h.renew_at.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(5),
        }
    }

    async fn step(&mut self) -> Result<Next, Error> {
        // Report first: during an outage the steps below fail, and the backlog is what an
        // operator wants to see then.
        self.report();
        if let Err(e) = self.archive.ensure_probed().await {
            if matches!(e, Error::Unsafe(_)) {
                return Ok(Next::Wait(Duration::from_secs(60)));
            }
            return Err(e);
        }
        let stream = self.stream.clone();
        let read = follow::catch_up(&self.archive, &stream.name, &mut self.ax).await;
        self.archive.note_health("archive read", &read);
        read?;
        if let Some(h) = &self.held {
            if self.ax.epoch > h.lease.epoch {
                self.lose("another origin wrote under a newer lease");
            }
        }
        let (live, batch) = {
            let local = self.stream.read();
            let batch = if self.held.is_some() {
                plan::next_batch(
                    &local,
                    &self.ax.index,
                    &mut self.mapping,
                    MAX_RECORDS_PER_CHUNK,
                )
            } else {
                None
            };
            (local.live, batch)
        };
        let backlog = self.report();
        if self.held.is_none() {
            if !live && backlog.0 == 0 {
                return Ok(Next::Wait(Duration::from_secs(5)));
            }
            return self.acquire().await;
        }
        if let Some(next) = self.renew_if_due().await? {
            return Ok(next);
        }
        if let Some(batch) = batch {
            return self.upload(batch, live).await;
        }
        if !live {
            return self.finish().await;
        }
        Ok(Next::Wait(self.held_wait()))
    }

    /// Publishes the writer's state (archived seq, backlog, holding); returns the backlog.
    fn report(&mut self) -> (u64, u64) {
        let now = Instant::now();
        let local = self.stream.read();
        for s in local.segments.iter().rev().take(MAX_RECORDS_PER_CHUNK) {
            self.first_seen.entry(s.seq).or_insert(now);
        }
        let holding = self.held.is_some();
        let backlog = if holding || self.lease_is_ours_to_take() {
            plan::backlog(&local, &self.ax.index, &self.mapping)
        } else {
            (0, 0)
        };
        drop(local);
        let archived_seq = self.ax.index.segments.back().map(|s| s.seq);
        self.state.set(|r| {
            r.archived_seq = archived_seq;
            r.backlog = backlog;
            r.holding = holding;
        });
        backlog
    }

    /// Whether a lease seen free (or ours from before a restart) would be taken.
    fn lease_is_ours_to_take(&self) -> bool {
        self.ax.writer.is_none() || self.ax.writer.as_deref() == Some(self.archive.node.as_str())
    }

    /// Tries to become the writer; `Wait` while another origin holds a live lease.
    async fn acquire(&mut self) -> Result<Next, Error> {
        let me = self.archive.node.clone();
        let key = keys::lease(self.name());
        let sent = Instant::now();
        let current = self.archive.bucket.get_versioned(&key, None).await?;
        let (next, version, from) = match current {
            None => {
                let lease = Lease {
                    writer: Some(me.clone()),
                    epoch: self.ax.epoch + 1,
                    beat: 0,
                };
                match self
                    .archive
                    .bucket
                    .put_create(&key, lease.to_bytes())
                    .await?
                {
                    Put::Created => {}
                    Put::Existed => return Ok(Next::Now),
                }
                // A create answers no version we can trust on every store: read it back.
                match self.archive.bucket.get_versioned(&key, None).await? {
                    Some((b, v)) if Lease::parse(&b).ok().as_ref() == Some(&lease) => {
                        self.took(lease, v, sent, self.ax.writer.clone());
                        return Ok(Next::Now);
                    }
                    _ => return Ok(Next::Now),
                }
            }
            Some((bytes, version)) => {
                let lease = Lease::parse(&bytes).map_err(|why| Error::Store {
                    op: "read",
                    key: key.clone(),
                    why,
                    fatal: false,
                })?;
                let free = lease.writer.is_none() || lease.writer.as_deref() == Some(&me);
                if !free {
                    let unchanged = self.watch.observe(&lease, Instant::now());
                    self.state.set(|r| r.writer = lease.writer.clone());
                    if unchanged < self.timing.expire_after {
                        return Ok(Next::Wait(self.timing.poll_every));
                    }
                }
                let from = lease.writer.clone().or_else(|| self.ax.writer.clone());
                (lease.next(&me), version, from)
            }
        };
        match self
            .archive
            .bucket
            .put_update(&key, next.to_bytes(), version)
            .await?
        {
            Some(v) => {
                self.took(next, v, sent, from);
                Ok(Next::Now)
            }
            None => {
                self.watch.reset();
                Ok(Next::Now)
            }
        }
    }

    /// Became the writer under `lease`.
    fn took(&mut self, lease: Lease, version: Version, sent: Instant, from: Option<String>) {
        let me = self.archive.node.clone();
        tracing::info!(stream = %self.name(), epoch = lease.epoch, "archive lease acquired; writing the archive");
        if let Some(from) = from.filter(|f| *f != me) {
            crate::metrics::inc(&self.archive.stats.takeovers);
            self.archive.bus.emit(
                Event::new(
                    Code::ArchiveTakeover,
                    Some(self.name()),
                    format!("{me} took over writing the archive from {from}"),
                )
                .with("from", from)
                .with("to", me.clone()),
            );
        }
        self.held = Some(Held {
            lease,
            version,
            renew_at: sent + self.timing.renew_every,
            valid_until: sent + self.timing.valid_for,
        });
        self.mapping = Mapping::default();
        self.watch.reset();
        self.state.set(|r| {
            r.writer = Some(me);
            r.holding = true;
        });
    }

    fn lose(&mut self, why: &str) {
        if self.held.take().is_some() {
            crate::metrics::inc(&self.archive.stats.leases_lost);
            tracing::warn!(stream = %self.name(), "archive lease lost: {why}; standing by");
        }
        self.state.set(|r| r.holding = false);
    }

    /// Renews the lease when due. `Some(next)` when the step should end here.
    async fn renew_if_due(&mut self) -> Result<Option<Next>, Error> {
        let Some(h) = &self.held else {
            return Ok(Some(Next::Now));
        };
        let now = Instant::now();
        if now >= h.valid_until {
            self.lose("not renewed in time (the store did not answer)");
            return Ok(Some(Next::Now));
        }
        if now < h.renew_at {
            return Ok(None);
        }
        let renewed = h.lease.renewed();
        let key = keys::lease(self.name());
        let answer = self
            .archive
            .bucket
            .put_update(&key, renewed.to_bytes(), h.version.clone())
            .await;
        match answer {
            Ok(Some(version)) => {
                self.held = Some(Held {
                    lease: renewed,
                    version,
                    renew_at: now + self.timing.renew_every,
                    valid_until: now + self.timing.valid_for,
                });
                Ok(None)
            }
            Ok(None) => {
                // Our own renewal may have landed with its answer lost: look.
                match self.archive.bucket.get_versioned(&key, None).await? {
                    Some((b, version)) if Lease::parse(&b).ok().as_ref() == Some(&renewed) => {
                        self.held = Some(Held {
                            lease: renewed,
                            version,
                            renew_at: now + self.timing.renew_every,
                            valid_until: now + self.timing.valid_for,
                        });
                        Ok(None)
                    }
                    _ => {
                        self.lose("another origin holds it now");
                        Ok(Some(Next::Now))
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Uploads a batch's objects, then its chunk.
    async fn upload(&mut self, batch: plan::Batch, live: bool) -> Result<Next, Error> {
        let name = self.name().to_owned();
        for u in &batch.uploads {
            let (key, bytes) = match *u {
                Upload::Init { local_period, hash } => {
                    let bytes = self
                        .stream
                        .read_init(local_period)
                        .await
                        .map_err(local_err)?;
                    (keys::init(&name, hash), bytes)
                }
                Upload::Segment {
                    local_seq,
                    seq,
                    hash,
                } => {
                    let bytes = self
                        .stream
                        .read_segment(local_seq)
                        .await
                        .map_err(local_err)?;
                    (keys::segment(&name, seq, hash), bytes)
                }
            };
            // Deleted locally meanwhile (retention): plan again.
            let Some(bytes) = bytes else {
                self.mapping = Mapping::default();
                return Ok(Next::Now);
            };
            self.put_object(&key, bytes).await?;
        }
        let Some(h) = &self.held else {
            return Ok(Next::Now);
        };
        if Instant::now() >= h.valid_until {
            self.lose("not renewed in time");
            return Ok(Next::Now);
        }
        let chunk = Chunk {
            epoch: h.lease.epoch,
            writer: self.archive.node.clone(),
            live,
            records: batch.records,
        };
        let n = self.ax.next_chunk;
        let started = Instant::now();
        let put = self
            .archive
            .bucket
            .put_create(&keys::chunk(&name, n), chunk.to_bytes())
            .await?;
        self.count_upload(chunk.to_bytes().len(), started);
        if put == Put::Existed {
            // Another writer (or our own lost answer) took number n: read it and go on.
            return Ok(Next::Now);
        }
        self.archive
            .note_health("archive write", &Ok::<(), Error>(()));
        let done = Instant::now();
        let mut lag = Duration::ZERO;
        let mut archived = 0;
        for u in &batch.uploads {
            if let Upload::Segment { local_seq, .. } = u {
                archived += 1;
                if let Some(t) = self.first_seen.remove(local_seq) {
                    lag += done.saturating_duration_since(t);
                }
            }
        }
        let stats = &self.archive.stats;
        crate::metrics::add(&stats.segments_archived, archived);
        crate::metrics::add(&stats.archive_lag_us, lag.as_micros() as u64);
        self.ax.apply(chunk);
        if let Some(oldest) = self.stream.read().segments.front().map(|s| s.seq) {
            self.first_seen.retain(|seq, _| *seq >= oldest);
        }
        Ok(Next::Now)
    }

    async fn put_object(&self, key: &str, bytes: Bytes) -> Result<(), Error> {
        let len = bytes.len();
        let started = Instant::now();
        self.archive.bucket.put_create(key, bytes).await?;
        self.count_upload(len, started);
        Ok(())
    }

    fn count_upload(&self, len: usize, started: Instant) {
        let s = &self.archive.stats;
        crate::metrics::inc(&s.objects_uploaded);
        crate::metrics::add(&s.bytes_uploaded, len as u64);
        crate::metrics::inc(&s.uploads_timed);
        crate::metrics::add(&s.upload_us, started.elapsed().as_micros() as u64);
    }

    /// The local recording ended and everything is uploaded: mark the archive not live (if
    /// this node said it was), then release the lease so a standby still recording takes over.
    async fn finish(&mut self) -> Result<Next, Error> {
        let Some(h) = &self.held else {
            return Ok(Next::Now);
        };
        if self.ax.live && self.ax.writer.as_deref() == Some(self.archive.node.as_str()) {
            let chunk = Chunk {
                epoch: h.lease.epoch,
                writer: self.archive.node.clone(),
                live: false,
                records: Vec::new(),
            };
            let key = keys::chunk(self.name(), self.ax.next_chunk);
            if self
                .archive
                .bucket
                .put_create(&key, chunk.to_bytes())
                .await?
                == Put::Created
            {
                self.ax.apply(chunk);
            }
            return Ok(Next::Now);
        }
        let released = Lease {
            writer: None,
            epoch: h.lease.epoch,
            beat: h.lease.beat + 1,
        };
        let key = keys::lease(self.name());
        self.archive
            .bucket
            .put_update(&key, released.to_bytes(), h.version.clone())
            .await?;
        tracing::info!(stream = %self.name(), "archive up to date; lease released");
        self.held = None;
        self.state.set(|r| {
            r.holding = false;
            r.writer = None;
        });
        Ok(Next::Wait(Duration::from_secs(5)))
    }
}

fn local_err(e: crate::store::Error) -> Error {
    Error::Store {
        op: "read local",
        key: String::new(),
        why: e.to_string(),
        fatal: false,
    }
}
