//! The segment memory cache: an LRU of immutable `Bytes`, bounded by a byte budget.
//!
//! Invariants: values are never mutated (segments and init segments are immutable, keyed by
//! stream and seq/period, and a seq is never reused); serving a hit clones a `Bytes` handle, never
//! the bytes. Concurrent misses for one key share one load (moka's `try_get_with`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// What a cache entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Segment { stream: Arc<str>, seq: u64 },
    Init { stream: Arc<str>, period: u32 },
}

/// Hit and miss counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// Why [`Cache::get_or_load`] has no value.
#[derive(Debug)]
pub enum Miss<E> {
    /// The loader found nothing (e.g. no such segment).
    Absent,
    /// The loader failed.
    Failed(E),
}

/// The memory tier.
#[derive(Clone)]
pub struct Cache {
    inner: moka::future::Cache<Key, Bytes>,
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("bytes", &self.inner.weighted_size())
            .finish()
    }
}

impl Cache {
    /// A cache holding at most `max_bytes` of values.
    pub fn new(max_bytes: u64) -> Cache {
        let inner = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &Key, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
            .build();
        Cache {
            inner,
            stats: Arc::default(),
        }
    }

    /// Stores a value (a freshly written segment is hot: live viewers ask for it next).
    pub async fn insert(&self, key: Key, value: Bytes) {
        self.inner.insert(key, value).await;
    }

    /// The cached value, or the value `load` finds, loaded once for all concurrent callers.
    /// A [`Miss`] is shared by every waiter of that load and is not cached.
    pub async fn get_or_load<E, F>(&self, key: Key, load: F) -> Result<Bytes, Arc<Miss<E>>>
    where
        E: Send + Sync + 'static,
        F: std::future::Future<Output = Result<Option<Bytes>, E>>,
    {
        if let Some(v) = self.inner.get(&key).await {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        self.inner
            .try_get_with(key, async move {
                match load.await {
                    Ok(Some(v)) => Ok(v),
                    Ok(None) => Err(Miss::Absent),
                    Err(e) => Err(Miss::Failed(e)),
                }
            })
            .await
    }

    /// Bytes held (approximate until moka's pending maintenance runs).
    pub fn weighted_size(&self) -> u64 {
        self.inner.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }
}
