//! Node metrics, rendered in the Prometheus text format by `GET /metrics`.
//!
//! Counters are plain atomics owned by one `Metrics` per node (the demo runs three nodes in one
//! process, so a process-global registry would mix them). Gauges that mirror state (streams,
//! cache size) are read from their owners at render time instead of being kept in sync here.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Declares a struct of counters and its `/metrics` rendering together, so each metric (field,
/// name, help) is spelled exactly once. `field / 1e6` renders the counter divided (a
/// microsecond sum as seconds).
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* $field:ident $(/ $div:literal)? => $kind:literal $metric:literal, $help:literal;)*
        }
        $(with { $($(#[$xmeta:meta])* $xfield:ident: $xty:ty),* $(,)? })?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: ::std::sync::atomic::AtomicU64,)*
            $($($(#[$xmeta])* pub $xfield: $xty,)*)?
        }

        impl $name {
            /// Writes every metric in the Prometheus text format.
            pub fn render(&self, t: &mut $crate::metrics::Text) {
                $(t.metric(
                    $metric,
                    $kind,
                    $help,
                    &[("", $crate::metrics::get(&self.$field) $(/ $div)?)],
                );)*
                $($(self.$xfield.render(t);)*)?
            }
        }
    };
}

counters! {
    /// Counters of one node (the cache keeps its own, [`crate::cache::Stats`]).
    pub struct Metrics {
        rtmp_publishes => "counter" "dvrgate_rtmp_publishes_total", "Accepted RTMP publishes.";
        rtmp_publish_refused => "counter" "dvrgate_rtmp_publish_refused_total", "Refused RTMP publishes.";
        ingest_tags => "counter" "dvrgate_ingest_tags_total", "FLV tags received from publishers.";
        ingest_bytes => "counter" "dvrgate_ingest_bytes_total", "FLV tag body bytes received.";
        ingest_bad_tags => "counter" "dvrgate_ingest_bad_tags_total", "Tags dropped as malformed or unsupported.";
        segments_written => "counter" "dvrgate_segments_written_total", "Media segments durably written.";
        segment_bytes_written => "counter" "dvrgate_segment_bytes_written_total", "Media segment bytes durably written.";
        parts_written => "counter" "dvrgate_parts_written_total", "LL-HLS parts durably written and announced.";
        /// Sum of durable-write times (file + index fsyncs), microseconds.
        segment_write_us / 1e6 => "counter" "dvrgate_segment_write_seconds_total", "Time spent writing segments durably (file and index fsyncs).";
        segments_deleted => "counter" "dvrgate_segments_deleted_total", "Segments deleted by retention or to keep record.min_free.";
        thumbs_made => "counter" "dvrgate_thumbs_made_total", "Segment thumbnails made.";
        thumbs_skipped => "counter" "dvrgate_thumbs_skipped_total", "Segment thumbnails skipped because the thumbnail worker was behind.";
        thumbs_failed => "counter" "dvrgate_thumbs_failed_total", "Segment thumbnails that failed (decode or write errors).";
        /// CPU time of the thumbnail worker, microseconds.
        thumb_cpu_us / 1e6 => "counter" "dvrgate_thumb_cpu_seconds_total", "CPU time spent making thumbnails.";
        record_errors => "counter" "dvrgate_record_errors_total", "Recording write failures.";
        sse_clients => "gauge" "dvrgate_sse_clients", "Connected SSE clients.";
        tls_handshakes => "counter" "dvrgate_tls_handshakes_total", "TLS handshakes completed (HTTPS and RTMPS).";
        tls_handshake_failures => "counter" "dvrgate_tls_handshake_failures_total", "TLS handshakes that failed or did not finish in time.";
    }
    with {
        /// Responses by status class.
        http_responses: HttpResponses,
    }
}

/// HTTP responses by status class (one labelled metric).
#[derive(Debug, Default)]
pub struct HttpResponses {
    by_class: [AtomicU64; 4],
}

impl HttpResponses {
    /// Counts one response with `status`.
    pub fn count(&self, status: u16) {
        let i = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        inc(&self.by_class[i]);
    }

    pub fn render(&self, t: &mut Text) {
        let [a, b, c, d] = &self.by_class;
        t.metric(
            "dvrgate_http_responses_total",
            "counter",
            "HTTP responses by status class.",
            &[
                ("class=\"2xx\"", get(a)),
                ("class=\"3xx\"", get(b)),
                ("class=\"4xx\"", get(c)),
                ("class=\"5xx\"", get(d)),
            ],
        );
    }
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

    /// Writes a summary: `name{quantile=".."}` samples, `name_sum` and `name_count`.
    pub fn summary(
        &mut self,
        name: &str,
        help: &str,
        quantiles: &[(f64, f64)],
        sum: f64,
        count: u64,
    ) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} summary");
        for (q, v) in quantiles {
            let _ = writeln!(self.out, "{name}{{quantile=\"{q}\"}} {v}");
        }
        let _ = writeln!(self.out, "{name}_sum {sum}\n{name}_count {count}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Reads a counter as a sample value.
pub fn get(c: &AtomicU64) -> f64 {
    c.load(Ordering::Relaxed) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_metric_is_rendered_once_with_its_value() {
        let m = Metrics::default();
        inc(&m.ingest_tags);
        add(&m.segment_write_us, 1_500_000);
        m.http_responses.count(404);
        let mut t = Text::default();
        m.render(&mut t);
        crate::cache::Stats::default().render(&mut t);
        let text = t.finish();
        let mut names = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap_or_default();
            assert!(name.starts_with("dvrgate_"), "{line}");
            assert!(names.insert(name.to_owned()), "{name} twice");
        }
        assert!(text.contains("\ndvrgate_ingest_tags_total 1\n"), "{text}");
        assert!(text.contains("\ndvrgate_segment_write_seconds_total 1.5\n"));
        assert!(text.contains("dvrgate_http_responses_total{class=\"4xx\"} 1\n"));
        assert!(text.contains("# TYPE dvrgate_sse_clients gauge\n"));
        assert!(names.contains("dvrgate_upstream_pulls_total"));
    }
}
