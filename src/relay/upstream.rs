//! Talking to an upstream node: its `index.json` (plain and long-poll) and Range pulls of
//! segments. Reports what happened ([`Trouble`]); never retries another upstream on its own
//! (that is `failover`'s call). A broken transfer resumes from the *same* URL with a Range for
//! the missing bytes, so bytes from two upstreams are never spliced into one segment.

use std::time::Duration;

use futures_util::StreamExt;

use super::failover::{status_is_trouble, Trouble};
use crate::cache::{PullError, Sink};
use crate::wire::{Index, MAX_INDEX_BYTES};

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
/// Checks an upstream base URL (config and `/api/proxies`); the error says what is wrong.
pub fn check_upstream_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("must start with http:// or https://, got {url:?}"))?;
    if rest.is_empty()
        || rest.starts_with('/')
        || url.len() > 2048
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("is not a usable URL: {url:?}"));
    }
    Ok(())
}

/// The HTTP client of a relay (pooled connections; http:// and https:// upstreams).
///
/// Every request it makes is its own: it carries `relay.token` (when set) and nothing of the
/// viewer whose request caused it, so a viewer's play token never travels upstream and what
/// it pulls is shareable between viewers.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

/// How a relay authenticates and whom it trusts upstream (`relay.token`, `relay.ca_file`).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer ...` on every upstream request.
    pub token: Option<String>,
    /// PEM bundle of extra CA certificates for https upstreams (system roots are trusted too).
    pub ca_pem: Option<Vec<u8>>,
}

fn classify(e: &reqwest::Error) -> Trouble {
    if let Some(why) = crate::tls::failure_of(e) {
        Trouble::Tls(why)
    } else if e.is_timeout() {
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
    /// A client with no token and the system roots only.
    pub fn new() -> Client {
        Client::with_options(&ClientOptions::default()).unwrap_or_else(|_| Client {
            http: reqwest::Client::new(),
        })
    }

    /// A client for `options`; an error says what is wrong with the token or CA bundle.
    pub fn with_options(options: &ClientOptions) -> Result<Client, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("dvrgate/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &options.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "relay.token is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(pem) = &options.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("relay.ca_file: {e}"))?;
            if certs.is_empty() {
                return Err("relay.ca_file: no PEM certificate found".into());
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the relay's HTTP client: {e}"))?;
        Ok(Client { http })
    }

    /// GET `{base}/streams/{remote}/index.json{query}` within `timeout`.
    /// `Ok(None)`: the upstream does not have the stream (404).
    pub async fn index(
        &self,
        base: &str,
        remote: &str,
        query: &str,
        timeout: Duration,
    ) -> Result<Option<Index>, Trouble> {
        let url = format!(
            "{}/streams/{remote}/index.json{query}",
            base.trim_end_matches('/')
        );
        let Some(index) = self.get_json::<Index>(&url, timeout, "index").await? else {
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

/// What a whole-resource GET found.
#[derive(Debug)]
pub enum Small {
    Found(bytes::Bytes),
    /// 404: not there (yet).
    Absent,
}

impl Client {
    /// GETs a small whole resource (a thumbnail) of at most `max` bytes within
    /// [`MIN_PULL_TIME`]. 404 is [`Small::Absent`]; any other non-200, or a body over `max`,
    /// is an error (nothing of it kept).
    pub async fn get_small(&self, url: &str, max: u64) -> Result<Small, PullError> {
        let fail = |why: String, timed_out: bool| {
            let msg = format!("{url}: {why}");
            if timed_out {
                PullError::timed_out(msg)
            } else {
                PullError::new(msg)
            }
        };
        let work = async {
            let resp = tokio::time::timeout(FIRST_BYTE_TIMEOUT, self.http.get(url).send())
                .await
                .map_err(|_| fail("no response headers in time".into(), true))?
                .map_err(|e| {
                    let t = classify(&e);
                    fail(t.to_string(), matches!(t, Trouble::Timeout))
                })?;
            match resp.status().as_u16() {
                200 => {}
                404 => return Ok(Small::Absent),
                s => return Err(fail(format!("answered HTTP {s}"), false)),
            }
            if resp.content_length().is_some_and(|n| n > max) {
                return Err(fail(format!("larger than {max} bytes"), false));
            }
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            loop {
                match tokio::time::timeout(STALL_TIMEOUT, stream.next()).await {
                    Err(_) => return Err(fail("stalled".into(), true)),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return Err(fail(e.to_string(), false)),
                    Ok(Some(Ok(chunk))) => {
                        if (body.len() + chunk.len()) as u64 > max {
                            return Err(fail(format!("larger than {max} bytes"), false));
                        }
                        body.extend_from_slice(&chunk);
                    }
                }
            }
            Ok(Small::Found(body.into()))
        };
        tokio::time::timeout(MIN_PULL_TIME, work)
            .await
            .unwrap_or_else(|_| Err(fail("not complete in time".into(), true)))
    }
}

/// Why one request of a pull failed, and whether it was a timeout.
enum PullFault {
    /// The transfer broke after it started: resumable.
    Broken(String, bool),
    /// Not worth resuming.
    Fatal(String, bool),
}
