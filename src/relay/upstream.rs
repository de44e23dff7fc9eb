//! Talking to an upstream node: its `index.json` (plain and long-poll) and Range pulls of
//! segments. Reports what happened ([`Trouble`]); never retries another upstream on its own
//! (that is `failover`'s call). A broken transfer resumes from the *same* URL with a Range for
//! the missing bytes, so bytes from two upstreams are never spliced into one segment.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

use super::failover::{status_is_trouble, Trouble};
use crate::cache::{PullError, Sink};

/// Connect timeout: a dead upstream is noticed quickly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for response headers of a segment pull.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest silence between two body chunks of a pull before it counts as stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Slowest transfer rate a pull may average before its total time limit cuts it off (bytes/s):
/// an upstream dripping bytes just fast enough to dodge the stall timeout is abandoned too.
pub const MIN_PULL_RATE: u64 = 64 * 1024;
/// Total time limit of any pull, however small.
pub const MIN_PULL_TIME: Duration = Duration::from_secs(20);

/// Total time a pull of `length` bytes may take: [`MIN_PULL_TIME`] or the time at
/// [`MIN_PULL_RATE`], whichever is longer.
pub fn pull_time_limit(length: u64) -> Duration {
    MIN_PULL_TIME.max(Duration::from_secs(length / MIN_PULL_RATE))
}

/// Resumes of one broken pull (each from the same upstream, for the missing bytes).
pub const MAX_RESUMES: u32 = 3;
/// Largest `index.json` accepted: a 24-hour window is about 10 MB; this bounds a hostile one.
pub const MAX_INDEX_BYTES: usize = 64 << 20;
/// Largest segment (or init segment) accepted from an index: bounds what one pull may buffer.
pub const MAX_SEGMENT_BYTES: u64 = 256 << 20;
/// Largest seq, media time or byte offset accepted from an index: 2^53, so the numbers stay
/// exact in JSON (and in browsers) and the relay's arithmetic on them cannot overflow.
pub const MAX_INDEX_NUMBER: u64 = 1 << 53;
/// Longest segment accepted from an index (segments are cut at keyframes seconds apart).
pub const MAX_SEGMENT_DURATION_MS: u64 = 24 * 3600 * 1000;

/// A period as an upstream's `index.json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct UpPeriod {
    pub id: u32,
    pub init: String,
    pub codecs: String,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub start_ms: u64,
    #[serde(default)]
    pub hash: Option<String>,
    #[serde(default)]
    pub length: Option<u64>,
}

/// A segment as an upstream's `index.json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct UpSegment {
    pub seq: u64,
    pub period: u32,
    pub start_ms: u64,
    pub duration_ms: u64,
    pub time: String,
    pub url: String,
    #[serde(default)]
    pub offset: u64,
    pub length: u64,
    #[serde(default)]
    pub hash: Option<String>,
}

/// An upstream's `index.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct UpIndex {
    pub live: bool,
    #[serde(default)]
    pub target_duration_ms: u64,
    pub periods: Vec<UpPeriod>,
    pub segments: Vec<UpSegment>,
}

/// Checks an upstream base URL (config and `/api/proxies`); the error says what is wrong.
/// Only `http://`: this build has no TLS client (terminate TLS in front of the upstream, or
/// relay over a private network).
pub fn check_upstream_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Err(format!(
            "{url:?}: https upstreams are not supported by this build; use http://"
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("must start with http://, got {url:?}"))?;
    if rest.is_empty()
        || rest.starts_with('/')
        || url.len() > 2048
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("is not a usable URL: {url:?}"));
    }
    Ok(())
}

/// A relative URL from an index is only used if it stays below the stream.
pub fn safe_relative(url: &str) -> bool {
    !url.is_empty()
        && !url.starts_with('/')
        && url
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
}

/// Parses a 16-hex-digit content hash.
pub fn parse_hash(h: Option<&str>) -> Option<u64> {
    h.filter(|h| h.len() == 16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
}

impl UpIndex {
    /// Checks what a relay relies on; the error says what is wrong. A valid index has
    /// increasing seqs, URLs below the stream, bounded lengths and numbers small enough that
    /// nothing computed from them overflows.
    pub fn validate(&self) -> Result<(), String> {
        if self.target_duration_ms > MAX_SEGMENT_DURATION_MS {
            return Err(format!("target duration {} ms", self.target_duration_ms));
        }
        let mut prev: Option<u64> = None;
        for s in &self.segments {
            if prev.is_some_and(|p| s.seq <= p) {
                return Err(format!("segment seq {} out of order", s.seq));
            }
            prev = Some(s.seq);
            if s.length == 0 || s.length > MAX_SEGMENT_BYTES {
                return Err(format!("segment {} has length {}", s.seq, s.length));
            }
            if s.seq > MAX_INDEX_NUMBER
                || s.start_ms > MAX_INDEX_NUMBER
                || s.offset > MAX_INDEX_NUMBER
            {
                return Err(format!(
                    "segment {} has seq, start_ms or offset beyond 2^53",
                    s.seq
                ));
            }
            if s.duration_ms > MAX_SEGMENT_DURATION_MS {
                return Err(format!(
                    "segment {} has duration {} ms",
                    s.seq, s.duration_ms
                ));
            }
            if !safe_relative(&s.url) {
                return Err(format!("segment {} has unusable url {:?}", s.seq, s.url));
            }
            if crate::time::parse_rfc3339(&s.time).is_none() {
                return Err(format!("segment {} has bad time {:?}", s.seq, s.time));
            }
            if !self.periods.iter().any(|p| p.id == s.period) {
                return Err(format!(
                    "segment {} names unknown period {}",
                    s.seq, s.period
                ));
            }
        }
        for p in &self.periods {
            if !safe_relative(&p.init) {
                return Err(format!(
                    "period {} has unusable init url {:?}",
                    p.id, p.init
                ));
            }
            if let Some(length) = p.length.filter(|&l| l == 0 || l > MAX_SEGMENT_BYTES) {
                return Err(format!("period {} has init length {length}", p.id));
            }
        }
        Ok(())
    }
}

/// The HTTP client of a relay (pooled connections).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

fn classify(e: &reqwest::Error) -> Trouble {
    if e.is_timeout() {
        Trouble::Timeout
    } else if e.is_connect() {
        Trouble::Connect
    } else if let Some(s) = e.status() {
        Trouble::Status(s.as_u16())
    } else {
        Trouble::BadAnswer(e.to_string())
    }
}

impl Client {
    pub fn new() -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("dvrgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Client { http }
    }

    /// GET `{base}/streams/{remote}/index.json{query}` within `timeout`.
    /// `Ok(None)`: the upstream does not have the stream (404).
    pub async fn index(
        &self,
        base: &str,
        remote: &str,
        query: &str,
        timeout: Duration,
    ) -> Result<Option<UpIndex>, Trouble> {
        let url = format!(
            "{}/streams/{remote}/index.json{query}",
            base.trim_end_matches('/')
        );
        let Some(index) = self.get_json::<UpIndex>(&url, timeout, "index").await? else {
            return Ok(None);
        };
        index.validate().map_err(Trouble::BadAnswer)?;
        Ok(Some(index))
    }

    /// GET `{base}/streams` within `timeout`: the upstream's status objects.
    pub async fn streams(
        &self,
        base: &str,
        timeout: Duration,
    ) -> Result<Vec<serde_json::Value>, Trouble> {
        let url = format!("{}/streams", base.trim_end_matches('/'));
        self.get_json(&url, timeout, "stream list")
            .await?
            .ok_or(Trouble::Status(404))
    }

    /// GET a JSON document of at most [`MAX_INDEX_BYTES`] within `timeout`; `Ok(None)` on 404.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        timeout: Duration,
        what: &str,
    ) -> Result<Option<T>, Trouble> {
        let resp = self
            .http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if status_is_trouble(status) || status != 200 {
            return Err(Trouble::Status(status));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify(&e))?;
            if body.len() + chunk.len() > MAX_INDEX_BYTES {
                return Err(Trouble::BadAnswer(format!("{what} larger than 64 MiB")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Trouble::BadAnswer(format!("{what} JSON: {e}")))
    }

    /// Pulls `length` bytes at `offset` of `url` into `sink`, resuming a broken transfer from
    /// the same URL. The sink rejects anything beyond `length`.
    pub async fn pull(
        &self,
        url: &str,
        offset: u64,
        length: u64,
        sink: &mut Sink,
    ) -> Result<(), PullError> {
        let limit = pull_time_limit(length);
        tokio::time::timeout(limit, self.pull_resuming(url, offset, length, sink))
            .await
            .unwrap_or_else(|_| {
                Err(PullError::timed_out(format!(
                    "{url}: not complete within {} s",
                    limit.as_secs()
                )))
            })
    }

    async fn pull_resuming(
        &self,
        url: &str,
        offset: u64,
        length: u64,
        sink: &mut Sink,
    ) -> Result<(), PullError> {
        let mut resumes = 0;
        loop {
            let got = sink.received();
            if got >= length {
                return Ok(());
            }
            match self
                .pull_once(url, offset + got, offset + length - 1, sink)
                .await
            {
                Ok(()) if sink.received() >= length => return Ok(()),
                Ok(()) | Err(PullFault::Broken(..))
                    if resumes < MAX_RESUMES && sink.received() > got =>
                {
                    resumes += 1;
                    tracing::debug!(%url, received = sink.received(), length, "resuming a broken pull");
                }
                Ok(()) => {
                    return Err(PullError::new(format!(
                        "{url}: transfer ended at {} of {length} bytes",
                        sink.received()
                    )))
                }
                Err(PullFault::Broken(why, timed_out) | PullFault::Fatal(why, timed_out)) => {
                    let msg = format!("{url}: {why}");
                    return Err(if timed_out {
                        PullError::timed_out(msg)
                    } else {
                        PullError::new(msg)
                    });
                }
            }
        }
    }

    async fn pull_once(
        &self,
        url: &str,
        first: u64,
        last: u64,
        sink: &mut Sink,
    ) -> Result<(), PullFault> {
        let resp = tokio::time::timeout(
            FIRST_BYTE_TIMEOUT,
            self.http
                .get(url)
                .header(reqwest::header::RANGE, format!("bytes={first}-{last}"))
                .send(),
        )
        .await
        .map_err(|_| PullFault::Fatal("no response headers in time".into(), true))?
        .map_err(|e| {
            let t = classify(&e);
            PullFault::Fatal(t.to_string(), matches!(t, Trouble::Timeout))
        })?;
        let status = resp.status().as_u16();
        match status {
            206 => {
                let expected = format!("bytes {first}-{last}/");
                let ok = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with(&expected));
                if !ok {
                    return Err(PullFault::Fatal(
                        "206 with a Content-Range other than requested".into(),
                        false,
                    ));
                }
            }
            // A whole-resource answer is usable only when it is exactly what was asked for.
            200 if first == 0 && resp.content_length() == Some(last + 1) => {}
            _ => return Err(PullFault::Fatal(format!("answered HTTP {status}"), false)),
        }
        let mut body = resp.bytes_stream();
        loop {
            match tokio::time::timeout(STALL_TIMEOUT, body.next()).await {
                Err(_) => return Err(PullFault::Broken("stalled".into(), true)),
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => return Err(PullFault::Broken(e.to_string(), false)),
                Ok(Some(Ok(chunk))) => sink
                    .push(chunk)
                    .map_err(|e| PullFault::Fatal(e.to_string(), false))?,
            }
        }
    }
}

/// Why one request of a pull failed, and whether it was a timeout.
enum PullFault {
    /// The transfer broke after it started: resumable.
    Broken(String, bool),
    /// Not worth resuming.
    Fatal(String, bool),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls() {
        for ok in ["segments/1.m4s", "init/0.mp4", "a/b_c-d.e"] {
            assert!(safe_relative(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "http://evil/x",
            "a//b",
            "a b",
            "./x",
        ] {
            assert!(!safe_relative(bad), "{bad}");
        }
        assert_eq!(parse_hash(Some("00000000000000ab")), Some(0xab));
        assert_eq!(parse_hash(Some("zz")), None);
    }

    #[test]
    fn hostile_numbers_are_refused() {
        let good = [
            ("seq", 5),
            ("offset", 0),
            ("start_ms", 0),
            ("duration_ms", 2000),
            ("init_length", 10),
        ];
        let index = |field: &str, value: u64| -> UpIndex {
            let v = |name: &str| {
                if name == field {
                    value
                } else {
                    good.iter().find(|g| g.0 == name).map_or(0, |g| g.1)
                }
            };
            serde_json::from_str(&format!(
                r#"{{"live":true,
                "periods":[{{"id":0,"init":"init/0.mp4","codecs":"c","length":{}}}],
                "segments":[{{"seq":{},"period":0,"start_ms":{},"duration_ms":{},"offset":{},
                "time":"2026-11-30T15:04:05.250Z","url":"segments/5.m4s","length":10}}]}}"#,
                v("init_length"),
                v("seq"),
                v("start_ms"),
                v("duration_ms"),
                v("offset"),
            ))
            .unwrap()
        };
        assert!(index("", 0).validate().is_ok());
        for (field, value) in [
            ("seq", u64::MAX),
            ("offset", u64::MAX - 1),
            ("start_ms", u64::MAX),
            ("duration_ms", u64::MAX),
            ("init_length", 1 << 40),
            ("init_length", 0),
        ] {
            assert!(index(field, value).validate().is_err(), "{field} = {value}");
        }
    }
}
