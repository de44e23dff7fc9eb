//! Node metrics, rendered in the Prometheus text format by `GET /metrics`.
//!
//! Counters are plain atomics owned by one `Metrics` per node (the demo runs three nodes in one
//! process, so a process-global registry would mix them). Gauges that mirror state (streams,
//! cache size) are read from their owners at render time instead of being kept in sync here.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one node.
#[derive(Debug, Default)]
pub struct Metrics {
    pub http_requests_2xx: AtomicU64,
    pub http_requests_3xx: AtomicU64,
    pub http_requests_4xx: AtomicU64,
    pub http_requests_5xx: AtomicU64,
    pub rtmp_publishes: AtomicU64,
    pub rtmp_publish_refused: AtomicU64,
    pub ingest_tags: AtomicU64,
    pub ingest_bytes: AtomicU64,
    pub ingest_bad_tags: AtomicU64,
    pub segments_written: AtomicU64,
    pub segment_bytes_written: AtomicU64,
    /// Sum of durable-write times (file + index fsyncs), microseconds.
    pub segment_write_us: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub record_errors: AtomicU64,
    pub sse_clients: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Builds the Prometheus text exposition.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// Writes `# HELP`/`# TYPE` and one sample per `(labels, value)`.
    pub fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.out, "{name} {value}");
            } else {
                let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
            }
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Reads a counter as a sample value.
pub fn get(c: &AtomicU64) -> f64 {
    c.load(Ordering::Relaxed) as f64
}
