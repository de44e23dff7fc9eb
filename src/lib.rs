//! dvrgate: a DVR streaming gateway.
pub mod cache;
pub mod config;
pub mod demo;
pub mod events;
pub mod http;
pub mod ingest;
pub mod media;
pub mod metrics;
pub mod names;
pub mod node;
pub mod relay;
pub mod rtmp;
pub mod store;
pub mod time;
