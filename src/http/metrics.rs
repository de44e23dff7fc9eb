//! `GET /metrics`: the node's counters plus gauges read from their owners, Prometheus text.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{cache_control, AppState};
use crate::metrics::Text;

/// `GET /metrics`
pub async fn metrics(State(st): State<AppState>) -> Response {
    let mut t = Text::default();
    st.metrics.render(&mut t);
    if let Some(a) = &st.archive {
        a.render(&mut t);
    }
    if let Some(h) = &st.event_hook {
        h.render(&mut t);
    }
    let c = &st.cache;
    c.stats.render(&mut t);
    c.run_pending_tasks().await;
    let gauges: [(&str, &str, f64); 5] = [
        (
            "dvrgate_cache_in_flight_bytes",
            "Bytes outside the memory tier: fetches in flight, spills queued, evicted entries still being sent.",
            c.budget().used() as f64,
        ),
        (
            "dvrgate_cache_in_flight_limit_bytes",
            "The budget of dvrgate_cache_in_flight_bytes.",
            c.budget().limit() as f64,
        ),
        (
            "dvrgate_cache_bytes",
            "Bytes held by the memory cache.",
            c.weighted_size() as f64,
        ),
        (
            "dvrgate_cache_entries",
            "Entries in the memory cache.",
            c.entry_count() as f64,
        ),
        (
            "dvrgate_cache_disk_bytes",
            "Bytes held by the disk cache tier.",
            c.disk_bytes() as f64,
        ),
    ];
    for (name, help, v) in gauges {
        t.metric(name, "gauge", help, &[("", v)]);
    }
    let relays = st.relays.list();
    let relay_labels: Vec<String> = relays
        .iter()
        .map(|p| {
            format!(
                "stream=\"{}\",upstream=\"{}\"",
                p.local,
                label_escape(p.current_upstream())
            )
        })
        .collect();
    let following: Vec<(&str, f64)> = relays
        .iter()
        .zip(&relay_labels)
        .map(|(p, l)| (l.as_str(), if p.stream.read().live { 1.0 } else { 0.0 }))
        .collect();
    t.metric(
        "dvrgate_relay_live",
        "gauge",
        "1 while a relayed stream is live upstream.",
        &following,
    );
    let streams = st.store.list();
    let mut live = Vec::new();
    let mut segs = Vec::new();
    let mut bytes = Vec::new();
    let labels: Vec<String> = streams
        .iter()
        .map(|s| format!("stream=\"{}\"", s.name))
        .collect();
    for (s, l) in streams.iter().zip(&labels) {
        let ix = s.read();
        live.push((l.as_str(), if ix.live { 1.0 } else { 0.0 }));
        segs.push((l.as_str(), ix.segments.len() as f64));
        bytes.push((l.as_str(), ix.bytes as f64));
    }
    t.metric(
        "dvrgate_stream_live",
        "gauge",
        "1 while a stream is being published.",
        &live,
    );
    t.metric(
        "dvrgate_stream_dvr_segments",
        "gauge",
        "Segments in a stream's DVR window.",
        &segs,
    );
    t.metric(
        "dvrgate_stream_dvr_bytes",
        "gauge",
        "Media bytes in a stream's DVR window.",
        &bytes,
    );
    let mut r = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        t.finish(),
    )
        .into_response();
    cache_control(&mut r, "no-store");
    r
}

/// Escapes a Prometheus label value.
fn label_escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
