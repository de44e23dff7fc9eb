//! Where a recording lives on disk. Every path is built here, from a validated stream name and
//! numbers only, so no request can name a file outside the recordings folder.
//!
//! ```text
//! <dir>/<stream>/index.jsonl        append-only time index (periods, segments, drops)
//! <dir>/<stream>/init/<period>.mp4  init segment of a period
//! <dir>/<stream>/segments/<seq>.m4s media segment
//! <dir>/<stream>/segments/<seq>.m4s.tmp  segment being written (parts appended, LL-HLS)
//! <dir>/<stream>/thumbs/<seq>.jpg     thumbnail of a segment (optional; deleted with it)
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
        self.root.join(Object::Init(period).key())
    }

    pub fn segment(&self, seq: u64) -> PathBuf {
        self.root.join(Object::Segment(seq).key())
    }

    /// Segment `seq` while its parts are appended (LL-HLS), renamed to [`Layout::segment`]
    /// when sealed; removed by recovery, which then never gives `seq` to another segment.
    pub fn open_segment(&self, seq: u64) -> PathBuf {
        let mut p = self.segment(seq).into_os_string();
        p.push(TMP_SUFFIX);
        PathBuf::from(p)
    }

    pub fn thumbs_dir(&self) -> PathBuf {
        self.root.join("thumbs")
    }

    /// The thumbnail of segment `seq`: not an [`Object`] (never archived, not in the index);
    /// it exists or not, and goes when its segment goes.
    pub fn thumb(&self, seq: u64) -> PathBuf {
        self.thumbs_dir().join(format!("{seq}.jpg"))
    }
}

/// An immutable object of a recording, named by a key relative to the stream
/// (`"init/0.mp4"`, `"segments/41.m4s"`): the same key is the file under the stream's folder,
/// the URL under `/streams/{name}/`, and (next) the object name in a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    Init(u32),
    Segment(u64),
}

impl Object {
    /// The key (see [`Object`]'s `Display`, the one place it is spelled).
    pub fn key(self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::Init(period) => write!(f, "init/{period}.mp4"),
            Object::Segment(seq) => write!(f, "segments/{seq}.m4s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_paths() {
        assert_eq!(Object::Segment(41).key(), "segments/41.m4s");
        assert_eq!(Object::Init(0).key(), "init/0.mp4");
        let l = Layout::new(Path::new("/rec"), "cam");
        assert_eq!(l.segment(41), Path::new("/rec/cam/segments/41.m4s"));
        assert_eq!(l.init(2), Path::new("/rec/cam/init/2.mp4"));
    }
}
