//! Low-latency HLS: blocking playlist reloads (`_HLS_msn`/`_HLS_part`), blocking preload-hint
//! parts, and `GET /streams/{name}/parts/{seq}.{index}.m4s`.
//!
//! The decisions are pure functions of the [`StreamIndex`] ([`reload`], [`part_state`]); the
//! handlers only wait on the timeline's change notification between them, at most
//! [`hold_ms`] (three target durations, RFC 8216bis 6.2.5.2), then answer 503 `no-store`.
//!
//! Invariants: nothing that does not exist yet is answered cacheably (404/503 are `no-store`);
//! a part is only ever served whole, once it is listed (a server never sends part of a part);
//! part names are never reused (seqs are not, see `store::index`).

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::segments::serve;
use super::{etag, ApiError, AppState, FileParam, StreamName};
use crate::store::{StreamIndex, Timeline};

/// What a blocking playlist request (`_HLS_msn=M`, `_HLS_part=P`) needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The playlist already has it (or the stream is not live): answer now.
    Ready,
    /// Not yet: hold the request until the index changes.
    Wait,
    /// M is more than two segments ahead of the newest one: 400.
    TooFar,
}

/// RFC 8216bis 6.2.5.2: "the server MUST hold the request until a Playlist contains a Segment
/// with a Media Sequence Number of M or later" (with `_HLS_part=P`: "a Partial Segment with a
/// Part Index of P or later"); "If the _HLS_part ... exceeds the last Partial Segment in the
/// current Parent Segment, the Server MUST treat it as ... Part Index 0 of the next Parent
/// Segment"; "if the _HLS_msn is more than two segments beyond the last Media Segment in the
/// Playlist ... the server SHOULD return 400".
pub fn reload(ix: &StreamIndex, msn: u64, part: Option<u64>) -> Reload {
    if !ix.live {
        return Reload::Ready;
    }
    // The newest segment the playlist can list: sealed ones, then the open one.
    let last_sealed = ix.segments.back().map(|s| s.seq);
    let newest = last_sealed.unwrap_or(ix.next_seq.saturating_sub(1));
    if msn > newest.saturating_add(2) {
        return Reload::TooFar;
    }
    let sealed = |seq: u64| last_sealed.is_some_and(|l| seq <= l);
    match part {
        None => {
            if sealed(msn) {
                Reload::Ready
            } else {
                Reload::Wait
            }
        }
        Some(p) => {
            let has = |seq: u64, p: u64| {
                let open = ix.open.as_ref().filter(|o| o.seq == seq);
                open.is_some_and(|o| (o.parts.len() as u64) > p) || sealed(seq)
            };
            if sealed(msn) {
                // A sealed segment has all its parts; a P beyond them is part 0 of M+1.
                let count = ix.parts_of(msn).map_or(u64::MAX, |p| p.len() as u64);
                if p < count || has(msn + 1, 0) {
                    return Reload::Ready;
                }
                return Reload::Wait;
            }
            if has(msn, p) {
                Reload::Ready
            } else {
                Reload::Wait
            }
        }
    }
}

/// Where part `index` of segment `seq` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartState {
    /// Listed: serve it.
    Listed,
    /// The next part of the live stream (what `EXT-X-PRELOAD-HINT` names): hold the request.
    Next,
    /// Neither (never was, gone with retention or its part list, or the segment ended before
    /// it): 404 `no-store`.
    Absent,
}

/// RFC 8216bis 6.2.6: "the server MUST ... respond to a request for a hinted resource ...
/// by holding the request until the resource is available".
pub fn part_state(ix: &StreamIndex, seq: u64, index: usize) -> PartState {
    if ix.part(seq, index).is_some() {
        return PartState::Listed;
    }
    if !ix.live || ix.part_target_ms.is_none() {
        return PartState::Absent;
    }
    let next = match &ix.open {
        Some(o) => (o.seq, o.parts.len()),
        None => (ix.next_seq, 0),
    };
    // The part after the open segment's last may also be part 0 of the next segment (the
    // segment can end before it); a client that asks for the hint keeps its name.
    if (seq, index) == next || (ix.open.is_some() && (seq, index) == (next.0 + 1, 0)) {
        PartState::Next
    } else {
        PartState::Absent
    }
}

/// How long a blocking request is held: three target durations (RFC 8216bis 6.2.5.2: "If the
/// Playlist ... is not available within three times the Target Duration, the server SHOULD
/// return 503").
pub fn hold_ms(ix: &StreamIndex, target_ms: u64) -> u64 {
    crate::http::playlist::target_duration_s(ix, target_ms) * 3000
}

/// Waits until `ready` holds for the index, the hold time passes (`false`), or the node shuts
/// down (`false`).
pub async fn hold(st: &AppState, stream: &Timeline, ready: impl Fn(&StreamIndex) -> bool) -> bool {
    let mut changed = stream.subscribe();
    let limit = Duration::from_millis(hold_ms(&stream.read(), st.segment_target_ms));
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if ready(&stream.read()) {
            return true;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return false },
            _ = tokio::time::sleep_until(deadline) => return ready(&stream.read()),
            _ = st.shutdown.cancelled() => return false,
        }
    }
}

/// Parses `"<seq>.<index>.m4s"` (plain decimals).
pub fn parse_part(file: &str) -> Option<(u64, u32)> {
    let stem = file.strip_suffix(".m4s")?;
    let (seq, index) = stem.split_once('.')?;
    let number = crate::names::decimal;
    Some((number(seq)?, u32::try_from(number(index)?).ok()?))
}

/// `GET /streams/{name}/parts/{seq}.{index}.m4s`: an LL-HLS part, immutable like segments;
/// the next one is held until it is whole.
pub async fn part(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    FileParam(file): FileParam,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (seq, index) =
        parse_part(&file).ok_or_else(|| ApiError::NotFound(format!("no part {file:?}")))?;
    let i = usize::try_from(index).unwrap_or(usize::MAX);
    let feed = st.feed(&name).await?;
    let stream = feed.stream().clone();
    let not_found = || ApiError::NotFound(format!("no part {seq}.{index} of {name:?}"));
    let state = part_state(&stream.read(), seq, i);
    match state {
        PartState::Absent => return Err(not_found()),
        PartState::Next => {
            let came = hold(&st, &stream, |ix| part_state(ix, seq, i) != PartState::Next).await;
            if !came {
                return Err(ApiError::NotYet(format!(
                    "part {seq}.{index} of {name:?} did not come in time"
                )));
            }
        }
        PartState::Listed => {}
    }
    let Some((hash, length)) = stream.read().part(seq, i).map(|p| (p.hash, p.length)) else {
        return Err(not_found());
    };
    let etag = etag::of(hash);
    if let Some(r) = super::segments::not_modified(&headers, &etag) {
        return Ok(r);
    }
    let payload = feed.part(&st.cache, seq, index).await?;
    Ok(serve(&headers, payload, length, &etag, "video/iso.segment"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::tests::{period, seg};
    use crate::store::{OpenSegment, PartMeta, Record};

    fn part(offset: u64) -> PartMeta {
        PartMeta {
            duration_ms: 500,
            offset,
            length: 10,
            independent: offset == 0,
            hash: offset,
        }
    }

    /// Segments 0 and 1 sealed (1 with 4 parts), segment 2 open with 2 parts.
    fn live() -> StreamIndex {
        let mut ix = StreamIndex {
            live: true,
            part_target_ms: Some(500),
            ..StreamIndex::default()
        };
        ix.apply(Record::Period(period(0, 0, 1_796_051_045_250)));
        ix.apply(Record::Segment(seg(0, 0, 1_796_051_045_250, 2000)));
        let open = |seq| OpenSegment {
            seq,
            period: 0,
            start_ms: seq * 2000,
            time_ms: 1_796_051_045_250 + seq as i64 * 2000,
            parts: Vec::new(),
        };
        for i in 0..4 {
            ix.push_part(&open(1), part(i * 10));
        }
        let mut s1 = seg(1, 0, 1_796_051_047_250, 2000);
        s1.length = 40;
        ix.apply(Record::Segment(s1));
        for i in 0..2 {
            ix.push_part(&open(2), part(i * 10));
        }
        ix
    }

    #[test]
    fn blocking_reload_follows_the_spec() {
        let ix = live();
        assert_eq!(reload(&ix, 1, None), Reload::Ready, "M sealed");
        assert_eq!(reload(&ix, 2, None), Reload::Wait, "M still open");
        assert_eq!(
            reload(&ix, 2, Some(1)),
            Reload::Ready,
            "part 1 of the open one"
        );
        assert_eq!(reload(&ix, 2, Some(2)), Reload::Wait, "part 2 not yet");
        // P beyond a sealed segment's last part means part 0 of M+1, which exists.
        assert_eq!(reload(&ix, 1, Some(9)), Reload::Ready);
        assert_eq!(reload(&ix, 3, Some(0)), Reload::Wait);
        // More than two segments beyond the last one: 400.
        assert_eq!(reload(&ix, 3, None), Reload::Wait);
        assert_eq!(reload(&ix, 4, None), Reload::TooFar);
        let ended = StreamIndex {
            live: false,
            ..live()
        };
        assert_eq!(reload(&ended, 40, Some(0)), Reload::Ready);
    }

    #[test]
    fn only_the_hinted_part_is_held() {
        let ix = live();
        assert_eq!(part_state(&ix, 2, 1), PartState::Listed);
        assert_eq!(
            part_state(&ix, 1, 3),
            PartState::Listed,
            "recent sealed part"
        );
        assert_eq!(part_state(&ix, 2, 2), PartState::Next, "the preload hint");
        assert_eq!(
            part_state(&ix, 3, 0),
            PartState::Next,
            "or the next segment's first"
        );
        assert_eq!(part_state(&ix, 2, 3), PartState::Absent);
        assert_eq!(part_state(&ix, 0, 0), PartState::Absent, "no part list");
        assert_eq!(
            part_state(&ix, 1, 4),
            PartState::Absent,
            "beyond the sealed segment"
        );
        let ended = StreamIndex {
            live: false,
            ..live()
        };
        assert_eq!(part_state(&ended, 2, 2), PartState::Absent);
        assert_eq!(hold_ms(&ix, 2000), 6000);
    }

    #[test]
    fn part_names() {
        assert_eq!(parse_part("41.0.m4s"), Some((41, 0)));
        assert_eq!(parse_part("41.12.m4s"), Some((41, 12)));
        for bad in [
            "41.m4s",
            ".0.m4s",
            "41..m4s",
            "41.0",
            "41.-1.m4s",
            "a.0.m4s",
            "1.2.3.m4s",
        ] {
            assert_eq!(parse_part(bad), None, "{bad}");
        }
    }
}
