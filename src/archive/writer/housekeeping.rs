//! The writer's housekeeping of the archive while it holds the lease: retention (a drop
//! chunk first, the objects after the archive's `delete_grace`), index snapshots with the
//! garbage collection of older chunks, and the sweep after a takeover.

use std::time::Instant;

use super::{Next, Writer};
use crate::archive::{keys, Error};

impl Writer {
    /// The seq below which the archive's segments must go (`record.retention`, `max_bytes`).
    pub(super) fn retention(&self) -> Option<u64> {
        let ix = &self.ax.index;
        crate::store::retention::plan(
            &ix.segments,
            ix.bytes,
            self.ax.live,
            crate::time::now_ms(),
            self.archive.policy,
        )
    }

    /// Drops the archive's segments below `before`: the drop chunk first, the objects after
    /// the archive's `delete_grace`.
    pub(super) async fn drop_before(&mut self, before: u64, live: bool) -> Result<Next, Error> {
        let name = self.name().to_owned();
        let ix = &self.ax.index;
        let mut gone: Vec<String> = ix
            .segments
            .iter()
            .take_while(|s| s.seq < before)
            .flat_map(|s| {
                [
                    keys::segment(&name, s.seq, s.hash),
                    // Best effort: a thumbnail that was never uploaded is a harmless delete.
                    keys::thumb(&name, s.seq, s.hash),
                ]
            })
            .collect();
        let keep_period = ix
            .segments
            .iter()
            .find(|s| s.seq >= before)
            .map(|s| s.period)
            .or(ix.periods.last().map(|p| p.id));
        let (gone_inits, kept_inits): (Vec<_>, Vec<_>) = ix
            .periods
            .iter()
            .partition(|p| keep_period.is_some_and(|k| p.id < k));
        for p in &gone_inits {
            if !kept_inits.iter().any(|k| k.init_hash == p.init_hash) {
                gone.push(keys::init(&name, p.init_hash));
            }
        }
        let record = crate::store::Record::Drop {
            before,
            longest_ms: ix.max_duration_ms,
        };
        if self.write_chunk(vec![record], live).await? {
            let due = Instant::now() + self.archive.delete_grace;
            tracing::info!(stream = %name, before, objects = gone.len(), "archive retention: segments dropped");
            self.deletes.extend(gone.into_iter().map(|k| (due, k)));
        }
        Ok(Next::Now)
    }

    /// Deletes the objects whose grace has passed. `Some(next)` when it deleted any.
    pub(super) async fn delete_due(&mut self) -> Result<Option<Next>, Error> {
        let now = Instant::now();
        let mut done = 0;
        while let Some((due, key)) = self.deletes.front() {
            if *due > now || done >= 64 {
                break;
            }
            self.archive.bucket.delete(key).await?;
            self.deletes.pop_front();
            done += 1;
        }
        Ok((done > 0).then_some(Next::Now))
    }

    /// Writes a snapshot of the index every `snapshot_every` chunks, then lets go of the
    /// chunks and snapshots no reader starts from any more.
    pub(super) async fn snapshot_if_due(&mut self) -> Result<Option<Next>, Error> {
        let since = self.ax.snapshot_at.unwrap_or(0);
        if self.ax.next_chunk < since + self.archive.snapshot_every.max(1) {
            return Ok(None);
        }
        let n = self.ax.next_chunk;
        let key = keys::snapshot(self.name(), n);
        self.archive
            .bucket
            .put_create(&key, self.ax.snapshot().to_bytes())
            .await?;
        self.ax.snapshot_at = Some(n);
        tracing::debug!(stream = %self.name(), chunk = n, "archive index snapshot written");
        self.collect_index_garbage().await?;
        Ok(Some(Next::Now))
    }

    /// Keeps the two newest snapshots and the chunks from the older of them on; queues the
    /// rest for deletion. (A reader that fell further behind reloads from the newest.)
    pub(super) async fn collect_index_garbage(&mut self) -> Result<(), Error> {
        let name = self.name().to_owned();
        let mut snaps: Vec<u64> = self
            .archive
            .bucket
            .files(&keys::snapshots(&name))
            .await?
            .iter()
            .filter_map(|f| keys::number_of(f))
            .collect();
        snaps.sort_unstable();
        if snaps.len() < 2 {
            return Ok(());
        }
        let cutoff = snaps[snaps.len() - 2];
        let due = Instant::now() + self.archive.delete_grace;
        for n in snaps.iter().filter(|n| **n < cutoff) {
            self.deletes.push_back((due, keys::snapshot(&name, *n)));
        }
        let chunks = self.archive.bucket.files(&keys::chunks(&name)).await?;
        for n in chunks.iter().filter_map(|f| keys::number_of(f)) {
            if n < cutoff {
                self.deletes.push_back((due, keys::chunk(&name, n)));
            }
        }
        Ok(())
    }

    /// After taking the lease: deletes segment objects below the archive's first seq that a
    /// writer which died between a drop and its deletions left behind, and old index objects.
    pub(super) async fn sweep(&mut self) -> Result<(), Error> {
        self.sweep_at = None;
        let name = self.name().to_owned();
        let first = self
            .ax
            .index
            .segments
            .front()
            .map_or(self.ax.index.next_seq, |s| s.seq);
        let folder = keys::segments(&name);
        let files = self.archive.bucket.files(&folder).await?;
        let now = Instant::now();
        let mut n = 0;
        for f in files {
            if keys::seq_of(&f).is_some_and(|seq| seq < first) {
                self.deletes.push_back((now, format!("{folder}/{f}")));
                n += 1;
            }
        }
        let folder = keys::thumbs(&name);
        for f in self.archive.bucket.files(&folder).await? {
            if keys::thumb_seq_of(&f).is_some_and(|seq| seq < first) {
                self.deletes.push_back((now, format!("{folder}/{f}")));
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!(stream = %name, objects = n, "deleting segments and thumbnails no index names");
        }
        self.collect_index_garbage().await
    }
}
