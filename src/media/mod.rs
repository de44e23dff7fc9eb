//! Media: FLV tags in, CMAF (fragmented MP4) out. Pure code: no tokio, no I/O.
//!
//! Flow: [`flv::Tag`] (from RTMP or the built-in test source) -> [`segmenter::Remuxer`] ->
//! [`segmenter::Output`] (a period's init segment, or a finished media segment as moof+mdat).
//!
//! - [`flv`] reads FLV files and tag bodies; [`avc`] and [`aac`] read the sequence headers
//!   (codecs strings, picture size, sample rate); [`fmp4`] writes the boxes; [`clip`] turns a
//!   run of recorded segments into a standalone MP4.
//! - [`segmenter`] owns the timeline: segments tile it exactly (`start_ms + duration_ms` is the
//!   next `start_ms`, across periods) and `mfhd` sequence numbers grow by one per segment.
//! - Every input is hostile: parsers bound their reads and never panic (property-tested), and
//!   every buffer the remuxer keeps has a named cap.

pub mod aac;
pub mod avc;
pub mod clip;
pub mod flv;
pub mod fmp4;
pub mod segmenter;
