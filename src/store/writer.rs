//! Durable file operations (blocking; call them from `spawn_blocking`).
//!
//! Durability order, relied on by recovery: a file is written to `<name>.tmp`, fsynced, renamed
//! into place and its directory fsynced; only then is its index line appended and fsynced; only
//! then is it announced. So every indexed file is complete, and a crash leaves at most a `.tmp`
//! file or an unindexed complete file behind, both of which recovery deletes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::layout::TMP_SUFFIX;

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync dir). On
/// an error before the rename the temp file is removed, so a failed write (ENOSPC, EIO) leaves
/// no file behind: never a partial file under the final name, never a stray temp file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent"))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(TMP_SUFFIX);
    let tmp = Path::new(&tmp_name);
    let written = File::create(tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_data()
    });
    if let Err(e) = written.and_then(|()| fs::rename(tmp, path)) {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Cuts a file to `len` bytes and makes that durable (dropping a torn tail; needs no space).
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

/// Fsyncs a directory so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a directory (and parents) and makes its entry durable.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// An append-only line file (the index), fsynced after every append.
///
/// An append is all or nothing: when writing or fsyncing fails (a full volume may take half a
/// line), the file is cut back to its length before the append, so no torn line ever sits in
/// front of later ones (recovery stops reading at the first torn line).
#[derive(Debug)]
pub struct LineFile {
    file: File,
    /// Length of the file's complete lines.
    len: u64,
    /// A failed append could not be cut back yet; the next append retries the cut first.
    torn: bool,
}

impl LineFile {
    /// Opens `path` for appending, creating it (durably) if needed.
    pub fn open(path: &Path) -> io::Result<LineFile> {
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if !existed {
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        let len = file.metadata()?.len();
        Ok(LineFile {
            file,
            len,
            torn: false,
        })
    }

    /// Appends lines (each without its newline) in one write and fsyncs. On error the file
    /// keeps exactly its previous lines.
    pub fn append(&mut self, lines: &[String]) -> io::Result<()> {
        if self.torn {
            self.cut_back()?;
        }
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
        }
        match self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.torn = true;
                let _ = self.cut_back();
                Err(e)
            }
        }
    }

    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.sync_data()?;
        self.torn = false;
        Ok(())
    }
}

/// Removes a file, treating "already gone" as success.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
