//! dvrgate: a DVR streaming gateway.
pub mod config;
pub mod events;
pub mod media;
pub mod names;
pub mod rtmp;
pub mod store;
pub mod time;
