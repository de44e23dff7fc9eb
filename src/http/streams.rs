//! `/streams`, `/streams/{name}` (status JSON) and `/streams/{name}/index.json` (time index,
//! with the `?after=&wait=` long-poll that wakes the moment a segment is announced).

use std::ops::Range;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{
    cache_control, ApiError, AppState, Feed, QueryParams, StreamName, LIVE, MAX_WAIT, PAST,
};
use crate::store::{StreamIndex, Timeline};
use crate::time::{format_rfc3339, now_ms, At};

/// A selected window of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub range: Range<usize>,
    /// The window ends before anything that can still be recorded: its answer is final.
    pub past: bool,
}

/// Segments overlapping `[from, to)`; either bound may be open.
pub fn select_window(
    ix: &StreamIndex,
    from: Option<At>,
    to: Option<At>,
    now: i64,
) -> Result<Window, ApiError> {
    let edge = ix.live_edge_ms().unwrap_or(now);
    let from_ms = from.map_or(i64::MIN, |t| t.resolve(edge));
    let to_ms = to.map_or(i64::MAX, |t| t.resolve(edge));
    if from_ms >= to_ms {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    // Every future segment starts at or after the live edge, and after `now` once the stream
    // has ended (a republish is anchored at the later of the two).
    let past = to.is_some() && (to_ms <= edge || (!ix.live && to_ms <= now));
    Ok(Window {
        range: ix.window(from_ms, to_ms),
        past,
    })
}

/// The status object of a stream (SPEC.md `GET /streams/{name}`).
pub fn status(st: &AppState, feed: &Feed) -> serde_json::Value {
    let stream = feed.stream();
    let source = feed.source_json();
    let ix = stream.read();
    let period = ix.periods.last();
    serde_json::json!({
        "name": stream.name,
        "node": &*st.node_name,
        "live": ix.live,
        "source": source,
        "dvr": {
            "start": ix.start_ms().map(format_rfc3339),
            "end": ix.live_edge_ms().map(format_rfc3339),
            "duration_ms": ix.duration_ms(),
            "segments": ix.segments.len(),
            "bytes": ix.bytes,
            "first_seq": ix.segments.front().map(|s| s.seq),
            "last_seq": ix.segments.back().map(|s| s.seq),
        },
        "codecs": period.map(|p| p.codecs.as_str()),
        "warning": period.and_then(|p| crate::media::avc::browser_warning(&p.codecs)),
        "width": period.and_then(|p| p.width),
        "height": period.and_then(|p| p.height),
        "period": period.map(|p| p.id),
    })
}

/// `GET /streams`
/// On a node with `[relay] upstreams`, also the upstreams' streams not relayed here yet.
pub async fn list(State(st): State<AppState>) -> Response {
    let mut all: Vec<_> = st.feeds().iter().map(|f| status(&st, f)).collect();
    let offered = st.relays.available().await;
    if !offered.is_empty() {
        let have: std::collections::HashSet<String> = all
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        for s in offered.iter() {
            if s["name"].as_str().is_some_and(|n| !have.contains(n)) {
                let mut s = s.clone();
                s["node"] = serde_json::json!(&*st.node_name);
                all.push(s);
            }
        }
        all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
    let mut r = axum::Json(all).into_response();
    cache_control(&mut r, LIVE);
    r
}

/// `GET /streams/{name}`
pub async fn status_handler(
    State(st): State<AppState>,
    StreamName(name): StreamName,
) -> Result<Response, ApiError> {
    let feed = st.feed(&name).await?;
    let mut r = axum::Json(status(&st, &feed)).into_response();
    cache_control(&mut r, LIVE);
    Ok(r)
}

#[derive(Serialize)]
struct IndexDoc<'a> {
    stream: &'a str,
    live: bool,
    target_duration_ms: u64,
    periods: Vec<PeriodDoc<'a>>,
    segments: Vec<SegmentDoc>,
}

#[derive(Serialize)]
struct PeriodDoc<'a> {
    id: u32,
    init: String,
    codecs: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    /// Media timeline position where the period starts.
    start_ms: u64,
    /// Content hash of the init segment (its ETag without quotes).
    hash: String,
    /// Size of the init segment in bytes.
    length: u64,
}

#[derive(Serialize)]
struct SegmentDoc {
    seq: u64,
    period: u32,
    start_ms: u64,
    duration_ms: u64,
    time: String,
    url: String,
    offset: u64,
    length: u64,
    /// Content hash (the ETag without quotes): lets a relay verify what it pulled.
    hash: String,
}

fn render_index(st: &AppState, name: &str, ix: &StreamIndex, range: Range<usize>) -> Vec<u8> {
    let doc = IndexDoc {
        stream: name,
        live: ix.live,
        target_duration_ms: ix.max_duration_ms.max(st.segment_target_ms),
        periods: ix
            .periods
            .iter()
            .map(|p| PeriodDoc {
                id: p.id,
                init: format!("init/{}.mp4", p.id),
                codecs: &p.codecs,
                width: p.width,
                height: p.height,
                start_ms: p.start_ms,
                hash: format!("{:016x}", p.init_hash),
                length: p.init_length,
            })
            .collect(),
        segments: ix
            .segments
            .range(range)
            .map(|s| SegmentDoc {
                seq: s.seq,
                period: s.period,
                start_ms: s.start_ms,
                duration_ms: s.duration_ms,
                time: format_rfc3339(s.time_ms),
                url: format!("segments/{}.m4s", s.seq),
                offset: 0,
                length: s.length,
                hash: format!("{:016x}", s.hash),
            })
            .collect(),
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Largest `?limit=`.
const MAX_LIMIT: u64 = 1_000_000;

/// `GET /streams/{name}/index.json` with `?after=SEQ&wait=D`, `?from=T&to=T`, `?limit=N`.
pub async fn index_json(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    q: QueryParams,
) -> Result<Response, ApiError> {
    let feed = st.feed(&name).await?;
    let stream = feed.stream().clone();
    let after = q.u64("after")?;
    let wait = q
        .get("wait")
        .map(|w| {
            humantime::parse_duration(w).map_err(|_| {
                ApiError::BadRequest(format!("wait must be a duration like \"10s\", got {w:?}"))
            })
        })
        .transpose()?
        .map(|w| w.min(MAX_WAIT));
    let limit = q.u64("limit")?;
    if limit == Some(0) || limit.is_some_and(|l| l > MAX_LIMIT) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let (from, to) = (q.time("from")?, q.time("to")?);
    if wait.is_some() && after.is_none() {
        return Err(ApiError::BadRequest("wait needs after=SEQ".into()));
    }
    if let (Some(after), Some(wait)) = (after, wait) {
        wait_for_segment(&st, &stream, after, wait).await;
    }
    let ix = stream.read();
    let mut past = false;
    let mut range = 0..ix.segments.len();
    if from.is_some() || to.is_some() {
        let w = select_window(&ix, from, to, now_ms())?;
        range = w.range;
        past = w.past;
    }
    if let Some(after) = after {
        let newer = ix.after(after);
        range = range.start.max(newer.start)..range.end.max(newer.start);
    }
    if let Some(limit) = limit.and_then(|l| usize::try_from(l).ok()) {
        range = if after.is_some() || from.is_some() {
            range.start..range.end.min(range.start.saturating_add(limit))
        } else {
            range.end.saturating_sub(limit).max(range.start)..range.end
        };
    }
    let body = render_index(&st, &name, &ix, range);
    drop(ix);
    let mut r = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    cache_control(&mut r, if past { PAST } else { LIVE });
    Ok(r)
}

/// Parks until the stream has a segment newer than `after`, `wait` passes, the stream is not
/// live, or the node shuts down.
async fn wait_for_segment(st: &AppState, stream: &Timeline, after: u64, wait: Duration) {
    let mut changed = stream.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        {
            let ix = stream.read();
            if !ix.live || !ix.after(after).is_empty() {
                return;
            }
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
            _ = st.shutdown.cancelled() => return,
        }
    }
}
