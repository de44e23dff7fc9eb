//! `/streams`, `/streams/{name}` (status JSON) and `/streams/{name}/index.json` (time index,
//! with the `?after=&wait=` long-poll that wakes the moment a segment is announced).

use std::ops::Range;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::gate::UrlToken;
use super::{
    cache_control, ApiError, AppState, Feed, QueryParams, StreamName, LIVE, MAX_WAIT, PAST,
};
use crate::access::Viewer;
use crate::store::{StreamIndex, Timeline};
use crate::time::{now_ms, At};
use crate::wire::{Index, Status};

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
pub fn status(st: &AppState, feed: &Feed) -> Status {
    let stream = feed.stream();
    let mut status = Status::of(&stream.name, &st.node_name, feed.source(), &stream.read());
    if let Some(archive) = &st.archive {
        status.archive = match feed {
            crate::http::Feed::Recorded(_) => Some(archive.status(&stream.name, None)),
            crate::http::Feed::Archived(f, _) => Some(archive.status(&stream.name, Some(f))),
            crate::http::Feed::Relayed(_) => None,
        };
    }
    status
}

/// `GET /streams`
/// On a node with `[relay] upstreams`, also the upstreams' streams not relayed here yet.
/// Only the streams the caller may read (play tokens).
pub async fn list(State(st): State<AppState>, viewer: Viewer) -> Response {
    let mut all: Vec<_> = match &st.archive {
        None => st.feeds().iter().map(|f| status(&st, f)).collect(),
        Some(archive) => {
            // Each stream as `GET /streams/{name}` would show it (the archive's view where it
            // is the one served), the archive's streams this node never recorded, then the
            // relayed ones.
            let mut names: std::collections::BTreeSet<String> =
                st.store.list().iter().map(|s| s.name.clone()).collect();
            names.extend(archive.stream_names().await.iter().cloned());
            names.retain(|n| viewer.may_read(n));
            let mut listed = Vec::with_capacity(names.len());
            for name in &names {
                if let Ok(feed) = st.feed(name).await {
                    listed.push(status(&st, &feed));
                }
            }
            for p in st.relays.list() {
                if !names.contains(&p.local) {
                    listed.push(status(&st, &crate::http::Feed::Relayed(p)));
                }
            }
            listed.sort_by(|a, b| a.name.cmp(&b.name));
            listed
        }
    };
    let offered = st.relays.available().await;
    if !offered.is_empty() {
        let have: std::collections::HashSet<String> = all.iter().map(|s| s.name.clone()).collect();
        for s in offered.iter() {
            if !have.contains(&s.name) {
                let mut s = s.clone();
                s.node = st.node_name.to_string();
                all.push(s);
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
    }
    all.retain(|s| viewer.may_read(&s.name));
    let mut r = axum::Json(all).into_response();
    cache_control(&mut r, LIVE);
    if viewer.by_header() {
        super::gate::make_private(r.headers_mut());
    }
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

/// Largest `?limit=`.
const MAX_LIMIT: u64 = 1_000_000;

/// `GET /streams/{name}/index.json` with `?after=SEQ&wait=D`, `?from=T&to=T`, `?limit=N`.
pub async fn index_json(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    q: QueryParams,
    token: UrlToken,
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
    let known_parts = q.u64("part")?;
    if known_parts.is_some() && after.is_none() {
        return Err(ApiError::BadRequest("part needs after=SEQ".into()));
    }
    if let (Some(after), Some(wait)) = (after, wait) {
        wait_for_segment(&st, &stream, after, known_parts, wait).await;
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
    let mut index = Index::of(&name, &ix, range, st.segment_target_ms);
    drop(ix);
    if token.0.is_some() {
        for p in &mut index.periods {
            p.init = token.apply(&p.init);
        }
        for s in &mut index.segments {
            s.url = token.apply(&s.url);
            for p in &mut s.parts {
                p.url = token.apply(&p.url);
            }
        }
        for p in index.open.iter_mut().flat_map(|o| o.parts.iter_mut()) {
            p.url = token.apply(&p.url);
        }
    }
    let body = serde_json::to_vec(&index).unwrap_or_default();
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

/// Parks until the stream has a segment newer than `after` or, when the caller says how many
/// parts of the segment after it it knows (`&part=K`), more parts than that; until `wait`
/// passes, the stream is not live, or the node shuts down. Without `part` only segments wake
/// it, as for clients that know nothing of parts.
async fn wait_for_segment(
    st: &AppState,
    stream: &Timeline,
    after: u64,
    known_parts: Option<u64>,
    wait: Duration,
) {
    let mut changed = stream.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    let open_parts = |ix: &crate::store::StreamIndex| {
        ix.open
            .as_ref()
            .filter(|o| o.seq == after.saturating_add(1))
            .map_or(0, |o| o.parts.len() as u64)
    };
    loop {
        {
            let ix = stream.read();
            let new_part = known_parts.is_some_and(|k| open_parts(&ix) > k);
            if !ix.live || !ix.after(after).is_empty() || new_part {
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
