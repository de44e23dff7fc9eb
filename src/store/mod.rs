//! Recordings: durable, append-only storage of fMP4 segments with a time index per stream.
//!
//! Ownership: the [`Store`] owns the map of streams; each [`Stream`] owns its shared
//! [`Timeline`] (the in-memory [`StreamIndex`] behind a std `RwLock`, never held across
//! `.await`) and its [`Storage`](storage::Storage) (objects by key and the append-only index;
//! [`storage::LocalDisk`] today). Every write goes through the storage. A [`Recording`] is the
//! single writer of a live stream.
//!
//! Durability order (see `storage` and `writer`): segment object put (temp file, fsync,
//! rename, dir fsync); *then* its index line appended and fsynced, *while* holding the
//! stream's index lock (which compaction takes too), and applied to the in-memory index;
//! *then* announced (watchers woken, events emitted by the caller). Hence after a crash (`kill -9` at any moment) [`Store::open`] finds every announced
//! segment intact, truncates a torn index line and deletes unindexed files.
//!
//! A write that fails (ENOSPC, EIO) leaves nothing behind that looks like a segment: the temp
//! file is removed, a file already renamed into place is removed when its index line cannot be
//! appended, and a partly appended index line is truncated away (`LineFile`), so the index
//! never holds a torn line in front of later ones.
//!
//! Free space (`record.min_free`, see [`room`] and [`space`]): every write first asks the
//! [`Room`] for its bytes; when the reserve would be crossed, the oldest segments of any stream
//! are deleted, index first (the `drop` line is appended and applied, so nothing listed is
//! missing), then their files. When the volume is so full that even the `drop` line cannot be
//! appended, the drop is applied in memory, the files deleted and the line appended afterwards:
//! recovery already treats an indexed segment whose file is missing as dropped.

pub mod index;
pub mod layout;
pub mod retention;
pub mod room;
pub mod space;
pub mod storage;
pub mod thumbset;
pub mod timeline;
pub mod writer;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

pub use index::{Lookup, OpenSegment, PartMeta, PeriodMeta, Record, SegmentMeta, StreamIndex};
use layout::{Layout, Object};
pub use retention::Policy;
pub use room::{Room, Trim};
pub use space::MinFree;
pub use thumbset::ThumbSet;
pub use timeline::Timeline;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stream {0:?} is already being published")]
    AlreadyLive(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("storage task failed: {0}")]
    Task(String),
    /// Not enough free space for the next write even after deleting what may be deleted.
    #[error("recordings volume full: {0}")]
    NoSpace(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        context: context.into(),
        source,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// All recorded streams of a node.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    policy: Policy,
    /// Streams by name. std `RwLock`: short critical sections, never held across `.await`.
    /// Shared with `room`, which trims any of them.
    streams: Arc<RwLock<HashMap<String, Arc<Stream>>>>,
    /// The free-space guard every recording writes through.
    room: Arc<Room>,
}

/// One recorded stream: its shared [`Timeline`] (what readers see; `Deref` gives its
/// methods) and its files on disk.
#[derive(Debug)]
pub struct Stream {
    timeline: Arc<Timeline>,
    /// Where the objects and the index are (read and written only through it).
    storage: Arc<dyn storage::Storage>,
    /// The recording's paths (thumbnails live beside the segments, outside [`storage`]).
    layout: Layout,
    /// Seqs whose thumbnail is on disk (see [`thumbset`]).
    thumbs: Arc<ThumbSet>,
    /// Serializes index appends (each with its apply) against compaction, so a compaction's
    /// snapshot never misses a line appended meanwhile. tokio `Mutex`: held across storage
    /// calls.
    index_lock: tokio::sync::Mutex<()>,
    /// Lines in the index, to decide when compaction pays.
    file_lines: std::sync::atomic::AtomicUsize,
    /// LL-HLS: the bytes of the open segment's parts (seq, parts in order), served without a
    /// disk read; at most one segment. std `Mutex`: never held across `.await`.
    open_parts: std::sync::Mutex<(u64, Vec<Bytes>)>,
}

impl std::ops::Deref for Stream {
    type Target = Timeline;
    fn deref(&self) -> &Timeline {
        &self.timeline
    }
}

/// What recovery found, for the startup log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub streams: usize,
    pub segments: usize,
    pub removed_files: usize,
    pub torn_index_tails: usize,
}

impl Store {
    /// Opens (creating) the recordings folder and recovers every stream in it; writes keep
    /// `min_free` free on its volume. Blocking.
    pub fn open(
        dir: &Path,
        policy: Policy,
        min_free: MinFree,
    ) -> Result<(Store, Recovered), Error> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let mut streams = HashMap::new();
        let mut total = Recovered::default();
        let entries =
            std::fs::read_dir(dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !crate::names::is_valid(&name) || !entry.path().is_dir() {
                continue;
            }
            let layout = Layout::new(dir, &name);
            let (index, lines, found) = recover(&layout)?;
            total.streams += 1;
            total.segments += found.segments;
            total.removed_files += found.removed_files;
            total.torn_index_tails += found.torn_index_tails;
            let first = index.segments.front().map_or(index.next_seq, |s| s.seq);
            let thumbs = ThumbSet::of(
                thumbset::scan(&layout.thumbs_dir())
                    .into_iter()
                    .filter(|&seq| seq >= first && index.segment(seq).is_some()),
            );
            let mut stream = Stream::new(name.clone(), layout, index, lines);
            stream.thumbs = Arc::new(thumbs);
            streams.insert(name, Arc::new(stream));
        }
        let streams = Arc::new(RwLock::new(streams));
        Ok((
            Store {
                dir: dir.to_owned(),
                policy,
                room: Arc::new(Room::new(dir.to_owned(), min_free, streams.clone())),
                streams,
            },
            total,
        ))
    }

    /// The stream, if it was ever recorded here.
    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.read().ok()?.get(name).cloned()
    }

    /// All streams, sorted by name.
    pub fn list(&self) -> Vec<Arc<Stream>> {
        let mut v: Vec<_> = self
            .streams
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Starts recording `name` (validated by the caller). Refused while it is already live.
    /// No I/O: folders are created with the first write.
    pub fn begin_recording(&self, name: &str) -> Result<Recording, Error> {
        let mut streams = self
            .streams
            .write()
            .map_err(|_| Error::Task("store lock poisoned".into()))?;
        let stream = streams
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Stream::new(
                    name.to_owned(),
                    Layout::new(&self.dir, name),
                    StreamIndex::default(),
                    0,
                ))
            })
            .clone();
        {
            let mut ix = stream.write();
            if ix.live {
                return Err(Error::AlreadyLive(name.to_owned()));
            }
            ix.live = true;
        }
        stream.bump();
        Ok(Recording {
            stream,
            room: self.room.clone(),
            trimmed: Vec::new(),
            ended: false,
            open: None,
        })
    }

    /// Applies the retention policy to one stream; returns how many segments were deleted.
    pub async fn enforce_retention(
        &self,
        stream: &Arc<Stream>,
        now_ms: i64,
    ) -> Result<usize, Error> {
        let before = {
            let ix = stream.read();
            retention::plan(&ix.segments, ix.bytes, ix.live, now_ms, self.policy)
        };
        let Some(before) = before else { return Ok(0) };
        Ok(stream.drop_before_durably(before).await?.len())
    }
}

/// Reads a stream's index and repairs its folder after a crash. Blocking.
fn recover(layout: &Layout) -> Result<(StreamIndex, usize, RecoverCounts), Error> {
    let mut counts = RecoverCounts::default();
    let path = layout.index();
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(format!("cannot read {}", path.display()))(e)),
    };
    let (mut index, valid) = StreamIndex::from_jsonl(&text);
    if valid < text.len() {
        counts.torn_index_tails += 1;
        tracing::warn!(path = %path.display(), dropped_bytes = text.len() - valid, "truncating a torn index tail");
    }
    // Every indexed segment must be complete on disk; drop the ones that are not.
    let mut kept = StreamIndex {
        periods: index.periods.clone(),
        ..StreamIndex::default()
    };
    for s in index.segments.drain(..) {
        match std::fs::metadata(layout.segment(s.seq)) {
            Ok(m) if m.len() == s.length => kept.push_segment(s),
            _ => {
                tracing::warn!(path = %layout.segment(s.seq).display(), "indexed segment missing or wrong size; dropped")
            }
        }
    }
    kept.next_seq = kept.next_seq.max(index.next_seq);
    // The longest segment the stream has had, deleted or missing ones included.
    kept.max_duration_ms = kept.max_duration_ms.max(index.max_duration_ms);
    counts.segments = kept.segments.len();
    // A segment being written when the node stopped (its parts may have been announced, and
    // cached by a CDN under their names) keeps its seq from ever being used again.
    if let Some(lost) = unsealed_segment(&layout.segments_dir()).filter(|&s| s >= kept.next_seq) {
        tracing::warn!(stream = %layout.root().display(), seq = lost, "segment being written when the node stopped is lost (its announced parts were durable, the rest was not); its seq is not reused");
        kept.next_seq = lost + 1;
    }
    // Delete temp files and files the index does not name (written but never announced).
    let seg_known = |n: &str| {
        n.strip_suffix(".m4s")
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|seq| kept.segment(seq).is_some())
    };
    let init_known = |n: &str| {
        n.strip_suffix(".mp4")
            .and_then(|s| s.parse::<u32>().ok())
            .is_some_and(|id| kept.period(id).is_some())
    };
    counts.removed_files += remove_unknown(&layout.segments_dir(), seg_known)?;
    counts.removed_files += remove_unknown(&layout.init_dir(), init_known)?;
    // Rewrite the index compactly (also drops a torn tail) if there is anything to write.
    let records = kept.to_records();
    let mut lines = records.len();
    if !text.is_empty() {
        let body: String = records.iter().map(|r| r.to_line() + "\n").collect();
        if let Err(e) = writer::write_atomic(&path, body.as_bytes()) {
            // A full volume must not keep the node from serving what it recorded: keep the
            // old file, only cut a torn tail off (truncating needs no space).
            tracing::warn!(path = %path.display(), error = %e, "cannot rewrite the index; keeping it");
            if valid < text.len() {
                writer::truncate(&path, valid as u64)
                    .map_err(io_err(format!("cannot truncate {}", path.display())))?;
            }
            lines = text[..valid].iter().filter(|&&b| b == b'\n').count();
        }
    }
    Ok((kept, lines, counts))
}

/// The newest `<seq>.m4s.tmp` in `dir`: a segment being written (part by part, or whole).
fn unsealed_segment(dir: &Path) -> Option<u64> {
    let suffix = format!(".m4s{}", layout::TMP_SUFFIX);
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let seq = name.strip_suffix(&suffix)?;
            crate::names::decimal(seq)
        })
        .max()
}

/// Deletes the files in `dir` whose names `known` rejects; returns how many. Blocking.
fn remove_unknown(dir: &Path, known: impl Fn(&str) -> bool) -> Result<usize, Error> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for e in entries.flatten() {
        if !known(&e.file_name().to_string_lossy()) {
            writer::remove_if_exists(&e.path()).map_err(io_err("cannot delete stray file"))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[derive(Debug, Default)]
struct RecoverCounts {
    segments: usize,
    removed_files: usize,
    torn_index_tails: usize,
}

impl Stream {
    fn new(name: String, layout: Layout, index: StreamIndex, file_lines: usize) -> Stream {
        Stream {
            timeline: Arc::new(Timeline::with_index(name, index)),
            storage: Arc::new(storage::LocalDisk::new(layout.clone())),
            layout,
            thumbs: Arc::default(),
            index_lock: tokio::sync::Mutex::new(()),
            file_lines: file_lines.into(),
            open_parts: std::sync::Mutex::default(),
        }
    }

    /// The bytes of part `index` of segment `seq`: the open segment's from memory, a sealed
    /// segment's as a range of it. `None` when the index does not list that part (any more).
    pub async fn read_part(&self, seq: u64, index: usize) -> Result<Option<Bytes>, Error> {
        let Some(meta) = self.read().part(seq, index).cloned() else {
            return Ok(None);
        };
        let held = self.open_parts.lock().ok().and_then(|open| {
            (open.0 == seq)
                .then(|| open.1.get(index).cloned())
                .flatten()
        });
        if let Some(bytes) = held.filter(|b| b.len() as u64 == meta.length) {
            return Ok(Some(bytes));
        }
        if self.read().segment(seq).is_none() {
            return Ok(None);
        }
        let range = meta.offset..meta.offset + meta.length;
        let got = self.storage.get(Object::Segment(seq), Some(range)).await?;
        Ok(got.filter(|b| b.len() as u64 == meta.length))
    }

    /// Where the thumbnail of segment `seq` is (or would be) stored.
    pub fn thumb_path(&self, seq: u64) -> std::path::PathBuf {
        self.layout.thumb(seq)
    }

    /// Which segments have a thumbnail on disk (filled by the thumbnail worker).
    pub fn thumbs(&self) -> &Arc<ThumbSet> {
        &self.thumbs
    }

    /// Reads a segment's thumbnail (at most `max` bytes), if it has one.
    pub async fn read_thumb(&self, seq: u64, max: u64) -> Result<Option<Bytes>, Error> {
        if !self.thumbs.contains(seq) || self.read().segment(seq).is_none() {
            return Ok(None);
        }
        let path = self.layout.thumb(seq);
        blocking(move || {
            use std::io::Read;
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(format!("cannot open {}", path.display()))(e)),
            };
            let mut buf = Vec::new();
            file.take(max + 1)
                .read_to_end(&mut buf)
                .map_err(io_err(format!("cannot read {}", path.display())))?;
            // A stray oversized file is not a thumbnail we made: not served.
            Ok((buf.len() as u64 <= max).then(|| Bytes::from(buf)))
        })
        .await
    }

    /// The shared timeline (index + change notification) readers render.
    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.timeline
    }

    /// Reads a media segment file, if indexed.
    pub async fn read_segment(&self, seq: u64) -> Result<Option<Bytes>, Error> {
        let Some(meta) = self.read().segment(seq).cloned() else {
            return Ok(None);
        };
        self.read_object(Object::Segment(seq), meta.length).await
    }

    /// Reads a period's init segment, if indexed.
    pub async fn read_init(&self, period: u32) -> Result<Option<Bytes>, Error> {
        let Some(meta) = self.read().period(period).cloned() else {
            return Ok(None);
        };
        self.read_object(Object::Init(period), meta.init_length)
            .await
    }

    /// Stores an object and indexes it: the object first (durable), then its index record
    /// (durable), then the in-memory index. When either write fails nothing stays: an object
    /// that is not indexed is never announced, so it must not linger either.
    async fn store_and_index(
        &self,
        key: Object,
        bytes: Bytes,
        record: Record,
    ) -> Result<(), Error> {
        let indexed = match self.storage.put(key, bytes).await {
            Ok(()) => self.append_and_apply(&[record]).await.map(drop),
            Err(e) => Err(e),
        };
        if indexed.is_err() {
            if let Err(e) = self.storage.delete(key).await {
                tracing::warn!(stream = %self.name, key = %key, error = %e, "cannot remove an unindexed object; recovery will");
            }
        }
        indexed
    }

    /// Appends records to the index and applies them to the in-memory index, atomically
    /// with respect to compaction. Returns what a `Drop` removed.
    async fn append_and_apply(
        &self,
        records: &[Record],
    ) -> Result<(Vec<SegmentMeta>, Vec<PeriodMeta>), Error> {
        let _serial = self.index_lock.lock().await;
        self.append_locked(records).await?;
        Ok(self.apply_only(records))
    }

    /// Drops every segment with `seq < before`: index first (appended and applied), then the
    /// objects. Returns the segments removed.
    ///
    /// When the `drop` line cannot be appended (the volume is full), the drop is applied in
    /// memory, the objects deleted, and the line appended afterwards; if that fails too, the
    /// index still names the deleted segments and recovery drops them as missing.
    async fn drop_before_durably(&self, before: u64) -> Result<Vec<SegmentMeta>, Error> {
        let records = [Record::Drop {
            before,
            longest_ms: self.read().max_duration_ms,
        }];
        let (gone, gone_periods, appended) = match self.append_and_apply(&records).await {
            Ok((gone, gone_periods)) => (gone, gone_periods, true),
            Err(Error::Io { context, source }) => {
                tracing::warn!(stream = %self.name, %context, error = %source, "cannot append the drop line; dropping first");
                let (gone, gone_periods) = self.apply_only(&records);
                (gone, gone_periods, false)
            }
            Err(e) => return Err(e),
        };
        for seg in &gone {
            self.storage.delete(Object::Segment(seg.seq)).await?;
        }
        if let Some(last) = gone.last() {
            self.thumbs.remove_before(last.seq.saturating_add(1));
            // Thumbnails go with their segments; best effort (a stray one is only bytes).
            let paths: Vec<_> = gone.iter().map(|s| self.layout.thumb(s.seq)).collect();
            let _ = tokio::task::spawn_blocking(move || {
                for p in paths {
                    let _ = writer::remove_if_exists(&p);
                }
            })
            .await;
        }
        for p in &gone_periods {
            self.storage.delete(Object::Init(p.id)).await?;
        }
        if !appended {
            if let Err(e) = self.append_only(&records).await {
                tracing::warn!(stream = %self.name, error = %e, "drop line still not appended; recovery will drop the missing files");
            }
        }
        if let Err(e) = self.compact_if_worth_it().await {
            tracing::warn!(stream = %self.name, error = %e, "index compaction failed");
        }
        Ok(gone)
    }

    /// Applies records to the in-memory index only and wakes watchers. Returns what a `Drop`
    /// removed.
    fn apply_only(&self, records: &[Record]) -> (Vec<SegmentMeta>, Vec<PeriodMeta>) {
        self.timeline.apply_records(records)
    }

    /// Appends records to the index only.
    async fn append_only(&self, records: &[Record]) -> Result<(), Error> {
        let _serial = self.index_lock.lock().await;
        self.append_locked(records).await
    }

    /// Appends records to the index; the caller holds `index_lock`.
    async fn append_locked(&self, records: &[Record]) -> Result<(), Error> {
        let lines: Vec<String> = records.iter().map(Record::to_line).collect();
        let n = lines.len();
        self.storage.append_index(lines).await?;
        self.file_lines
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Rewrites the index when most of its lines describe deleted segments.
    async fn compact_if_worth_it(&self) -> Result<(), Error> {
        let _serial = self.index_lock.lock().await;
        let records = self.read().to_records();
        let lines = self.file_lines.load(std::sync::atomic::Ordering::Relaxed);
        if lines < 1024 || lines < records.len() * 2 {
            return Ok(());
        }
        self.storage
            .rewrite_index(records.iter().map(Record::to_line).collect())
            .await?;
        self.file_lines
            .store(records.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl Stream {
    /// An indexed object's bytes; `None` when it was deleted (retention) after the lookup.
    async fn read_object(&self, key: Object, expected_len: u64) -> Result<Option<Bytes>, Error> {
        match self.storage.get(key, None).await? {
            Some(v) if v.len() as u64 == expected_len => Ok(Some(v)),
            Some(v) => Err(Error::Io {
                context: format!(
                    "{} of {} has {} bytes, index says {expected_len}",
                    key.key(),
                    self.name,
                    v.len()
                ),
                source: io::Error::other("size mismatch"),
            }),
            None => Ok(None),
        }
    }
}

/// The single writer of a live stream. Dropping it (even without [`Recording::finish`]) marks
/// the stream as no longer live.
#[derive(Debug)]
pub struct Recording {
    stream: Arc<Stream>,
    /// Every write asks it for its bytes first (`record.min_free`).
    room: Arc<Room>,
    /// Trims made for this recording's writes, not yet reported.
    trimmed: Vec<Trim>,
    ended: bool,
    /// LL-HLS: the segment whose parts are being appended.
    open: Option<OpenFile>,
}

/// The segment a [`Recording`] appends parts to.
#[derive(Debug, Clone, Copy)]
struct OpenFile {
    seq: u64,
    /// Bytes appended (durably) so far.
    written: u64,
    /// An append failed: no more parts for this segment; it is written whole when sealed.
    failed: bool,
}

/// Where a part belongs: the open segment's period and start, for [`Recording::add_part`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartOf {
    pub period: u32,
    /// Media timeline start of the segment.
    pub start_ms: u64,
    /// Wall clock of the segment's start.
    pub time_ms: i64,
}

impl Recording {
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Segments deleted (of any stream) to make room for this recording's writes since the
    /// last call: the caller announces them (`NetStream.Record.Trimmed`).
    pub fn take_trimmed(&mut self) -> Vec<Trim> {
        std::mem::take(&mut self.trimmed)
    }

    /// Durably stores a new period's init segment and indexes it.
    pub async fn add_period(
        &mut self,
        init: Bytes,
        mut meta: PeriodMeta,
    ) -> Result<PeriodMeta, Error> {
        meta.id = self.stream.read().periods.last().map_or(0, |p| p.id + 1);
        meta.init_hash = xxhash_rust::xxh3::xxh3_64(&init);
        meta.init_length = init.len() as u64;
        let s = self.stream.clone();
        let m = meta.clone();
        self.write_with_room(init.len() as u64, move || {
            let (s, init, m) = (s.clone(), init.clone(), m.clone());
            async move {
                s.store_and_index(Object::Init(m.id), init, Record::Period(m))
                    .await
            }
        })
        .await?;
        Ok(meta)
    }

    /// LL-HLS: durably appends the next part of the segment being written and announces it
    /// (the index's open segment, watchers woken). `Ok(None)` when it was not announced: an
    /// append failed (logged), so this segment gets no more parts and is written whole when
    /// sealed; its readers wait for the segment. Errors only when no room can be made.
    pub async fn add_part(
        &mut self,
        data: Bytes,
        of: PartOf,
        duration_ms: u64,
        independent: bool,
    ) -> Result<Option<PartMeta>, Error> {
        let seq = self.stream.read().next_seq;
        let state = match self.open {
            Some(o) if o.seq == seq => o,
            _ => OpenFile {
                seq,
                written: 0,
                failed: false,
            },
        };
        self.open = Some(state);
        if state.failed {
            return Ok(None);
        }
        let len = data.len() as u64;
        let (reservation, trims) = self.room.make_room(len, 0).await?;
        self.trimmed.extend(trims);
        let appended = self
            .stream
            .storage
            .append_open(seq, state.written, data.clone())
            .await;
        drop(reservation);
        if let Err(e) = appended {
            tracing::warn!(stream = %self.stream.name, seq, error = %e, "part not written; the segment will be written whole");
            self.open = Some(OpenFile {
                failed: true,
                ..state
            });
            return Ok(None);
        }
        let part = PartMeta {
            duration_ms,
            offset: state.written,
            length: len,
            independent,
            hash: xxhash_rust::xxh3::xxh3_64(&data),
        };
        self.open = Some(OpenFile {
            written: state.written + len,
            ..state
        });
        if let Ok(mut held) = self.stream.open_parts.lock() {
            if held.0 != seq || state.written == 0 {
                *held = (seq, Vec::new());
            }
            held.1.push(data);
        }
        let open = OpenSegment {
            seq,
            period: of.period,
            start_ms: of.start_ms,
            time_ms: of.time_ms,
            parts: Vec::new(),
        };
        self.stream.timeline.add_part(&open, part.clone());
        Ok(Some(part))
    }

    /// Durably stores a media segment, indexes it and wakes watchers. `meta.seq`, `length` and
    /// `hash` are assigned here. When its parts were all appended (LL-HLS), the appended file
    /// becomes the segment (its bytes are the parts joined); else it is written whole.
    pub async fn add_segment(
        &mut self,
        data: Bytes,
        mut meta: SegmentMeta,
    ) -> Result<SegmentMeta, Error> {
        meta.seq = self.stream.read().next_seq;
        meta.length = data.len() as u64;
        meta.hash = xxhash_rust::xxh3::xxh3_64(&data);
        let open = self.open.take().filter(|o| o.seq == meta.seq);
        if let Some(o) = open {
            if !o.failed && o.written == meta.length {
                let sealed = self.seal(meta.clone()).await;
                self.clear_open_parts(meta.seq);
                match sealed {
                    Ok(()) => return Ok(meta),
                    Err(e) => {
                        tracing::warn!(stream = %self.stream.name, seq = meta.seq, error = %e, "cannot seal the segment from its parts; writing it whole");
                    }
                }
            }
            if let Err(e) = self.stream.storage.discard_open(meta.seq).await {
                tracing::warn!(stream = %self.stream.name, seq = meta.seq, error = %e, "cannot remove a partial segment; recovery will");
            }
        }
        let s = self.stream.clone();
        let m = meta.clone();
        let written = self
            .write_with_room(meta.length, move || {
                let (s, data, m) = (s.clone(), data.clone(), m.clone());
                async move {
                    s.store_and_index(Object::Segment(m.seq), data, Record::Segment(m))
                        .await
                }
            })
            .await;
        self.clear_open_parts(meta.seq);
        written.map(|()| meta)
    }

    /// Seals the appended parts as segment `meta.seq` and indexes it; on an index failure
    /// the sealed file is removed again (nothing unindexed stays).
    async fn seal(&self, meta: SegmentMeta) -> Result<(), Error> {
        let s = &self.stream;
        s.storage.seal_open(meta.seq, meta.length).await?;
        let indexed = s.append_and_apply(&[Record::Segment(meta.clone())]).await;
        if let Err(e) = indexed {
            if let Err(e) = s.storage.delete(Object::Segment(meta.seq)).await {
                tracing::warn!(stream = %s.name, key = %Object::Segment(meta.seq), error = %e, "cannot remove an unindexed object; recovery will");
            }
            return Err(e);
        }
        Ok(())
    }

    fn clear_open_parts(&self, seq: u64) {
        if let Ok(mut held) = self.stream.open_parts.lock() {
            if held.0 == seq {
                *held = (0, Vec::new());
            }
        }
    }

    /// Runs a write of `len` bytes after making room for it. A write that fails with an I/O
    /// error (ENOSPC, EIO) left nothing behind; it is retried once after asking for twice the
    /// room. [`Error::NoSpace`] when no room can be made.
    async fn write_with_room<W, F>(&mut self, len: u64, write: W) -> Result<(), Error>
    where
        W: Fn() -> F,
        F: std::future::Future<Output = Result<(), Error>>,
    {
        let (reservation, trims) = self.room.make_room(len, 0).await?;
        self.trimmed.extend(trims);
        let first = write().await;
        drop(reservation);
        let err = match first {
            Err(e @ Error::Io { .. }) => e,
            other => return other,
        };
        tracing::warn!(stream = %self.stream.name, error = %err, "write failed; making room and retrying once");
        let (reservation, trims) = self.room.make_room(len, len).await?;
        self.trimmed.extend(trims);
        let result = write().await;
        drop(reservation);
        result
    }

    /// Continues the numbering from `next_seq` when it is ahead of this stream's (the shared
    /// archive has segments other origins recorded): the next segment gets at least it.
    pub fn continue_from(&mut self, next_seq: u64) {
        let raised = {
            let mut ix = self.stream.write();
            let before = ix.next_seq;
            ix.next_seq = before.max(next_seq);
            ix.next_seq != before
        };
        if raised {
            self.stream.bump();
        }
    }

    /// Ends the recording: the stream is no longer live.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.stream.set_live(false);
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use index::tests::period;

    fn policy() -> Policy {
        Policy {
            retention_ms: i64::MAX,
            max_bytes: u64::MAX,
        }
    }

    fn meta(time_ms: i64) -> SegmentMeta {
        SegmentMeta {
            seq: 0,
            period: 0,
            start_ms: 0,
            duration_ms: 2000,
            time_ms,
            length: 0,
            hash: 0,
        }
    }

    #[tokio::test]
    async fn record_recover_and_refuse_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), policy(), MinFree::Bytes(0)).unwrap();
        let mut rec = store.begin_recording("cam").unwrap();
        assert!(matches!(
            store.begin_recording("cam"),
            Err(Error::AlreadyLive(_))
        ));
        rec.add_period(Bytes::from_static(b"init"), period(0, 0, 1000))
            .await
            .unwrap();
        for i in 0..3 {
            let m = rec
                .add_segment(Bytes::from(vec![i as u8; 100]), meta(1000 + i * 2000))
                .await
                .unwrap();
            assert_eq!(m.seq, i as u64);
        }
        rec.finish();
        assert!(!store.get("cam").unwrap().read().live);
        // Simulate a crash: a temp file, an unindexed segment and a torn index line.
        let root = dir.path().join("cam");
        std::fs::write(root.join("segments/3.m4s"), b"unannounced").unwrap();
        std::fs::write(root.join("segments/4.m4s.tmp"), b"half").unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("index.jsonl"))
            .unwrap();
        io::Write::write_all(&mut f, b"{\"t\":\"seg\",\"se").unwrap();
        drop(f);

        let (store, found) = Store::open(dir.path(), policy(), MinFree::Bytes(0)).unwrap();
        assert_eq!(
            found,
            Recovered {
                streams: 1,
                segments: 3,
                removed_files: 2,
                torn_index_tails: 1
            }
        );
        let s = store.get("cam").unwrap();
        // Segment 4 was being written (its LL-HLS parts may have been announced): 4 is never
        // used again, and the rewritten index keeps that across another restart.
        assert_eq!(s.read().next_seq, 5);
        drop(s);
        drop(store);
        let (store, _) = Store::open(dir.path(), policy(), MinFree::Bytes(0)).unwrap();
        let s = store.get("cam").unwrap();
        assert_eq!(s.read().next_seq, 5);
        assert_eq!(
            s.read_segment(2).await.unwrap().unwrap(),
            Bytes::from(vec![2u8; 100])
        );
        assert_eq!(
            s.read_init(0).await.unwrap().unwrap(),
            Bytes::from_static(b"init")
        );
        assert!(s.read_segment(3).await.unwrap().is_none());
        // The next recording continues the seq and opens a new period.
        let mut rec = store.begin_recording("cam").unwrap();
        let p = rec
            .add_period(Bytes::from_static(b"init2"), period(0, 6000, 9000))
            .await
            .unwrap();
        assert_eq!(p.id, 1);
        let m = rec
            .add_segment(Bytes::from_static(b"x"), meta(9000))
            .await
            .unwrap();
        assert_eq!(m.seq, 5);
    }

    /// LL-HLS parts: each is durable and announced when added; the segment made of them is
    /// the appended file (no second write); a crash before the seal never reuses the seq.
    #[tokio::test]
    async fn parts_are_announced_then_sealed_into_their_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), policy(), MinFree::Bytes(0)).unwrap();
        let mut rec = store.begin_recording("cam").unwrap();
        rec.add_period(Bytes::from_static(b"init"), period(0, 0, 1000))
            .await
            .unwrap();
        let of = PartOf {
            period: 0,
            start_ms: 0,
            time_ms: 1000,
        };
        let parts: Vec<Bytes> = (0..3u8)
            .map(|i| Bytes::from(vec![i; 10 + i as usize]))
            .collect();
        let s = rec.stream().clone();
        for (i, p) in parts.iter().enumerate() {
            let meta = rec
                .add_part(p.clone(), of, 500, i == 0)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(meta.length, p.len() as u64);
            let open = s.read().open.clone().expect("open segment");
            assert_eq!((open.seq, open.parts.len()), (0, i + 1));
            assert_eq!(s.read_part(0, i).await.unwrap().as_ref(), Some(p));
            // Durable before it is announced: the bytes are on disk.
            let on_disk = std::fs::read(dir.path().join("cam/segments/0.m4s.tmp")).unwrap();
            assert_eq!(on_disk.len() as u64, meta.offset + meta.length);
        }
        assert_eq!(s.read_part(0, 3).await.unwrap(), None);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
        let m = rec
            .add_segment(Bytes::from(joined.clone()), meta(1000))
            .await
            .unwrap();
        assert_eq!(m.seq, 0);
        assert!(s.read().open.is_none());
        assert!(!dir.path().join("cam/segments/0.m4s.tmp").exists());
        assert_eq!(s.read_segment(0).await.unwrap().unwrap(), joined);
        // A sealed segment's parts are ranges of it.
        assert_eq!(s.read().parts_of(0).map(<[_]>::len), Some(3));
        assert_eq!(s.read_part(0, 2).await.unwrap().as_ref(), Some(&parts[2]));
        // Parts of segment 1, then a crash (no seal).
        rec.add_part(parts[0].clone(), of, 500, true)
            .await
            .unwrap()
            .unwrap();
        std::mem::forget(rec);
        drop(s);
        drop(store);
        let (store, _) = Store::open(dir.path(), policy(), MinFree::Bytes(0)).unwrap();
        let s = store.get("cam").unwrap();
        assert_eq!(
            s.read().next_seq,
            2,
            "parts of 1 were announced: 1 is not reused"
        );
        assert!(s.read().open.is_none());
    }

    #[tokio::test]
    async fn retention_deletes_files_and_keeps_seq() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(
            dir.path(),
            Policy {
                retention_ms: 10_000,
                max_bytes: 250,
            },
            MinFree::Bytes(0),
        )
        .unwrap();
        let mut rec = store.begin_recording("cam").unwrap();
        rec.add_period(Bytes::from_static(b"init"), period(0, 0, 0))
            .await
            .unwrap();
        for i in 0..5 {
            rec.add_segment(Bytes::from(vec![0u8; 100]), meta(i * 2000))
                .await
                .unwrap();
        }
        let s = store.get("cam").unwrap();
        assert_eq!(
            store.enforce_retention(&s, 0).await.unwrap(),
            3,
            "over max_bytes"
        );
        assert_eq!(s.read().bytes, 200);
        assert!(!dir.path().join("cam/segments/2.m4s").exists());
        assert!(dir.path().join("cam/segments/3.m4s").exists());
        assert_eq!(
            store.enforce_retention(&s, 1_000_000).await.unwrap(),
            1,
            "live keeps the newest"
        );
        rec.finish();
        assert_eq!(store.enforce_retention(&s, 1_000_000).await.unwrap(), 1);
        let (store, _) = Store::open(dir.path(), policy(), MinFree::Bytes(0)).unwrap();
        assert_eq!(store.get("cam").unwrap().read().next_seq, 5);
    }

    /// The longest segment keeps counting for the target duration after retention deleted it,
    /// across a restart too.
    #[tokio::test]
    async fn the_longest_segment_outlives_its_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let keep_two = Policy {
            retention_ms: i64::MAX,
            max_bytes: 200,
        };
        let (store, _) = Store::open(dir.path(), keep_two, MinFree::Bytes(0)).unwrap();
        let mut rec = store.begin_recording("cam").unwrap();
        rec.add_period(Bytes::from_static(b"init"), period(0, 0, 0))
            .await
            .unwrap();
        let mut long = meta(0);
        long.duration_ms = 6_000;
        rec.add_segment(Bytes::from(vec![0u8; 100]), long)
            .await
            .unwrap();
        for i in 1..3 {
            rec.add_segment(Bytes::from(vec![0u8; 100]), meta(4_000 + i * 2000))
                .await
                .unwrap();
        }
        let s = store.get("cam").unwrap();
        assert_eq!(store.enforce_retention(&s, 0).await.unwrap(), 1);
        assert!(s.read().segments.iter().all(|x| x.duration_ms < 6_000));
        assert_eq!(s.read().max_duration_ms, 6_000);
        rec.finish();
        drop((s, store));
        let (store, _) = Store::open(dir.path(), keep_two, MinFree::Bytes(0)).unwrap();
        assert_eq!(store.get("cam").unwrap().read().max_duration_ms, 6_000);
    }
}
