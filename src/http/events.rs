//! Server-Sent Events: `GET /events` (the whole node) and `GET /streams/{name}/events`.
//! Each event is one status object as a `data:` line, without an event name. A subscriber that
//! falls behind the bus skips what it missed; the stream ends when the node shuts down.
//!
//! With play tokens, `/events` sends only events of streams the caller may read; events that
//! name no stream (node-wide) go only to callers who may read every stream (open nodes, the
//! admin token), since they may describe any stream. Either stream of events also ends when
//! the caller's token expires: the client reconnects and is asked again.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

use super::{cache_control, ApiError, AppState, StreamName};
use crate::access::Viewer;

fn sse(st: &AppState, only: Option<String>, viewer: Option<Viewer>) -> Response {
    let metrics = st.metrics.clone();
    metrics.sse_clients.fetch_add(1, Ordering::Relaxed);
    struct Gauge(std::sync::Arc<crate::metrics::Metrics>);
    impl Drop for Gauge {
        fn drop(&mut self) {
            self.0.sse_clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let gauge = Gauge(metrics);
    let shutdown = st.shutdown.clone();
    let expires_at_s = viewer.as_ref().and_then(Viewer::expires_at_s);
    let events = BroadcastStream::new(st.bus.subscribe())
        .filter_map(move |item| {
            let keep = match (&item, &only) {
                (Ok(ev), Some(name)) => ev.stream.as_deref() == Some(name.as_str()),
                (Ok(ev), None) => viewer.as_ref().is_none_or(|v| match &ev.stream {
                    Some(stream) => v.may_read(stream),
                    None => v.reads_everything(),
                }),
                (Err(_), _) => false,
            };
            let _ = &gauge;
            std::future::ready(match item {
                Ok(ev) if keep => serde_json::to_string(&*ev)
                    .ok()
                    .map(|j| Ok::<_, Infallible>(SseEvent::default().data(j))),
                _ => None,
            })
        })
        .take_until(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = until_unix_s(expires_at_s) => {}
            }
        });
    let mut r = sse_response(events);
    cache_control(&mut r, "no-store");
    // nginx (and proxies that honour it) stream this response instead of buffering it.
    r.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    r
}

/// Resolves at unix second `at` (never for `None`).
async fn until_unix_s(at: Option<u64>) {
    let Some(at) = at else {
        return std::future::pending().await;
    };
    let now_ms = u64::try_from(crate::time::now_ms()).unwrap_or(0);
    let left_ms = at.saturating_mul(1000).saturating_sub(now_ms);
    tokio::time::sleep(std::time::Duration::from_millis(left_ms)).await;
}

fn sse_response(s: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

/// `GET /events`
pub async fn node_events(State(st): State<AppState>, viewer: Viewer) -> Response {
    sse(&st, None, Some(viewer))
}

/// `GET /streams/{name}/events`: events of that stream (it need not exist yet).
pub async fn stream_events(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    viewer: Option<axum::Extension<Viewer>>,
) -> Result<Response, ApiError> {
    // The stream gate already checked `name`; its viewer says when the grant ends.
    Ok(sse(&st, Some(name), viewer.map(|v| v.0)))
}
