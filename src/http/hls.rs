//! `GET /streams/{name}/index.m3u8`: the live DVR playlist, `?start=T` (rewind) and
//! `?from=T&to=T` (a window).
//!
//! The render cache holds the bytes every viewer shares; a viewer's `?token=` is added to the
//! URIs at answer time ([`UrlToken`]), never into the cache.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::gate::UrlToken;
use super::playlist::{self, Options};
use super::streams::select_window;
use super::{cache_control, llhls, ApiError, AppState, QueryParams, StreamName, LIVE, PAST};
use crate::store::{Lookup, StreamIndex, Timeline};

/// Rendered live playlists by stream *instance*: an entry is used only for the very stream it
/// was rendered from (a proxy deleted and created again under the same name is another
/// instance, whose versions start again), and entries of streams that are gone are dropped.
#[derive(Debug, Default)]
pub struct RenderCache {
    entries: HashMap<String, Rendered>,
}

#[derive(Debug)]
struct Rendered {
    stream: Weak<Timeline>,
    version: u64,
    body: bytes::Bytes,
}

impl RenderCache {
    /// The body rendered from `stream` at `version`, if any.
    pub fn get(&self, stream: &Arc<Timeline>, version: u64) -> Option<bytes::Bytes> {
        self.entries
            .get(&stream.name)
            .filter(|r| {
                r.version == version && std::ptr::eq(r.stream.as_ptr(), Arc::as_ptr(stream))
            })
            .filter(|r| r.stream.strong_count() > 0)
            .map(|r| r.body.clone())
    }

    /// Remembers a rendering, dropping entries whose stream no longer exists.
    pub fn put(&mut self, stream: &Arc<Timeline>, version: u64, body: bytes::Bytes) {
        self.entries.retain(|_, r| r.stream.strong_count() > 0);
        self.entries.insert(
            stream.name.clone(),
            Rendered {
                stream: Arc::downgrade(stream),
                version,
                body,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
use crate::time::{format_rfc3339, now_ms, At};

/// Where `?start=T` lands: the segment position and the offset into the playlist.
pub fn start_position(
    ix: &StreamIndex,
    at: At,
    list_from: usize,
) -> Result<(usize, u64), ApiError> {
    let edge = ix.live_edge_ms().unwrap_or_else(now_ms);
    let t = at.resolve(edge);
    match ix.lookup(t) {
        Lookup::Found(i) => {
            let first = list_from.min(i);
            let before: u64 = ix.segments.range(first..i).map(|s| s.duration_ms).sum();
            let s = &ix.segments[i];
            let into = u64::try_from(t.saturating_sub(s.time_ms))
                .unwrap_or(0)
                .min(s.duration_ms);
            Ok((first, before + into))
        }
        Lookup::Outside => Err(outside(ix, t)),
    }
}

/// The 404 for a time outside the DVR window.
pub fn outside(ix: &StreamIndex, t: i64) -> ApiError {
    let fmt = |v: Option<i64>| v.map_or_else(|| "(empty)".to_owned(), format_rfc3339);
    ApiError::SeekOutside {
        time: format_rfc3339(t),
        start: fmt(ix.start_ms()),
        end: fmt(ix.live_edge_ms()),
    }
}

/// `GET /streams/{name}/index.m3u8`
pub async fn playlist(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    q: QueryParams,
    token: UrlToken,
) -> Result<Response, ApiError> {
    let feed = st.feed(&name).await?;
    let stream = feed.stream();
    let window = WindowQuery::of(&q)?;
    let ll = LlQuery::of(&q)?;
    if let Some(msn) = ll.msn {
        if !window.is_plain() {
            return Err(ApiError::BadRequest(
                "_HLS_msn is for the live playlist, not a window".into(),
            ));
        }
        let decision = llhls::reload(&stream.read(), msn, ll.part);
        match decision {
            llhls::Reload::TooFar => {
                return Err(ApiError::BadRequest(format!(
                    "_HLS_msn={msn} is more than two segments ahead of the playlist"
                )))
            }
            llhls::Reload::Wait => {
                let ready =
                    |ix: &StreamIndex| llhls::reload(ix, msn, ll.part) != llhls::Reload::Wait;
                if !llhls::hold(&st, stream, ready).await {
                    return Err(ApiError::NotYet(format!(
                        "segment {msn} (part {:?}) of {name:?} did not come in time",
                        ll.part
                    )));
                }
            }
            llhls::Reload::Ready => {}
        }
    }
    let plain = window.is_plain() && !ll.skip;
    let version = stream.version();
    if plain {
        let cached = st
            .live_playlists
            .lock()
            .ok()
            .and_then(|m| m.get(stream, version));
        if let Some(body) = cached {
            let mut r = playlist_response(body, false, &token);
            if ll.msn.is_some() {
                cache_control(&mut r, BLOCKED);
            }
            return Ok(r);
        }
    }
    let ix = stream.read();
    let sel = select(&ix, &window, st.playlist_window_ms, now_ms())?;
    // LL-HLS for the live playlist of a live stream with parts; windows and rewinds are
    // plain DVR playlists.
    let low_latency = window.is_plain() && ix.live;
    let opts = Options {
        start_offset_ms: sel.start_offset_ms,
        endlist: sel.endlist,
        target_ms: st.segment_target_ms,
        part_target_ms: ix.part_target_ms.filter(|_| low_latency),
        skip: ll.skip,
    };
    let (range, past) = (sel.range, sel.past);
    let body = bytes::Bytes::from(playlist::render(&ix, range, &opts));
    drop(ix);
    if plain {
        if let Ok(mut m) = st.live_playlists.lock() {
            m.put(stream, version, body.clone());
        }
    }
    let mut r = playlist_response(body, past, &token);
    if ll.msn.is_some() {
        // A blocking answer names a moment of the stream in its URL: a shared cache may keep
        // it a little (every later viewer asking that URL gets a playlist that has it).
        cache_control(&mut r, BLOCKED);
    }
    Ok(r)
}

/// `Cache-Control` of an answer to a blocking reload (`_HLS_msn`).
pub const BLOCKED: &str = "public, max-age=6";

/// The LL-HLS delivery directives of a playlist request (RFC 8216bis 6.2.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlQuery {
    pub msn: Option<u64>,
    pub part: Option<u64>,
    /// `_HLS_skip=YES` (or `v2`, answered as YES: there are no date ranges to skip).
    pub skip: bool,
}

impl LlQuery {
    pub fn of(q: &QueryParams) -> Result<LlQuery, ApiError> {
        let msn = q.u64("_HLS_msn")?;
        let part = q.u64("_HLS_part")?;
        if part.is_some() && msn.is_none() {
            return Err(ApiError::BadRequest("_HLS_part needs _HLS_msn".into()));
        }
        let skip = match q.get("_HLS_skip") {
            None => false,
            Some("YES" | "v2") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "_HLS_skip must be YES or v2, got {other:?}"
                )))
            }
        };
        Ok(LlQuery { msn, part, skip })
    }
}

/// The answer: the shared rendering, with the viewer's token in its URIs if it has one.
fn playlist_response(body: bytes::Bytes, past: bool, token: &UrlToken) -> Response {
    let body = match token.0 {
        None => body,
        // Rendered from `String`s: always UTF-8.
        Some(_) => match std::str::from_utf8(&body) {
            Ok(text) => bytes::Bytes::from(playlist::map_uris(text, |uri| token.apply(uri))),
            Err(_) => body,
        },
    };
    let content_type = HeaderValue::from_static("application/vnd.apple.mpegurl");
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    cache_control(&mut r, cache_control_of(past));
    r
}

/// `Cache-Control` of a document listing a selection: a window wholly in the past is kept an
/// hour, everything else (live, ended, rewinds) a second. Shared by `index.m3u8` and
/// `thumbs.vtt`, so both answer alike for the same query.
pub fn cache_control_of(past: bool) -> &'static str {
    if past {
        PAST
    } else {
        LIVE
    }
}

/// The window parameters of a playlist-like document: `?start=`, `?from=`, `?to=`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowQuery {
    pub start: Option<At>,
    pub from: Option<At>,
    pub to: Option<At>,
}

impl WindowQuery {
    /// Parses the three parameters (a bad time is a 400).
    pub fn of(q: &QueryParams) -> Result<WindowQuery, ApiError> {
        Ok(WindowQuery {
            start: q.time("start")?,
            from: q.time("from")?,
            to: q.time("to")?,
        })
    }

    /// None given: the live playlist window.
    pub fn is_plain(&self) -> bool {
        self.start.is_none() && self.from.is_none() && self.to.is_none()
    }
}

/// What `index.m3u8` lists for a [`WindowQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Positions in `ix.segments` listed.
    pub range: std::ops::Range<usize>,
    /// The window lies wholly in the past (long caching, ENDLIST).
    pub past: bool,
    /// `EXT-X-ENDLIST`: the stream has ended or the window is past.
    pub endlist: bool,
    /// `EXT-X-START:TIME-OFFSET` from the first listed segment, for `?start=`.
    pub start_offset_ms: Option<u64>,
}

/// The one window selection of `index.m3u8` (and of `thumbs.vtt`, which must line up with
/// it): `?from`/`?to` a window, else the newest `playlist_window_ms`, reaching back to
/// `?start` when given.
pub fn select(
    ix: &StreamIndex,
    q: &WindowQuery,
    playlist_window_ms: u64,
    now: i64,
) -> Result<Selection, ApiError> {
    let mut sel = Selection {
        range: 0..0,
        past: false,
        endlist: !ix.live,
        start_offset_ms: None,
    };
    sel.range = if q.from.is_some() || q.to.is_some() {
        let w = select_window(ix, q.from, q.to, now)?;
        sel.past = w.past;
        sel.endlist |= w.past;
        if let Some(at) = q.start {
            let (first, offset) = start_position(ix, at, w.range.start)?;
            if first < w.range.start || first >= w.range.end.max(w.range.start + 1) {
                return Err(ApiError::BadRequest(
                    "start must lie inside from..to".into(),
                ));
            }
            sel.start_offset_ms = Some(offset);
        }
        w.range
    } else {
        let tail = ix.tail(playlist_window_ms);
        match q.start {
            Some(at) => {
                let (first, offset) = start_position(ix, at, tail.start)?;
                sel.start_offset_ms = Some(offset);
                first..tail.end
            }
            None => tail,
        }
    };
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_cache_is_keyed_by_stream_instance() {
        let mut cache = RenderCache::default();
        let old = Arc::new(Timeline::new("cam"));
        cache.put(&old, 3, bytes::Bytes::from_static(b"old"));
        assert_eq!(cache.get(&old, 3).as_deref(), Some(&b"old"[..]));
        assert_eq!(cache.get(&old, 4), None, "another version");
        // Same name, same version number, another instance: never the old body.
        let new = Arc::new(Timeline::new("cam"));
        assert_eq!(cache.get(&new, 3), None);
        drop(old);
        let other = Arc::new(Timeline::new("other"));
        cache.put(&other, 0, bytes::Bytes::new());
        assert_eq!(cache.len(), 1, "entries of dropped streams are removed");
        assert!(cache.get(&other, 0).is_some());
    }
}
