//! Object names of the archive, relative to the bucket's prefix. Every key is built here from a
//! validated stream name and numbers only.
//!
//! ```text
//! <stream>/lease                            the writer's lease: the only object replaced in place (CAS)
//! <stream>/index/<n:012>.json               index chunk n (0, 1, 2, ...): create-only, never rewritten
//! <stream>/snapshot/<n:012>.json            the whole index after the chunks below n (readers start here)
//! <stream>/init/<hash:016x>.mp4             init segment, named by its content (xxh3)
//! <stream>/segments/<seq>-<hash:016x>.m4s   media segment, named by its seq and content
//! <stream>/thumbs/<seq>-<hash:016x>.jpg     thumbnail of that segment (best effort; hash = the segment's)
//! .dvrgate/probe/<node>-<nanos>             the start-up probe (deleted after)
//! ```
//!
//! Content names make every object write idempotent: a create that finds the key taken found the
//! same bytes, whoever wrote them. Two writers can never put different bytes under one name.

/// Key of a stream's lease object.
pub fn lease(stream: &str) -> String {
    format!("{stream}/lease")
}

/// Key of index chunk `n` of a stream (zero-padded so listings sort by number).
pub fn chunk(stream: &str, n: u64) -> String {
    format!("{stream}/index/{n:012}.json")
}

/// Folder of a stream's index chunks (for garbage collection only).
pub fn chunks(stream: &str) -> String {
    format!("{stream}/index")
}

/// Key of the snapshot of a stream's index before chunk `n`.
pub fn snapshot(stream: &str, n: u64) -> String {
    format!("{stream}/snapshot/{n:012}.json")
}

/// Folder of a stream's snapshots.
pub fn snapshots(stream: &str) -> String {
    format!("{stream}/snapshot")
}

/// Folder of a stream's segments (for garbage collection only).
pub fn segments(stream: &str) -> String {
    format!("{stream}/segments")
}

/// The number of a chunk or snapshot object name (`000000000007.json` -> 7).
pub fn number_of(file: &str) -> Option<u64> {
    let digits = file.strip_suffix(".json")?;
    (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The seq of a segment object name (`41-<hash>.m4s` -> 41).
pub fn seq_of(file: &str) -> Option<u64> {
    file.strip_suffix(".m4s")?.split_once('-')?.0.parse().ok()
}

/// Key of an init segment with content hash `hash`.
pub fn init(stream: &str, hash: u64) -> String {
    format!("{stream}/init/{hash:016x}.mp4")
}

/// Key of media segment `seq` with content hash `hash`.
pub fn segment(stream: &str, seq: u64, hash: u64) -> String {
    format!("{stream}/segments/{seq}-{hash:016x}.m4s")
}

/// Key of the thumbnail of segment `seq` whose content hash is `hash` (named by the
/// segment, so a reader finds it from the index alone and two writers never clash).
pub fn thumb(stream: &str, seq: u64, hash: u64) -> String {
    format!("{stream}/thumbs/{seq}-{hash:016x}.jpg")
}

/// Folder of a stream's thumbnails (for garbage collection only).
pub fn thumbs(stream: &str) -> String {
    format!("{stream}/thumbs")
}

/// The seq of a thumbnail object name (`41-<hash>.jpg` -> 41).
pub fn thumb_seq_of(file: &str) -> Option<u64> {
    file.strip_suffix(".jpg")?.split_once('-')?.0.parse().ok()
}

/// Key of a start-up probe object (`.dvrgate` is no valid stream name, so it cannot clash).
pub fn probe(node: &str, nanos: u128) -> String {
    format!(".dvrgate/probe/{node}-{nanos}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(lease("cam"), "cam/lease");
        assert_eq!(chunk("cam", 7), "cam/index/000000000007.json");
        assert_eq!(init("cam", 0xab), "cam/init/00000000000000ab.mp4");
        assert_eq!(
            segment("cam", 41, 1),
            "cam/segments/41-0000000000000001.m4s"
        );
        assert!(!crate::names::is_valid(".dvrgate"));
        assert_eq!(snapshot("cam", 512), "cam/snapshot/000000000512.json");
        assert_eq!(number_of("000000000512.json"), Some(512));
        assert_eq!(number_of("512.json"), None);
        assert_eq!(seq_of("41-0000000000000001.m4s"), Some(41));
        assert_eq!(seq_of("x-1.m4s"), None);
    }
}
