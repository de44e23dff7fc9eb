//! FLV tags: the unit both RTMP ingest and the test source feed into the remuxer.

use bytes::Bytes;

/// Kind of an FLV tag / RTMP media message (the FLV TagType and RTMP message type ids agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// 8
    Audio,
    /// 9
    Video,
    /// 18 (AMF0 script data, e.g. `@setDataFrame`/`onMetaData`)
    Script,
}

/// One FLV tag: kind, 32-bit millisecond timestamp as sent (may wrap), and the tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub kind: TagKind,
    pub timestamp_ms: u32,
    pub body: Bytes,
}
