//! Where a recording lives on disk. Every path is built here, from a validated stream name and
//! numbers only, so no request can name a file outside the recordings folder.
//!
//! ```text
//! <dir>/<stream>/index.jsonl        append-only time index (periods, segments, drops)
//! <dir>/<stream>/init/<period>.mp4  init segment of a period
//! <dir>/<stream>/segments/<seq>.m4s media segment
//! ```

use std::path::{Path, PathBuf};

/// File name of a stream's append-only index.
pub const INDEX_FILE: &str = "index.jsonl";
/// Suffix of files being written; never indexed, removed on recovery.
pub const TMP_SUFFIX: &str = ".tmp";

/// Paths of one stream's recording.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of stream `name` (already validated) under `dir`.
    pub fn new(dir: &Path, name: &str) -> Layout {
        Layout {
            root: dir.join(name),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn index(&self) -> PathBuf {
        self.root.join(INDEX_FILE)
    }

    pub fn init_dir(&self) -> PathBuf {
        self.root.join("init")
    }

    pub fn segments_dir(&self) -> PathBuf {
        self.root.join("segments")
    }

    pub fn init(&self, period: u32) -> PathBuf {
        self.init_dir().join(format!("{period}.mp4"))
    }

    pub fn segment(&self, seq: u64) -> PathBuf {
        self.segments_dir().join(format!("{seq}.m4s"))
    }
}
