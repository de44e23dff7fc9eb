//! The shared archive (`[storage]`): recordings copied to an S3-compatible object store, served
//! by every node with the same `[storage]`, written by one origin at a time.
//!
//! Local first, archive behind: an origin records to `record.dir` as without `[storage]` and
//! announces after the local fsync; a [`writer`] task per recorded stream copies init segments,
//! segments and index chunks to the bucket in the background, create-only, retried with
//! backoff. The backlog is never kept anywhere but in the two indexes: on start-up (or after
//! an outage) the writer compares its local index with the archive's and uploads the
//! difference ([`plan`]).
//!
//! Object layout: [`keys`]. Index chunks and fencing: [`chunk`]. The writer's lease and why a
//! takeover is safe: [`lease`]. Reading: [`follow`] keeps an archive stream's timeline current
//! by GETting the next chunk (no LIST on the playback path) and reads bytes through the node's
//! cache tiers. The design with its failure cases is in `docs/archive.md`.

pub mod bucket;
pub mod chunk;
pub mod connect;
pub mod follow;
pub mod keeper;
pub mod keys;
pub mod lease;
pub mod plan;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use bucket::Bucket;
pub use connect::{connect, probe};
pub use follow::Followed;

use crate::config::StorageConfig;
use crate::events::Bus;

/// Errors at the archive's boundary (the store and what it holds).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("object store {op} {key}: {why}")]
    Store {
        op: &'static str,
        key: String,
        why: String,
        /// Retrying cannot help (no such bucket, credentials refused): a configuration error.
        fatal: bool,
    },
    /// The store does not honour conditional writes.
    #[error("{0}")]
    Unsafe(String),
    #[error("{0}")]
    Config(String),
}

impl Error {
    fn store(op: &'static str, key: &str, e: object_store::Error) -> Error {
        let (why, fatal) = match &e {
            object_store::Error::Unauthenticated { .. } => (
                "credentials rejected (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)".to_owned(),
                true,
            ),
            object_store::Error::PermissionDenied { .. } => (
                "access denied: the store refused these credentials, or they lack permission on \
                 this bucket, or the bucket does not exist (check AWS_ACCESS_KEY_ID / \
                 AWS_SECRET_ACCESS_KEY, storage.url and the bucket policy)"
                    .to_owned(),
                true,
            ),
            // A write answered 404: the bucket itself does not exist.
            object_store::Error::NotFound { .. } if op == "put" => (
                "the bucket does not exist (check storage.url)".to_owned(),
                true,
            ),
            _ => {
                let text = first_line(&e.to_string());
                if text.contains("error sending request") || text.contains("kind Connect") {
                    (
                        format!("cannot reach the store's endpoint (connection failed): {text}"),
                        false,
                    )
                } else {
                    (text, false)
                }
            }
        };
        Error::Store {
            op,
            key: key.to_owned(),
            why,
            fatal,
        }
    }

    /// A store operation that did not answer in time.
    pub(crate) fn timeout(op: &'static str, key: &str, after: Duration) -> Error {
        Error::Store {
            op,
            key: key.to_owned(),
            why: format!("no answer within {after:?}"),
            fatal: false,
        }
    }

    /// Whether retrying cannot help (configuration or an unsafe store).
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Store { fatal, .. } => *fatal,
            Error::Unsafe(_) | Error::Config(_) => true,
        }
    }
}

/// The first line of an error text, without credentials-bearing detail.
fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

crate::counters! {
    /// Counters of the archive (uploads, failures, takeovers).
    pub struct Stats {
        objects_uploaded => "counter" "dvrgate_archive_objects_uploaded_total", "Objects (init segments, segments, index chunks) written to the archive.";
        bytes_uploaded => "counter" "dvrgate_archive_bytes_uploaded_total", "Bytes written to the archive.";
        upload_failures => "counter" "dvrgate_archive_upload_failures_total", "Failed archive writes (each retried with backoff).";
        /// Sum of object upload times, microseconds.
        upload_us / 1e6 => "counter" "dvrgate_archive_upload_seconds_total", "Time spent in archive object uploads.";
        uploads_timed => "counter" "dvrgate_archive_upload_count_total", "Uploads counted in dvrgate_archive_upload_seconds_total.";
        segments_archived => "counter" "dvrgate_archive_segments_total", "Segments indexed in the archive by this node.";
        takeovers => "counter" "dvrgate_archive_takeovers_total", "Leases taken over from another writer.";
        leases_lost => "counter" "dvrgate_archive_leases_lost_total", "Leases this node lost (expired or taken over).";
        chunks_read => "counter" "dvrgate_archive_chunks_read_total", "Index chunks read from the archive.";
        store_errors => "counter" "dvrgate_archive_store_errors_total", "Failed archive reads and lease operations.";
    }
}

/// Delays from a segment's local announcement to its index chunk in the bucket: the last
/// [`Lags::KEPT`] for quantiles, and running totals.
#[derive(Debug, Default)]
pub struct Lags {
    inner: Mutex<LagsInner>,
}

#[derive(Debug, Default)]
struct LagsInner {
    recent: std::collections::VecDeque<f64>,
    sum: f64,
    count: u64,
}

impl Lags {
    pub const KEPT: usize = 4096;

    pub fn record(&self, lag: Duration) {
        if let Ok(mut l) = self.inner.lock() {
            if l.recent.len() == Self::KEPT {
                l.recent.pop_front();
            }
            let secs = lag.as_secs_f64();
            l.recent.push_back(secs);
            l.sum += secs;
            l.count += 1;
        }
    }

    /// The `q` quantile (0..=1) of the recent delays, in seconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let l = self.inner.lock().ok()?;
        let mut v: Vec<f64> = l.recent.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        v.get(i).copied()
    }

    fn render(&self, t: &mut crate::metrics::Text) {
        let (sum, count) = self.inner.lock().map_or((0.0, 0), |l| (l.sum, l.count));
        let quantiles: Vec<(f64, f64)> = [0.5, 0.95, 0.99]
            .into_iter()
            .filter_map(|q| self.quantile(q).map(|v| (q, v)))
            .collect();
        t.summary(
            "dvrgate_archive_lag_seconds",
            "Delay from a segment's local announcement to its index chunk in the archive (quantiles over the last 4096 segments).",
            &quantiles,
            sum,
            count,
        );
    }
}

/// The archive of one node.
pub struct Archive {
    pub bucket: Bucket,
    pub node: String,
    pub lease: Duration,
    pub bus: Bus,
    pub stats: Stats,
    /// `record.retention` and `max_bytes`, applied to the archive by its writer.
    pub policy: crate::store::Policy,
    /// How long an object dropped from the index stays (readers that listed it still get it).
    pub delete_grace: Duration,
    /// A snapshot of the index is written after this many chunks.
    pub snapshot_every: u64,
    /// Per stream recorded here: what its writer task reports (status JSON, metrics).
    writers: RwLock<HashMap<String, Arc<writer::State>>>,
    /// Archive streams followed for reading, by name.
    pub(crate) followed: RwLock<HashMap<String, Arc<Followed>>>,
    /// Single flight of "is this name in the archive?" and its negative answers.
    probes: moka::future::Cache<String, Option<Arc<Followed>>>,
    /// The archive's stream names (one entry), for `/streams`.
    listing: moka::future::Cache<(), Arc<Vec<String>>>,
    /// Store reachable as of the last operation (status, logs).
    healthy: std::sync::atomic::AtomicBool,
    /// The start-up probe passed (until it has, nothing is written).
    probed: std::sync::atomic::AtomicBool,
    /// Recent announcement-to-archived delays (see [`Lags`]).
    pub lags: Lags,
    /// Serializes probe attempts.
    probing: tokio::sync::Mutex<()>,
    /// Why the store was refused at a later probe (nothing is ever written then).
    refused: Mutex<Option<String>>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("bucket", &self.bucket)
            .field("node", &self.node)
            .finish()
    }
}

/// How long "not in the archive" is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// How long the archive's stream list is reused.
const LISTING_TTL: Duration = Duration::from_secs(5);
/// How often the streams recorded here are checked for one without a writer task.
const WRITER_SCAN: Duration = Duration::from_millis(500);

impl Archive {
    pub fn new(bucket: Bucket, node: &str, lease: Duration, bus: Bus) -> Archive {
        Archive {
            bucket,
            node: node.to_owned(),
            lease,
            bus,
            stats: Stats::default(),
            policy: crate::store::Policy {
                retention_ms: i64::MAX,
                max_bytes: u64::MAX,
            },
            delete_grace: writer::DELETE_GRACE,
            snapshot_every: chunk::SNAPSHOT_EVERY,
            writers: RwLock::default(),
            followed: RwLock::default(),
            probes: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(NEGATIVE_TTL)
                .build(),
            listing: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(LISTING_TTL)
                .build(),
            healthy: true.into(),
            probed: false.into(),
            lags: Lags::default(),
            probing: tokio::sync::Mutex::new(()),
            refused: Mutex::new(None),
        }
    }

    /// Connects to the store of `config` and proves it safe ([`probe`]). A store that is
    /// unsafe, a missing bucket or refused credentials are errors; a store that does not answer
    /// is not (recording must not depend on it): the probe is retried before the first write.
    pub async fn open(
        config: &StorageConfig,
        node: &str,
        policy: crate::store::Policy,
        bus: Bus,
    ) -> Result<Archive, Error> {
        let bucket = connect(config)?;
        let mut archive = Archive::new(bucket, node, config.lease.0, bus);
        archive.policy = policy;
        match archive.ensure_probed().await {
            Ok(()) => {}
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "the object store does not answer; recording locally until it does")
            }
        }
        Ok(archive)
    }

    /// Runs the probe unless it passed already. Writers call it before writing anything.
    pub async fn ensure_probed(&self) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        if self.probed.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(why) = self.refused.lock().ok().and_then(|r| r.clone()) {
            return Err(Error::Unsafe(why));
        }
        let _one = self.probing.lock().await;
        if self.probed.load(Ordering::Acquire) {
            return Ok(());
        }
        let r = probe(&self.bucket, &self.node).await;
        self.note_health("storage probe", &r);
        match &r {
            Ok(()) => self.probed.store(true, Ordering::Release),
            Err(e @ Error::Unsafe(_)) => {
                tracing::error!(error = %e, "refusing the object store; recording locally only");
                if let Ok(mut refused) = self.refused.lock() {
                    *refused = Some(e.to_string());
                }
            }
            Err(_) => {}
        }
        r
    }

    /// `store` of the status JSON: `ok`, `unreachable`, or why it was refused.
    pub fn store_state(&self) -> String {
        if let Some(why) = self.refused.lock().ok().and_then(|r| r.clone()) {
            return format!("refused: {why}");
        }
        if self.healthy() {
            "ok".into()
        } else {
            "unreachable (recording locally)".into()
        }
    }

    /// Starts a writer task for every stream recorded here, now and as new ones appear,
    /// until `shutdown`; every minute, lets go of archive streams nobody reads.
    pub fn spawn_writers(
        self: &Arc<Self>,
        store: Arc<crate::store::Store>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let tasks = tokio_util::task::TaskTracker::new();
            let mut tick = tokio::time::interval(WRITER_SCAN);
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => break,
                }
                ticks += 1;
                if ticks.is_multiple_of(120) {
                    let n = me.let_go_of_idle(crate::time::now_ms());
                    if n > 0 {
                        tracing::debug!(streams = n, "stopped following idle archive streams");
                    }
                }
                for stream in store.list() {
                    let state = {
                        let Ok(mut writers) = me.writers.write() else {
                            break;
                        };
                        if writers.contains_key(&stream.name) {
                            continue;
                        }
                        let state = Arc::new(writer::State::default());
                        writers.insert(stream.name.clone(), state.clone());
                        state
                    };
                    tasks.spawn(writer::run(me.clone(), stream, state, shutdown.clone()));
                }
            }
            tasks.close();
            tasks.wait().await;
        })
    }

    /// Where a new recording of `name` continues the archive: its next seq and the end of its
    /// media timeline; `None` when the archive lacks the stream or cannot be read.
    pub async fn continuation(&self, name: &str) -> Option<(u64, u64)> {
        let mut ax = chunk::ArchiveIndex::default();
        let read = follow::catch_up(self, name, &mut ax).await;
        self.note_health("archive read", &read);
        read.ok()?;
        if ax.next_chunk == 0 {
            return None;
        }
        let end = ax
            .index
            .segments
            .back()
            .map_or(0, |s| s.start_ms + s.duration_ms);
        Some((ax.index.next_seq, end))
    }

    /// The `archive` status of stream `name` as this node sees it: from the archive's view
    /// when that is what it serves (`followed`), else from its writer task.
    pub fn status(&self, name: &str, followed: Option<&Followed>) -> crate::wire::ArchiveStatus {
        let store = self.store_state();
        let report = self.writer(name).map(|w| w.report()).unwrap_or_default();
        match followed {
            Some(f) => crate::wire::ArchiveStatus {
                writer: f.writer(),
                archived_seq: f.timeline.read().segments.back().map(|s| s.seq),
                backlog: report.backlog.0,
                store,
            },
            None => crate::wire::ArchiveStatus {
                writer: report.writer,
                archived_seq: report.archived_seq,
                backlog: report.backlog.0,
                store,
            },
        }
    }

    /// Notes the store's health after an operation; logs the transitions.
    pub(crate) fn note_health<T>(&self, what: &str, r: &Result<T, Error>) {
        let ok = r.is_ok();
        let was = self.healthy.swap(ok, std::sync::atomic::Ordering::Relaxed);
        match (&r, was) {
            (Err(e), true) => {
                tracing::warn!(error = %e, "{what}: the object store is failing; recording goes on locally")
            }
            (Ok(_), false) => tracing::info!("the object store answers again"),
            _ => {}
        }
        if !ok {
            crate::metrics::inc(&self.stats.store_errors);
        }
    }

    /// Whether the store answered the last operation.
    pub fn healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The writer state of a stream recorded here, if it has one.
    pub fn writer(&self, name: &str) -> Option<Arc<writer::State>> {
        self.writers.read().ok()?.get(name).cloned()
    }

    fn writer_states(&self) -> Vec<Arc<writer::State>> {
        self.writers
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Writes the archive's metrics (counters and backlog gauges).
    pub fn render(&self, t: &mut crate::metrics::Text) {
        self.stats.render(t);
        let (mut segs, mut bytes) = (0, 0);
        for w in self.writer_states() {
            let (s, b) = w.backlog();
            segs += s;
            bytes += b;
        }
        t.metric(
            "dvrgate_archive_backlog_segments",
            "gauge",
            "Segments recorded here and not yet in the archive.",
            &[("", segs as f64)],
        );
        t.metric(
            "dvrgate_archive_backlog_bytes",
            "gauge",
            "Bytes recorded here and not yet in the archive.",
            &[("", bytes as f64)],
        );
        self.lags.render(t);
        t.metric(
            "dvrgate_archive_store_up",
            "gauge",
            "1 while the object store answers.",
            &[("", if self.healthy() { 1.0 } else { 0.0 })],
        );
    }

    /// The names of the archive's streams (a LIST, reused for [`LISTING_TTL`]).
    pub async fn stream_names(&self) -> Arc<Vec<String>> {
        let bucket = self.bucket.clone();
        self.listing
            .get_with((), async move {
                match bucket.folders("").await {
                    Ok(mut v) => {
                        v.retain(|n| crate::names::is_valid(n));
                        v.sort();
                        Arc::new(v)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list the archive's streams");
                        Arc::new(Vec::new())
                    }
                }
            })
            .await
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod end_to_end;
