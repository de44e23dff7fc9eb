//! The JSON documents one node serves and another reads: a stream's `index.json` ([`Index`])
//! and its status object ([`Status`], with its [`Source`]). One type per document, used both by
//! the handlers that write it and by the relay that reads it, so the two cannot drift apart
//! (`round_trip` below proves a written document reads back as itself).
//!
//! Invariants:
//! - Writing is infallible and allocation-bounded by the selected range; reading accepts what
//!   older nodes wrote (`hash`/`length` of a period and `offset` of a segment are optional).
//! - A document read from an upstream is only used after [`Index::validate`]: every number is
//!   small enough that arithmetic on it cannot overflow, every URL stays below the stream.
//! - Content hashes travel as 16 hex digits (the strong ETag without quotes).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::store::layout::Object;
use crate::store::StreamIndex;
use crate::time::format_rfc3339;

/// Largest `index.json` accepted: a 24-hour window is about 10 MB; this bounds a hostile one.
pub const MAX_INDEX_BYTES: usize = 64 << 20;
/// Largest segment (or init segment) accepted from an index: bounds what one pull may buffer.
pub const MAX_SEGMENT_BYTES: u64 = 256 << 20;
/// Largest seq, media time or byte offset accepted from an index: 2^53, so the numbers stay
/// exact in JSON (and in browsers) and the relay's arithmetic on them cannot overflow.
pub const MAX_INDEX_NUMBER: u64 = 1 << 53;
/// Longest segment accepted from an index (segments are cut at keyframes seconds apart).
pub const MAX_SEGMENT_DURATION_MS: u64 = 24 * 3600 * 1000;

/// `GET /streams/{name}/index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub stream: String,
    pub live: bool,
    /// The longest segment the stream has had (at least the node's `segment_target`).
    #[serde(default)]
    pub target_duration_ms: u64,
    pub periods: Vec<Period>,
    pub segments: Vec<Segment>,
    /// LL-HLS: the part target of the stream's parts (absent: no parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_target_ms: Option<u64>,
    /// LL-HLS: the segment being written, with its parts so far (only in an index that
    /// reaches the live edge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<Open>,
}

/// An LL-HLS part of a [`Segment`] or of the [`Open`] one: its own URL, and where its bytes
/// are in the segment (a segment's bytes are its parts joined in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub duration_ms: u64,
    pub url: String,
    pub offset: u64,
    pub length: u64,
    /// Starts with a keyframe (`INDEPENDENT=YES`).
    #[serde(default)]
    pub independent: bool,
    #[serde(default)]
    pub hash: Option<String>,
}

/// The segment being written (LL-HLS), as far as its parts go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub seq: u64,
    pub period: u32,
    pub start_ms: u64,
    /// RFC 3339 wall clock of its first frame (may move by a few ms when it is sealed).
    pub time: String,
    pub parts: Vec<Part>,
}

fn parts_doc(seq: u64, parts: &[crate::store::PartMeta]) -> Vec<Part> {
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| Part {
            duration_ms: p.duration_ms,
            url: crate::http::playlist::part_uri(seq, i),
            offset: p.offset,
            length: p.length,
            independent: p.independent,
            hash: Some(format_hash(p.hash)),
        })
        .collect()
}

/// Checks a part list: contiguous from offset 0, bounded, URLs below the stream. Returns the
/// bytes the parts cover.
fn validate_parts(seq: u64, parts: &[Part]) -> Result<u64, String> {
    let mut at = 0u64;
    for (i, p) in parts.iter().enumerate() {
        if p.offset != at {
            return Err(format!(
                "part {i} of segment {seq} is at {} not {at}",
                p.offset
            ));
        }
        if p.length == 0 || p.length > MAX_SEGMENT_BYTES {
            return Err(format!("part {i} of segment {seq} has length {}", p.length));
        }
        if p.duration_ms > MAX_SEGMENT_DURATION_MS {
            return Err(format!(
                "part {i} of segment {seq} has duration {}",
                p.duration_ms
            ));
        }
        if !safe_relative(&p.url) {
            return Err(format!(
                "part {i} of segment {seq} has unusable url {:?}",
                p.url
            ));
        }
        at = at.saturating_add(p.length);
        if at > MAX_SEGMENT_BYTES {
            return Err(format!(
                "segment {seq}'s parts exceed {MAX_SEGMENT_BYTES} bytes"
            ));
        }
    }
    Ok(at)
}

/// A period of [`Index`]: one init segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub id: u32,
    /// URL of the init segment, relative to the stream.
    pub init: String,
    pub codecs: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Media timeline position where the period starts.
    #[serde(default)]
    pub start_ms: u64,
    /// Content hash of the init segment.
    #[serde(default)]
    pub hash: Option<String>,
    /// Size of the init segment in bytes.
    #[serde(default)]
    pub length: Option<u64>,
}

/// A media segment of [`Index`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub seq: u64,
    pub period: u32,
    pub start_ms: u64,
    pub duration_ms: u64,
    /// RFC 3339 wall clock of the segment's first frame.
    pub time: String,
    /// URL of the bytes, relative to the stream; `offset` and `length` select them.
    pub url: String,
    #[serde(default)]
    pub offset: u64,
    pub length: u64,
    /// Content hash: lets a relay verify what it pulled.
    #[serde(default)]
    pub hash: Option<String>,
    /// LL-HLS: its parts, for the newest few segments of a live stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

/// Spells a content hash.
pub fn format_hash(hash: u64) -> String {
    format!("{hash:016x}")
}

/// Reads a content hash: `None` unless exactly 16 hex digits.
pub fn parse_hash(h: Option<&str>) -> Option<u64> {
    h.filter(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
}

/// A relative URL from an index is only used if it stays below the stream.
pub fn safe_relative(url: &str) -> bool {
    !url.is_empty()
        && !url.starts_with('/')
        && url
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
}

impl Index {
    /// The document for segments `range` of `ix` (all its periods).
    pub fn of(name: &str, ix: &StreamIndex, range: Range<usize>, target_ms: u64) -> Index {
        Index {
            stream: name.to_owned(),
            live: ix.live,
            target_duration_ms: ix.max_duration_ms.max(target_ms),
            periods: ix
                .periods
                .iter()
                .map(|p| Period {
                    id: p.id,
                    init: Object::Init(p.id).key(),
                    codecs: p.codecs.clone(),
                    width: p.width,
                    height: p.height,
                    start_ms: p.start_ms,
                    hash: Some(format_hash(p.init_hash)),
                    length: Some(p.init_length),
                })
                .collect(),
            part_target_ms: ix.part_target_ms.filter(|_| ix.live),
            open: ix
                .open
                .as_ref()
                .filter(|o| ix.live && range.end == ix.segments.len() && !o.parts.is_empty())
                .map(|o| Open {
                    seq: o.seq,
                    period: o.period,
                    start_ms: o.start_ms,
                    time: format_rfc3339(o.time_ms),
                    parts: parts_doc(o.seq, &o.parts),
                }),
            segments: ix
                .segments
                .range(range)
                .map(|s| Segment {
                    seq: s.seq,
                    period: s.period,
                    start_ms: s.start_ms,
                    duration_ms: s.duration_ms,
                    time: format_rfc3339(s.time_ms),
                    url: Object::Segment(s.seq).key(),
                    offset: 0,
                    length: s.length,
                    hash: Some(format_hash(s.hash)),
                    parts: ix
                        .parts_of(s.seq)
                        .filter(|_| ix.live)
                        .map_or_else(Vec::new, |p| parts_doc(s.seq, p)),
                })
                .collect(),
        }
    }

    /// Checks what a relay relies on; the error says what is wrong. A valid index has
    /// increasing seqs, URLs below the stream, bounded lengths and numbers small enough that
    /// nothing computed from them overflows.
    pub fn validate(&self) -> Result<(), String> {
        if self.target_duration_ms > MAX_SEGMENT_DURATION_MS {
            return Err(format!("target duration {} ms", self.target_duration_ms));
        }
        for p in &self.periods {
            if !safe_relative(&p.init) {
                return Err(format!(
                    "period {} has unusable init url {:?}",
                    p.id, p.init
                ));
            }
            if let Some(length) = p.length.filter(|&l| l == 0 || l > MAX_SEGMENT_BYTES) {
                return Err(format!("period {} has init length {length}", p.id));
            }
            if p.start_ms > MAX_INDEX_NUMBER {
                return Err(format!("period {} has start_ms beyond 2^53", p.id));
            }
        }
        let mut prev: Option<u64> = None;
        for s in &self.segments {
            if prev.is_some_and(|p| s.seq <= p) {
                return Err(format!("segment seq {} out of order", s.seq));
            }
            prev = Some(s.seq);
            if s.length == 0 || s.length > MAX_SEGMENT_BYTES {
                return Err(format!("segment {} has length {}", s.seq, s.length));
            }
            if s.seq > MAX_INDEX_NUMBER
                || s.start_ms > MAX_INDEX_NUMBER
                || s.offset > MAX_INDEX_NUMBER
            {
                return Err(format!(
                    "segment {} has seq, start_ms or offset beyond 2^53",
                    s.seq
                ));
            }
            if s.duration_ms > MAX_SEGMENT_DURATION_MS {
                return Err(format!(
                    "segment {} has duration {} ms",
                    s.seq, s.duration_ms
                ));
            }
            if !safe_relative(&s.url) {
                return Err(format!("segment {} has unusable url {:?}", s.seq, s.url));
            }
            if crate::time::parse_rfc3339(&s.time).is_none() {
                return Err(format!("segment {} has bad time {:?}", s.seq, s.time));
            }
            if !self.periods.iter().any(|p| p.id == s.period) {
                return Err(format!(
                    "segment {} names unknown period {}",
                    s.seq, s.period
                ));
            }
            if !s.parts.is_empty() && validate_parts(s.seq, &s.parts)? != s.length {
                return Err(format!("segment {}'s parts do not add up to it", s.seq));
            }
        }
        if let Some(part) = self
            .part_target_ms
            .filter(|&p| p == 0 || p > MAX_SEGMENT_DURATION_MS)
        {
            return Err(format!("part target {part} ms"));
        }
        if let Some(o) = &self.open {
            if prev.is_some_and(|p| o.seq <= p) || o.seq > MAX_INDEX_NUMBER {
                return Err(format!("open segment {} out of order", o.seq));
            }
            if o.start_ms > MAX_INDEX_NUMBER || crate::time::parse_rfc3339(&o.time).is_none() {
                return Err(format!("open segment {} has bad start or time", o.seq));
            }
            if !self.periods.iter().any(|p| p.id == o.period) {
                return Err(format!(
                    "open segment {} names unknown period {}",
                    o.seq, o.period
                ));
            }
            validate_parts(o.seq, &o.parts)?;
        }
        Ok(())
    }
}

/// `GET /streams/{name}`: what a stream is, where it comes from and its DVR window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    #[serde(default)]
    pub node: String,
    pub live: bool,
    pub source: Source,
    pub dvr: Dvr,
    #[serde(default)]
    pub codecs: Option<String>,
    /// Why browsers cannot play the current period, if they cannot.
    #[serde(default)]
    pub warning: Option<String>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    /// Id of the current period.
    #[serde(default)]
    pub period: Option<u32>,
    /// On a node with `[storage]`: the stream in the shared archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveStatus>,
}

/// The DVR window of a [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dvr {
    /// RFC 3339 wall clock of the first segment.
    pub start: Option<String>,
    /// RFC 3339 live edge (end of the newest segment).
    pub end: Option<String>,
    pub duration_ms: u64,
    pub segments: usize,
    pub bytes: u64,
    #[serde(default)]
    pub first_seq: Option<u64>,
    #[serde(default)]
    pub last_seq: Option<u64>,
}

/// Where a node gets a stream: `{"kind":"ingest"}` or `{"kind":"proxy",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// Published to this node over RTMP and recorded here.
    Ingest,
    /// Relayed from upstreams.
    Proxy(ProxySource),
    /// Read from the shared archive (`[storage]`), recorded by another node.
    Archive,
}

/// `archive` of a [`Status`]: the stream in the shared archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveStatus {
    /// `node.name` of the lease holder; `None` when nobody writes.
    pub writer: Option<String>,
    /// The newest seq in the bucket.
    pub archived_seq: Option<u64>,
    /// Segments recorded here and not yet uploaded by this node.
    pub backlog: u64,
    /// Whether this node reaches the object store (when not, recording goes on locally).
    pub store: String,
}

/// A relayed stream's [`Source`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySource {
    /// The stream's name upstream.
    pub remote: String,
    /// The upstream in use.
    pub upstream: Option<String>,
    pub upstreams: Vec<String>,
    /// `connecting`, `following`, `failing over`, `ended` or `available` (offered by an
    /// upstream, not relayed yet).
    pub state: String,
    pub on_demand: bool,
}

impl Status {
    /// The status of stream `ix` named `name` on node `node`.
    pub fn of(name: &str, node: &str, source: Source, ix: &StreamIndex) -> Status {
        let period = ix.periods.last();
        Status {
            name: name.to_owned(),
            node: node.to_owned(),
            live: ix.live,
            source,
            dvr: Dvr {
                start: ix.start_ms().map(format_rfc3339),
                end: ix.live_edge_ms().map(format_rfc3339),
                duration_ms: ix.duration_ms(),
                segments: ix.segments.len(),
                bytes: ix.bytes,
                first_seq: ix.segments.front().map(|s| s.seq),
                last_seq: ix.segments.back().map(|s| s.seq),
            },
            codecs: period.map(|p| p.codecs.clone()),
            warning: period
                .and_then(|p| crate::media::avc::browser_warning(&p.codecs))
                .map(str::to_owned),
            width: period.and_then(|p| p.width),
            height: period.and_then(|p| p.height),
            period: period.map(|p| p.id),
            archive: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::tests::{period, seg};

    fn sample() -> StreamIndex {
        let mut ix = StreamIndex::default();
        let mut p = period(0, 0, 1_764_000_000_000);
        p.width = Some(1280);
        p.height = Some(720);
        ix.periods.push(p);
        ix.periods.push(period(1, 4_000, 1_764_000_004_000));
        ix.push_segment(seg(7, 0, 1_764_000_000_000, 2_000));
        ix.push_segment(seg(8, 0, 1_764_000_002_000, 2_000));
        ix.push_segment(seg(9, 1, 1_764_000_004_000, 2_500));
        ix.live = true;
        ix
    }

    /// The index lists the open segment's parts and the recent segments' (what a relay needs
    /// to follow LL-HLS); a part list that does not tile its segment is refused.
    #[test]
    fn index_carries_parts() {
        use crate::store::{OpenSegment, PartMeta};
        let mut ix = sample();
        ix.part_target_ms = Some(500);
        let part = |offset, length| PartMeta {
            duration_ms: 500,
            offset,
            length,
            independent: offset == 0,
            hash: 7,
        };
        let open = |seq| OpenSegment {
            seq,
            period: 1,
            start_ms: 6_500,
            time_ms: 1_764_000_006_500,
            parts: Vec::new(),
        };
        // Segment 10: two parts of 500 + 600 bytes, sealed; segment 11 open with one.
        ix.push_part(&open(10), part(0, 500));
        ix.push_part(&open(10), part(500, 600));
        let mut s10 = seg(10, 1, 1_764_000_006_500, 1_000);
        s10.length = 1_100;
        ix.push_segment(s10);
        ix.push_part(&open(11), part(0, 300));
        let doc = Index::of("cam", &ix, 0..ix.segments.len(), 2_000);
        let back: Index = serde_json::from_slice(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(back, doc);
        back.validate().expect("valid");
        assert_eq!(back.part_target_ms, Some(500));
        let last = back.segments.last().unwrap();
        assert_eq!(last.parts.len(), 2);
        assert_eq!(last.parts[1].url, "parts/10.1.m4s");
        assert!(back.segments[0].parts.is_empty());
        let o = back.open.as_ref().expect("open segment");
        assert_eq!(
            (o.seq, o.parts.len(), o.parts[0].independent),
            (11, 1, true)
        );
        // A window that stops before the edge has no open segment.
        assert!(Index::of("cam", &ix, 0..2, 2_000).open.is_none());
        let mut bad = back.clone();
        bad.segments.last_mut().unwrap().parts[1].offset = 400;
        assert!(bad.validate().is_err());
        let mut bad = back.clone();
        bad.segments.last_mut().unwrap().parts.pop();
        assert!(bad.validate().unwrap_err().contains("add up"));
        let mut bad = back.clone();
        bad.open.as_mut().unwrap().seq = 10;
        assert!(bad.validate().is_err());
        let mut bad = back;
        bad.open.as_mut().unwrap().parts[0].url = "../x".into();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn index_round_trip() {
        let ix = sample();
        let doc = Index::of("cam", &ix, 0..ix.segments.len(), 2_000);
        let text = serde_json::to_vec(&doc).expect("serialize");
        let back: Index = serde_json::from_slice(&text).expect("parse");
        assert_eq!(back, doc);
        back.validate().expect("a written index is valid");
        assert_eq!(back.target_duration_ms, 2_500);
        assert_eq!(back.segments[2].url, "segments/9.m4s");
        assert_eq!(back.periods[1].init, "init/1.mp4");
        for (s, m) in back.segments.iter().zip(&ix.segments) {
            assert_eq!(parse_hash(s.hash.as_deref()), Some(m.hash));
            assert_eq!(crate::time::parse_rfc3339(&s.time), Some(m.time_ms));
        }
    }

    #[test]
    fn index_window_is_a_range() {
        let ix = sample();
        let doc = Index::of("cam", &ix, 1..2, 2_000);
        assert_eq!(doc.segments.len(), 1);
        assert_eq!(doc.segments[0].seq, 8);
        assert_eq!(doc.periods.len(), 2, "every period is listed");
    }

    #[test]
    fn status_round_trip() {
        let ix = sample();
        for source in [
            Source::Ingest,
            Source::Proxy(ProxySource {
                remote: "cam".into(),
                upstream: Some("http://127.0.0.1:1".into()),
                upstreams: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
                state: "following".into(),
                on_demand: true,
            }),
        ] {
            let status = Status::of("cam", "edge-1", source, &ix);
            let text = serde_json::to_string(&status).expect("serialize");
            let back: Status = serde_json::from_str(&text).expect("parse");
            assert_eq!(back, status);
        }
        let v = serde_json::to_value(Status::of("cam", "n", Source::Ingest, &ix)).expect("json");
        assert_eq!(v["source"], serde_json::json!({"kind": "ingest"}));
        assert_eq!(v["dvr"]["segments"], 3);
        assert_eq!(v["dvr"]["first_seq"], 7);
        assert_eq!(v["period"], 1);
        assert!(v["warning"].is_null(), "present, null when playable");
    }

    #[test]
    fn older_documents_read() {
        let text = r#"{"live":false,"periods":[{"id":0,"init":"init/0.mp4","codecs":"avc1.64001f"}],
            "segments":[{"seq":1,"period":0,"start_ms":0,"duration_ms":2000,
            "time":"2026-11-30T15:04:07.250Z","url":"segments/1.m4s","length":10}]}"#;
        let ix: Index = serde_json::from_str(text).expect("parse");
        ix.validate().expect("valid");
        assert_eq!(ix.segments[0].offset, 0);
        assert_eq!(ix.periods[0].hash, None);
    }

    #[test]
    fn hostile_documents_are_refused() {
        let ix = sample();
        let good = Index::of("cam", &ix, 0..ix.segments.len(), 2_000);
        type Spoil = Box<dyn Fn(&mut Index)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("out of order", Box::new(|d| d.segments[1].seq = 7)),
            ("length", Box::new(|d| d.segments[0].length = 0)),
            ("length", Box::new(|d| d.segments[0].length = u64::MAX)),
            ("2^53", Box::new(|d| d.segments[2].seq = u64::MAX)),
            ("2^53", Box::new(|d| d.segments[0].start_ms = u64::MAX)),
            (
                "duration",
                Box::new(|d| d.segments[0].duration_ms = u64::MAX),
            ),
            ("url", Box::new(|d| d.segments[0].url = "../x.m4s".into())),
            (
                "url",
                Box::new(|d| d.segments[0].url = "/etc/passwd".into()),
            ),
            (
                "time",
                Box::new(|d| d.segments[0].time = "yesterday".into()),
            ),
            ("unknown period", Box::new(|d| d.segments[0].period = 9)),
            ("init url", Box::new(|d| d.periods[0].init = "a//b".into())),
            ("init length", Box::new(|d| d.periods[0].length = Some(0))),
            ("target", Box::new(|d| d.target_duration_ms = u64::MAX)),
            ("start_ms", Box::new(|d| d.periods[0].start_ms = u64::MAX)),
            ("2^53", Box::new(|d| d.segments[0].offset = u64::MAX - 1)),
            (
                "init length",
                Box::new(|d| d.periods[0].length = Some(1 << 40)),
            ),
        ];
        for (why, spoil) in cases {
            let mut d = good.clone();
            spoil(&mut d);
            let err = d.validate().expect_err(why);
            assert!(err.contains(why), "{why:?} not in {err:?}");
        }
    }

    #[test]
    fn relative_urls() {
        for ok in ["segments/1.m4s", "init/0.mp4", "a/b_c-d.e"] {
            assert!(safe_relative(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "http://evil/x",
            "a//b",
            "a b",
            "./x",
        ] {
            assert!(!safe_relative(bad), "{bad}");
        }
        assert_eq!(parse_hash(Some("00000000000000ab")), Some(0xab));
        assert_eq!(parse_hash(Some("zz")), None);
    }

    #[test]
    fn hashes() {
        assert_eq!(format_hash(0xab), "00000000000000ab");
        assert_eq!(parse_hash(Some("00000000000000ab")), Some(0xab));
        for bad in ["ab", "+000000000000000", "zzzzzzzzzzzzzzzz", ""] {
            assert_eq!(parse_hash(Some(bad)), None, "{bad:?}");
        }
    }
}
