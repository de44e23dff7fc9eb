//! Server-Sent Events: `GET /events` (the whole node) and `GET /streams/{name}/events`.
//! Each event is one status object as a `data:` line, without an event name. A subscriber that
//! falls behind the bus skips what it missed; the stream ends when the node shuts down.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

use super::{cache_control, ApiError, AppState, StreamName};

fn sse(st: &AppState, only: Option<String>) -> Response {
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
    let events = BroadcastStream::new(st.bus.subscribe())
        .filter_map(move |item| {
            let keep = match (&item, &only) {
                (Ok(ev), Some(name)) => ev.stream.as_deref() == Some(name.as_str()),
                (Ok(_), None) => true,
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
        .take_until(async move { shutdown.cancelled().await });
    let mut r = sse_response(events);
    cache_control(&mut r, "no-store");
    r
}

fn sse_response(s: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

/// `GET /events`
pub async fn node_events(State(st): State<AppState>) -> Response {
    sse(&st, None)
}

/// `GET /streams/{name}/events`: events of that stream (it need not exist yet).
pub async fn stream_events(
    State(st): State<AppState>,
    StreamName(name): StreamName,
) -> Result<Response, ApiError> {
    Ok(sse(&st, Some(name)))
}
