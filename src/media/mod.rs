//! Media: FLV tags in, CMAF (fragmented MP4) out. Pure code: no tokio, no I/O.
//!
//! Flow: [`flv::Tag`] (from RTMP or the built-in test source) -> [`segmenter::Remuxer`] ->
//! [`segmenter::Output`] (a period's init segment, or a finished media segment as moof+mdat).

pub mod aac;
pub mod avc;
pub mod flv;
pub mod fmp4;
pub mod segmenter;
