//! The storage half of a recorded stream, behind a small trait: immutable objects by key
//! ([`Object`]), ranged reads, and an append-only index. [`LocalDisk`] is today's layout
//! (temp file, fsync, rename, dir fsync; index lines appended and fsynced). The object-store
//! implementation goes behind the same seam.
//!
//! [`Stream`](super::Stream) reads and writes only through it: an object is put (durable),
//! then its index line appended (durable), then announced. Recovery after a crash (dropping
//! torn index tails and files nothing indexes) is the local disk's own business, in `store`.

use std::fmt::Debug;
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::layout::{Layout, Object};
use super::writer::{self, LineFile};
use super::{blocking, io_err, Error};

/// A boxed storage future (no async-trait crate).
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Where a recorded stream's bytes live.
pub trait Storage: Send + Sync + Debug {
    /// Stores an immutable object, durably once `Ok`. Create-only: a key that exists is
    /// refused (keys are never reused once indexed; a failed put leaves nothing behind).
    fn put(&self, key: Object, bytes: Bytes) -> Fut<'_, ()>;
    /// The object's bytes (`range` within it), or `None` when it does not exist.
    fn get(&self, key: Object, range: Option<Range<u64>>) -> Fut<'_, Option<Bytes>>;
    /// Deletes an object; deleting a missing one succeeds.
    fn delete(&self, key: Object) -> Fut<'_, ()>;
    /// Appends index lines (each without newline), all or nothing, durably once `Ok`.
    fn append_index(&self, lines: Vec<String>) -> Fut<'_, ()>;
    /// The whole index as written (empty when none).
    fn read_index(&self) -> Fut<'_, Vec<u8>>;
    /// Replaces the whole index by `lines` at once (compaction): a reader sees the old index
    /// or the new one, never a mix; later appends go after the new lines.
    fn rewrite_index(&self, lines: Vec<String>) -> Fut<'_, ()>;
    /// LL-HLS: appends a part's bytes at `offset` of the segment `seq` being written, durably
    /// once `Ok`. Offset 0 starts it (dropping whatever an earlier attempt left); any other
    /// offset must be exactly what was appended so far.
    fn append_open(&self, seq: u64, offset: u64, bytes: Bytes) -> Fut<'_, ()>;
    /// Makes the open segment `seq`, whose appended bytes are `len` long, the immutable
    /// object `Segment(seq)`, durably once `Ok` (no byte is written again).
    fn seal_open(&self, seq: u64, len: u64) -> Fut<'_, ()>;
    /// Drops what was appended for segment `seq` (it will be put whole instead).
    fn discard_open(&self, seq: u64) -> Fut<'_, ()>;
}

/// A stream's recording on the local disk (see [`Layout`]).
#[derive(Debug, Clone)]
pub struct LocalDisk {
    layout: Layout,
    /// The open index file; `None` until the first append. Locked only in blocking code.
    index: Arc<Mutex<Option<LineFile>>>,
    /// The segment being appended part by part (seq, file), at `<segment>.tmp`: the name
    /// recovery removes, and where `write_atomic` writes too, so a sealed segment is the same
    /// rename either way.
    open: Arc<Mutex<Option<(u64, std::fs::File)>>>,
}

impl LocalDisk {
    pub fn new(layout: Layout) -> LocalDisk {
        LocalDisk {
            layout,
            index: Arc::default(),
            open: Arc::default(),
        }
    }
}

impl Storage for LocalDisk {
    fn put(&self, key: Object, bytes: Bytes) -> Fut<'_, ()> {
        let path = self.layout.root().join(key.key());
        Box::pin(blocking(move || {
            if let Some(dir) = path.parent() {
                if !dir.exists() {
                    writer::create_dir_durable(dir).map_err(io_err("cannot create folder"))?;
                }
            }
            if path.exists() {
                return Err(io_err(format!("{} exists", path.display()))(
                    io::ErrorKind::AlreadyExists.into(),
                ));
            }
            writer::write_atomic(&path, &bytes)
                .map_err(io_err(format!("cannot write {}", path.display())))
        }))
    }

    fn get(&self, key: Object, range: Option<Range<u64>>) -> Fut<'_, Option<Bytes>> {
        let path = self.layout.root().join(key.key());
        Box::pin(blocking(move || {
            let read = || -> io::Result<Vec<u8>> {
                let mut f = std::fs::File::open(&path)?;
                match &range {
                    None => {
                        let mut v = Vec::new();
                        f.read_to_end(&mut v)?;
                        Ok(v)
                    }
                    Some(r) => {
                        let len = r.end.checked_sub(r.start).ok_or_else(|| {
                            io::Error::new(io::ErrorKind::InvalidInput, "inverted range")
                        })?;
                        f.seek(SeekFrom::Start(r.start))?;
                        let mut v = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
                        f.read_exact(&mut v)?;
                        Ok(v)
                    }
                }
            };
            match read() {
                Ok(v) => Ok(Some(Bytes::from(v))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err(format!("cannot read {}", path.display()))(e)),
            }
        }))
    }

    fn delete(&self, key: Object) -> Fut<'_, ()> {
        let path = self.layout.root().join(key.key());
        Box::pin(blocking(move || {
            writer::remove_if_exists(&path).map_err(io_err("cannot delete"))
        }))
    }

    fn append_index(&self, lines: Vec<String>) -> Fut<'_, ()> {
        self.with_index_file(move |file, path| {
            if file.is_none() {
                if let Some(dir) = path.parent() {
                    writer::create_dir_durable(dir).map_err(io_err("cannot create folder"))?;
                }
                *file = Some(LineFile::open(path).map_err(io_err("cannot open index"))?);
            }
            match file.as_mut() {
                Some(f) => f
                    .append(&lines)
                    .map_err(io_err(format!("cannot append to {}", path.display()))),
                None => Ok(()),
            }
        })
    }

    fn read_index(&self) -> Fut<'_, Vec<u8>> {
        let path = self.layout.index();
        Box::pin(blocking(move || match std::fs::read(&path) {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(format!("cannot read {}", path.display()))(e)),
        }))
    }

    fn rewrite_index(&self, lines: Vec<String>) -> Fut<'_, ()> {
        self.with_index_file(move |file, path| {
            let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
            writer::write_atomic(path, body.as_bytes()).map_err(io_err("cannot compact index"))?;
            *file = Some(LineFile::open(path).map_err(io_err("cannot reopen index"))?);
            Ok(())
        })
    }

    fn append_open(&self, seq: u64, offset: u64, bytes: Bytes) -> Fut<'_, ()> {
        let path = self.layout.open_segment(seq);
        let open = self.open.clone();
        Box::pin(blocking(move || {
            use std::io::Write;
            let mut open = open
                .lock()
                .map_err(|_| Error::Task("open segment lock poisoned".into()))?;
            let context = || format!("cannot append to {}", path.display());
            if offset == 0 {
                *open = None;
                if let Some(dir) = path.parent() {
                    if !dir.exists() {
                        writer::create_dir_durable(dir).map_err(io_err("cannot create folder"))?;
                    }
                }
                let f = std::fs::File::create(&path).map_err(io_err(context()))?;
                *open = Some((seq, f));
            }
            let Some((open_seq, f)) = open.as_mut().filter(|(s, _)| *s == seq) else {
                return Err(io_err(context())(io::Error::other("segment not started")));
            };
            debug_assert_eq!(*open_seq, seq);
            let at = f.seek(SeekFrom::End(0)).map_err(io_err(context()))?;
            if at != offset {
                return Err(io_err(context())(io::Error::other(format!(
                    "file has {at} bytes, the part goes at {offset}"
                ))));
            }
            let written = f.write_all(&bytes).and_then(|()| f.sync_data());
            if let Err(e) = written {
                // Keep the file whole up to the last durable part.
                let _ = f.set_len(offset);
                return Err(io_err(context())(e));
            }
            Ok(())
        }))
    }

    fn seal_open(&self, seq: u64, len: u64) -> Fut<'_, ()> {
        let tmp = self.layout.open_segment(seq);
        let path = self.layout.segment(seq);
        let open = self.open.clone();
        Box::pin(blocking(move || {
            let mut open = open
                .lock()
                .map_err(|_| Error::Task("open segment lock poisoned".into()))?;
            let context = || format!("cannot seal {}", tmp.display());
            let Some((_, f)) = open.take().filter(|(s, _)| *s == seq) else {
                return Err(io_err(context())(io::Error::other("segment not started")));
            };
            let have = f.metadata().map_err(io_err(context()))?.len();
            if have != len {
                return Err(io_err(context())(io::Error::other(format!(
                    "has {have} bytes, the segment {len}"
                ))));
            }
            drop(f);
            if path.exists() {
                return Err(io_err(format!("{} exists", path.display()))(
                    io::ErrorKind::AlreadyExists.into(),
                ));
            }
            std::fs::rename(&tmp, &path).map_err(io_err(context()))?;
            if let Some(dir) = path.parent() {
                writer::sync_dir(dir).map_err(io_err(context()))?;
            }
            Ok(())
        }))
    }

    fn discard_open(&self, seq: u64) -> Fut<'_, ()> {
        let tmp = self.layout.open_segment(seq);
        let open = self.open.clone();
        Box::pin(blocking(move || {
            if let Ok(mut open) = open.lock() {
                if open.as_ref().is_some_and(|(s, _)| *s == seq) {
                    *open = None;
                }
            }
            writer::remove_if_exists(&tmp).map_err(io_err("cannot delete"))
        }))
    }
}

impl LocalDisk {
    /// Runs `f` on the open index file (`None` until the first append) and its path, in
    /// blocking code, holding the file's lock.
    fn with_index_file(
        &self,
        f: impl FnOnce(&mut Option<LineFile>, &std::path::Path) -> Result<(), Error> + Send + 'static,
    ) -> Fut<'_, ()> {
        let file = self.index.clone();
        let path = self.layout.index();
        Box::pin(blocking(move || {
            let mut file = file
                .lock()
                .map_err(|_| Error::Task("index file lock poisoned".into()))?;
            f(&mut file, &path)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Record, StreamIndex};

    #[tokio::test]
    async fn local_disk_honours_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Storage> = Arc::new(LocalDisk::new(Layout::new(dir.path(), "cam")));
        let seg = Object::Segment(41);
        assert_eq!(disk.get(seg, None).await.unwrap(), None);
        disk.put(seg, Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        assert!(
            disk.put(seg, Bytes::from_static(b"x")).await.is_err(),
            "create-only"
        );
        assert_eq!(
            disk.get(seg, None).await.unwrap().unwrap(),
            Bytes::from_static(b"0123456789")
        );
        assert_eq!(
            disk.get(seg, Some(2..5)).await.unwrap().unwrap(),
            Bytes::from_static(b"234")
        );
        assert!(disk.get(seg, Some(8..20)).await.is_err(), "past the end");
        assert!(dir.path().join("cam/segments/41.m4s").exists());
        disk.put(Object::Init(0), Bytes::from_static(b"init"))
            .await
            .unwrap();
        disk.delete(seg).await.unwrap();
        disk.delete(seg).await.unwrap();
        assert_eq!(disk.get(seg, None).await.unwrap(), None);

        assert!(disk.read_index().await.unwrap().is_empty());
        let records = [Record::drop_before(41), Record::drop_before(42)];
        disk.append_index(records.iter().map(Record::to_line).collect())
            .await
            .unwrap();
        disk.append_index(vec![Record::drop_before(43).to_line()])
            .await
            .unwrap();
        let text = disk.read_index().await.unwrap();
        let (ix, valid) = StreamIndex::from_jsonl(&text);
        assert_eq!(valid, text.len());
        assert_eq!(ix.next_seq, 43);

        disk.rewrite_index(vec![Record::drop_before(50).to_line()])
            .await
            .unwrap();
        disk.append_index(vec![Record::drop_before(51).to_line()])
            .await
            .unwrap();
        let text = disk.read_index().await.unwrap();
        assert_eq!(
            text,
            format!(
                "{}\n{}\n",
                Record::drop_before(50).to_line(),
                Record::drop_before(51).to_line()
            )
            .into_bytes(),
            "appends go after the rewritten lines"
        );
    }
}
