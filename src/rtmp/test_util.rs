//! Test helpers shared by the session and server tests.

use bytes::Bytes;

use crate::media::flv::{Tag, TagKind};

/// The tags of `tests/fixtures/testsrc.flv`.
pub fn fixture_tags() -> Vec<Tag> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/testsrc.flv");
    parse_flv(&std::fs::read(path).expect("read fixture"))
}

/// Minimal FLV reader: 9-byte header and first back pointer, then 11-byte tag headers.
pub fn parse_flv(data: &[u8]) -> Vec<Tag> {
    assert_eq!(&data[..3], b"FLV");
    let mut pos = 13;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let h = &data[pos..pos + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let kind = match h[0] & 0x1f {
            8 => TagKind::Audio,
            9 => TagKind::Video,
            18 => TagKind::Script,
            other => panic!("unexpected tag type {other}"),
        };
        let body = Bytes::copy_from_slice(&data[pos + 11..pos + 11 + size]);
        tags.push(Tag {
            kind,
            timestamp_ms: ts,
            body,
        });
        pos += 11 + size + 4;
    }
    tags
}
