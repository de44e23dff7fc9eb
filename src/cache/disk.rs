//! The disk tier: segments evicted from memory, one file each under `cache.disk_dir`, LRU,
//! bounded by `cache.disk`.
//!
//! Invariants:
//! - A file is listed in the index only after it was written completely and renamed into place
//!   (write to `*.tmp`, then rename), so a listed file is whole; reads still verify the length
//!   and the hash (the disk may have been tampered with or failed).
//! - The sum of listed files' lengths never exceeds the bound: the oldest are deleted first.
//! - Only files with our extensions are ever created or deleted in the directory. It is emptied
//!   of them at start (entries of a previous run are not trusted; relay keys are per process).
//! - Any I/O error degrades to "not on disk"; it never fails a request upstream can serve.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use super::Key;

const EXT: &str = "seg";
const TMP_EXT: &str = "tmp";
/// Consecutive write failures after which the tier stops accepting spills.
const MAX_FAILURES: u32 = 8;

/// Where and how much to spill.
#[derive(Debug, Clone)]
pub struct DiskTier {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

#[derive(Debug)]
struct Entry {
    file: PathBuf,
    len: u64,
    hash: u64,
    tick: u64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<Key, Entry>,
    lru: BTreeMap<u64, Key>,
    bytes: u64,
    tick: u64,
    failures: u32,
}

#[derive(Debug)]
pub(crate) struct Disk {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    disabled: AtomicBool,
}

/// What a spill did.
pub(crate) enum Spilled {
    Stored {
        evicted: u64,
    },
    /// Already on disk.
    Present,
    Skipped,
    Failed,
}

impl Disk {
    /// Prepares the directory (creating it, removing our files of a previous run).
    pub(crate) async fn open(tier: DiskTier) -> std::io::Result<Disk> {
        tokio::fs::create_dir_all(&tier.dir).await?;
        let mut dir = tokio::fs::read_dir(&tier.dir).await?;
        while let Some(e) = dir.next_entry().await? {
            let path = e.path();
            let ours = path.extension().is_some_and(|x| x == EXT || x == TMP_EXT);
            if ours {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
        Ok(Disk {
            dir: tier.dir,
            max_bytes: tier.max_bytes,
            index: Mutex::default(),
            disabled: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    pub(crate) fn contains(&self, key: &Key) -> bool {
        self.lock().entries.contains_key(key)
    }

    fn file_for(&self, key: &Key) -> PathBuf {
        let name = match key {
            Key::Segment { stream, seq } => format!("s|{stream}|{seq}"),
            Key::Init { stream, period } => format!("i|{stream}|{period}"),
            Key::Thumb { stream, seq } => format!("t|{stream}|{seq}"),
            Key::Part { stream, seq, index } => format!("p|{stream}|{seq}|{index}"),
        };
        self.dir.join(format!(
            "{:016x}.{EXT}",
            xxhash_rust::xxh3::xxh3_64(name.as_bytes())
        ))
    }

    /// Reads an entry back; `None` if absent or unreadable or damaged (then it is dropped).
    pub(crate) async fn get(&self, key: &Key) -> Option<Bytes> {
        let (file, len, hash) = {
            let mut ix = self.lock();
            let tick = ix.tick + 1;
            ix.tick = tick;
            let e = ix.entries.get_mut(key)?;
            let old = std::mem::replace(&mut e.tick, tick);
            let out = (e.file.clone(), e.len, e.hash);
            ix.lru.remove(&old);
            ix.lru.insert(tick, key.clone());
            out
        };
        match tokio::fs::read(&file).await {
            Ok(data) if data.len() as u64 == len && xxhash_rust::xxh3::xxh3_64(&data) == hash => {
                Some(Bytes::from(data))
            }
            Ok(_) => {
                tracing::warn!(file = %file.display(), "disk cache file damaged; dropped");
                self.remove(key).await;
                None
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "disk cache read failed; dropped");
                self.remove(key).await;
                None
            }
        }
    }

    async fn remove(&self, key: &Key) {
        let gone = {
            let mut ix = self.lock();
            let gone = ix.entries.remove(key);
            if let Some(e) = &gone {
                ix.bytes -= e.len;
                ix.lru.remove(&e.tick);
            }
            gone
        };
        if let Some(e) = gone {
            let _ = tokio::fs::remove_file(&e.file).await;
        }
    }

    /// Writes an evicted entry, evicting the oldest files to stay within the bound.
    pub(crate) async fn put(&self, key: Key, value: Bytes) -> Spilled {
        let len = value.len() as u64;
        if self.contains(&key) {
            return Spilled::Present;
        }
        if self.disabled.load(Ordering::Relaxed) || len > self.max_bytes {
            return Spilled::Skipped;
        }
        // Make room first, so the bound holds even while the new file is being written.
        let mut victims = Vec::new();
        {
            let mut ix = self.lock();
            while ix.bytes + len > self.max_bytes {
                let Some((_, oldest)) = ix.lru.pop_first() else {
                    break;
                };
                if let Some(e) = ix.entries.remove(&oldest) {
                    ix.bytes -= e.len;
                    victims.push(e.file);
                }
            }
            // Reserve the space.
            ix.bytes += len;
        }
        let evicted = victims.len() as u64;
        for f in victims {
            let _ = tokio::fs::remove_file(&f).await;
        }
        let file = self.file_for(&key);
        let hash = xxhash_rust::xxh3::xxh3_64(&value);
        match write_atomically(&file, value).await {
            Ok(()) => {
                let mut ix = self.lock();
                ix.failures = 0;
                ix.tick += 1;
                let tick = ix.tick;
                ix.lru.insert(tick, key.clone());
                ix.entries.insert(
                    key,
                    Entry {
                        file,
                        len,
                        hash,
                        tick,
                    },
                );
                Spilled::Stored { evicted }
            }
            Err(e) => {
                let mut ix = self.lock();
                ix.bytes -= len;
                ix.failures += 1;
                if ix.failures >= MAX_FAILURES && !self.disabled.swap(true, Ordering::Relaxed) {
                    tracing::warn!(dir = %self.dir.display(), error = %e,
                        "disk cache keeps failing; continuing with the memory cache only");
                } else {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "disk cache write failed; entry not spilled");
                }
                Spilled::Failed
            }
        }
    }
}

async fn write_atomically(file: &Path, value: Bytes) -> std::io::Result<()> {
    let tmp = file.with_extension(TMP_EXT);
    let result = async {
        tokio::fs::write(&tmp, value).await?;
        tokio::fs::rename(&tmp, file).await
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}
