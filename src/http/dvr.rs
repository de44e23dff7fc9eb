//! Time-shift endpoints: `seek` (where a time is in the DVR window) and `clip.mp4` (a section
//! as a standalone MP4, streamed out as it is assembled).
//!
//! Both resolve times exactly as `index.m3u8?start=` and `?from=&to=` do (the same
//! [`ix.lookup`](crate::store::StreamIndex::lookup) and [`select_window`]), so the three agree
//! to the segment. A clip holds at most a few segments in memory at a time, whatever its length:
//! segments are fetched in order with a small lookahead, rebased, and sent.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;

use super::gate::UrlToken;
use super::hls::outside;
use super::streams::select_window;
use super::{cache_control, ApiError, AppState, Feed, QueryParams, StreamName, LIVE, PAST};
use crate::events::Code;
use crate::media::clip;
use crate::store::layout::Object;
use crate::store::Lookup;
use crate::time::{format_rfc3339, now_ms, At};

/// Segments fetched ahead of the one being sent.
const CLIP_LOOKAHEAD: usize = 2;

/// `GET /streams/{name}/seek?t=T`
pub async fn seek(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    q: QueryParams,
    token: UrlToken,
) -> Result<Response, ApiError> {
    let at = q.time("t")?.ok_or_else(|| {
        ApiError::BadRequest("missing t: a time as RFC 3339, a negative duration from live (-30s), \"live\" or unix ms".into())
    })?;
    let feed = st.feed(&name).await?;
    let ix = feed.stream().read();
    let edge = ix.live_edge_ms().unwrap_or_else(now_ms);
    let t = at.resolve(edge);
    let Lookup::Found(i) = ix.lookup(t) else {
        return Err(outside(&ix, t));
    };
    let s = &ix.segments[i];
    let offset_ms = u64::try_from(t - s.time_ms).unwrap_or(0).min(s.duration_ms);
    let time = format_rfc3339(t);
    let body = serde_json::json!({
        "code": Code::SeekNotify,
        "level": Code::SeekNotify.level(),
        "stream": name,
        "time": time,
        "seq": s.seq,
        "period": s.period,
        "segment_time": format_rfc3339(s.time_ms),
        "offset_ms": offset_ms,
        "segment": token.apply(&Object::Segment(s.seq).key()),
        "init": token.apply(&Object::Init(s.period).key()),
        "playlist": token.apply(&format!("index.m3u8?start={time}")),
        "live": ix.live,
        "behind_live_ms": edge.saturating_sub(t),
    });
    drop(ix);
    let mut r = axum::Json(body).into_response();
    cache_control(&mut r, LIVE);
    Ok(r)
}

/// `GET /streams/{name}/clip.mp4?from=T&to=T` (`to` defaults to the live edge).
pub async fn clip(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    q: QueryParams,
) -> Result<Response, ApiError> {
    let from = q
        .time("from")?
        .ok_or_else(|| ApiError::BadRequest("missing from: the start of the clip".into()))?;
    let to = q.time("to")?.unwrap_or(At::Live);
    let feed = st.feed(&name).await?;
    let (plan, past) = {
        let ix = feed.stream().read();
        let edge = ix.live_edge_ms().unwrap_or_else(now_ms);
        let (from_ms, to_ms) = (from.resolve(edge), to.resolve(edge));
        if to_ms.saturating_sub(from_ms) > i64::try_from(st.max_clip_ms).unwrap_or(i64::MAX) {
            return Err(ApiError::BadRequest(format!(
                "clips are at most {} s long (http.max_clip); ask for a shorter section",
                st.max_clip_ms / 1000
            )));
        }
        if !matches!(ix.lookup(from_ms), Lookup::Found(_)) {
            return Err(outside(&ix, from_ms));
        }
        let w = select_window(&ix, Some(from), Some(to), now_ms())?;
        let segs: Vec<_> = ix.segments.range(w.range.clone()).cloned().collect();
        let Some(first) = segs.first() else {
            return Err(outside(&ix, from_ms));
        };
        if let Some(cut) = segs.iter().find(|s| s.period != first.period) {
            return Err(ApiError::BadRequest(format!(
                "the section crosses a discontinuity at {} (a republish or format change); ask for a clip that ends before it or starts there",
                format_rfc3339(cut.time_ms)
            )));
        }
        let period = ix
            .period(first.period)
            .cloned()
            .ok_or_else(|| ApiError::Internal("segment without period".into()))?;
        (
            Plan {
                period,
                segments: segs,
            },
            w.past,
        )
    };
    let init = feed
        .init(&st.cache, plan.period.id)
        .await?
        .collect()
        .await?;
    let duration_ms: u64 = plan.segments.iter().map(|s| s.duration_ms).sum();
    let (init, timescales) = clip::clip_init(&init, duration_ms)
        .map_err(|e| ApiError::Internal(format!("clip of {name}: {e}")))?;
    let length = init.len() as u64 + plan.segments.iter().map(|s| s.length).sum::<u64>();
    let first_time = plan.segments[0].time_ms;
    let body = clip_body(st.clone(), feed, init, timescales, plan);
    let mut r = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    let file = format!("{name}-{}.mp4", format_rfc3339(first_time).replace(':', ""));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    cache_control(&mut r, if past { PAST } else { LIVE });
    Ok(r)
}

struct Plan {
    period: crate::store::PeriodMeta,
    segments: Vec<crate::store::SegmentMeta>,
}

/// The clip's bytes: the init, then each segment rebased to start at zero. An error mid-way
/// (a segment gone, an upstream failing) ends the body early; `Content-Length` tells the client.
fn clip_body(
    st: AppState,
    feed: Feed,
    init: Bytes,
    timescales: HashMap<u32, u32>,
    plan: Plan,
) -> impl futures_util::Stream<Item = Result<Bytes, ApiError>> + Send {
    let name: Arc<str> = feed.stream().name.as_str().into();
    let fetches = futures_util::stream::iter(plan.segments)
        .map(move |s| {
            let (st, feed) = (st.clone(), feed.clone());
            async move {
                let bytes = feed.segment(&st.cache, s.seq).await?.collect().await?;
                if bytes.len() as u64 != s.length {
                    return Err(ApiError::Internal(format!(
                        "segment {} has {} bytes, index says {}",
                        s.seq,
                        bytes.len(),
                        s.length
                    )));
                }
                Ok::<_, ApiError>(bytes)
            }
        })
        .buffered(CLIP_LOOKAHEAD + 1);
    let mut shift: Option<HashMap<u32, u64>> = None;
    let segments = fetches
        .map(move |r| -> Result<Vec<Bytes>, ApiError> {
            let seg = r?;
            let sh = match &shift {
                Some(sh) => sh,
                None => shift.insert(
                    clip::shift_for(&seg, &timescales)
                        .map_err(|e| ApiError::Internal(format!("clip of {name}: {e}")))?,
                ),
            };
            let parts = clip::rebase_segment(&seg, sh)
                .map_err(|e| ApiError::Internal(format!("clip of {name}: {e}")))?;
            Ok(parts)
        })
        .flat_map(|r: Result<Vec<Bytes>, ApiError>| {
            let items: Vec<Result<Bytes, ApiError>> = match r {
                Ok(parts) => parts.into_iter().map(Ok).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "clip ended early");
                    vec![Err(e)]
                }
            };
            futures_util::stream::iter(items)
        });
    futures_util::stream::once(async move { Ok(init) }).chain(segments)
}
