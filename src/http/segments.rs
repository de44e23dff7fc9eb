//! Init and media segments: immutable bytes from the cache (else the recording), with strong
//! ETags, single byte ranges (206/416), 304 on `If-None-Match`, and year-long immutable caching.
//! A segment that does not exist (yet) is a `no-store` 404 so that CDNs ask again.
//!
//! A relayed segment not in the cache is answered as its upstream pull delivers it. The status
//! waits for the first byte ([`Feed::segment`](super::Feed::segment)): a pull that fails before
//! it is a 502; one that fails later ends the body short (the status is sent by then). Either
//! way no client gets a whole wrong body.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::feed::Payload;
use super::range::{self, Range};
use super::{etag, ApiError, AppState, FileParam, StreamName, IMMUTABLE};

/// Parses `"<n>.<ext>"` with a plain decimal `n` (no sign, no leading `+`, at most 20 digits).
pub fn parse_numbered(file: &str, ext: &str) -> Option<u64> {
    crate::names::decimal(file.strip_suffix(ext)?.strip_suffix('.')?)
}

/// `GET /streams/{name}/segments/{seq}.m4s`
pub async fn segment(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    FileParam(file): FileParam,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let seq = parse_numbered(&file, "m4s")
        .ok_or_else(|| ApiError::NotFound(format!("no segment {file:?}")))?;
    let feed = st.feed(&name).await?;
    let not_found = || ApiError::SegmentNotFound {
        stream: name.clone(),
        seq,
    };
    let Some((hash, length)) = feed
        .stream()
        .read()
        .segment(seq)
        .map(|s| (s.hash, s.length))
    else {
        return Err(not_found());
    };
    let etag = etag::of(hash);
    if let Some(r) = not_modified(&headers, &etag) {
        return Ok(r);
    }
    let payload = feed.segment(&st.cache, seq).await?;
    Ok(serve(&headers, payload, length, &etag, "video/iso.segment"))
}

/// `GET /streams/{name}/init/{period}.mp4`
pub async fn init(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    FileParam(file): FileParam,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no init segment {file:?}"));
    let period = parse_numbered(&file, "mp4")
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(not_found)?;
    let feed = st.feed(&name).await?;
    let Some((hash, length)) = feed
        .stream()
        .read()
        .period(period)
        .map(|p| (p.init_hash, p.init_length))
    else {
        return Err(not_found());
    };
    let etag = etag::of(hash);
    if let Some(r) = not_modified(&headers, &etag) {
        return Ok(r);
    }
    let payload = feed.init(&st.cache, period).await?;
    Ok(serve(&headers, payload, length, &etag, "video/mp4"))
}

/// 304 when `If-None-Match` matches: answered from the index, before any byte is fetched.
pub fn not_modified(req: &HeaderMap, etag: &str) -> Option<Response> {
    let inm = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())?;
    if !etag::none_match(inm, etag) {
        return None;
    }
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    immutable_headers(r.headers_mut(), etag);
    Some(r)
}

fn immutable_headers(h: &mut HeaderMap, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
}

/// Answers a GET/HEAD for immutable bytes of known `len`: 206, 416 or 200, without copying.
/// A streaming payload sends bytes as they arrive; if the pull fails mid-way, the body ends
/// early (the headers are gone; a relay never splices another upstream's bytes in).
pub fn serve(
    req: &HeaderMap,
    payload: Payload,
    len: u64,
    etag: &str,
    content_type: &'static str,
) -> Response {
    let text = |name: header::HeaderName| req.get(name).and_then(|v| v.to_str().ok());
    let range_allowed = text(header::IF_RANGE).is_none_or(|h| etag::if_range_allows(h, etag));
    let wanted = if range_allowed {
        range::parse(text(header::RANGE), len)
    } else {
        Range::Whole
    };
    let (status, first, last) = match wanted {
        Range::Whole => (StatusCode::OK, 0, len.saturating_sub(1)),
        Range::Single { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        Range::Unsatisfiable => return ApiError::RangeNotSatisfiable { len }.into_response(),
    };
    let body = match payload {
        // first <= last < len (range::parse guarantees it), so the slice is in bounds.
        Payload::Ready(bytes) if len == 0 => Body::from(bytes),
        Payload::Ready(bytes) => Body::from(bytes.slice(first as usize..=last as usize)),
        Payload::Streaming(reader) => Body::from_stream(reader.range(first, last)),
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let sent = if len == 0 { 0 } else { last - first + 1 };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(sent));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    immutable_headers(h, etag);
    resp
}

/// `GET /streams/{name}/thumbs/{seq}.jpg`: the segment's thumbnail, from the recording at the
/// origin, from the cache or one shared upstream pull at a relay ([`Feed::thumb`](super::Feed::thumb)). Served
/// like a segment (immutable, strong ETag of its bytes, ranges, 304); missing (not made yet,
/// skipped under overload, audio-only, deleted with its segment) is a `no-store` 404.
pub async fn thumb(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    FileParam(file): FileParam,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let seq = parse_numbered(&file, "jpg")
        .ok_or_else(|| ApiError::NotFound(format!("no thumbnail {file:?}")))?;
    let feed = st.feed(&name).await?;
    let bytes = feed.thumb(&st.cache, seq).await?;
    // The same bytes at every hop, so the same ETag.
    let etag = etag::of(xxhash_rust::xxh3::xxh3_64(&bytes));
    if let Some(r) = not_modified(&headers, &etag) {
        return Ok(r);
    }
    let len = bytes.len() as u64;
    Ok(serve(
        &headers,
        Payload::Ready(bytes),
        len,
        &etag,
        "image/jpeg",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_files() {
        assert_eq!(parse_numbered("41.m4s", "m4s"), Some(41));
        assert_eq!(parse_numbered("0.mp4", "mp4"), Some(0));
        for bad in [
            "m4s",
            ".m4s",
            "+1.m4s",
            "-1.m4s",
            "1.mp4",
            "1.m4s.m4s",
            "../1.m4s",
            "99999999999999999999999.m4s",
            "1 .m4s",
        ] {
            assert_eq!(parse_numbered(bad, "m4s"), None, "{bad}");
        }
    }
}
