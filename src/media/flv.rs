//! FLV tags: the unit both RTMP ingest and the test source feed into the remuxer.
//!
//! [`parse_file`] splits an FLV file into [`Tag`]s; [`parse_video`] and [`parse_audio`] read a
//! tag body (legacy FLV/RTMP AVC and AAC, and the Enhanced RTMP `avc1`/`mp4a` ex-headers).
//! Every parser takes untrusted bytes: lengths are checked before use and nothing panics.
//! Bodies are returned as [`Bytes`] slices of the input, never copied.

use bytes::Bytes;

/// Kind of an FLV tag / RTMP media message (the FLV TagType and RTMP message type ids agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// 8
    Audio,
    /// 9
    Video,
    /// 18 (AMF0 script data, e.g. `@setDataFrame`/`onMetaData`)
    Script,
}

/// One FLV tag: kind, 32-bit millisecond timestamp as sent (may wrap), and the tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub kind: TagKind,
    pub timestamp_ms: u32,
    pub body: Bytes,
}

/// Why an FLV file or tag body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not an FLV file (no \"FLV\" signature)")]
    Signature,
    #[error("FLV header data offset {0} is out of range")]
    HeaderOffset(u32),
    #[error("{0} is truncated")]
    Truncated(&'static str),
    #[error("unsupported video codec id {0}")]
    VideoCodec(u8),
    #[error("unsupported video fourcc {0:?}")]
    VideoFourcc(String),
    #[error("unsupported video packet type {0}")]
    VideoPacketType(u8),
    #[error("unsupported sound format {0}")]
    SoundFormat(u8),
    #[error("unsupported audio fourcc {0:?}")]
    AudioFourcc(String),
    #[error("unsupported audio packet type {0}")]
    AudioPacketType(u8),
}

const FLV_HEADER_LEN: usize = 9;
const TAG_HEADER_LEN: usize = 11;
const PREV_TAG_SIZE_LEN: usize = 4;

/// Splits a whole FLV file into tags.
///
/// Audio, video and script tags are returned in file order; tags of other types and
/// encrypted/filtered tags are skipped. PreviousTagSize fields are skipped without being
/// checked (writers get them wrong and nothing depends on them). A truncated final tag, as
/// left by a capture cut mid-write, is ignored: the complete tags before it are returned.
pub fn parse_file(data: &[u8]) -> Result<Vec<Tag>, Error> {
    if data.get(..3) != Some(b"FLV".as_slice()) {
        return Err(Error::Signature);
    }
    let offset = read_u32(data, 5).ok_or(Error::Truncated("FLV header"))?;
    let mut pos = usize::try_from(offset).map_err(|_| Error::HeaderOffset(offset))?;
    if pos < FLV_HEADER_LEN || pos > data.len() {
        return Err(Error::HeaderOffset(offset));
    }
    pos = pos.saturating_add(PREV_TAG_SIZE_LEN);
    let mut tags = Vec::new();
    while let Some(header) = data.get(pos..pos.saturating_add(TAG_HEADER_LEN)) {
        let [kind, s0, s1, s2, t0, t1, t2, t_ext, ..] = *header else {
            break;
        };
        let size = usize::from(s0) << 16 | usize::from(s1) << 8 | usize::from(s2);
        let body_start = pos.saturating_add(TAG_HEADER_LEN);
        let body_end = body_start.saturating_add(size);
        let Some(body) = data.get(body_start..body_end) else {
            break;
        };
        let timestamp_ms = u32::from_be_bytes([t_ext, t0, t1, t2]);
        // Matching the whole byte also skips tags with bit 5 set: encrypted ("filtered")
        // bodies are useless to us.
        let kind = match kind {
            8 => Some(TagKind::Audio),
            9 => Some(TagKind::Video),
            18 => Some(TagKind::Script),
            _ => None,
        };
        if let Some(kind) = kind {
            tags.push(Tag {
                kind,
                timestamp_ms,
                body: Bytes::copy_from_slice(body),
            });
        }
        pos = body_end.saturating_add(PREV_TAG_SIZE_LEN);
    }
    Ok(tags)
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

/// The remainder of `body` from `at`, or a truncation error naming `what`.
fn tail(body: &Bytes, at: usize, what: &'static str) -> Result<Bytes, Error> {
    if body.len() < at {
        return Err(Error::Truncated(what));
    }
    Ok(body.slice(at..))
}

fn byte(body: &[u8], at: usize, what: &'static str) -> Result<u8, Error> {
    body.get(at).copied().ok_or(Error::Truncated(what))
}

fn fourcc(body: &[u8], at: usize, what: &'static str) -> Result<[u8; 4], Error> {
    let b = body
        .get(at..at.saturating_add(4))
        .ok_or(Error::Truncated(what))?;
    let mut out = [0; 4];
    out.copy_from_slice(b);
    Ok(out)
}

/// Reads a big-endian signed 24-bit integer (the FLV CompositionTime).
fn si24(body: &[u8], at: usize, what: &'static str) -> Result<i32, Error> {
    let b = [
        byte(body, at, what)?,
        byte(body, at.saturating_add(1), what)?,
        byte(body, at.saturating_add(2), what)?,
    ];
    // Place the 24 bits at the top of an i32, then shift back arithmetically to sign-extend.
    Ok(i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8)
}

/// One coded AVC frame: AVCC length-prefixed NAL units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// FLV frame type 1 (keyframe): a random access point.
    pub keyframe: bool,
    /// Presentation time minus decode time, in milliseconds (FLV CompositionTime, SI24).
    pub composition_time_ms: i32,
    /// Length-prefixed NAL units, as stored in an MP4 `mdat`.
    pub data: Bytes,
}

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoBody {
    /// An AVCDecoderConfigurationRecord (the AVC sequence header).
    AvcConfig(Bytes),
    /// A coded AVC frame.
    AvcFrame(VideoFrame),
    /// AVC end of sequence.
    EndOfSequence,
    /// Nothing to remux (video info/command frames, Enhanced RTMP metadata).
    Ignored,
}

/// Parses a video tag body: legacy AVC (codec id 7) or an Enhanced RTMP ex-header with `avc1`.
pub fn parse_video(body: &Bytes) -> Result<VideoBody, Error> {
    let first = byte(body, 0, "video tag")?;
    let frame_type = (first >> 4) & 0x07;
    // Frame type 5 is a video info/command frame: it carries no picture.
    if first & 0x80 != 0 {
        let packet_type = first & 0x0f;
        if frame_type == 5 {
            return Ok(VideoBody::Ignored);
        }
        let fourcc = fourcc(body, 1, "enhanced video header")?;
        if &fourcc != b"avc1" {
            return Err(Error::VideoFourcc(
                String::from_utf8_lossy(&fourcc).into_owned(),
            ));
        }
        return match packet_type {
            0 => Ok(VideoBody::AvcConfig(tail(body, 5, "avc1 sequence start")?)),
            1 => Ok(VideoBody::AvcFrame(VideoFrame {
                keyframe: frame_type == 1,
                composition_time_ms: si24(body, 5, "avc1 coded frame")?,
                data: tail(body, 8, "avc1 coded frame")?,
            })),
            2 => Ok(VideoBody::EndOfSequence),
            // CodedFramesX: composition time is implicitly zero.
            3 => Ok(VideoBody::AvcFrame(VideoFrame {
                keyframe: frame_type == 1,
                composition_time_ms: 0,
                data: tail(body, 5, "avc1 coded frame")?,
            })),
            4 => Ok(VideoBody::Ignored),
            other => Err(Error::VideoPacketType(other)),
        };
    }
    let codec = first & 0x0f;
    if codec != 7 {
        return Err(Error::VideoCodec(codec));
    }
    if frame_type == 5 {
        return Ok(VideoBody::Ignored);
    }
    match byte(body, 1, "AVC video tag")? {
        0 => Ok(VideoBody::AvcConfig(tail(body, 5, "AVC sequence header")?)),
        1 => Ok(VideoBody::AvcFrame(VideoFrame {
            keyframe: frame_type == 1,
            composition_time_ms: si24(body, 2, "AVC video tag")?,
            data: tail(body, 5, "AVC video tag")?,
        })),
        2 => Ok(VideoBody::EndOfSequence),
        other => Err(Error::VideoPacketType(other)),
    }
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioBody {
    /// An AudioSpecificConfig (the AAC sequence header).
    AacConfig(Bytes),
    /// One raw AAC frame (no ADTS header).
    AacFrame(Bytes),
    /// Nothing to remux (Enhanced RTMP sequence end).
    Ignored,
}

/// Parses an audio tag body: AAC (sound format 10) or an Enhanced RTMP ex-header with `mp4a`.
pub fn parse_audio(body: &Bytes) -> Result<AudioBody, Error> {
    let first = byte(body, 0, "audio tag")?;
    let format = first >> 4;
    if format == 9 {
        let packet_type = first & 0x0f;
        let fourcc = fourcc(body, 1, "enhanced audio header")?;
        if &fourcc != b"mp4a" {
            return Err(Error::AudioFourcc(
                String::from_utf8_lossy(&fourcc).into_owned(),
            ));
        }
        return match packet_type {
            0 => Ok(AudioBody::AacConfig(tail(body, 5, "mp4a sequence start")?)),
            1 => Ok(AudioBody::AacFrame(tail(body, 5, "mp4a coded frame")?)),
            2 => Ok(AudioBody::Ignored),
            other => Err(Error::AudioPacketType(other)),
        };
    }
    if format != 10 {
        return Err(Error::SoundFormat(format));
    }
    match byte(body, 1, "AAC audio tag")? {
        0 => Ok(AudioBody::AacConfig(tail(body, 2, "AAC sequence header")?)),
        1 => Ok(AudioBody::AacFrame(tail(body, 2, "AAC audio tag")?)),
        other => Err(Error::AudioPacketType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/testsrc.flv");

    #[test]
    fn parses_fixture() {
        let tags = parse_file(FIXTURE).expect("fixture parses");
        let video: Vec<_> = tags.iter().filter(|t| t.kind == TagKind::Video).collect();
        let audio: Vec<_> = tags.iter().filter(|t| t.kind == TagKind::Audio).collect();
        // 10 s at 30 fps, plus the sequence header and the end of sequence.
        assert_eq!(video.len(), 302);
        assert_eq!(
            video.last().map(|t| parse_video(&t.body)),
            Some(Ok(VideoBody::EndOfSequence))
        );
        // 10 s of 1024-sample frames at 44.1 kHz is ~431, plus the sequence header.
        assert!((430..=435).contains(&audio.len()), "{}", audio.len());
        assert_eq!(
            parse_video(&video[0].body),
            Ok(VideoBody::AvcConfig(video[0].body.slice(5..)))
        );
        assert!(matches!(
            parse_audio(&audio[0].body),
            Ok(AudioBody::AacConfig(_))
        ));
        let first_frame = video.iter().find_map(|t| match parse_video(&t.body) {
            Ok(VideoBody::AvcFrame(f)) => Some(f),
            _ => None,
        });
        assert!(first_frame.expect("a frame").keyframe);
        let keyframes = video
            .iter()
            .filter(|t| matches!(parse_video(&t.body), Ok(VideoBody::AvcFrame(f)) if f.keyframe))
            .count();
        assert_eq!(keyframes, 10);
        assert!(video.iter().any(
            |t| matches!(parse_video(&t.body), Ok(VideoBody::AvcFrame(f)) if f.composition_time_ms > 0)
        ));
    }

    #[test]
    fn truncated_tail_is_ignored() {
        let all = parse_file(FIXTURE).expect("fixture parses");
        let cut = parse_file(&FIXTURE[..FIXTURE.len() - 10]).expect("truncated parses");
        assert_eq!(cut.len(), all.len() - 1);
        assert_eq!(parse_file(b"FLV\x01\x05\x00\x00\x00\x09"), Ok(vec![]));
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            parse_file(b"FLX\x01\x05\0\0\0\x09\0\0\0\0"),
            Err(Error::Signature)
        );
        assert_eq!(parse_file(b"FLV\x01"), Err(Error::Truncated("FLV header")));
        assert_eq!(
            parse_file(b"FLV\x01\x05\0\0\0\x03"),
            Err(Error::HeaderOffset(3))
        );
    }

    #[test]
    fn extended_timestamp_byte() {
        let mut file = b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec();
        // Script tag, 1-byte body, timestamp 0x123456 with extension 0x78.
        file.extend_from_slice(&[
            18, 0, 0, 1, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0xaa, 0, 0, 0, 12,
        ]);
        let tags = parse_file(&file).expect("parses");
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].timestamp_ms, 0x7812_3456);
        assert_eq!(tags[0].body.as_ref(), &[0xaa]);
    }

    #[test]
    fn video_bodies() {
        let b = |v: &[u8]| Bytes::copy_from_slice(v);
        // Legacy inter frame with a negative composition time.
        assert_eq!(
            parse_video(&b(&[0x27, 1, 0xff, 0xff, 0xfe, 9, 9])),
            Ok(VideoBody::AvcFrame(VideoFrame {
                keyframe: false,
                composition_time_ms: -2,
                data: b(&[9, 9])
            }))
        );
        assert_eq!(
            parse_video(&b(&[0x17, 2, 0, 0, 0])),
            Ok(VideoBody::EndOfSequence)
        );
        assert_eq!(parse_video(&b(&[0x12, 0])), Err(Error::VideoCodec(2)));
        assert_eq!(
            parse_video(&b(&[0x17, 1, 0])),
            Err(Error::Truncated("AVC video tag"))
        );
        assert_eq!(parse_video(&b(&[])), Err(Error::Truncated("video tag")));
        // Enhanced RTMP: keyframe, SequenceStart / CodedFrames / CodedFramesX.
        assert_eq!(
            parse_video(&b(b"\x90avc1\x01\x64")),
            Ok(VideoBody::AvcConfig(b(&[1, 0x64])))
        );
        assert_eq!(
            parse_video(&b(b"\x91avc1\x00\x00\x21\x05")),
            Ok(VideoBody::AvcFrame(VideoFrame {
                keyframe: true,
                composition_time_ms: 33,
                data: b(&[5])
            }))
        );
        assert_eq!(
            parse_video(&b(b"\xa3avc1\x07")),
            Ok(VideoBody::AvcFrame(VideoFrame {
                keyframe: false,
                composition_time_ms: 0,
                data: b(&[7])
            }))
        );
        assert_eq!(
            parse_video(&b(b"\x91hvc1\x00\x00\x00")),
            Err(Error::VideoFourcc("hvc1".into()))
        );
    }

    #[test]
    fn audio_bodies() {
        let b = |v: &[u8]| Bytes::copy_from_slice(v);
        assert_eq!(
            parse_audio(&b(&[0xaf, 0, 0x12, 0x10])),
            Ok(AudioBody::AacConfig(b(&[0x12, 0x10])))
        );
        assert_eq!(
            parse_audio(&b(&[0xaf, 1, 7])),
            Ok(AudioBody::AacFrame(b(&[7])))
        );
        assert_eq!(parse_audio(&b(&[0x2f, 1])), Err(Error::SoundFormat(2)));
        assert_eq!(parse_audio(&b(&[0xaf, 5])), Err(Error::AudioPacketType(5)));
        assert_eq!(
            parse_audio(&b(&[0xaf])),
            Err(Error::Truncated("AAC audio tag"))
        );
        assert_eq!(
            parse_audio(&b(b"\x90mp4a\x12\x10")),
            Ok(AudioBody::AacConfig(b(&[0x12, 0x10])))
        );
        assert_eq!(
            parse_audio(&b(b"\x91Opus\x00")),
            Err(Error::AudioFourcc("Opus".into()))
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_file_does_not_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
                let mut file = b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec();
                file.extend_from_slice(&data);
                let _ = parse_file(&file);
                let _ = parse_file(&data);
            }

            #[test]
            fn mutated_fixture_does_not_panic(at in 0..FIXTURE.len(), value in any::<u8>(), len in 0..FIXTURE.len()) {
                let mut file = FIXTURE[..len.max(at + 1).min(FIXTURE.len())].to_vec();
                if let Some(b) = file.get_mut(at) { *b = value; }
                let _ = parse_file(&file);
            }

            #[test]
            fn bodies_do_not_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
                let body = Bytes::from(data);
                let _ = parse_video(&body);
                let _ = parse_audio(&body);
            }
        }
    }
}
