//! The writer side: one task per stream recorded on this node, copying it to the archive while
//! holding the stream's lease, or standing by while another origin holds it.
//!
//! Each step reads the archive's new chunks, then (as writer) renews the lease when due and
//! uploads the next [`plan::next_batch`]: objects first (create-only, content-named, so a
//! retry or a peer's copy is harmless), then the chunk naming them (create-only at the next
//! number: the commit point). A failed step is retried with backoff; nothing of the local
//! recording waits for it. The backlog is the difference of the two indexes, so it survives a
//! restart without being stored anywhere.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::bucket::{Put, Version};
use super::chunk::{ArchiveIndex, Chunk, MAX_RECORDS_PER_CHUNK};
use super::keeper::{Keeper, Standing};
use super::lease::{Lease, Timing, Watch};
use super::plan::{self, Mapping, Upload};
use super::{follow, keys, Archive, Error};
use crate::events::{Code, Event};
use crate::store::Stream;

mod housekeeping;

/// Segments uploaded whose thumbnail is still to be copied; the oldest are given up beyond it.
const MAX_PENDING_THUMBS: usize = 32;
/// How long after its segment's upload a thumbnail is still waited for (the worker may be
/// behind, or skip it).
const THUMB_PATIENCE: Duration = Duration::from_secs(30);

/// A segment uploaded by this writer whose thumbnail is not in the archive yet.
#[derive(Debug, Clone, Copy)]
struct PendingThumb {
    local_seq: u64,
    seq: u64,
    hash: u64,
    since: Instant,
}

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

/// How long an object dropped from the archive's index stays in the bucket.
pub const DELETE_GRACE: Duration = Duration::from_secs(30);

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
        must_read: true,
        deletes: VecDeque::new(),
        sweep_at: None,
        thumbs: VecDeque::new(),
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
    /// The lease while this node holds it.
    held: Option<Keeper>,
    /// The next chunk must be read before writing (after taking the lease, or when a create
    /// found its number taken).
    must_read: bool,
    /// Objects dropped from the archive's index, deleted once their grace has passed (so a
    /// reader that listed them a moment ago still gets them whole).
    deletes: VecDeque<(Instant, String)>,
    /// When to sweep the bucket for objects no index names (after taking a lease over).
    sweep_at: Option<Instant>,
    /// Thumbnails to copy, best effort: never waited for, never failing a step.
    thumbs: VecDeque<PendingThumb>,
}

impl Writer {
    fn name(&self) -> &str {
        &self.stream.name
    }

    /// How long to wait when there is nothing to do: while holding, short enough to notice
    /// a lost lease promptly.
    fn held_wait(&self) -> Duration {
        match &self.held {
            Some(_) => self.timing.renew_every,
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
        // While holding, this node writes every chunk itself (a create that finds the number
        // taken sets `must_read`): reading the next chunk is needed only otherwise.
        if self.held.is_none() || self.must_read {
            let stream = self.stream.clone();
            let read = follow::catch_up(&self.archive, &stream.name, &mut self.ax).await;
            self.archive.note_health("archive read", &read);
            read?;
            self.must_read = false;
        }
        if let Some(k) = &self.held {
            match k.standing() {
                _ if self.ax.epoch > k.epoch() => {
                    self.lose("another origin wrote under a newer lease")
                }
                Standing::Lost(why) => self.lose(&why),
                Standing::Lapsed => {
                    // The store is slow or away: write nothing until a renewal answers.
                    let lapsed = Err::<(), _>(Error::timeout(
                        "renew",
                        &keys::lease(&self.stream.name),
                        self.timing.valid_for,
                    ));
                    self.archive.note_health("archive lease", &lapsed);
                    return Ok(Next::Wait(self.timing.poll_every));
                }
                Standing::Valid => {}
            }
        }
        if self.held.is_some() {
            self.upload_thumbs();
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
        let drop_before = self.retention();
        if let Some(next) = self.delete_due().await? {
            return Ok(next);
        }
        if self.held.is_none() {
            let trim = drop_before.is_some() && self.lease_is_ours_to_take();
            if !live && backlog.0 == 0 && !trim {
                return Ok(Next::Wait(Duration::from_secs(5)));
            }
            return self.acquire().await;
        }
        if let Some(batch) = batch {
            return self.upload(batch, live).await;
        }
        if let Some(before) = drop_before {
            return self.drop_before(before, live).await;
        }
        if let Some(next) = self.snapshot_if_due().await? {
            return Ok(next);
        }
        if self.sweep_at.is_some_and(|t| Instant::now() >= t) {
            self.sweep().await?;
            return Ok(Next::Now);
        }
        if !live {
            return self.finish().await;
        }
        Ok(Next::Wait(self.held_wait()))
    }

    /// Publishes the writer's state (archived seq, backlog, holding); returns the backlog.
    fn report(&mut self) -> (u64, u64) {
        let local = self.stream.read();
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
        self.held = Some(Keeper::start(
            self.archive.bucket.clone(),
            &self.stream.name,
            lease,
            version,
            sent,
            self.timing,
        ));
        self.must_read = true;
        self.mapping = Mapping::default();
        self.watch.reset();
        self.sweep_at = Some(Instant::now() + self.archive.delete_grace);
        self.state.set(|r| {
            r.writer = Some(me);
            r.holding = true;
        });
    }

    /// Writes the next chunk with `records`; `false` when this node may not write or another
    /// writer took the number (the next step reads it).
    async fn write_chunk(
        &mut self,
        records: Vec<crate::store::Record>,
        live: bool,
    ) -> Result<bool, Error> {
        let Some(k) = &self.held else {
            return Ok(false);
        };
        if !k.may_write() {
            return Ok(false);
        }
        let chunk = Chunk {
            epoch: k.epoch(),
            writer: self.archive.node.clone(),
            live,
            records,
        };
        let bytes = chunk.to_bytes();
        let len = bytes.len();
        let started = Instant::now();
        let put = self
            .archive
            .bucket
            .put_create(&keys::chunk(self.name(), self.ax.next_chunk), bytes)
            .await?;
        self.count_upload(len, started);
        if put == Put::Existed {
            self.must_read = true;
            return Ok(false);
        }
        self.ax.apply(chunk);
        Ok(true)
    }

    fn lose(&mut self, why: &str) {
        if self.held.take().is_some() {
            crate::metrics::inc(&self.archive.stats.leases_lost);
            tracing::warn!(stream = %self.name(), "archive lease lost: {why}; standing by");
        }
        self.state.set(|r| r.holding = false);
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
        if !self.write_chunk(batch.records, live).await? {
            // Another writer (or our own lost answer) took the number: read it and go on.
            return Ok(Next::Now);
        }
        self.archive
            .note_health("archive write", &Ok::<(), Error>(()));
        // A segment is announced once its end has passed and it is durable (see ingest), so
        // the delay to the bucket is measured from its wall-clock end.
        let now_ms = crate::time::now_ms();
        let mut archived = 0;
        {
            let local = self.stream.read();
            for u in &batch.uploads {
                if let Upload::Segment { local_seq, .. } = u {
                    archived += 1;
                    if let Some(s) = local.segment(*local_seq) {
                        let ms = u64::try_from(now_ms.saturating_sub(s.end_ms())).unwrap_or(0);
                        self.archive.lags.record(Duration::from_millis(ms));
                    }
                }
            }
        }
        crate::metrics::add(&self.archive.stats.segments_archived, archived);
        let since = Instant::now();
        for u in &batch.uploads {
            if let Upload::Segment {
                local_seq,
                seq,
                hash,
            } = *u
            {
                if self.thumbs.len() >= MAX_PENDING_THUMBS {
                    self.thumbs.pop_front();
                }
                self.thumbs.push_back(PendingThumb {
                    local_seq,
                    seq,
                    hash,
                    since,
                });
            }
        }
        self.upload_thumbs();
        Ok(Next::Now)
    }

    /// Copies the thumbnails that exist by now of segments this writer uploaded, each in a
    /// task of its own: a thumbnail never delays or fails a segment upload. One that does not
    /// exist within [`THUMB_PATIENCE`] (skipped, audio-only) is given up; a failed copy is
    /// not retried (the track's cue then answers 404).
    fn upload_thumbs(&mut self) {
        let made = self.stream.thumbs().clone();
        let mut keep = VecDeque::with_capacity(self.thumbs.len());
        for t in self.thumbs.drain(..) {
            if made.contains(t.local_seq) {
                let (stream, archive) = (self.stream.clone(), self.archive.clone());
                tokio::spawn(async move {
                    let key = keys::thumb(&stream.name, t.seq, t.hash);
                    let bytes = match stream
                        .read_thumb(t.local_seq, crate::thumbs::MAX_BYTES)
                        .await
                    {
                        Ok(Some(b)) => b,
                        Ok(None) => return,
                        Err(e) => {
                            tracing::debug!(%key, error = %e, "thumbnail not readable; not archived");
                            return;
                        }
                    };
                    if let Err(e) = archive.bucket.put_create(&key, bytes).await {
                        tracing::debug!(%key, error = %e, "thumbnail upload failed (best effort)");
                    }
                });
            } else if t.since.elapsed() < THUMB_PATIENCE {
                keep.push_back(t);
            }
        }
        self.thumbs = keep;
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
        if self.held.is_none() {
            return Ok(Next::Now);
        }
        self.upload_thumbs();
        if self.ax.live && self.ax.writer.as_deref() == Some(self.archive.node.as_str()) {
            self.write_chunk(Vec::new(), false).await?;
            return Ok(Next::Now);
        }
        if let Some(k) = self.held.take() {
            k.release().await?;
        }
        tracing::info!(stream = %self.name(), "archive up to date; lease released");
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
