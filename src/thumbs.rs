//! Thumbnails: one small JPEG per video segment, from its first keyframe, made on the origin.
//!
//! Invariants:
//! - Off the hot path: the recorder hands a [`Job`] to [`Thumbnailer::offer`] after the segment
//!   is durably written and announced; `offer` never waits. One worker thread decodes, scales
//!   and encodes; its queue holds [`QUEUE`] jobs. A full queue skips that segment's thumbnail
//!   (`dvrgate_thumbs_skipped_total`): under overload segments win.
//! - No panics on bad input: a corrupt frame fails that thumbnail only
//!   (`dvrgate_thumbs_failed_total`); the decoder is made per job so no state carries over.
//! - Stored as `<stream>/thumbs/<seq>.jpg` (temp file then rename, so a reader sees all or
//!   nothing); not indexed, not media bytes; retention deletes it with its segment. Its seq
//!   enters the stream's [`ThumbSet`](crate::store::ThumbSet) only after the rename.
//! - At most [`MAX_WIDTH`] px wide, aspect kept (box filter on RGB), even dimensions.
//! - Audio-only streams get none (no avcC, no keyframe sample).

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use bytes::Bytes;

use crate::metrics::{self, Metrics};

/// Widest thumbnail, px.
pub const MAX_WIDTH: usize = 320;
/// Largest thumbnail served or relayed: far above what [`MAX_WIDTH`] at [`QUALITY`] makes,
/// so a bigger file or upstream answer is not one of ours and is refused, not cached.
pub const MAX_BYTES: u64 = 256 << 10;
/// Jobs waiting for the worker; more are skipped.
pub const QUEUE: usize = 2;
/// Largest frame the worker decodes (bytes of the AVCC sample).
const MAX_SAMPLE: usize = 8 << 20;
/// JPEG quality.
const QUALITY: u8 = 75;

/// One thumbnail to make.
pub struct Job {
    /// AVCDecoderConfigurationRecord (SPS/PPS).
    pub avc_record: Bytes,
    /// The keyframe sample, length-prefixed NAL units.
    pub sample: Bytes,
    /// Where the JPEG goes.
    pub path: PathBuf,
    /// The segment's seq, recorded in `made` once its JPEG is in place.
    pub seq: u64,
    /// The stream's set of segments with a thumbnail (what `thumbs.vtt` lists).
    pub made: Arc<crate::store::ThumbSet>,
}

/// Why a thumbnail was not made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad avcC or sample: {0}")]
    Bitstream(&'static str),
    #[error("decode: {0}")]
    Decode(String),
    #[error("no picture decoded")]
    NoPicture,
    #[error("encode: {0}")]
    Encode(String),
    #[error("write: {0}")]
    Io(#[from] std::io::Error),
}

/// The handle recorders offer jobs to (cheap to clone).
#[derive(Clone, Debug)]
pub struct Thumbnailer {
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

impl Thumbnailer {
    /// Starts the worker thread; it ends when the last handle is dropped.
    pub fn start(metrics: Arc<Metrics>) -> std::io::Result<Thumbnailer> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("thumbs".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let cpu = thread_cpu_us();
                    let result = make(&job);
                    metrics::add(&m.thumb_cpu_us, thread_cpu_us().saturating_sub(cpu));
                    match result {
                        Ok(()) if job.made.insert(job.seq) => metrics::inc(&m.thumbs_made),
                        Ok(()) => {
                            // Retention dropped the segment meanwhile: the thumbnail goes too.
                            let _ = std::fs::remove_file(&job.path);
                        }
                        Err(e) => {
                            metrics::inc(&m.thumbs_failed);
                            tracing::debug!(error = %e, path = %job.path.display(), "thumbnail failed");
                        }
                    }
                }
            })?;
        Ok(Thumbnailer { tx, metrics })
    }

    /// Queues `job` unless the worker is behind (then it is skipped and counted). Never waits.
    pub fn offer(&self, job: Job) {
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::inc(&self.metrics.thumbs_skipped)
            }
        }
    }
}

fn thread_cpu_us() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid out-pointer for the duration of the call.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000;
        }
    }
    0
}

/// Makes and stores one thumbnail.
pub fn make(job: &Job) -> Result<(), Error> {
    let jpeg = thumbnail(&job.avc_record, &job.sample)?;
    let dir = job.path.parent().ok_or(Error::Bitstream("no folder"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = job.path.with_extension("jpg.tmp");
    std::fs::write(&tmp, &jpeg)?;
    std::fs::rename(&tmp, &job.path)?;
    Ok(())
}

/// The JPEG of one keyframe.
pub fn thumbnail(avc_record: &[u8], sample: &[u8]) -> Result<Vec<u8>, Error> {
    if sample.len() > MAX_SAMPLE {
        return Err(Error::Bitstream("sample too large"));
    }
    let (nal_len, mut stream) = parameter_sets(avc_record)?;
    avcc_to_annexb(sample, nal_len, &mut stream)?;
    let mut decoder =
        openh264::decoder::Decoder::new().map_err(|e| Error::Decode(e.to_string()))?;
    let (w, h, rgb) = {
        let yuv = match decoder
            .decode(&stream)
            .map_err(|e| Error::Decode(e.to_string()))?
        {
            Some(y) => y,
            None => {
                return first_flushed(&mut decoder);
            }
        };
        to_rgb(&yuv)
    };
    encode(w, h, &rgb)
}

fn first_flushed(decoder: &mut openh264::decoder::Decoder) -> Result<Vec<u8>, Error> {
    let frames = decoder
        .flush_remaining()
        .map_err(|e| Error::Decode(e.to_string()))?;
    let yuv = frames.first().ok_or(Error::NoPicture)?;
    let (w, h, rgb) = to_rgb(yuv);
    encode(w, h, &rgb)
}

fn to_rgb(yuv: &openh264::decoder::DecodedYUV<'_>) -> (usize, usize, Vec<u8>) {
    use openh264::formats::YUVSource;
    let (w, h) = yuv.dimensions();
    let mut rgb = vec![0u8; w * h * 3];
    yuv.write_rgb8(&mut rgb);
    (w, h, rgb)
}

fn encode(w: usize, h: usize, rgb: &[u8]) -> Result<Vec<u8>, Error> {
    if w == 0 || h == 0 || w > 16_384 || h > 16_384 {
        return Err(Error::NoPicture);
    }
    let (tw, th) = target_size(w, h);
    let small = scale(rgb, w, h, tw, th);
    let mut out = Vec::with_capacity(tw * th / 2);
    let enc = jpeg_encoder::Encoder::new(&mut out, QUALITY);
    enc.encode(&small, tw as u16, th as u16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(out)
}

/// Thumbnail size: at most [`MAX_WIDTH`] wide, aspect kept, even, at least 2x2.
pub fn target_size(w: usize, h: usize) -> (usize, usize) {
    let tw = w.min(MAX_WIDTH);
    let th = (h * tw).div_ceil(w.max(1));
    let even = |v: usize| (v & !1).max(2);
    (even(tw), even(th))
}

/// Box filter: each output pixel averages the source pixels it covers. `rgb` is `w*h*3`.
pub fn scale(rgb: &[u8], w: usize, h: usize, tw: usize, th: usize) -> Vec<u8> {
    let mut out = vec![0u8; tw * th * 3];
    if rgb.len() < w * h * 3 || w == 0 || h == 0 {
        return out;
    }
    for ty in 0..th {
        let y0 = ty * h / th;
        let y1 = ((ty + 1) * h / th).max(y0 + 1).min(h);
        for tx in 0..tw {
            let x0 = tx * w / tw;
            let x1 = ((tx + 1) * w / tw).max(x0 + 1).min(w);
            let mut sum = [0u32; 3];
            for y in y0..y1 {
                let row = &rgb[(y * w + x0) * 3..(y * w + x1) * 3];
                for px in row.chunks_exact(3) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            let o = (ty * tw + tx) * 3;
            for c in 0..3 {
                out[o + c] = (sum[c] / n.max(1)) as u8;
            }
        }
    }
    out
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// NAL length size and the SPS/PPS of an avcC record as Annex B.
pub fn parameter_sets(record: &[u8]) -> Result<(usize, Vec<u8>), Error> {
    let at = |i: usize| {
        record
            .get(i)
            .copied()
            .ok_or(Error::Bitstream("avcC truncated"))
    };
    if at(0)? != 1 {
        return Err(Error::Bitstream("avcC version"));
    }
    let nal_len = usize::from(at(4)? & 3) + 1;
    if nal_len == 3 {
        return Err(Error::Bitstream("NAL length size 3"));
    }
    let mut out = Vec::new();
    let mut pos = 5;
    for mask in [0x1f, 0xff] {
        let count = at(pos)? & mask;
        pos += 1;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([at(pos)?, at(pos + 1)?]));
            pos += 2;
            let nal = record
                .get(pos..pos + len)
                .ok_or(Error::Bitstream("avcC truncated"))?;
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
            pos += len;
        }
    }
    Ok((nal_len, out))
}

/// Appends the length-prefixed NAL units of `sample` to `out` as Annex B.
pub fn avcc_to_annexb(sample: &[u8], nal_len: usize, out: &mut Vec<u8>) -> Result<(), Error> {
    if !matches!(nal_len, 1 | 2 | 4) {
        return Err(Error::Bitstream("NAL length size"));
    }
    let mut rest = sample;
    let mut any = false;
    while !rest.is_empty() {
        let (head, tail) = rest
            .split_at_checked(nal_len)
            .ok_or(Error::Bitstream("sample truncated"))?;
        let len = head.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
        let nal = tail
            .get(..len)
            .ok_or(Error::Bitstream("NAL unit past the sample"))?;
        if !nal.is_empty() {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
            any = true;
        }
        rest = &tail[len..];
    }
    if !any {
        return Err(Error::Bitstream("empty sample"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annexb_from_avcc() {
        let mut out = Vec::new();
        avcc_to_annexb(&[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 6], 4, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x65, 1, 0, 0, 0, 1, 6]);
        let mut out = Vec::new();
        avcc_to_annexb(&[0, 3, 0x65, 1, 2], 2, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x65, 1, 2]);
    }

    #[test]
    fn bad_avcc_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert!(avcc_to_annexb(&[0, 0, 0, 9, 1], 4, &mut out).is_err());
        assert!(avcc_to_annexb(&[0, 0], 4, &mut out).is_err());
        assert!(avcc_to_annexb(&[], 4, &mut out).is_err());
        assert!(avcc_to_annexb(&[1, 2], 3, &mut out).is_err());
        assert!(parameter_sets(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 9]).is_err());
        assert!(thumbnail(&[], &[0, 0, 0, 1, 0x65]).is_err());
        // A well-formed wrapper around garbage: the decoder refuses, nothing panics.
        let record = [1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 2, 0x67, 9, 1, 0, 1, 0x68];
        assert!(thumbnail(&record, &[0, 0, 0, 4, 0x65, 0xff, 0x00, 0x13]).is_err());
    }

    #[test]
    fn parameter_sets_to_annexb() {
        let record = [1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 2, 0x67, 9, 1, 0, 1, 0x68];
        let (n, out) = parameter_sets(&record).unwrap();
        assert_eq!(n, 4);
        assert_eq!(out, [0, 0, 0, 1, 0x67, 9, 0, 0, 0, 1, 0x68]);
    }

    #[test]
    fn sizes_keep_aspect_and_are_even() {
        assert_eq!(target_size(1280, 720), (320, 180));
        assert_eq!(target_size(640, 480), (320, 240));
        assert_eq!(target_size(200, 101), (200, 100));
        assert_eq!(target_size(1, 1), (2, 2));
        assert_eq!(target_size(4000, 10), (320, 2));
    }

    #[test]
    fn box_filter_averages() {
        // 2x2 -> 1x1: the mean of the four pixels.
        let rgb = [0, 0, 0, 100, 100, 100, 200, 200, 200, 100, 100, 100];
        assert_eq!(scale(&rgb, 2, 2, 1, 1), [100, 100, 100]);
        // Short input: no panic, black.
        assert_eq!(scale(&[1, 2], 2, 2, 1, 1), [0, 0, 0]);
    }
}
