//! Standalone MP4 files from recorded CMAF: the period's init segment with real durations, then
//! its media segments with their decode times rebased so the file starts at zero. Pure code.
//!
//! The output is a fragmented MP4 (ftyp, moov with mvex/mehd, then moof+mdat pairs), which
//! ffplay, VLC and browsers play as a file. Invariants:
//! - Only `moov` and each `moof` are rewritten; `mdat` payloads pass through untouched (the
//!   caller can send them as slices of the cached segment, without a copy).
//! - Rebasing keeps every track's offset to the others: one common shift in milliseconds,
//!   converted to each track's timescale and never larger than any track's first decode time.
//! - Sizes never change when a segment is rebased (tfdt keeps its version; a v0 value that
//!   shrinks still fits), so the clip's length is known before its first byte is sent.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

/// Why recorded bytes could not be turned into a clip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClipError {
    #[error("malformed MP4: {0}")]
    Malformed(&'static str),
    #[error("segment names track {0}, which the init segment does not have")]
    UnknownTrack(u32),
    #[error("segment starts before the clip's first segment")]
    BeforeStart,
}

/// One box: its type and the byte range of its body within the parent slice.
#[derive(Debug, Clone, Copy)]
struct BoxAt {
    kind: [u8; 4],
    start: usize,
    body: usize,
    end: usize,
}

fn boxes(data: &[u8]) -> Result<Vec<BoxAt>, ClipError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let head = data
            .get(pos..pos + 8)
            .ok_or(ClipError::Malformed("truncated box header"))?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = [head[4], head[5], head[6], head[7]];
        let (size, body) = match size32 {
            0 => (data.len() - pos, pos + 8),
            1 => {
                let ext = data
                    .get(pos + 8..pos + 16)
                    .ok_or(ClipError::Malformed("truncated box size"))?;
                let s = u64::from_be_bytes(
                    ext.try_into()
                        .map_err(|_| ClipError::Malformed("box size"))?,
                );
                (
                    usize::try_from(s).map_err(|_| ClipError::Malformed("box too large"))?,
                    pos + 16,
                )
            }
            s => (s, pos + 8),
        };
        let end = pos
            .checked_add(size)
            .filter(|&e| e <= data.len() && e >= body)
            .ok_or(ClipError::Malformed("box overruns its parent"))?;
        out.push(BoxAt {
            kind,
            start: pos,
            body,
            end,
        });
        pos = end;
    }
    Ok(out)
}

fn read_u32(d: &[u8], at: usize) -> Result<u32, ClipError> {
    d.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(ClipError::Malformed("short box"))
}

fn read_u64(d: &[u8], at: usize) -> Result<u64, ClipError> {
    d.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(ClipError::Malformed("short box"))
}

fn write_u32(d: &mut [u8], at: usize, v: u32) -> Result<(), ClipError> {
    d.get_mut(at..at + 4)
        .ok_or(ClipError::Malformed("short box"))?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

fn write_u64(d: &mut [u8], at: usize, v: u64) -> Result<(), ClipError> {
    d.get_mut(at..at + 8)
        .ok_or(ClipError::Malformed("short box"))?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Writes a duration field of a full box whose v0/v1 layouts put it at `v0`/`v1` bytes into the
/// body (after version+flags), in 32 or 64 bits.
fn set_duration(body: &mut [u8], v0: usize, v1: usize, value: u64) -> Result<(), ClipError> {
    match body.first() {
        Some(0) => write_u32(body, v0, u32::try_from(value).unwrap_or(u32::MAX)),
        Some(1) => write_u64(body, v1, value),
        _ => Err(ClipError::Malformed("unknown full box version")),
    }
}

fn scale(ms: u64, timescale: u32) -> u64 {
    (u128::from(ms) * u128::from(timescale) / 1000) as u64
}

/// The timescale of each track of an init segment, by track id.
pub fn track_timescales(init: &[u8]) -> Result<HashMap<u32, u32>, ClipError> {
    let top = boxes(init)?;
    let moov = top
        .iter()
        .find(|b| &b.kind == b"moov")
        .ok_or(ClipError::Malformed("no moov"))?;
    let mut out = HashMap::new();
    for trak in boxes(&init[moov.body..moov.end])?
        .iter()
        .filter(|b| &b.kind == b"trak")
    {
        let trak_data = &init[moov.body + trak.body..moov.body + trak.end];
        let kids = boxes(trak_data)?;
        let tkhd = kids
            .iter()
            .find(|b| &b.kind == b"tkhd")
            .ok_or(ClipError::Malformed("no tkhd"))?;
        let tkhd_body = &trak_data[tkhd.body..tkhd.end];
        let id = read_u32(
            tkhd_body,
            if tkhd_body.first() == Some(&1) {
                20
            } else {
                12
            },
        )?;
        let mdia = kids
            .iter()
            .find(|b| &b.kind == b"mdia")
            .ok_or(ClipError::Malformed("no mdia"))?;
        let mdia_data = &trak_data[mdia.body..mdia.end];
        let mdhd = boxes(mdia_data)?
            .into_iter()
            .find(|b| &b.kind == b"mdhd")
            .ok_or(ClipError::Malformed("no mdhd"))?;
        let mdhd_body = &mdia_data[mdhd.body..mdhd.end];
        let ts = read_u32(
            mdhd_body,
            if mdhd_body.first() == Some(&1) {
                20
            } else {
                12
            },
        )?;
        if ts == 0 {
            return Err(ClipError::Malformed("zero timescale"));
        }
        out.insert(id, ts);
    }
    Ok(out)
}

/// The init segment of a clip lasting `duration_ms` (durations set in mvhd, tkhd, mdhd and a
/// new `mehd`, the fragmented file's total duration), and its tracks' timescales.
pub fn clip_init(init: &[u8], duration_ms: u64) -> Result<(Bytes, HashMap<u32, u32>), ClipError> {
    let timescales = track_timescales(init)?;
    let mut out = BytesMut::with_capacity(init.len() + 16);
    for b in boxes(init)? {
        if &b.kind != b"moov" {
            out.extend_from_slice(&init[b.start..b.end]);
            continue;
        }
        let moov = &init[b.body..b.end];
        let mut movie_ts = 1000;
        let mut body = Vec::with_capacity(moov.len() + 16);
        for c in boxes(moov)? {
            let raw = &moov[c.start..c.end];
            let hdr = c.body - c.start;
            match &c.kind {
                b"mvhd" => {
                    let mut m = raw.to_vec();
                    let v1 = m.get(hdr) == Some(&1);
                    movie_ts = read_u32(&m[hdr..], if v1 { 20 } else { 12 })?.max(1);
                    set_duration(&mut m[hdr..], 16, 24, scale(duration_ms, movie_ts))?;
                    body.extend_from_slice(&m);
                }
                b"trak" => body.extend_from_slice(&rewrite_trak(
                    raw,
                    hdr,
                    duration_ms,
                    movie_ts,
                    &timescales,
                )?),
                b"mvex" => {
                    let mut kids = Vec::new();
                    // mehd (version 1: 64-bit fragment_duration) first, replacing any.
                    kids.extend_from_slice(&20u32.to_be_bytes());
                    kids.extend_from_slice(b"mehd");
                    kids.extend_from_slice(&[1, 0, 0, 0]);
                    kids.extend_from_slice(&scale(duration_ms, movie_ts).to_be_bytes());
                    let inner = &raw[hdr..];
                    for k in boxes(inner)?.iter().filter(|k| &k.kind != b"mehd") {
                        kids.extend_from_slice(&inner[k.start..k.end]);
                    }
                    push_box(&mut body, b"mvex", &kids);
                }
                _ => body.extend_from_slice(raw),
            }
        }
        let mut wrapped = Vec::with_capacity(body.len() + 8);
        push_box(&mut wrapped, b"moov", &body);
        out.extend_from_slice(&wrapped);
    }
    Ok((out.freeze(), timescales))
}

fn push_box(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
}

fn rewrite_trak(
    raw: &[u8],
    hdr: usize,
    duration_ms: u64,
    movie_ts: u32,
    timescales: &HashMap<u32, u32>,
) -> Result<Vec<u8>, ClipError> {
    let mut t = raw.to_vec();
    let inner_start = hdr;
    let kids = boxes(&raw[inner_start..])?;
    let mut id = None;
    for k in &kids {
        let body = inner_start + k.body;
        if &k.kind == b"tkhd" {
            let v1 = t.get(body) == Some(&1);
            id = Some(read_u32(&t[body..], if v1 { 20 } else { 12 })?);
            set_duration(&mut t[body..], 20, 28, scale(duration_ms, movie_ts))?;
        }
    }
    let ts = id
        .and_then(|i| timescales.get(&i))
        .copied()
        .ok_or(ClipError::Malformed("track without tkhd"))?;
    for k in kids.iter().filter(|k| &k.kind == b"mdia") {
        let mdia_body = inner_start + k.body;
        let mdia_end = inner_start + k.end;
        for m in boxes(&raw[mdia_body..mdia_end])?
            .iter()
            .filter(|m| &m.kind == b"mdhd")
        {
            let at = mdia_body + m.body;
            set_duration(&mut t[at..], 16, 24, scale(duration_ms, ts))?;
        }
    }
    Ok(t)
}

/// Where the decode times of a media segment are: one entry per `traf`.
#[derive(Debug, Clone)]
struct Tfdt {
    track: u32,
    /// Offset of the value within the segment.
    at: usize,
    wide: bool,
    value: u64,
}

/// The `tfdt`s of one `moof` (`moof_at..moof_end` of `seg`).
fn moof_tfdts(seg: &[u8], moof: &BoxAt) -> Result<Vec<Tfdt>, ClipError> {
    let mut out = Vec::new();
    for traf in boxes(&seg[moof.body..moof.end])?
        .iter()
        .filter(|b| &b.kind == b"traf")
    {
        let base = moof.body + traf.body;
        let kids = boxes(&seg[base..moof.body + traf.end])?;
        let tfhd = kids
            .iter()
            .find(|k| &k.kind == b"tfhd")
            .ok_or(ClipError::Malformed("no tfhd"))?;
        let track = read_u32(seg, base + tfhd.body + 4)?;
        let tfdt = kids
            .iter()
            .find(|k| &k.kind == b"tfdt")
            .ok_or(ClipError::Malformed("no tfdt"))?;
        let body = base + tfdt.body;
        let wide = seg.get(body) == Some(&1);
        let at = body + 4;
        let value = if wide {
            read_u64(seg, at)?
        } else {
            u64::from(read_u32(seg, at)?)
        };
        out.push(Tfdt {
            track,
            at,
            wide,
            value,
        });
    }
    Ok(out)
}

/// Every `moof` of a segment (a segment written in LL-HLS parts has one per part), each with
/// its `tfdt`s; at least one.
fn tfdts(seg: &[u8]) -> Result<Vec<(BoxAt, Vec<Tfdt>)>, ClipError> {
    let mut out = Vec::new();
    for b in boxes(seg)?.into_iter().filter(|b| &b.kind == b"moof") {
        let list = moof_tfdts(seg, &b)?;
        out.push((b, list));
    }
    if out.is_empty() {
        return Err(ClipError::Malformed("no moof"));
    }
    Ok(out)
}

/// The shift (per track, in track units) that makes a clip starting with `first_segment`
/// start at zero while keeping the tracks' offsets to each other.
pub fn shift_for(
    first_segment: &[u8],
    timescales: &HashMap<u32, u32>,
) -> Result<HashMap<u32, u64>, ClipError> {
    let moofs = tfdts(first_segment)?;
    let mut base_ms = u64::MAX;
    for t in moofs.iter().flat_map(|(_, list)| list) {
        let ts = *timescales
            .get(&t.track)
            .ok_or(ClipError::UnknownTrack(t.track))?;
        base_ms = base_ms.min((u128::from(t.value) * 1000 / u128::from(ts)) as u64);
    }
    if base_ms == u64::MAX {
        base_ms = 0;
    }
    Ok(timescales
        .iter()
        .map(|(&id, &ts)| (id, scale(base_ms, ts)))
        .collect())
}

/// A media segment with its decode times moved back by `shift`: each rewritten `moof` (a
/// small copy) followed by what comes after it up to the next `moof` as a slice of `seg` (no
/// copy).
pub fn rebase_segment(seg: &Bytes, shift: &HashMap<u32, u64>) -> Result<Vec<Bytes>, ClipError> {
    let moofs = tfdts(seg)?;
    let mut out = Vec::with_capacity(moofs.len() * 2 + 1);
    if let Some((first, _)) = moofs.first() {
        if first.start > 0 {
            out.push(seg.slice(..first.start));
        }
    }
    for (i, (moof, list)) in moofs.iter().enumerate() {
        let mut head = seg[moof.start..moof.end].to_vec();
        for t in list {
            let by = *shift
                .get(&t.track)
                .ok_or(ClipError::UnknownTrack(t.track))?;
            let v = t.value.checked_sub(by).ok_or(ClipError::BeforeStart)?;
            let at = t.at - moof.start;
            if t.wide {
                write_u64(&mut head, at, v)?;
            } else {
                write_u32(
                    &mut head,
                    at,
                    u32::try_from(v).map_err(|_| ClipError::Malformed("tfdt"))?,
                )?;
            }
        }
        out.push(Bytes::from(head));
        let rest_end = moofs.get(i + 1).map_or(seg.len(), |(next, _)| next.start);
        out.push(seg.slice(moof.end..rest_end));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fmp4::{media_segment, Fragment, Sample};

    fn init() -> Bytes {
        crate::media::fmp4::tests::tracks_init()
    }

    fn segment(v: u64, a: u64) -> Bytes {
        let sample = |sync| Sample {
            duration: 3000,
            data: Bytes::from_static(b"abcd"),
            sync,
            composition_offset: 0,
        };
        media_segment(
            7,
            &[
                Fragment {
                    track_id: 1,
                    base_decode_time: v,
                    samples: vec![sample(true), sample(false)],
                },
                Fragment {
                    track_id: 2,
                    base_decode_time: a,
                    samples: vec![sample(true)],
                },
            ],
        )
        .unwrap()
    }

    #[test]
    fn init_gets_durations_and_mehd() {
        let init = init();
        let ts = track_timescales(&init).unwrap();
        assert_eq!(ts.len(), 2);
        let (out, ts_out) = clip_init(&init, 12_345).unwrap();
        assert_eq!(ts_out, ts);
        let moov = boxes(&out)
            .unwrap()
            .into_iter()
            .find(|b| &b.kind == b"moov")
            .unwrap();
        let kids = boxes(&out[moov.body..moov.end]).unwrap();
        let mvhd = kids.iter().find(|b| &b.kind == b"mvhd").unwrap();
        assert_eq!(read_u32(&out, moov.body + mvhd.body + 16).unwrap(), 12_345);
        let mvex = kids.iter().find(|b| &b.kind == b"mvex").unwrap();
        let ex = boxes(&out[moov.body + mvex.body..moov.body + mvex.end]).unwrap();
        assert_eq!(&ex[0].kind, b"mehd");
        assert_eq!(ex.iter().filter(|b| &b.kind == b"trex").count(), 2);
        // Still parses as a whole.
        assert_eq!(track_timescales(&out).unwrap(), ts);
    }

    #[test]
    fn segments_rebase_with_a_common_shift() {
        let init = init();
        let ts = track_timescales(&init).unwrap();
        let (v_ts, a_ts) = (ts[&1], ts[&2]);
        // Video starts 2 s + 40 ms in, audio 2 s in.
        let seg = segment(scale(2040, v_ts), scale(2000, a_ts));
        let shift = shift_for(&seg, &ts).unwrap();
        let pieces = rebase_segment(&seg, &shift).unwrap();
        let whole: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        assert_eq!(whole.len(), seg.len());
        let t = &tfdts(&whole).unwrap()[0].1;
        assert_eq!(t[0].value, scale(40, v_ts));
        assert_eq!(t[1].value, 0);
        // A segment written in LL-HLS parts has a moof per part: every one is rebased.
        let mut two = seg.to_vec();
        two.extend_from_slice(&segment(scale(2540, v_ts), scale(2500, a_ts)));
        let pieces = rebase_segment(&Bytes::from(two.clone()), &shift).unwrap();
        let whole: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        assert_eq!(whole.len(), two.len());
        let moofs = tfdts(&whole).unwrap();
        assert_eq!(moofs.len(), 2);
        assert_eq!(moofs[1].1[0].value, scale(540, v_ts));
        assert_eq!(moofs[1].1[1].value, scale(500, a_ts));
        // A segment before the first cannot be rebased.
        let early = segment(0, 0);
        assert_eq!(
            rebase_segment(&early, &shift).unwrap_err(),
            ClipError::BeforeStart
        );
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let shift = HashMap::new();
        for bad in [
            &b""[..],
            b"\0\0\0\x09moof",
            b"\0\0\0\x01moof",
            b"\xff\xff\xff\xffmoof\0\0",
        ] {
            assert!(rebase_segment(&Bytes::copy_from_slice(bad), &shift).is_err());
            assert!(clip_init(bad, 1).is_err() || bad.is_empty());
        }
    }
}
