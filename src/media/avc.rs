//! H.264: the AVCDecoderConfigurationRecord (the FLV sequence header, stored verbatim as the
//! `avcC` box) and the parts of its first SPS that the init segment and the playlist need.
//!
//! The codecs string and the picture size are derived from the bytes, never assumed. Input is
//! untrusted: every read is bounds-checked, Exp-Golomb codes are capped at 32 bits, and the
//! record size is capped.

use bytes::Bytes;

/// Why an AVC configuration could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("AVC configuration record is truncated")]
    Truncated,
    #[error("AVC configuration record is {0} bytes, over the cap")]
    TooLarge(usize),
    #[error("AVC configuration version {0} is unsupported")]
    Version(u8),
    #[error("AVC configuration has no SPS")]
    NoSps,
    #[error("AVC SPS is truncated or malformed")]
    Sps,
    #[error("AVC SPS value {0} is out of range")]
    SpsRange(&'static str),
}

/// Cap on the size of a configuration record. Real ones are well under 1 KiB; the cap stops a
/// crafted record (31 SPS + 255 PPS of 64 KiB each) from bloating every init segment.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Largest width or height accepted: the `avc1` sample entry stores them as 16-bit values.
const MAX_DIMENSION: u64 = 16_384;

/// The fields of a sequence parameter set this crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    /// profile_idc
    pub profile_idc: u8,
    /// The constraint_set flags byte.
    pub constraint_flags: u8,
    /// level_idc
    pub level_idc: u8,
    /// chroma_format_idc (1 = 4:2:0 unless a high profile says otherwise).
    pub chroma_format_idc: u32,
    /// Displayed width in pixels, after cropping.
    pub width: u32,
    /// Displayed height in pixels, after cropping.
    pub height: u32,
}

/// A parsed AVCDecoderConfigurationRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// AVCProfileIndication
    pub profile_idc: u8,
    /// profile_compatibility (the constraint flags byte)
    pub profile_compatibility: u8,
    /// AVCLevelIndication
    pub level_idc: u8,
    /// Size in bytes of the NAL unit length prefix (1, 2 or 4).
    pub nal_length_size: u8,
    /// The first SPS.
    pub sps: Sps,
    /// The record as received: the body of the `avcC` box.
    pub record: Bytes,
}

impl AvcConfig {
    /// Parses a record (the body of an AVC sequence header).
    pub fn parse(record: Bytes) -> Result<Self, Error> {
        if record.len() > MAX_RECORD_BYTES {
            return Err(Error::TooLarge(record.len()));
        }
        let r = record.as_ref();
        let at = |i: usize| r.get(i).copied().ok_or(Error::Truncated);
        let version = at(0)?;
        if version != 1 {
            return Err(Error::Version(version));
        }
        let nal_length_size = (at(4)? & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(Error::SpsRange("lengthSizeMinusOne"));
        }
        let sps_count = at(5)? & 0x1f;
        if sps_count == 0 {
            return Err(Error::NoSps);
        }
        let len = usize::from(u16::from_be_bytes([at(6)?, at(7)?]));
        let sps_nal = r.get(8..8 + len).ok_or(Error::Truncated)?;
        let sps = parse_sps(sps_nal)?;
        Ok(AvcConfig {
            profile_idc: at(1)?,
            profile_compatibility: at(2)?,
            level_idc: at(3)?,
            nal_length_size,
            sps,
            record,
        })
    }

    /// RFC 6381 codecs string, `avc1.PPCCLL` from the record's profile, constraints and level.
    pub fn codec(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.profile_compatibility, self.level_idc
        )
    }

    /// Displayed width in pixels.
    pub fn width(&self) -> u32 {
        self.sps.width
    }

    /// Displayed height in pixels.
    pub fn height(&self) -> u32 {
        self.sps.height
    }
}

/// H.264 profiles browsers' hardware and software decoders do not support, by profile_idc,
/// with the warning given for each: these are what an encoder picks when fed 10-bit or
/// non-4:2:0 input (GStreamer's x264enc with its defaults picks High 4:4:4 Predictive).
const UNPLAYABLE_PROFILES: [(u8, &str); 3] = [
    (
        110,
        "H.264 High 10 profile: browsers cannot decode it; encode with profile high or main",
    ),
    (
        122,
        "H.264 High 4:2:2 profile: browsers cannot decode it; encode with profile high or main",
    ),
    (
        244,
        "H.264 High 4:4:4 Predictive profile: browsers cannot decode it; encode with profile high or main",
    ),
];

/// A warning when an RFC 6381 codecs string (e.g. `avc1.f4001f,mp4a.40.2`) names an H.264
/// profile browsers cannot play; `None` when it is playable or has no (readable) `avc1` entry.
pub fn browser_warning(codecs: &str) -> Option<&'static str> {
    let profile = codecs.split(',').find_map(|c| {
        let hex = c.trim().strip_prefix("avc1.")?;
        u8::from_str_radix(hex.get(..2)?, 16).ok()
    })?;
    UNPLAYABLE_PROFILES
        .iter()
        .find(|(idc, _)| *idc == profile)
        .map(|(_, warning)| *warning)
}

/// Removes emulation prevention bytes (the 3 in `00 00 03`) from a NAL unit.
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// MSB-first bit reader with Exp-Golomb codes.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, Error> {
        let byte = self.data.get(self.pos / 8).ok_or(Error::Sps)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Result<u32, Error> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn flag(&mut self) -> Result<bool, Error> {
        Ok(self.bit()? == 1)
    }

    /// ue(v). More than 31 leading zeros cannot encode a 32-bit value: malformed.
    fn ue(&mut self) -> Result<u32, Error> {
        let mut zeros = 0u32;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(Error::Sps);
            }
        }
        let rest = u64::from(self.bits(zeros)?);
        let v = (1u64 << zeros) - 1 + rest;
        u32::try_from(v).map_err(|_| Error::Sps)
    }

    /// se(v)
    fn se(&mut self) -> Result<i64, Error> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

fn skip_scaling_list(b: &mut Bits<'_>, size: usize) -> Result<(), Error> {
    let mut last = 8i64;
    let mut next = 8i64;
    for _ in 0..size {
        if next != 0 {
            let delta = b.se()?;
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Parses an SPS NAL unit (with its one-byte NAL header) far enough to get the picture size.
pub fn parse_sps(nal: &[u8]) -> Result<Sps, Error> {
    let rbsp = unescape(nal);
    let mut b = Bits {
        data: &rbsp,
        pos: 0,
    };
    let header = b.bits(8)?;
    if header & 0x1f != 7 {
        return Err(Error::Sps);
    }
    let profile_idc = b.bits(8)? as u8;
    let constraint_flags = b.bits(8)? as u8;
    let level_idc = b.bits(8)? as u8;
    let _sps_id = b.ue()?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = b.ue()?;
        if chroma_format_idc > 3 {
            return Err(Error::SpsRange("chroma_format_idc"));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = b.flag()?;
        }
        let _bit_depth_luma = b.ue()?;
        let _bit_depth_chroma = b.ue()?;
        let _qpprime_bypass = b.flag()?;
        if b.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.flag()? {
                    skip_scaling_list(&mut b, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    let _log2_max_frame_num = b.ue()?;
    match b.ue()? {
        0 => {
            let _log2_max_poc_lsb = b.ue()?;
        }
        1 => {
            let _delta_always_zero = b.flag()?;
            let _offset_non_ref = b.se()?;
            let _offset_top_bottom = b.se()?;
            let cycle = b.ue()?;
            if cycle > 255 {
                return Err(Error::SpsRange("num_ref_frames_in_pic_order_cnt_cycle"));
            }
            for _ in 0..cycle {
                b.se()?;
            }
        }
        2 => {}
        _ => return Err(Error::SpsRange("pic_order_cnt_type")),
    }
    let _max_num_ref_frames = b.ue()?;
    let _gaps_allowed = b.flag()?;
    let width_mbs = u64::from(b.ue()?) + 1;
    let height_map_units = u64::from(b.ue()?) + 1;
    let frame_mbs_only = b.flag()?;
    if !frame_mbs_only {
        let _mb_adaptive = b.flag()?;
    }
    let _direct_8x8 = b.flag()?;
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
    if b.flag()? {
        crop_l = b.ue()?.into();
        crop_r = b.ue()?.into();
        crop_t = b.ue()?.into();
        crop_b = b.ue()?.into();
    }
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (sub_width, sub_height) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let crop_unit_x = sub_width;
    let crop_unit_y = sub_height * field_factor;
    let width = (width_mbs * 16)
        .checked_sub((crop_l + crop_r) * crop_unit_x)
        .filter(|w| (1..=MAX_DIMENSION).contains(w))
        .ok_or(Error::SpsRange("width"))?;
    let height = (height_map_units * 16 * field_factor)
        .checked_sub((crop_t + crop_b) * crop_unit_y)
        .filter(|h| (1..=MAX_DIMENSION).contains(h))
        .ok_or(Error::SpsRange("height"))?;
    Ok(Sps {
        profile_idc,
        constraint_flags,
        level_idc,
        chroma_format_idc,
        width: width as u32,
        height: height as u32,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn browser_warnings() {
        let w = browser_warning("avc1.f4001f,mp4a.40.2").expect("4:4:4");
        assert!(w.contains("High 4:4:4 Predictive"), "{w}");
        assert!(browser_warning("avc1.6e0028")
            .expect("10")
            .contains("High 10"));
        assert!(browser_warning("mp4a.40.2, avc1.7A0028")
            .expect("4:2:2")
            .contains("4:2:2"));
        for ok in [
            "avc1.64001f,mp4a.40.2",
            "avc1.4d401e",
            "avc1.42e01e",
            "mp4a.40.2",
            "",
            "avc1.",
            "avc1.f",
            "avc1.zz001f",
            "avc1.\u{e9}001f",
            "avc1.a\u{e9}01f",
        ] {
            assert_eq!(browser_warning(ok), None, "{ok:?}");
        }
    }
    use crate::media::flv::{self, VideoBody};

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/testsrc.flv");

    pub(crate) fn fixture_record() -> Bytes {
        let tags = flv::parse_file(FIXTURE).expect("fixture");
        tags.iter()
            .find_map(|t| match flv::parse_video(&t.body) {
                Ok(VideoBody::AvcConfig(r)) => Some(r),
                _ => None,
            })
            .expect("sequence header")
    }

    /// MSB-first bit writer with Exp-Golomb codes, for building SPSs by hand.
    #[derive(Default)]
    pub(crate) struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        pub(crate) fn u(&mut self, n: u32, v: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        pub(crate) fn ue(&mut self, v: u32) -> &mut Self {
            let x = u64::from(v) + 1;
            let len = 64 - x.leading_zeros();
            for _ in 0..len - 1 {
                self.bits.push(false);
            }
            for i in (0..len).rev() {
                self.bits.push((x >> i) & 1 == 1);
            }
            self
        }
        pub(crate) fn se(&mut self, v: i32) -> &mut Self {
            let k = if v > 0 { 2 * v - 1 } else { -2 * v };
            self.ue(k as u32)
        }
        /// RBSP trailing bits, then emulation prevention.
        pub(crate) fn nal(&mut self) -> Vec<u8> {
            self.bits.push(true);
            while !self.bits.len().is_multiple_of(8) {
                self.bits.push(false);
            }
            let raw: Vec<u8> = self
                .bits
                .chunks(8)
                .map(|c| c.iter().fold(0u8, |a, &b| (a << 1) | u8::from(b)))
                .collect();
            let mut out = Vec::new();
            let mut zeros = 0;
            for b in raw {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    /// High 4:2:0 1920x1080 (1088 coded, 8 rows cropped) with a scaling matrix, level 4.0.
    pub(crate) fn high_profile_sps(width_mbs: u32, height_mbs: u32, crop_bottom: u32) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.u(8, 0x67).u(8, 100).u(8, 0).u(8, 40).ue(0);
        w.ue(1).ue(0).ue(0).u(1, 0); // chroma 4:2:0, 8-bit, no bypass
        w.u(1, 1); // seq_scaling_matrix_present
        w.u(1, 1); // list 0 present: a 4x4 list ending early with delta -8
        w.se(-8);
        w.u(1, 0).u(1, 0).u(1, 0).u(1, 0).u(1, 0);
        w.u(1, 1); // list 6 (8x8) present: 64 deltas of 0
        for _ in 0..64 {
            w.se(0);
        }
        w.u(1, 0);
        w.ue(0).ue(0).ue(4); // log2_max_frame_num, poc type 0, log2_max_poc_lsb
        w.ue(4).u(1, 0); // max_num_ref_frames, gaps
        w.ue(width_mbs - 1).ue(height_mbs - 1);
        w.u(1, 1).u(1, 1); // frame_mbs_only, direct_8x8
        w.u(1, 1).ue(0).ue(0).ue(0).ue(crop_bottom); // cropping
        w.u(1, 0); // no VUI
        w.nal()
    }

    /// Wraps SPS and PPS into a configuration record.
    pub(crate) fn record(sps: &[u8], pps: &[u8]) -> Bytes {
        let mut r = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        r.extend_from_slice(sps);
        r.push(1);
        r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        r.extend_from_slice(pps);
        Bytes::from(r)
    }

    #[test]
    fn fixture_config() {
        let config = AvcConfig::parse(fixture_record()).expect("parses");
        assert_eq!(config.codec(), "avc1.4d401e");
        assert_eq!((config.width(), config.height()), (640, 360));
        assert_eq!(config.nal_length_size, 4);
        assert_eq!(config.sps.profile_idc, 77);
        assert_eq!(config.sps.chroma_format_idc, 1);
    }

    #[test]
    fn high_profile_with_cropping() {
        let sps = high_profile_sps(120, 68, 4);
        let config = AvcConfig::parse(record(&sps, &[0x68, 0xee, 0x3c, 0x80])).expect("parses");
        assert_eq!(config.codec(), "avc1.640028");
        assert_eq!((config.width(), config.height()), (1920, 1080));
        assert_eq!(config.sps.chroma_format_idc, 1);
    }

    #[test]
    fn emulation_prevention_is_removed() {
        // Constraint and level bytes of 0 followed by ue(63) (6 leading zeros) give
        // 00 00 02, which must be escaped as 00 00 03 02.
        let mut w = BitWriter::default();
        w.u(8, 0x67).u(8, 66).u(8, 0).u(8, 0).ue(63);
        w.ue(0).ue(2).ue(1).u(1, 0); // frame_num, poc type 2, refs, gaps
        w.ue(39).ue(22).u(1, 1).u(1, 1).u(1, 0).u(1, 0); // 640x368, no crop, no VUI
        let sps = w.nal();
        assert!(sps.windows(4).any(|w| w == [0, 0, 3, 2]), "{sps:02x?}");
        let parsed = parse_sps(&sps).expect("parses");
        assert_eq!((parsed.width, parsed.height), (640, 368));
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(AvcConfig::parse(Bytes::new()), Err(Error::Truncated));
        assert_eq!(
            AvcConfig::parse(Bytes::from_static(&[2, 0x64, 0, 0x28, 0xff, 0xe1])),
            Err(Error::Version(2))
        );
        assert_eq!(
            AvcConfig::parse(Bytes::from_static(&[1, 0x64, 0, 0x28, 0xff, 0xe0, 0])),
            Err(Error::NoSps)
        );
        assert_eq!(
            AvcConfig::parse(Bytes::from_static(&[
                1, 0x64, 0, 0x28, 0xff, 0xe1, 0, 9, 0x67
            ])),
            Err(Error::Truncated)
        );
        // Crop larger than the picture.
        let sps = high_profile_sps(1, 1, 9);
        assert_eq!(parse_sps(&sps), Err(Error::SpsRange("height")));
        // All-zero bits: an Exp-Golomb code without end.
        assert_eq!(
            parse_sps(&[0x67, 100, 0, 40, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::Sps)
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_does_not_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
                let _ = AvcConfig::parse(Bytes::from(data.clone()));
                let _ = parse_sps(&data);
                let mut nal = vec![0x67];
                nal.extend_from_slice(&data);
                let _ = parse_sps(&nal);
            }

            #[test]
            fn mutated_record_does_not_panic(at in 0usize..64, value in any::<u8>()) {
                let mut r = fixture_record().to_vec();
                if let Some(b) = r.get_mut(at) { *b = value; }
                let _ = AvcConfig::parse(Bytes::from(r));
            }
        }
    }
}
