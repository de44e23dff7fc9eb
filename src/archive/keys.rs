//! Object names of the archive, relative to the bucket's prefix. Every key is built here from a
//! validated stream name and numbers only.
//!
//! ```text
//! <stream>/lease                            the writer's lease: the only object replaced in place (CAS)
//! <stream>/index/<n:012>.json               index chunk n (0, 1, 2, ...): create-only, never rewritten
//! <stream>/init/<hash:016x>.mp4             init segment, named by its content (xxh3)
//! <stream>/segments/<seq>-<hash:016x>.m4s   media segment, named by its seq and content
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

/// Key of an init segment with content hash `hash`.
pub fn init(stream: &str, hash: u64) -> String {
    format!("{stream}/init/{hash:016x}.mp4")
}

/// Key of media segment `seq` with content hash `hash`.
pub fn segment(stream: &str, seq: u64, hash: u64) -> String {
    format!("{stream}/segments/{seq}-{hash:016x}.m4s")
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
    }
}
