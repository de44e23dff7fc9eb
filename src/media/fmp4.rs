//! Fragmented MP4 (CMAF) writer: init segments (`ftyp` + `moov`) and media segments
//! (`moof` + one `mdat`). A small hand-rolled box writer, no external crate.
//!
//! Invariants: every box size is patched after its children are written; a size that does not
//! fit the 32-bit box header is an [`Error`], never a silently wrong file. In a media segment
//! the `trun` data offsets point into the single `mdat`, where the fragments' samples follow in
//! fragment order (the segmenter passes video first, then audio).

use bytes::Bytes;

use crate::media::aac::AudioSpecificConfig;
use crate::media::avc::AvcConfig;

/// Why a segment could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("box is too large for a 32-bit size")]
    TooLarge,
    #[error("picture size {0}x{1} does not fit the sample entry")]
    Dimensions(u32, u32),
}

/// Timescale of video tracks: the MPEG 90 kHz clock, exact for millisecond timestamps.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// A track's codec configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// H.264, sample entry `avc1` + `avcC`.
    Avc(AvcConfig),
    /// AAC, sample entry `mp4a` + `esds`.
    Aac(AudioSpecificConfig),
}

/// One track of an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// Track id (1-based).
    pub id: u32,
    /// Codec configuration.
    pub codec: Codec,
}

impl Track {
    /// Media timescale: 90 kHz for video, the sample rate for audio.
    pub fn timescale(&self) -> u32 {
        match &self.codec {
            Codec::Avc(_) => VIDEO_TIMESCALE,
            Codec::Aac(asc) => asc.sample_rate,
        }
    }
}

/// One sample of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Duration in the track timescale (the next sample's decode time minus this one's).
    pub duration: u32,
    /// Presentation minus decode time, in the track timescale.
    pub composition_offset: i32,
    /// A sync sample (keyframe; every audio sample).
    pub sync: bool,
    /// The sample bytes as stored in `mdat`.
    pub data: Bytes,
}

/// The samples of one track in a media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Track id, as in the init segment.
    pub track_id: u32,
    /// Decode time of the first sample, in the track timescale (`tfdt`).
    pub base_decode_time: u64,
    /// Samples in decode order.
    pub samples: Vec<Sample>,
}

/// sample_depends_on = 2: depends on no other sample.
const FLAGS_SYNC: u32 = 0x0200_0000;
/// sample_depends_on = 1 and sample_is_non_sync_sample.
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

const IDENTITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// A byte buffer that writes nested boxes and patches their sizes on close.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// Starts a box; returns its offset for [`Writer::end`].
    fn start(&mut self, kind: &[u8; 4]) -> usize {
        let at = self.buf.len();
        self.u32(0);
        self.bytes(kind);
        at
    }

    /// Starts a full box (version and flags).
    fn start_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) -> usize {
        let at = self.start(kind);
        self.u32(u32::from(version) << 24 | (flags & 0x00ff_ffff));
        at
    }

    /// Closes the box started at `at` by writing its size.
    fn end(&mut self, at: usize) -> Result<(), Error> {
        let size = self.buf.len().checked_sub(at).ok_or(Error::TooLarge)?;
        self.patch_u32(at, u32::try_from(size).map_err(|_| Error::TooLarge)?)
    }

    fn patch_u32(&mut self, at: usize, v: u32) -> Result<(), Error> {
        let slot = self
            .buf
            .get_mut(at..at.saturating_add(4))
            .ok_or(Error::TooLarge)?;
        slot.copy_from_slice(&v.to_be_bytes());
        Ok(())
    }
}

/// Writes an init segment (`ftyp` + `moov` with `mvex`) for the given tracks.
pub fn init_segment(tracks: &[Track]) -> Result<Bytes, Error> {
    let mut w = Writer::default();
    let ftyp = w.start(b"ftyp");
    w.bytes(b"iso6");
    w.u32(0);
    for brand in [b"iso6", b"cmfc", b"isom", b"iso2", b"mp41"] {
        w.bytes(brand);
    }
    if tracks.iter().any(|t| matches!(t.codec, Codec::Avc(_))) {
        w.bytes(b"avc1");
    }
    w.end(ftyp)?;

    let moov = w.start(b"moov");
    let mvhd = w.start_full(b"mvhd", 0, 0);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(1000); // timescale
    w.u32(0); // duration: unknown, fragmented
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(10);
    for v in IDENTITY_MATRIX {
        w.u32(v);
    }
    w.zeros(24); // pre_defined
    let next_track = tracks.iter().map(|t| t.id).max().unwrap_or(0);
    w.u32(next_track.saturating_add(1));
    w.end(mvhd)?;
    for track in tracks {
        write_trak(&mut w, track)?;
    }
    let mvex = w.start(b"mvex");
    for track in tracks {
        let trex = w.start_full(b"trex", 0, 0);
        w.u32(track.id);
        w.u32(1); // default_sample_description_index
        w.u32(0); // default_sample_duration
        w.u32(0); // default_sample_size
        w.u32(0); // default_sample_flags
        w.end(trex)?;
    }
    w.end(mvex)?;
    w.end(moov)?;
    Ok(Bytes::from(w.buf))
}

fn write_trak(w: &mut Writer, track: &Track) -> Result<(), Error> {
    let (width, height) = match &track.codec {
        Codec::Avc(avc) => (avc.width(), avc.height()),
        Codec::Aac(_) => (0, 0),
    };
    let (w16, h16) = match (u16::try_from(width), u16::try_from(height)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(Error::Dimensions(width, height)),
    };
    let is_video = matches!(track.codec, Codec::Avc(_));
    let trak = w.start(b"trak");
    // Flags: track enabled, in movie, in preview.
    let tkhd = w.start_full(b"tkhd", 0, 0x7);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(track.id);
    w.u32(0); // reserved
    w.u32(0); // duration
    w.zeros(8);
    w.u16(0); // layer
    w.u16(0); // alternate_group
    w.u16(if is_video { 0 } else { 0x0100 }); // volume
    w.u16(0);
    for v in IDENTITY_MATRIX {
        w.u32(v);
    }
    w.u32(u32::from(w16) << 16);
    w.u32(u32::from(h16) << 16);
    w.end(tkhd)?;

    let mdia = w.start(b"mdia");
    let mdhd = w.start_full(b"mdhd", 0, 0);
    w.u32(0);
    w.u32(0);
    w.u32(track.timescale());
    w.u32(0);
    w.u16(0x55c4); // language "und"
    w.u16(0);
    w.end(mdhd)?;
    let hdlr = w.start_full(b"hdlr", 0, 0);
    w.u32(0);
    w.bytes(if is_video { b"vide" } else { b"soun" });
    w.zeros(12);
    w.bytes(if is_video {
        b"VideoHandler\0"
    } else {
        b"SoundHandler\0"
    });
    w.end(hdlr)?;

    let minf = w.start(b"minf");
    if is_video {
        let vmhd = w.start_full(b"vmhd", 0, 1);
        w.zeros(8); // graphicsmode, opcolor
        w.end(vmhd)?;
    } else {
        let smhd = w.start_full(b"smhd", 0, 0);
        w.zeros(4); // balance, reserved
        w.end(smhd)?;
    }
    let dinf = w.start(b"dinf");
    let dref = w.start_full(b"dref", 0, 0);
    w.u32(1);
    let url = w.start_full(b"url ", 0, 1); // flag 1: media is in this file
    w.end(url)?;
    w.end(dref)?;
    w.end(dinf)?;

    let stbl = w.start(b"stbl");
    let stsd = w.start_full(b"stsd", 0, 0);
    w.u32(1);
    match &track.codec {
        Codec::Avc(avc) => write_avc1(w, avc, w16, h16)?,
        Codec::Aac(asc) => write_mp4a(w, asc, track.id)?,
    }
    w.end(stsd)?;
    for kind in [b"stts", b"stsc", b"stco"] {
        let b = w.start_full(kind, 0, 0);
        w.u32(0);
        w.end(b)?;
    }
    let stsz = w.start_full(b"stsz", 0, 0);
    w.u32(0); // sample_size
    w.u32(0); // sample_count
    w.end(stsz)?;
    w.end(stbl)?;
    w.end(minf)?;
    w.end(mdia)?;
    w.end(trak)
}

fn write_avc1(w: &mut Writer, avc: &AvcConfig, width: u16, height: u16) -> Result<(), Error> {
    let avc1 = w.start(b"avc1");
    w.zeros(6);
    w.u16(1); // data_reference_index
    w.zeros(16); // pre_defined, reserved
    w.u16(width);
    w.u16(height);
    w.u32(0x0048_0000); // 72 dpi
    w.u32(0x0048_0000);
    w.u32(0);
    w.u16(1); // frame_count
    w.zeros(32); // compressorname
    w.u16(0x0018); // depth
    w.u16(0xffff); // pre_defined = -1
    let avcc = w.start(b"avcC");
    w.bytes(&avc.record);
    w.end(avcc)?;
    w.end(avc1)
}

/// Writes an MPEG-4 descriptor header: tag and a length in the 7-bits-per-byte form.
fn descriptor(w: &mut Writer, tag: u8, len: usize) -> Result<(), Error> {
    // Four bytes of 7 bits: the usual fixed-size form, up to 2^28 - 1.
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l < 1 << 28)
        .ok_or(Error::TooLarge)?;
    w.u8(tag);
    w.u8(0x80 | (len >> 21) as u8 & 0x7f);
    w.u8(0x80 | (len >> 14) as u8 & 0x7f);
    w.u8(0x80 | (len >> 7) as u8 & 0x7f);
    w.u8(len as u8 & 0x7f);
    Ok(())
}

fn write_mp4a(w: &mut Writer, asc: &AudioSpecificConfig, track_id: u32) -> Result<(), Error> {
    let mp4a = w.start(b"mp4a");
    w.zeros(6);
    w.u16(1); // data_reference_index
    w.zeros(8); // reserved
    w.u16(u16::from(asc.channels));
    w.u16(16); // samplesize
    w.u16(0); // pre_defined
    w.u16(0);
    // 16.16 fixed point; rates above 65535 Hz do not fit and are written as 0 (the esds
    // config is authoritative).
    w.u32(u16::try_from(asc.sample_rate).map_or(0, |r| u32::from(r) << 16));

    let esds = w.start_full(b"esds", 0, 0);
    let asc_len = asc.record.len();
    // SLConfigDescriptor: 5 + 1; DecoderSpecificInfo: 5 + asc; DecoderConfigDescriptor: 13 + ...
    let dsi_len = 5 + asc_len;
    let dcd_len = 13 + dsi_len;
    let es_len = 3 + 5 + dcd_len + 5 + 1;
    descriptor(w, 0x03, es_len)?;
    w.u16(u16::try_from(track_id).unwrap_or(0)); // ES_ID
    w.u8(0); // flags, streamPriority
    descriptor(w, 0x04, dcd_len)?;
    w.u8(0x40); // objectTypeIndication: MPEG-4 Audio
    w.u8(0x15); // streamType audio (5) << 2 | reserved 1
    w.bytes(&[0, 0, 0]); // bufferSizeDB
    w.u32(0); // maxBitrate
    w.u32(0); // avgBitrate
    descriptor(w, 0x05, asc_len)?;
    w.bytes(&asc.record);
    descriptor(w, 0x06, 1)?;
    w.u8(0x02); // predefined: MP4
    w.end(esds)?;
    w.end(mp4a)
}

/// Writes a media segment: `moof` (`mfhd` + one `traf` per fragment) and one `mdat` holding
/// every fragment's samples in order.
pub fn media_segment(sequence: u32, fragments: &[Fragment]) -> Result<Bytes, Error> {
    let mut w = Writer::default();
    let moof = w.start(b"moof");
    let mfhd = w.start_full(b"mfhd", 0, 0);
    w.u32(sequence);
    w.end(mfhd)?;
    let mut offset_slots = Vec::with_capacity(fragments.len());
    for fragment in fragments {
        let traf = w.start(b"traf");
        // Flag 0x020000: default-base-is-moof, so data offsets are relative to the moof.
        let tfhd = w.start_full(b"tfhd", 0, 0x02_0000);
        w.u32(fragment.track_id);
        w.end(tfhd)?;
        let tfdt = w.start_full(b"tfdt", 1, 0);
        w.u64(fragment.base_decode_time);
        w.end(tfdt)?;
        // data-offset, then per sample: duration, size, flags, composition offset.
        let trun = w.start_full(b"trun", 1, 0x0f01);
        w.u32(u32::try_from(fragment.samples.len()).map_err(|_| Error::TooLarge)?);
        offset_slots.push(w.buf.len());
        w.u32(0);
        for s in &fragment.samples {
            w.u32(s.duration);
            w.u32(u32::try_from(s.data.len()).map_err(|_| Error::TooLarge)?);
            w.u32(if s.sync { FLAGS_SYNC } else { FLAGS_NON_SYNC });
            w.i32(s.composition_offset);
        }
        w.end(trun)?;
        w.end(traf)?;
    }
    w.end(moof)?;

    // Samples start after the moof and the 8-byte mdat header.
    let mut data_offset = w.buf.len().checked_add(8).ok_or(Error::TooLarge)?;
    for (fragment, slot) in fragments.iter().zip(offset_slots) {
        w.patch_u32(
            slot,
            u32::try_from(data_offset)
                .ok()
                .filter(|o| i32::try_from(*o).is_ok())
                .ok_or(Error::TooLarge)?,
        )?;
        for s in &fragment.samples {
            data_offset = data_offset
                .checked_add(s.data.len())
                .ok_or(Error::TooLarge)?;
        }
    }
    let mdat = w.start(b"mdat");
    for fragment in fragments {
        for s in &fragment.samples {
            w.bytes(&s.data);
        }
    }
    w.end(mdat)?;
    Ok(Bytes::from(w.buf))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::avc::tests::fixture_record;
    use mp4_atom::{Any, Atom, Decode, Moof, Moov};

    /// An init segment with an AVC track 1 and an AAC track 2.
    pub(crate) fn tracks_init() -> Bytes {
        init_segment(&tracks()).expect("init")
    }

    fn tracks() -> Vec<Track> {
        vec![
            Track {
                id: 1,
                codec: Codec::Avc(AvcConfig::parse(fixture_record()).expect("avc")),
            },
            Track {
                id: 2,
                codec: Codec::Aac(
                    AudioSpecificConfig::parse(Bytes::from_static(&[0x12, 0x10])).expect("asc"),
                ),
            },
        ]
    }

    #[test]
    fn init_segment_parses() {
        let init = init_segment(&tracks()).expect("init");
        let mut buf = init.as_ref();
        let ftyp = mp4_atom::Ftyp::decode(&mut buf).expect("ftyp");
        assert_eq!(ftyp.major_brand, mp4_atom::FourCC::new(b"iso6"));
        assert!(ftyp
            .compatible_brands
            .contains(&mp4_atom::FourCC::new(b"cmfc")));
        let moov = Moov::decode(&mut buf).expect("moov");
        assert!(buf.is_empty());
        assert_eq!(moov.trak.len(), 2);
        let video = &moov.trak[0];
        assert_eq!(video.tkhd.track_id, 1);
        assert_eq!(video.mdia.mdhd.timescale, 90_000);
        assert_eq!(video.tkhd.width.integer(), 640);
        match &video.mdia.minf.stbl.stsd.codecs[0] {
            mp4_atom::Codec::Avc1(avc1) => {
                assert_eq!((avc1.visual.width, avc1.visual.height), (640, 360));
                assert_eq!(avc1.avcc.avc_profile_indication, 77);
            }
            other => panic!("unexpected {other:?}"),
        }
        let audio = &moov.trak[1];
        assert_eq!(audio.mdia.mdhd.timescale, 44_100);
        match &audio.mdia.minf.stbl.stsd.codecs[0] {
            mp4_atom::Codec::Mp4a(mp4a) => {
                assert_eq!(mp4a.audio.channel_count, 2);
                let dec = &mp4a.esds.es_desc.dec_config;
                assert_eq!(dec.object_type_indication, 0x40);
                let dsi = dec.dec_specific.as_ref().expect("dsi");
                assert_eq!((dsi.profile, dsi.chan_conf), (2, 2));
            }
            other => panic!("unexpected {other:?}"),
        }
        let trex = &moov.mvex.as_ref().expect("mvex").trex;
        assert_eq!(trex.iter().map(|t| t.track_id).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn media_segment_offsets() {
        let sample = |n: u8, sync| Sample {
            duration: 3000,
            composition_offset: -3000,
            sync,
            data: Bytes::from(vec![n; usize::from(n)]),
        };
        let fragments = vec![
            Fragment {
                track_id: 1,
                base_decode_time: 1 << 40,
                samples: vec![sample(3, true), sample(5, false)],
            },
            Fragment {
                track_id: 2,
                base_decode_time: 7,
                samples: vec![sample(2, true)],
            },
        ];
        let seg = media_segment(42, &fragments).expect("segment");
        let mut buf = seg.as_ref();
        let moof = Moof::decode(&mut buf).expect("moof");
        assert_eq!(moof.mfhd.sequence_number, 42);
        let Any::Mdat(mdat) = Any::decode(&mut buf).expect("mdat") else {
            panic!("no mdat");
        };
        assert_eq!(mdat.data, [3, 3, 3, 5, 5, 5, 5, 5, 2, 2]);
        let moof_len = seg.len() - 8 - 10;
        let t0 = &moof.traf[0];
        assert!(t0.tfhd.default_base_is_moof);
        assert_eq!(
            t0.tfdt.as_ref().map(|t| t.base_media_decode_time),
            Some(1 << 40)
        );
        assert_eq!(t0.trun[0].data_offset, Some(moof_len as i32 + 8));
        let s: Vec<_> = t0.trun[0].samples.iter().collect();
        assert_eq!(s[1].cts, Some(-3000));
        assert_eq!(s[1].flags, Some(FLAGS_NON_SYNC));
        assert_eq!(moof.traf[1].trun[0].data_offset, Some(moof_len as i32 + 16));
        assert_eq!(Moof::KIND, mp4_atom::FourCC::new(b"moof"));
    }
}
