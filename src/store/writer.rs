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

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent"))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(TMP_SUFFIX);
    let tmp = Path::new(&tmp_name);
    {
        let mut f = File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    fs::rename(tmp, path)?;
    sync_dir(dir)
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
#[derive(Debug)]
pub struct LineFile {
    file: File,
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
        Ok(LineFile { file })
    }

    /// Appends lines (each without its newline) in one write and fsyncs.
    pub fn append(&mut self, lines: &[String]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }
}

/// Removes a file, treating "already gone" as success.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
