//! Init and media segments: immutable bytes from the cache (else the recording), with strong
//! ETags, single byte ranges (206/416), 304 on `If-None-Match`, and year-long immutable caching.
//! A segment that does not exist (yet) is a `no-store` 404 so that CDNs ask again.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::range::{self, Range};
use super::{etag, ApiError, AppState, FileParam, StreamName, IMMUTABLE};
use crate::cache::{Key, Miss};

/// Parses `"<n>.<ext>"` with a plain decimal `n` (no sign, no leading `+`, at most 20 digits).
pub fn parse_numbered(file: &str, ext: &str) -> Option<u64> {
    let n = file.strip_suffix(ext)?.strip_suffix('.')?;
    if n.is_empty() || n.len() > 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
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
    let stream = st.stream(&name)?;
    let not_found = || ApiError::SegmentNotFound {
        stream: name.clone(),
        seq,
    };
    let Some(hash) = stream.read().segment(seq).map(|s| s.hash) else {
        return Err(not_found());
    };
    let key = Key::Segment {
        stream: name.as_str().into(),
        seq,
    };
    let bytes = match st.cache.get_or_load(key, stream.read_segment(seq)).await {
        Ok(b) => b,
        Err(e) => {
            return Err(match &*e {
                Miss::Absent => not_found(),
                Miss::Failed(err) => ApiError::Internal(err.to_string()),
            })
        }
    };
    Ok(serve_bytes(
        &headers,
        bytes,
        &etag::of(hash),
        "video/iso.segment",
    ))
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
    let stream = st.stream(&name)?;
    let Some(hash) = stream.read().period(period).map(|p| p.init_hash) else {
        return Err(not_found());
    };
    let key = Key::Init {
        stream: name.as_str().into(),
        period,
    };
    let bytes = match st.cache.get_or_load(key, stream.read_init(period)).await {
        Ok(b) => b,
        Err(e) => {
            return Err(match &*e {
                Miss::Absent => not_found(),
                Miss::Failed(err) => ApiError::Internal(err.to_string()),
            })
        }
    };
    Ok(serve_bytes(&headers, bytes, &etag::of(hash), "video/mp4"))
}

/// Answers a GET/HEAD for immutable bytes: 304, 206, 416 or 200, without copying `bytes`.
pub fn serve_bytes(
    req: &HeaderMap,
    bytes: Bytes,
    etag: &str,
    content_type: &'static str,
) -> Response {
    let text = |name: header::HeaderName| req.get(name).and_then(|v| v.to_str().ok());
    let len = bytes.len() as u64;
    let mut resp = if text(header::IF_NONE_MATCH).is_some_and(|h| etag::none_match(h, etag)) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let range_allowed = text(header::IF_RANGE).is_none_or(|h| etag::if_range_allows(h, etag));
        let wanted = if range_allowed {
            range::parse(text(header::RANGE), len)
        } else {
            Range::Whole
        };
        match wanted {
            Range::Whole => {
                let mut r = Response::new(Body::from(bytes));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                r
            }
            Range::Single { start, end } => {
                // start <= end < len, so the slice is in bounds.
                let part = bytes.slice(start as usize..=end as usize);
                let mut r = (StatusCode::PARTIAL_CONTENT, Body::from(part)).into_response();
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
                r
            }
            Range::Unsatisfiable => return ApiError::RangeNotSatisfiable { len }.into_response(),
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    resp
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
