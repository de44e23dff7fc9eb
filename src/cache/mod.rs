//! The segment cache: a moka LRU memory tier weighed in bytes, an optional disk tier that
//! evicted entries spill to, and single flight across both for entries fetched from upstream.
//!
//! Invariants:
//! - Values are immutable (segments and init segments are keyed by stream instance and
//!   seq/period, and a key never names two different bodies). Serving a hit clones a `Bytes`
//!   handle, never the bytes.
//! - For [`Cache::get_or_pull`], at most one fetch per key runs at a time, whichever tier it
//!   reads from: concurrent requests share it (a flight) and receive bytes as they arrive.
//!   An entry on its way from memory to disk sits in `spilling`, so it is found in that window.
//! - Nothing enters either tier before it is verified (length, and hash when the index gives
//!   one). A failed fetch is not cached; the next request starts a new one.
//! - A fetch runs as its own task: a viewer that goes away does not cancel it for the others.
//!   However that task ends (even by a panicking pull), the fetch ends with it: its waiters
//!   get an outcome and the key is free for a new fetch.
//! - Recorded entries (origin) never spill: the recording is their disk copy.
//! - Memory outside the memory tier's weight is charged to one fair [`Budget`] of
//!   [`IN_FLIGHT_BYTES`]: every fetch (pull, disk read, recording read) before it starts, every
//!   entry queued for the disk tier, and every evicted entry that responses are still sending.
//!   A fetch waits its turn (FIFO) for memory; one whose requests all went away while it waited
//!   is given up. Hits hand out `Bytes` that keep their entry alive, so eviction can tell.
//!
//! moka notes: size and eviction counters move only after `run_pending_tasks`; the eviction
//! listener runs inline on whichever task triggered maintenance, so it only hands the value to
//! the spill task over a bounded channel (full channel = entry dropped, counted).

mod budget;
mod disk;
mod flight;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

pub use budget::{Budget, Charge};
pub use disk::DiskTier;
use disk::{Disk, Spilled};
use flight::Flight;
pub use flight::{Oversized, PullError, Reader, Sink};

/// Entries waiting to be written to disk; more are dropped (and counted) rather than queued.
/// Their bytes are also charged to the budget, so large entries are bounded by bytes too.
const SPILL_QUEUE: usize = 64;

/// Bytes of entries outside the memory tier at once: fetches in flight, spills queued, evicted
/// entries still being sent. SPEC allows the budget + 64 MiB in all; this leaves the rest for
/// the moment a finished fetch is made contiguous (up to one more copy of what is in flight)
/// and for the process itself.
pub const IN_FLIGHT_BYTES: u64 = 16 << 20;

/// What a cache entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Segment {
        stream: Arc<str>,
        seq: u64,
    },
    Init {
        stream: Arc<str>,
        period: u32,
    },
    /// A segment's thumbnail (`thumbs/{seq}.jpg`): loaded whole through
    /// [`Cache::get_or_load`], memory tier only; a missing one is never cached.
    Thumb {
        stream: Arc<str>,
        seq: u64,
    },
    /// An LL-HLS part (`parts/{seq}.{index}.m4s`): immutable like segments.
    Part {
        stream: Arc<str>,
        seq: u64,
        index: u32,
    },
}

crate::counters! {
    /// Counters for `/metrics`.
    pub struct Stats {
        /// Served from memory (or from an entry on its way to disk).
        hits => "counter" "dvrgate_cache_hits_total", "Requests served from the memory cache.";
        disk_hits => "counter" "dvrgate_cache_disk_hits_total", "Requests served from the disk cache tier.";
        /// Not in any tier (recorded loads and upstream pulls).
        misses => "counter" "dvrgate_cache_misses_total", "Requests found in no cache tier.";
        coalesced => "counter" "dvrgate_cache_coalesced_total", "Requests that joined a fetch already in progress.";
        memory_evictions => "counter" "dvrgate_cache_memory_evictions_total", "Entries evicted from memory for size.";
        spills => "counter" "dvrgate_cache_spills_total", "Evicted entries written to the disk tier.";
        spill_dropped => "counter" "dvrgate_cache_spill_dropped_total", "Evicted entries not spilled (queue full, disk failing).";
        disk_evictions => "counter" "dvrgate_cache_disk_evictions_total", "Files removed from the disk tier to stay within its bound.";
        memory_waits => "counter" "dvrgate_cache_memory_waits_total", "Fetches that waited for the in-flight memory budget.";
        memory_wait_abandoned => "counter" "dvrgate_cache_memory_wait_abandoned_total", "Fetches given up while waiting for memory (every request for them went away).";
        pulls => "counter" "dvrgate_upstream_pulls_total", "Segment pulls from an upstream.";
        pull_failures => "counter" "dvrgate_upstream_pull_failures_total", "Upstream pulls that failed (nothing cached).";
        thumb_pulls => "counter" "dvrgate_upstream_thumb_pulls_total", "Thumbnail pulls from an upstream (one per miss, shared by concurrent requests).";
        part_pulls => "counter" "dvrgate_upstream_part_pulls_total", "LL-HLS part pulls from an upstream (one per part per hop).";
        assembled => "counter" "dvrgate_segments_from_parts_total", "Relayed segments joined from their cached, verified parts instead of pulled again.";
    }
}

/// Why [`Cache::get_or_load`] has no value.
#[derive(Debug)]
pub enum Miss<E> {
    /// The loader found nothing (e.g. no such segment).
    Absent,
    /// The loader failed.
    Failed(E),
}

/// What an upstream entry must be.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub length: u64,
    /// xxh3-64 of the body, when the index gives it.
    pub hash: Option<u64>,
}

/// A cache answer for an upstream entry.
#[derive(Debug)]
pub enum Fetched {
    /// Whole, verified bytes.
    Ready(Bytes),
    /// Bytes arriving from a fetch shared with other requests.
    Streaming(Reader),
}

/// A memory-tier entry. Hits hand out `Bytes` that count themselves (see [`handout`]), so the
/// eviction listener knows whether responses still hold it. (Not `Arc::strong_count`: moka's
/// own bookkeeping holds clones of evicted values for a while.)
#[derive(Debug)]
struct Entry {
    bytes: Bytes,
    spill: bool,
    held: Mutex<Holders>,
}

#[derive(Debug, Default)]
struct Holders {
    /// Handed-out `Bytes` (and their slices' owner) still alive.
    count: usize,
    /// Charged when the entry is evicted while held; released with the last holder.
    charge: Option<Charge>,
}

type Value = Arc<Entry>;

fn entry(bytes: Bytes, spill: bool) -> Value {
    Arc::new(Entry {
        bytes,
        spill,
        held: Mutex::default(),
    })
}

/// The entry's bytes as a `Bytes` that counts as a holder until it (and every slice of it) is
/// dropped. One small allocation per hit.
fn handout(v: &Value) -> Bytes {
    struct Held(Value);
    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.0.bytes
        }
    }
    impl Drop for Held {
        fn drop(&mut self) {
            let mut h = lock(&self.0.held);
            h.count = h.count.saturating_sub(1);
            if h.count == 0 {
                h.charge = None;
            }
        }
    }
    lock(&v.held).count += 1;
    Bytes::from_owner(Held(v.clone()))
}

#[derive(Debug)]
struct Inner {
    memory: moka::future::Cache<Key, Value>,
    budget: Budget,
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
    spilling: Arc<Mutex<HashMap<Key, Bytes>>>,
    disk: Option<Arc<Disk>>,
}

/// The node's cache (cheap to clone).
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<Inner>,
    pub stats: Arc<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    /// A memory-only cache holding at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Cache {
        Cache::build(max_bytes, None)
    }

    /// A cache with a disk tier. If the directory cannot be prepared, logs why and runs
    /// memory-only.
    pub async fn with_disk(max_bytes: u64, disk: Option<DiskTier>) -> Cache {
        let disk = match disk {
            None => None,
            Some(tier) => {
                let dir = tier.dir.clone();
                match Disk::open(tier).await {
                    Ok(d) => Some(Arc::new(d)),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "disk cache unusable; memory cache only");
                        None
                    }
                }
            }
        };
        Cache::build(max_bytes, disk)
    }

    fn build(max_bytes: u64, disk: Option<Arc<Disk>>) -> Cache {
        let stats = Arc::new(Stats::default());
        let budget = Budget::new(IN_FLIGHT_BYTES);
        let spilling: Arc<Mutex<HashMap<Key, Bytes>>> = Arc::default();
        let mut builder = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &Key, v: &Value| u32::try_from(v.bytes.len()).unwrap_or(u32::MAX));
        let spill_tx = disk.as_ref().map(|d| {
            let (tx, rx) = mpsc::channel(SPILL_QUEUE);
            tokio::spawn(spill_task(rx, d.clone(), spilling.clone(), stats.clone()));
            tx
        });
        {
            let stats = stats.clone();
            let spilling = spilling.clone();
            let budget = budget.clone();
            builder = builder.eviction_listener(move |key: Arc<Key>, value: Value, cause| {
                let len = value.bytes.len() as u64;
                {
                    let mut h = lock(&value.held);
                    if h.count > 0 && h.charge.is_none() {
                        h.charge = Some(budget.force(len));
                    }
                }
                if cause != moka::notification::RemovalCause::Size {
                    return;
                }
                stats.memory_evictions.fetch_add(1, Ordering::Relaxed);
                let Some(tx) = &spill_tx else { return };
                if !value.spill {
                    return;
                }
                let Some(charge) = budget.try_charge(len) else {
                    stats.spill_dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let key = (*key).clone();
                lock(&spilling).insert(key.clone(), value.bytes.clone());
                if tx
                    .try_send((key.clone(), value.bytes.clone(), charge))
                    .is_err()
                {
                    lock(&spilling).remove(&key);
                    stats.spill_dropped.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let inner = Inner {
            memory: builder.build(),
            budget,
            flights: Mutex::default(),
            spilling,
            disk,
        };
        Cache {
            inner: Arc::new(inner),
            stats,
        }
    }

    /// Stores a recorded value (a freshly written segment is hot: live viewers ask for it next).
    pub async fn insert(&self, key: Key, value: Bytes) {
        self.inner.memory.insert(key, entry(value, false)).await;
        // moka evicts lazily; an insert is rare next to hits, so keep the bound tight here.
        self.inner.memory.run_pending_tasks().await;
    }

    /// The memory tier's value for `key`, if any (counts as neither hit nor miss).
    pub async fn peek(&self, key: &Key) -> Option<Bytes> {
        self.inner.memory.get(key).await.map(|v| handout(&v))
    }

    /// Stores an upstream entry the caller verified (a relayed segment joined from its parts);
    /// like a pulled one it may spill to disk.
    pub async fn insert_relayed(&self, key: Key, value: Bytes) {
        self.inner.memory.insert(key, entry(value, true)).await;
        self.inner.memory.run_pending_tasks().await;
    }

    /// The cached value, or the value `load` finds (from the recording, about `length` bytes),
    /// loaded once for all concurrent callers after waiting its turn for memory. A [`Miss`] is
    /// shared by every waiter of that load and is not cached.
    pub async fn get_or_load<E, F>(
        &self,
        key: Key,
        length: u64,
        load: F,
    ) -> Result<Bytes, Arc<Miss<E>>>
    where
        E: Send + Sync + 'static,
        F: std::future::Future<Output = Result<Option<Bytes>, E>>,
    {
        if let Some(v) = self.inner.memory.get(&key).await {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(handout(&v));
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let budget = self.inner.budget.clone();
        let loaded = self
            .inner
            .memory
            .try_get_with(key, async move {
                let _charge = budget.acquire(length).await;
                match load.await {
                    Ok(Some(bytes)) => Ok(entry(bytes, false)),
                    Ok(None) => Err(Miss::Absent),
                    Err(e) => Err(Miss::Failed(e)),
                }
            })
            .await
            .map(|v| handout(&v));
        self.inner.memory.run_pending_tasks().await;
        loaded
    }

    /// An upstream entry: from memory, from an entry being spilled, from a fetch in progress,
    /// or from a new fetch (disk tier first, else `pull`), shared by every concurrent caller.
    pub async fn get_or_pull<P, Fut, E>(&self, key: Key, expect: Expect, pull: P) -> Fetched
    where
        P: FnOnce(Sink) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: Into<PullError>,
    {
        if let Some(v) = self.inner.memory.get(&key).await {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Fetched::Ready(handout(&v));
        }
        let flight = {
            let mut flights = lock(&self.inner.flights);
            if let Some(b) = lock(&self.inner.spilling).get(&key) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Fetched::Ready(b.clone());
            }
            if let Some(f) = flights.get(&key) {
                self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                return Fetched::Streaming(Reader::new(f.clone()));
            }
            let f = Flight::new(expect.length);
            flights.insert(key.clone(), f.clone());
            f
        };
        let reader = Reader::new(flight.clone());
        let cache = self.clone();
        tokio::spawn(async move { cache.run_flight(key, expect, flight, pull).await });
        Fetched::Streaming(reader)
    }

    async fn run_flight<P, Fut, E>(self, key: Key, expect: Expect, flight: Arc<Flight>, pull: P)
    where
        P: FnOnce(Sink) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: Into<PullError>,
    {
        let _landing = Landing {
            inner: self.inner.clone(),
            key: key.clone(),
            flight: flight.clone(),
        };
        // Memory first, in turn; a fetch nobody wants any more gives up its place.
        let charge = match self.inner.budget.try_charge(expect.length) {
            Some(c) => c,
            None => {
                self.stats.memory_waits.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    c = self.inner.budget.acquire(expect.length) => c,
                    () = flight.unwanted() => {
                        self.stats.memory_wait_abandoned.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        };
        flight.hold(charge);
        let from_disk = match &self.inner.disk {
            Some(d) => d
                .get(&key)
                .await
                .filter(|b| b.len() as u64 == expect.length),
            None => None,
        };
        let (result, spill) = match from_disk {
            Some(bytes) => {
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                let mut sink = Sink::new(flight.clone());
                (
                    sink.push(bytes).map_err(|e| PullError::new(e.to_string())),
                    true,
                )
            }
            None => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                let pulls = match key {
                    Key::Part { .. } => &self.stats.part_pulls,
                    _ => &self.stats.pulls,
                };
                pulls.fetch_add(1, Ordering::Relaxed);
                (
                    pull(Sink::new(flight.clone())).await.map_err(Into::into),
                    // Parts are wanted for seconds; the disk tier is for segments.
                    !matches!(key, Key::Part { .. }),
                )
            }
        };
        let mut value = None;
        let verdict = flight.finish(result, expect.hash, |whole| {
            let v = entry(whole.clone(), spill);
            let shared = handout(&v);
            value = Some(v);
            shared
        });
        match verdict {
            Ok(_) => {
                if let Some(v) = value {
                    self.inner.memory.insert(key.clone(), v).await;
                    self.inner.memory.run_pending_tasks().await;
                }
            }
            Err(e) => {
                self.stats.pull_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(?key, error = %e, "upstream pull failed; nothing cached");
            }
        }
    }

    /// Runs moka's pending maintenance (evictions, size counters).
    pub async fn run_pending_tasks(&self) {
        self.inner.memory.run_pending_tasks().await;
    }

    /// Bytes held in memory (approximate until maintenance runs).
    pub fn weighted_size(&self) -> u64 {
        self.inner.memory.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.memory.entry_count()
    }

    /// The budget for bytes outside the memory tier.
    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// Bytes held by the disk tier (0 without one).
    pub fn disk_bytes(&self) -> u64 {
        self.inner.disk.as_ref().map_or(0, |d| d.bytes())
    }

    /// Whether the entry is in the disk tier.
    pub fn on_disk(&self, key: &Key) -> bool {
        self.inner.disk.as_ref().is_some_and(|d| d.contains(key))
    }
}

/// Ends a flight when its task does, however it ends: after `finish` it only frees the key;
/// if the pull panicked, readers get an error instead of waiting forever, and the next request
/// starts a new fetch.
struct Landing {
    inner: Arc<Inner>,
    key: Key,
    flight: Arc<Flight>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.flight.abandon();
        let mut flights = lock(&self.inner.flights);
        if flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(&self.key);
        }
    }
}

async fn spill_task(
    mut rx: mpsc::Receiver<(Key, Bytes, Charge)>,
    disk: Arc<Disk>,
    spilling: Arc<Mutex<HashMap<Key, Bytes>>>,
    stats: Arc<Stats>,
) {
    while let Some((key, bytes, _charge)) = rx.recv().await {
        match disk.put(key.clone(), bytes).await {
            Spilled::Stored { evicted } => {
                stats.spills.fetch_add(1, Ordering::Relaxed);
                stats.disk_evictions.fetch_add(evicted, Ordering::Relaxed);
            }
            Spilled::Present => {}
            Spilled::Skipped | Spilled::Failed => {
                stats.spill_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        lock(&spilling).remove(&key);
    }
}
