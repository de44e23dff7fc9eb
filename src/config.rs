//! Configuration: one serde tree, every key optional, typed sizes and durations.
//!
//! `Config::default()` is the embedded default and equals `config/dvrgate.toml` (a test checks
//! that the commented reference file parses to exactly this value). `validate()` names the key
//! that is wrong; `check-config` prints the effective config with `to_toml()`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names;

/// The commented reference configuration; also what `Config::default()` must equal.
pub const REFERENCE_TOML: &str = include_str!("../config/dvrgate.toml");

/// A configuration error that names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("{key} {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The whole node configuration (SPEC.md "Config").
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub http: HttpConfig,
    pub rtmp: RtmpConfig,
    pub record: RecordConfig,
    pub cache: CacheConfig,
    pub relay: RelayConfig,
    /// The shared archive; `None` = recordings stay local.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageConfig>,
    /// Who may watch and publish, and the hooks; `None` = public read API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proxy: Vec<ProxyConfig>,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Shown in status JSON and the `Via` response header.
    pub name: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "dvrgate".into(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    /// When set, `/api/*` needs `Authorization: Bearer <token>`; unset = loopback clients only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// URL prefixes `/api/proxies` may use; unset = any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_upstreams: Option<Vec<String>>,
    /// Longest section `clip.mp4` exports.
    pub max_clip: Dur,
    /// PEM certificate chain; with `tls_key`, the listener speaks HTTPS (HTTP/1.1 and HTTP/2)
    /// and RTMPS uses it too. Both files are read again on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl HttpConfig {
    /// The certificate and key files when both are set (HTTPS and RTMPS on).
    pub fn tls_files(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".into(),
            admin_token: None,
            allow_upstreams: None,
            max_clip: Dur::secs(3600),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[rtmp]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// A socket address, or `"off"` to disable ingest.
    pub listen: String,
    pub app: String,
    /// When set, publishers must use the stream name `NAME?key=<publish_key>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_key: Option<String>,
    /// RTMPS ingest with `http.tls_cert`/`tls_key`: a socket address, or `"off"`.
    pub tls_listen: String,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            listen: "0.0.0.0:1935".into(),
            app: "live".into(),
            publish_key: None,
            tls_listen: "off".into(),
        }
    }
}

impl RtmpConfig {
    /// The address to listen on, or `None` when ingest is off.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        if self.listen == "off" {
            None
        } else {
            self.listen.parse().ok()
        }
    }

    /// The RTMPS address, or `None` when it is off.
    pub fn tls_listen_addr(&self) -> Option<SocketAddr> {
        if self.tls_listen == "off" {
            None
        } else {
            self.tls_listen.parse().ok()
        }
    }
}

/// `[record]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    pub dir: PathBuf,
    /// Segments are cut at the first keyframe at or after this duration.
    pub segment_target: Dur,
    /// DVR window kept; older segments are deleted.
    pub retention: Dur,
    /// Per stream; the oldest segments are deleted first when over.
    pub max_bytes: ByteSize,
    /// How much the live `index.m3u8` lists.
    pub playlist_window: Dur,
    /// Free space kept on the recordings' volume: a size or a percentage of the volume.
    pub min_free: MinFree,
    /// One JPEG per video segment (`thumbs/{seq}.jpg`, `thumbs.vtt`).
    pub thumbnails: bool,
    /// LL-HLS part duration of live streams, or off (whole segments only).
    pub part_target: PartTarget,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            dir: "data/recordings".into(),
            segment_target: Dur::secs(2),
            retention: Dur::secs(24 * 3600),
            max_bytes: ByteSize(50 << 30),
            playlist_window: Dur::secs(3600),
            min_free: MinFree(crate::store::MinFree::Percent(5.0)),
            thumbnails: true,
            part_target: PartTarget(Some(Duration::from_millis(500))),
        }
    }
}

/// `record.part_target`: a duration like `"500ms"`, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartTarget(pub Option<Duration>);

impl PartTarget {
    /// The target in ms, `None` when off.
    pub fn ms(&self) -> Option<u64> {
        self.0
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl FromStr for PartTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "off" {
            return Ok(PartTarget(None));
        }
        s.parse::<Dur>()
            .map(|d| PartTarget(Some(d.0)))
            .map_err(|e| format!("{e}, or \"off\""))
    }
}

impl fmt::Display for PartTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => Dur(d).fmt(f),
            None => f.write_str("off"),
        }
    }
}

impl Serialize for PartTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PartTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `[cache]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory tier budget in bytes (LRU).
    pub memory: ByteSize,
    /// Where evicted segments spill; unset = no disk tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_dir: Option<PathBuf>,
    /// Disk tier budget in bytes (LRU).
    pub disk: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory: ByteSize(256 << 20),
            disk_dir: None,
            disk: ByteSize(2 << 30),
        }
    }
}

/// `[relay]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Any unknown stream is proxied on demand from these, in order.
    pub upstreams: Vec<String>,
    /// A live stream with no new segment this long fails over.
    pub idle_timeout: Dur,
    /// Newest segments pulled ahead of viewers.
    pub prefetch: u32,
    /// An on-demand relay nobody asked for this long stops following and frees its state.
    pub idle_reap: Dur,
    /// Sent upstream as `Authorization: Bearer <token>` (a play token of the upstream, or its
    /// `admin_token`). Never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Extra CA certificates (PEM) trusted for https upstreams, besides the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            upstreams: Vec::new(),
            idle_timeout: Dur::secs(6),
            prefetch: 2,
            idle_reap: Dur::secs(60),
            token: None,
            ca_file: None,
        }
    }
}

/// `[access]`: play tokens and the hooks.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// When set, reading a stream needs a JWT play token signed HS256 with this secret.
    /// `check-config` prints it as `"<redacted>"`.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "redacted")]
    pub play_secret: Option<String>,
    /// Streams (names, or `prefix*`) readable without a token even with `play_secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public: Option<Vec<String>>,
    /// POSTed before a publish is accepted; a 2xx within 3 s allows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_hook: Option<String>,
    /// Every status event is POSTed here as JSON, in order, retried with backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_hook: Option<String>,
}

/// Shortest `access.play_secret`: an HS256 key shorter than this can be brute-forced from a
/// single token.
pub const MIN_PLAY_SECRET: usize = 16;

fn redacted<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

/// `[storage]`: the shared archive on an S3-compatible object store. Credentials never appear
/// here: they come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` or the AWS files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `s3://bucket/prefix` (the prefix may be empty).
    pub url: String,
    /// Any S3 API endpoint; unset = AWS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub region: String,
    /// A writer that stops renewing its lease for this long is replaced.
    pub lease: Dur,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            lease: Dur::secs(6),
        }
    }
}

impl StorageConfig {
    /// The bucket and the key prefix (without slashes at either end) of `url`.
    pub fn bucket_and_prefix(&self) -> Result<(String, String), ConfigError> {
        let rest = self
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("storage.url", "must look like s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(invalid(
                "storage.url",
                format!("bucket {bucket:?} must be 3 to 63 characters of a-z, 0-9, '-' and '.'"),
            ));
        }
        let prefix = prefix.trim_matches('/');
        let prefix_ok = prefix.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
        if !prefix.is_empty() && !prefix_ok {
            return Err(invalid(
                "storage.url",
                format!("key prefix {prefix:?} must be /-separated parts of A-Z, a-z, 0-9, '-', '_' and '.'"),
            ));
        }
        Ok((bucket.to_owned(), prefix.to_owned()))
    }
}

/// `[[proxy]]`: an explicit `proxyFrom(local, remote)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub local: String,
    pub remote: String,
    pub upstreams: Vec<String>,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::parse(&text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (omitted keys take their defaults). Does not validate.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string().trim_end().to_owned()))
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.name.is_empty() || self.node.name.len() > 64 {
            return Err(invalid("node.name", "must be 1 to 64 characters"));
        }
        if !self.node.name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "node.name",
                "must be printable ASCII without spaces (it goes into the Via header)",
            ));
        }
        self.http.listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "http.listen",
                format!(
                    "must be an address like 0.0.0.0:8080, got {:?}",
                    self.http.listen
                ),
            )
        })?;
        if let Some(token) = &self.http.admin_token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    "http.admin_token",
                    "must be non-empty printable ASCII",
                ));
            }
        }
        if let Some(prefixes) = &self.http.allow_upstreams {
            for (i, p) in prefixes.iter().enumerate() {
                check_url(&format!("http.allow_upstreams[{i}]"), p)?;
            }
        }
        if self.rtmp.listen != "off" && self.rtmp.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "rtmp.listen",
                format!(
                    "must be an address like 0.0.0.0:1935 or \"off\", got {:?}",
                    self.rtmp.listen
                ),
            ));
        }
        if self.rtmp.tls_listen != "off" {
            if self.rtmp.tls_listen.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    "rtmp.tls_listen",
                    format!(
                        "must be an address like 0.0.0.0:1936 or \"off\", got {:?}",
                        self.rtmp.tls_listen
                    ),
                ));
            }
            if self.http.tls_files().is_none() {
                return Err(invalid(
                    "rtmp.tls_listen",
                    "needs http.tls_cert and http.tls_key (RTMPS uses that certificate)",
                ));
            }
        }
        match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(_), None) => {
                return Err(invalid("http.tls_key", "must be set with http.tls_cert"))
            }
            (None, Some(_)) => {
                return Err(invalid("http.tls_cert", "must be set with http.tls_key"))
            }
            _ => {}
        }
        if !names::is_valid(&self.rtmp.app) {
            return Err(invalid("rtmp.app", "must match [A-Za-z0-9_-]{1,64}"));
        }
        if let Some(key) = &self.rtmp.publish_key {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b'&') {
                return Err(invalid(
                    "rtmp.publish_key",
                    "must be non-empty printable ASCII without '&'",
                ));
            }
        }
        let target = self.record.segment_target.0;
        if target < Duration::from_millis(200) || target > Duration::from_secs(60) {
            return Err(invalid(
                "record.segment_target",
                "must be between 200ms and 60s",
            ));
        }
        if let Some(part) = self.record.part_target.0 {
            // Parts are 85-100 % of the target while frames are at most 15 % of it apart;
            // below 100 ms that needs more than 60 fps, and a part as long as the segment is
            // no part at all.
            if part < Duration::from_millis(100) || part.saturating_mul(2) > target {
                return Err(invalid(
                    "record.part_target",
                    "must be \"off\" or between 100ms and half of record.segment_target",
                ));
            }
        }
        if self.record.retention.0 < target {
            return Err(invalid(
                "record.retention",
                "must be at least record.segment_target",
            ));
        }
        if self.record.max_bytes.0 == 0 {
            return Err(invalid("record.max_bytes", "must be > 0"));
        }
        if self.record.playlist_window.0 < target {
            return Err(invalid(
                "record.playlist_window",
                "must be at least record.segment_target",
            ));
        }
        if let crate::store::MinFree::Percent(p) = self.record.min_free.0 {
            if !(0.0..100.0).contains(&p) {
                return Err(invalid(
                    "record.min_free",
                    format!("must be a size or a percentage below 100%, got {p}%"),
                ));
            }
        }
        if self.http.max_clip.0 < Duration::from_secs(1) {
            return Err(invalid("http.max_clip", "must be at least 1s"));
        }
        if self.cache.memory.0 == 0 {
            return Err(invalid("cache.memory", "must be > 0"));
        }
        if self.cache.disk_dir.is_some() && self.cache.disk.0 == 0 {
            return Err(invalid(
                "cache.disk",
                "must be > 0 when cache.disk_dir is set",
            ));
        }
        for (i, u) in self.relay.upstreams.iter().enumerate() {
            check_url(&format!("relay.upstreams[{i}]"), u)?;
        }
        if self.relay.idle_timeout.0 < Duration::from_millis(500) {
            return Err(invalid("relay.idle_timeout", "must be at least 500ms"));
        }
        if self.relay.idle_reap.0 < Duration::from_secs(1) {
            return Err(invalid("relay.idle_reap", "must be at least 1s"));
        }
        if self.relay.prefetch > 16 {
            return Err(invalid("relay.prefetch", "must be at most 16"));
        }
        if let Some(token) = &self.relay.token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid("relay.token", "must be non-empty printable ASCII"));
            }
        }
        if let Some(storage) = &self.storage {
            storage.bucket_and_prefix()?;
            if let Some(endpoint) = &storage.endpoint {
                let rest = endpoint
                    .strip_prefix("http://")
                    .or_else(|| endpoint.strip_prefix("https://"));
                if rest.is_none_or(|r| r.is_empty() || r.starts_with('/'))
                    || endpoint
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(invalid(
                        "storage.endpoint",
                        format!("must be an http:// or https:// URL, got {endpoint:?}"),
                    ));
                }
            }
            if storage.region.is_empty() || !storage.region.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    "storage.region",
                    "must be a region name like us-east-1",
                ));
            }
            if storage.lease.0 < Duration::from_secs(2)
                || storage.lease.0 > Duration::from_secs(300)
            {
                return Err(invalid("storage.lease", "must be between 2s and 5m"));
            }
        }
        if let Some(access) = &self.access {
            if let Some(secret) = &access.play_secret {
                if secret.len() < MIN_PLAY_SECRET {
                    return Err(invalid(
                        "access.play_secret",
                        format!("must be at least {MIN_PLAY_SECRET} bytes (a short HS256 key can be guessed from one token)"),
                    ));
                }
            }
            if let Some(public) = &access.public {
                if access.play_secret.is_none() {
                    return Err(invalid(
                        "access.public",
                        "has no effect without access.play_secret (every stream is public then)",
                    ));
                }
                for (i, p) in public.iter().enumerate() {
                    let name = p.strip_suffix('*').unwrap_or(p);
                    if !(names::is_valid(name) || (name.is_empty() && p == "*")) {
                        return Err(invalid(
                            format!("access.public[{i}]"),
                            format!("must be a stream name or a prefix followed by '*', got {p:?}"),
                        ));
                    }
                }
            }
            for (key, url) in [
                ("access.publish_hook", &access.publish_hook),
                ("access.event_hook", &access.event_hook),
            ] {
                let Some(url) = url else { continue };
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && reqwest::Url::parse(url).is_ok_and(|u| u.host().is_some())
                    && !url.chars().any(|c| c.is_whitespace() || c.is_control());
                if !ok {
                    return Err(invalid(key, "must be an http:// or https:// URL"));
                }
            }
        }
        let mut locals = std::collections::HashSet::new();
        for (i, p) in self.proxy.iter().enumerate() {
            if !names::is_valid(&p.local) {
                return Err(invalid(
                    format!("proxy[{i}].local"),
                    "must match [A-Za-z0-9_-]{1,64}",
                ));
            }
            if !names::is_valid(&p.remote) {
                return Err(invalid(
                    format!("proxy[{i}].remote"),
                    "must match [A-Za-z0-9_-]{1,64}",
                ));
            }
            if !locals.insert(p.local.as_str()) {
                return Err(invalid(
                    format!("proxy[{i}].local"),
                    format!("{:?} is defined twice", p.local),
                ));
            }
            if p.upstreams.is_empty() {
                return Err(invalid(
                    format!("proxy[{i}].upstreams"),
                    "must list at least one upstream",
                ));
            }
            for (j, u) in p.upstreams.iter().enumerate() {
                check_url(&format!("proxy[{i}].upstreams[{j}]"), u)?;
            }
        }
        Ok(())
    }
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    crate::relay::upstream::check_upstream_url(url).map_err(|why| invalid(key, why))
}

/// A byte count written like `"256MiB"`, `"2GiB"`, `"50GB"` or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| {
            format!("invalid size {s:?} (examples: \"256MiB\", \"2GiB\", \"1000000\")")
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, mult) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= mult && self.0.is_multiple_of(mult) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A size key's TOML value: a plain integer (bytes), or a string in the type's own grammar.
fn int_or_parsed<'de, D, T>(d: D, from_bytes: impl FnOnce(u64) -> T) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(from_bytes(n)),
        Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_parsed(d, ByteSize)
    }
}

/// `record.min_free`: a size like `"512MiB"` (the [`ByteSize`] grammar) or a percentage of the
/// volume like `"5%"` or `"2.5%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinFree(pub crate::store::MinFree);

impl FromStr for MinFree {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| {
                    format!("invalid percentage {s:?} (examples: \"5%\", \"2.5%\", \"512MiB\")")
                })?;
                if !(0.0..100.0).contains(&p) {
                    return Err(format!(
                        "percentage {s:?} must be at least 0% and below 100%"
                    ));
                }
                Ok(MinFree(crate::store::MinFree::Percent(p)))
            }
            None => s
                .parse::<ByteSize>()
                .map(|b| MinFree(crate::store::MinFree::Bytes(b.0))),
        }
    }
}

impl fmt::Display for MinFree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            crate::store::MinFree::Bytes(n) => write!(f, "{}", ByteSize(n)),
            crate::store::MinFree::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MinFree {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MinFree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_parsed(d, |n| MinFree(crate::store::MinFree::Bytes(n)))
    }
}

/// A duration written like `"2s"`, `"500ms"`, `"24h"`, `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            format!("invalid duration {s:?}: {e} (examples: \"2s\", \"500ms\", \"24h\")")
        })
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_duration(self.0)
                .to_string()
                .replace(' ', "")
        )
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_file_is_the_default() {
        let parsed = Config::parse(REFERENCE_TOML).expect("reference parses");
        assert_eq!(parsed, Config::default());
        Config::default().validate().expect("defaults are valid");
    }

    #[test]
    fn example_configs_are_valid() {
        for (name, text) in [
            ("origin", include_str!("../config/origin.toml")),
            ("intermediate", include_str!("../config/intermediate.toml")),
            ("edge", include_str!("../config/edge.toml")),
            (
                "origin-archive",
                include_str!("../config/origin-archive.toml"),
            ),
        ] {
            let c = Config::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn effective_config_round_trips() {
        let mut c = Config::default();
        c.http.admin_token = Some("t".into());
        c.proxy.push(ProxyConfig {
            local: "a".into(),
            remote: "b".into(),
            upstreams: vec!["http://127.0.0.1:1".into()],
        });
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!("256MiB".parse::<ByteSize>().unwrap(), ByteSize(256 << 20));
        assert_eq!("50GiB".parse::<ByteSize>().unwrap(), ByteSize(50 << 30));
        assert_eq!("1000".parse::<ByteSize>().unwrap(), ByteSize(1000));
        assert!("12XB".parse::<ByteSize>().is_err());
        assert!("99999999999999TiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(256 << 20).to_string(), "256MiB");
        assert_eq!("2s".parse::<Dur>().unwrap(), Dur::secs(2));
        assert_eq!("1h30m".parse::<Dur>().unwrap(), Dur::secs(5400));
        assert_eq!(Dur::secs(5400).to_string(), "1h30m");
        assert!("soon".parse::<Dur>().is_err());
    }

    #[test]
    fn part_target_is_a_duration_or_off() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.record.part_target.ms(), Some(500));
        let c = Config::parse("[record]\npart_target = \"off\"\n").unwrap();
        assert_eq!(c.record.part_target.ms(), None);
        let c = Config::parse("[record]\npart_target = \"333ms\"\n").unwrap();
        assert_eq!(c.record.part_target.ms(), Some(333));
        for bad in ["\"soon\"", "\"50ms\"", "\"1500ms\"", "5"] {
            let e = Config::parse(&format!("[record]\npart_target = {bad}\n"))
                .and_then(|c| c.validate().map(|()| c))
                .unwrap_err();
            assert!(e.to_string().contains("part_target"), "{bad}: {e}");
        }
    }

    #[test]
    fn min_free_sizes_and_percentages() {
        use crate::store::MinFree as M;
        let p = |t: &str| t.parse::<MinFree>().map(|m| m.0);
        assert_eq!(p("5%"), Ok(M::Percent(5.0)));
        assert_eq!(p("2.5%"), Ok(M::Percent(2.5)));
        assert_eq!(p("512MiB"), Ok(M::Bytes(512 << 20)));
        assert_eq!(p("0"), Ok(M::Bytes(0)));
        assert!(p("100%").is_err());
        assert!(p("-1%").is_err());
        assert!(p("lots").is_err());
        assert_eq!(MinFree(M::Bytes(4 << 20)).to_string(), "4MiB");
        assert_eq!(MinFree(M::Percent(2.5)).to_string(), "2.5%");
        let c = Config::parse("[record]\nmin_free = \"4MiB\"\n").unwrap();
        assert_eq!(c.record.min_free.0, M::Bytes(4 << 20));
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        let c = Config::parse("[record]\nmin_free = 1048576\n").unwrap();
        assert_eq!(c.record.min_free.0, M::Bytes(1 << 20));
        let e = Config::parse("[record]\nmin_free = \"150%\"\n").unwrap_err();
        assert!(e.to_string().contains("min_free"), "{e}");
        let mut c = Config::default();
        c.record.min_free = MinFree(M::Percent(f64::NAN));
        let e = c.validate().unwrap_err();
        assert!(e.to_string().starts_with("record.min_free"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[cache]\nmemory = 0\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.to_string(), "cache.memory must be > 0");
        let e = Config::parse("[rtmp]\nlisten = \"nowhere\"\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().starts_with("rtmp.listen"), "{e}");
        let e = Config::parse("[record]\nsegment_target = \"forever\"\n").unwrap_err();
        assert!(e.to_string().contains("segment_target"), "{e}");
        let e = Config::parse("[http]\nlisten_typo = 1\n").unwrap_err();
        assert!(e.to_string().contains("listen_typo"), "{e}");
        let e = Config::parse(
            "[[proxy]]\nlocal = \"a/b\"\nremote = \"b\"\nupstreams = [\"http://x:1\"]\n",
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(e.to_string().starts_with("proxy[0].local"), "{e}");
    }

    #[test]
    fn storage_is_checked_key_by_key() {
        let ok = Config::parse(
            "[storage]\nurl = \"s3://dvr/site-a/x\"\nendpoint = \"http://127.0.0.1:8333\"\n",
        )
        .unwrap();
        ok.validate().unwrap();
        let storage = ok.storage.as_ref().unwrap();
        assert_eq!(
            storage.bucket_and_prefix().unwrap(),
            ("dvr".to_owned(), "site-a/x".to_owned())
        );
        assert_eq!(storage.lease, Dur::secs(6));
        assert_eq!(storage.region, "us-east-1");
        assert_eq!(Config::parse(&ok.to_toml()).unwrap(), ok);
        let bare = Config::parse("[storage]\nurl = \"s3://dvr\"\n").unwrap();
        assert_eq!(
            bare.storage.unwrap().bucket_and_prefix().unwrap(),
            ("dvr".to_owned(), String::new())
        );
        for (text, key) in [
            ("[storage]\n", "storage.url"),
            ("[storage]\nurl = \"http://dvr/x\"\n", "storage.url"),
            ("[storage]\nurl = \"s3://UPPER/x\"\n", "storage.url"),
            ("[storage]\nurl = \"s3://dvr/../x\"\n", "storage.url"),
            (
                "[storage]\nurl = \"s3://dvr/x\"\nendpoint = \"ftp://h\"\n",
                "storage.endpoint",
            ),
            (
                "[storage]\nurl = \"s3://dvr/x\"\nlease = \"1s\"\n",
                "storage.lease",
            ),
            (
                "[storage]\nurl = \"s3://dvr/x\"\nregion = \"\"\n",
                "storage.region",
            ),
        ] {
            let e = Config::parse(text).unwrap().validate().unwrap_err();
            assert!(e.to_string().starts_with(key), "{text}: {e}");
        }
        assert!(Config::parse("[storage]\nurl = \"s3://dvr\"\nsecret = \"x\"\n").is_err());
    }

    #[test]
    fn access_is_checked_key_by_key() {
        let c = Config::parse("[access]\nevent_hook = \"https://127.0.0.1:9/events\"\n").unwrap();
        c.validate().unwrap();
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        let c = Config::parse(
            "[access]\nplay_secret = \"0123456789abcdef\"\npublic = [\"lobby\", \"demo-*\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        let shown = c.to_toml();
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        for (text, key) in [
            (
                "[access]\nevent_hook = \"ftp://x/y\"\n",
                "access.event_hook",
            ),
            ("[access]\nplay_secret = \"short\"\n", "access.play_secret"),
            ("[access]\npublic = [\"lobby\"]\n", "access.public"),
            (
                "[access]\nplay_secret = \"0123456789abcdef\"\npublic = [\"a/b*\"]\n",
                "access.public[0]",
            ),
            ("[access]\npublish_hook = \"x/p\"\n", "access.publish_hook"),
        ] {
            let e = Config::parse(text).unwrap().validate().unwrap_err();
            assert!(e.to_string().starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn tls_keys_come_in_pairs() {
        let both = "[http]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        let c = Config::parse(&format!("{both}[rtmp]\ntls_listen = \"127.0.0.1:1936\"\n")).unwrap();
        c.validate().unwrap();
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        for (text, key) in [
            ("[http]\ntls_cert = \"c.pem\"\n", "http.tls_key"),
            ("[http]\ntls_key = \"k.pem\"\n", "http.tls_cert"),
            (
                "[rtmp]\ntls_listen = \"127.0.0.1:1936\"\n",
                "rtmp.tls_listen",
            ),
            (
                &format!("{both}[rtmp]\ntls_listen = \"x\"\n"),
                "rtmp.tls_listen",
            ),
            ("[relay]\ntoken = \"a b\"\n", "relay.token"),
        ] {
            let e = Config::parse(text).unwrap().validate().unwrap_err();
            assert!(e.to_string().starts_with(key), "{text}: {e}");
        }
    }
}
