//! `GET /metrics`: the node's counters plus gauges read from their owners, Prometheus text.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{cache_control, AppState};
use crate::metrics::{get, Text};

/// `GET /metrics`
pub async fn metrics(State(st): State<AppState>) -> Response {
    let m = &st.metrics;
    let mut t = Text::default();
    t.metric(
        "dvrgate_http_responses_total",
        "counter",
        "HTTP responses by status class.",
        &[
            ("class=\"2xx\"", get(&m.http_requests_2xx)),
            ("class=\"3xx\"", get(&m.http_requests_3xx)),
            ("class=\"4xx\"", get(&m.http_requests_4xx)),
            ("class=\"5xx\"", get(&m.http_requests_5xx)),
        ],
    );
    t.metric(
        "dvrgate_rtmp_publishes_total",
        "counter",
        "Accepted RTMP publishes.",
        &[("", get(&m.rtmp_publishes))],
    );
    t.metric(
        "dvrgate_rtmp_publish_refused_total",
        "counter",
        "Refused RTMP publishes.",
        &[("", get(&m.rtmp_publish_refused))],
    );
    t.metric(
        "dvrgate_ingest_tags_total",
        "counter",
        "FLV tags received from publishers.",
        &[("", get(&m.ingest_tags))],
    );
    t.metric(
        "dvrgate_ingest_bytes_total",
        "counter",
        "FLV tag body bytes received.",
        &[("", get(&m.ingest_bytes))],
    );
    t.metric(
        "dvrgate_ingest_bad_tags_total",
        "counter",
        "Tags dropped as malformed or unsupported.",
        &[("", get(&m.ingest_bad_tags))],
    );
    t.metric(
        "dvrgate_segments_written_total",
        "counter",
        "Media segments durably written.",
        &[("", get(&m.segments_written))],
    );
    t.metric(
        "dvrgate_segment_bytes_written_total",
        "counter",
        "Media segment bytes durably written.",
        &[("", get(&m.segment_bytes_written))],
    );
    t.metric(
        "dvrgate_segment_write_seconds_total",
        "counter",
        "Time spent writing segments durably (file and index fsyncs).",
        &[("", get(&m.segment_write_us) / 1e6)],
    );
    t.metric(
        "dvrgate_segments_deleted_total",
        "counter",
        "Segments deleted by retention.",
        &[("", get(&m.segments_deleted))],
    );
    t.metric(
        "dvrgate_record_errors_total",
        "counter",
        "Recording write failures.",
        &[("", get(&m.record_errors))],
    );
    t.metric(
        "dvrgate_sse_clients",
        "gauge",
        "Connected SSE clients.",
        &[("", get(&m.sse_clients))],
    );
    let c = &st.cache;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let counters: [(&str, &str, f64); 12] = [
        (
            "dvrgate_cache_hits_total",
            "Requests served from the memory cache.",
            n(&c.stats.hits),
        ),
        (
            "dvrgate_cache_disk_hits_total",
            "Requests served from the disk cache tier.",
            n(&c.stats.disk_hits),
        ),
        (
            "dvrgate_cache_misses_total",
            "Requests found in no cache tier.",
            n(&c.stats.misses),
        ),
        (
            "dvrgate_cache_coalesced_total",
            "Requests that joined a fetch already in progress.",
            n(&c.stats.coalesced),
        ),
        (
            "dvrgate_cache_memory_evictions_total",
            "Entries evicted from memory for size.",
            n(&c.stats.memory_evictions),
        ),
        (
            "dvrgate_cache_spills_total",
            "Evicted entries written to the disk tier.",
            n(&c.stats.spills),
        ),
        (
            "dvrgate_cache_spill_dropped_total",
            "Evicted entries not spilled (queue full, disk failing).",
            n(&c.stats.spill_dropped),
        ),
        (
            "dvrgate_cache_disk_evictions_total",
            "Files removed from the disk tier to stay within its bound.",
            n(&c.stats.disk_evictions),
        ),
        (
            "dvrgate_cache_memory_waits_total",
            "Fetches that waited for the in-flight memory budget.",
            n(&c.stats.memory_waits),
        ),
        (
            "dvrgate_cache_memory_wait_abandoned_total",
            "Fetches given up while waiting for memory (every request for them went away).",
            n(&c.stats.memory_wait_abandoned),
        ),
        (
            "dvrgate_upstream_pulls_total",
            "Segment pulls from an upstream.",
            n(&c.stats.pulls),
        ),
        (
            "dvrgate_upstream_pull_failures_total",
            "Upstream pulls that failed (nothing cached).",
            n(&c.stats.pull_failures),
        ),
    ];
    for (name, help, v) in counters {
        t.metric(name, "counter", help, &[("", v)]);
    }
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
