//! dvrgate: a DVR streaming gateway.
pub mod events;
pub mod media;
pub mod rtmp;
