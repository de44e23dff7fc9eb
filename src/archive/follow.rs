//! The reader side: an archive stream served by a node that does not record it
//! (status source `{"kind":"archive"}`).
//!
//! A [`Followed`] stream keeps a [`Timeline`] like a recording's or a relay's, fed by a task
//! that GETs the next index chunk (every [`LIVE_POLL`] while the writer records, every
//! [`ENDED_POLL`] otherwise): no LIST per request. Segment and init bytes are pulled from the
//! bucket through the node's cache (memory, then disk tier; concurrent misses share one GET;
//! bodies verified against the index's hash), under cache keys of their own so they never mix
//! with a local recording of the same name.
//!
//! Whether the stream is live: the last chunk says its writer was recording, and the lease is
//! still being renewed (a writer killed mid-publish stops renewing; after `storage.lease`
//! without a new version the stream is shown ended, until a standby takes over).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::chunk::{Applied, ArchiveIndex, Chunk, Snapshot};
use super::lease::{Lease, Watch};
use super::{keys, Archive, Error};
use crate::cache::{Cache, Expect, Fetched, Key, PullError};
use crate::store::Timeline;

/// How often a live archive stream looks for its next chunk once it is due.
pub const LIVE_POLL: Duration = Duration::from_millis(100);
/// The longest wait between two looks at a live stream's next chunk.
pub const LIVE_POLL_MAX: Duration = Duration::from_millis(1000);
/// How often an ended archive stream looks for a new chunk (a republish elsewhere).
pub const ENDED_POLL: Duration = Duration::from_secs(3);
/// An archive stream nobody asked for this long stops being followed (the next request
/// follows it again), so a node does not poll the bucket for every stream it ever served.
pub const FOLLOW_IDLE: Duration = Duration::from_secs(600);
/// Chunks read at once while catching up.
const READ_AHEAD: u64 = 16;
/// A reader whose writer renews its lease but whose next chunk has not come for this long
/// fell behind the archive's garbage collection: it reloads from the newest snapshot.
const STUCK_AFTER: Duration = Duration::from_secs(60);

/// How long a follower of a live stream waits before looking for the next chunk: until the
/// next segment can have ended (the newest one's end plus its duration), then every
/// [`LIVE_POLL`]. So a new segment is seen within about a poll of reaching the bucket, at a
/// few GETs per segment rather than one every poll.
pub fn live_poll(ax: &ArchiveIndex, now_ms: i64) -> Duration {
    let Some(last) = ax.index.segments.back() else {
        return LIVE_POLL;
    };
    let due = last
        .end_ms()
        .saturating_add(i64::try_from(last.duration_ms).unwrap_or(0));
    let wait = u64::try_from(due.saturating_sub(now_ms)).unwrap_or(0);
    Duration::from_millis(wait).clamp(LIVE_POLL, LIVE_POLL_MAX)
}

/// Reads the chunks after `ax.next_chunk` and applies them; returns what each did.
pub async fn catch_up(
    archive: &Archive,
    name: &str,
    ax: &mut ArchiveIndex,
) -> Result<Vec<Applied>, Error> {
    if !ax.looked_for_snapshot && ax.next_chunk == 0 {
        if let Some(loaded) = newest_snapshot(archive, name).await? {
            *ax = loaded;
        }
        ax.looked_for_snapshot = true;
    }
    let mut applied = Vec::new();
    let mut window = 1;
    loop {
        let first = ax.next_chunk;
        let reads = (first..first + window).map(|n| {
            let key = keys::chunk(name, n);
            async move { (archive.bucket.get(&key, None).await, key) }
        });
        let results = futures_util::future::join_all(reads).await;
        let mut complete = true;
        for (r, key) in results {
            match r? {
                Some(bytes) => {
                    crate::metrics::inc(&archive.stats.chunks_read);
                    match Chunk::parse(&bytes) {
                        Ok(chunk) => applied.push(ax.apply(chunk)),
                        Err(why) => {
                            tracing::warn!(%key, %why, "skipping an unreadable index chunk");
                            ax.next_chunk += 1;
                        }
                    }
                }
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if !complete {
            return Ok(applied);
        }
        window = READ_AHEAD;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::tests::seg;
    use crate::store::Record;

    #[test]
    fn a_live_follower_looks_when_the_next_segment_is_due() {
        let mut ax = ArchiveIndex::default();
        assert_eq!(live_poll(&ax, 0), LIVE_POLL, "nothing yet: poll");
        let mut s = seg(0, 0, 10_000, 2_000);
        s.length = 1;
        ax.index.apply(Record::Segment(s));
        // The newest segment ended at 12 s; the next can end at 14 s.
        assert_eq!(live_poll(&ax, 12_050), LIVE_POLL_MAX);
        assert_eq!(live_poll(&ax, 13_500), Duration::from_millis(500));
        assert_eq!(live_poll(&ax, 13_990), LIVE_POLL);
        assert_eq!(live_poll(&ax, 20_000), LIVE_POLL, "overdue: poll");
    }
}

/// The index from the newest readable snapshot of `name`, if it has one (one LIST).
async fn newest_snapshot(archive: &Archive, name: &str) -> Result<Option<ArchiveIndex>, Error> {
    let mut numbers: Vec<u64> = archive
        .bucket
        .files(&keys::snapshots(name))
        .await?
        .iter()
        .filter_map(|f| keys::number_of(f))
        .collect();
    numbers.sort_unstable();
    for n in numbers.into_iter().rev() {
        let key = keys::snapshot(name, n);
        match archive.bucket.get(&key, None).await? {
            Some(bytes) => match Snapshot::parse(&bytes) {
                Ok(s) if s.next_chunk == n => return Ok(Some(ArchiveIndex::from_snapshot(s))),
                Ok(_) => tracing::warn!(%key, "snapshot names another chunk; skipped"),
                Err(why) => tracing::warn!(%key, %why, "unreadable snapshot; trying an older one"),
            },
            None => continue,
        }
    }
    Ok(None)
}

/// An archive stream this node serves without recording it.
#[derive(Debug)]
pub struct Followed {
    pub timeline: Arc<Timeline>,
    /// The lease holder while live (status JSON).
    writer: Mutex<Option<String>>,
    cache_name: Arc<str>,
    /// Unix ms of the last request for it (idle ones are let go, see [`FOLLOW_IDLE`]).
    touched: std::sync::atomic::AtomicI64,
    /// Stops its follower task (when let go, or at shutdown).
    stop: CancellationToken,
}

impl Followed {
    fn touch(&self) {
        self.touched
            .store(crate::time::now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether its follower still keeps the timeline current.
    pub fn following(&self) -> bool {
        !self.stop.is_cancelled()
    }

    /// `archive` status of this stream: (writer, newest seq).
    pub fn writer(&self) -> Option<String> {
        self.writer.lock().ok().and_then(|w| w.clone())
    }

    /// A media segment's bytes, through the cache.
    pub async fn segment(
        &self,
        archive: &Arc<Archive>,
        cache: &Cache,
        seq: u64,
    ) -> Option<Fetched> {
        let meta = self.timeline.read().segment(seq).cloned()?;
        let key = keys::segment(&self.timeline.name, seq, meta.hash);
        let cache_key = Key::Segment {
            stream: self.cache_name.clone(),
            seq,
        };
        Some(pull(archive, cache, cache_key, key, meta.length, meta.hash).await)
    }

    /// A period's init segment, through the cache.
    pub async fn init(
        &self,
        archive: &Arc<Archive>,
        cache: &Cache,
        period: u32,
    ) -> Option<Fetched> {
        let meta = self.timeline.read().period(period).cloned()?;
        let key = keys::init(&self.timeline.name, meta.init_hash);
        let cache_key = Key::Init {
            stream: self.cache_name.clone(),
            period,
        };
        Some(
            pull(
                archive,
                cache,
                cache_key,
                key,
                meta.init_length,
                meta.init_hash,
            )
            .await,
        )
    }
}

impl Followed {
    /// A segment's thumbnail from the archive (at most `max` bytes), through the cache, loaded
    /// once for concurrent requests. `None`: no such segment. `Err(Miss::Absent)`: the archive
    /// has no thumbnail for it (best effort upload); not cached.
    pub async fn thumb(
        &self,
        archive: &Arc<Archive>,
        cache: &Cache,
        seq: u64,
        max: u64,
    ) -> Option<Result<bytes::Bytes, Arc<crate::cache::Miss<super::Error>>>> {
        let meta = self.timeline.read().segment(seq).cloned()?;
        let key = keys::thumb(&self.timeline.name, seq, meta.hash);
        let cache_key = Key::Thumb {
            stream: self.cache_name.clone(),
            seq,
        };
        let bucket = archive.bucket.clone();
        let load = async move {
            Ok(bucket
                .get(&key, None)
                .await?
                .filter(|b| b.len() as u64 <= max))
        };
        Some(cache.get_or_load(cache_key, max, load).await)
    }
}

async fn pull(
    archive: &Arc<Archive>,
    cache: &Cache,
    cache_key: Key,
    key: String,
    length: u64,
    hash: u64,
) -> Fetched {
    let bucket = archive.bucket.clone();
    let expect = Expect {
        length,
        hash: Some(hash),
    };
    cache
        .get_or_pull(cache_key, expect, move |mut sink| async move {
            match bucket.get(&key, None).await {
                Ok(Some(bytes)) => sink
                    .push(bytes)
                    .map_err(|e| PullError::new(format!("archive object {key}: {e}"))),
                Ok(None) => Err(PullError::new(format!("archive object {key} is missing"))),
                Err(e) => Err(PullError::new(e.to_string())),
            }
        })
        .await
}

impl Archive {
    /// The archive stream `name`, followed from now on; `None` when the archive lacks it
    /// (a stream new to the archive is found within the listing's reuse time, 5 s). The first
    /// call for a name reads its index (bounded by the store's timeouts).
    pub async fn follow(
        self: &Arc<Self>,
        name: &str,
        shutdown: &CancellationToken,
    ) -> Option<Arc<Followed>> {
        if let Some(f) = self.followed.read().ok()?.get(name).cloned() {
            f.touch();
            return Some(f);
        }
        // Names the archive lacks cost no request each: they are checked against its listing
        // (one LIST every few seconds for the whole node), so a flood of made-up names is
        // not a flood of store requests.
        if !self.stream_names().await.iter().any(|n| n == name) {
            return None;
        }
        let me = self.clone();
        let shutdown = shutdown.clone();
        let owned = name.to_owned();
        self.probes
            .get_with(name.to_owned(), async move {
                me.start_following(&owned, shutdown).await
            })
            .await
    }

    async fn start_following(
        self: Arc<Self>,
        name: &str,
        shutdown: CancellationToken,
    ) -> Option<Arc<Followed>> {
        let mut ax = ArchiveIndex::default();
        let read = catch_up(&self, name, &mut ax).await;
        self.note_health("archive read", &read);
        if read.is_err() || ax.next_chunk == 0 {
            return None;
        }
        let timeline = Arc::new(Timeline::with_index(name.to_owned(), ax.index.clone()));
        timeline.set_live(ax.live);
        let followed = Arc::new(Followed {
            timeline,
            writer: Mutex::new(ax.live.then(|| ax.writer.clone()).flatten()),
            cache_name: format!("{name}@archive").into(),
            touched: crate::time::now_ms().into(),
            stop: shutdown.child_token(),
        });
        if let Ok(mut m) = self.followed.write() {
            if let Some(f) = m.get(name) {
                return Some(f.clone());
            }
            m.insert(name.to_owned(), followed.clone());
        }
        tracing::info!(stream = %name, segments = ax.index.segments.len(), "serving an archive stream");
        tokio::spawn(follow_task(self, followed.clone(), ax));
        Some(followed)
    }

    /// Stops following the archive streams nobody asked for within [`FOLLOW_IDLE`] of
    /// `now_ms`; returns how many.
    pub fn let_go_of_idle(&self, now_ms: i64) -> usize {
        let idle = i64::try_from(FOLLOW_IDLE.as_millis()).unwrap_or(i64::MAX);
        let Ok(mut m) = self.followed.write() else {
            return 0;
        };
        let before = m.len();
        m.retain(|_, f| {
            let keep =
                now_ms.saturating_sub(f.touched.load(std::sync::atomic::Ordering::Relaxed)) < idle;
            if !keep {
                f.stop.cancel();
            }
            keep
        });
        before - m.len()
    }
}

/// Keeps `f`'s timeline current until it is let go of (or the node shuts down).
async fn follow_task(archive: Arc<Archive>, f: Arc<Followed>, mut ax: ArchiveIndex) {
    let name = f.timeline.name.clone();
    let mut watch = Watch::default();
    let mut lease_checked = Instant::now();
    let mut writer_alive = true;
    let mut progress = Instant::now();
    loop {
        let poll = if ax.live && writer_alive {
            live_poll(&ax, crate::time::now_ms())
        } else {
            ENDED_POLL
        };
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = f.stop.cancelled() => return,
        }
        match catch_up(&archive, &name, &mut ax).await {
            Ok(applied) => {
                let mut records = Vec::new();
                for a in applied {
                    if let Applied::Accepted { records: r, .. } = a {
                        records.extend(r);
                        writer_alive = true;
                        watch.reset();
                    }
                }
                if !records.is_empty() {
                    f.timeline.apply(records);
                    progress = Instant::now();
                }
            }
            Err(e) => {
                archive.note_health("archive read", &Err::<(), _>(e));
                continue;
            }
        }
        // A live writer must keep renewing its lease; one that stopped is gone.
        if ax.live && lease_checked.elapsed() >= archive.lease / 4 {
            lease_checked = Instant::now();
            match archive.bucket.get(&keys::lease(&name), None).await {
                Ok(Some(b)) => match Lease::parse(&b) {
                    Ok(lease) => {
                        let unchanged = watch.observe(&lease, Instant::now());
                        writer_alive = lease.writer.is_some() && unchanged < archive.lease;
                        if let Ok(mut w) = f.writer.lock() {
                            *w = lease.writer.clone().filter(|_| writer_alive);
                        }
                    }
                    Err(why) => tracing::warn!(stream = %name, %why, "unreadable lease object"),
                },
                Ok(None) => writer_alive = false,
                Err(e) => archive.note_health("archive lease read", &Err::<(), _>(e)),
            }
        }
        if !(ax.live && writer_alive) {
            progress = Instant::now();
        } else if progress.elapsed() > STUCK_AFTER {
            progress = Instant::now();
            let mut fresh = ArchiveIndex::default();
            if catch_up(&archive, &name, &mut fresh).await.is_ok()
                && fresh.next_chunk > ax.next_chunk
            {
                tracing::warn!(stream = %name, from = ax.next_chunk, to = fresh.next_chunk, "archive reader fell behind; reloaded from a snapshot");
                f.timeline.replace(fresh.index.clone());
                ax = fresh;
            }
        }
        f.timeline.set_live(ax.live && writer_alive);
        if !(ax.live && writer_alive) {
            if let Ok(mut w) = f.writer.lock() {
                *w = None;
            }
        }
    }
}
