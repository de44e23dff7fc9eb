//! dvrgate: a DVR streaming gateway — Flash Media Server's ProxyStream for the HTTP era.
//!
//! One binary is every node of a chain: an **origin** records RTMP ingest as fMP4 (CMAF)
//! segments with a time index; **relays** (intermediate, edge) pull those segments over HTTP
//! into a two-tier cache and serve the same read API. The map, in the order bytes flow:
//!
//! ```text
//!  RTMP ──▶ rtmp/ ──▶ ingest ──▶ media/ (FLV ▶ CMAF) ──▶ store/ (durable recording + index)
//!                                                           │  └──▶ archive/ (S3 bucket:
//!                                                           │       writer under a lease,
//!                                                           │       followers on any node)
//!  upstream node ──HTTP──▶ relay/ (index follower, Range pulls, failover) ──┐
//!                                                           ▼               ▼
//!                                         cache/ (moka memory ▶ disk spill, single flight)
//!                                                           │
//!                                         http/ (read API, control API, player) ──▶ viewers, CDNs
//! ```
//!
//! - [`rtmp`]: sans-IO handshake/chunk/AMF0/session parsing plus a tokio server; bounded per
//!   connection whatever the peer sends.
//! - [`media`]: pure FLV, AVC/AAC config, fMP4 writer, segmenter (cuts at keyframes) and clip
//!   assembly. No I/O.
//! - [`store`]: the recording. A segment is announced only after it is durably on disk; the
//!   in-memory [`store::StreamIndex`] is what every read endpoint renders.
//! - [`archive`]: the shared archive (`[storage]`): recordings copied to an S3-compatible
//!   bucket behind the local disk, one writer per stream under a lease, any node a reader.
//! - [`ingest`]: publish policy (names, key, already-live) and one recorder task per publish.
//! - [`relay`]: `proxyFrom(local, remote)`; relayed streams keep their own index in the same
//!   [`store::Timeline`] type, so HTTP handlers do not care where bytes come from ([`http::Feed`]).
//! - [`wire`]: the JSON documents nodes exchange (`index.json`, status), one type each for
//!   writing and reading.
//! - [`cache`]: immutable `Bytes` by (stream, seq); zero-copy hits; one fetch per key at a time.
//! - [`access`]: play tokens: which caller may read which stream (pure; `http::gate` asks it).
//! - [`http`]: axum router; errors map to HTTP in one place ([`http::ApiError`]).
//! - [`node`]: wiring, listeners and graceful shutdown; [`demo`]: the built-in three-node chain.
//! - [`thumbs`]: one JPEG per video segment, made off the ingest path on one worker thread.
//! - [`tls`]: the certificate of HTTPS and RTMPS, reloaded on SIGHUP.
//! - [`hooks`]: the event hook (every status event POSTed to an operator's URL, in order).
//! - [`config`], [`names`], [`time`], [`events`] (the onStatus codes), [`metrics`]: shared leaves.
pub mod access;
pub mod archive;
pub mod cache;
pub mod config;
pub mod demo;
pub mod events;
pub mod hooks;
pub mod http;
pub mod ingest;
pub mod media;
pub mod metrics;
pub mod names;
pub mod node;
pub mod relay;
pub mod rtmp;
pub mod store;
pub mod thumbs;
pub mod time;
pub mod tls;
pub mod wire;
