//! AAC: the AudioSpecificConfig (the FLV sequence header, carried in the `esds` box) and what
//! the init segment and playlist need from it: object type, sample rate, channels, frame length.
//!
//! Input is untrusted: reads are bounds-checked and the config size is capped.

use bytes::Bytes;

/// Why an AudioSpecificConfig could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("AudioSpecificConfig is truncated")]
    Truncated,
    #[error("AudioSpecificConfig is {0} bytes, over the cap")]
    TooLarge(usize),
    #[error("audio object type {0} is invalid")]
    ObjectType(u8),
    #[error("sampling frequency index {0} is reserved")]
    FrequencyIndex(u8),
    #[error("sample rate 0 is invalid")]
    SampleRate,
    #[error("channel configuration {0} is unsupported")]
    Channels(u8),
}

/// Cap on a config's size: real ones are 2 to 7 bytes; a program config element adds a few
/// dozen. The cap keeps a crafted one from bloating every init segment (the `esds` length
/// fields also stay small).
pub const MAX_CONFIG_BYTES: usize = 256;

const FREQUENCIES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// A parsed AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// Audio object type as signalled (2 = AAC-LC, 5 = SBR, 29 = PS; escape 31 resolved).
    pub object_type: u8,
    /// Sample rate of the core AAC frames, in Hz; the audio track's timescale.
    pub sample_rate: u32,
    /// Number of output channels.
    pub channels: u8,
    /// Samples per raw frame at `sample_rate` (1024, or 960 with frameLengthFlag).
    pub samples_per_frame: u32,
    /// The config as received: the DecoderSpecificInfo of the `esds` box.
    pub record: Bytes,
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bits(&mut self, n: u32) -> Result<u32, Error> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8).ok_or(Error::Truncated)?;
            v = (v << 1) | u32::from((byte >> (7 - (self.pos % 8))) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    fn object_type(&mut self) -> Result<u8, Error> {
        let aot = self.bits(5)? as u8;
        if aot == 31 {
            return Ok(32 + self.bits(6)? as u8);
        }
        Ok(aot)
    }

    fn frequency(&mut self) -> Result<u32, Error> {
        let index = self.bits(4)? as u8;
        let rate = match index {
            15 => self.bits(24)?,
            i => *FREQUENCIES
                .get(usize::from(i))
                .ok_or(Error::FrequencyIndex(i))?,
        };
        if rate == 0 {
            return Err(Error::SampleRate);
        }
        Ok(rate)
    }
}

impl AudioSpecificConfig {
    /// Parses a config (the body of an AAC sequence header).
    ///
    /// For explicit SBR/PS (object type 5 or 29) the sample rate stays the core rate: an FLV
    /// AAC frame is one core frame, so timing in core samples is exact.
    pub fn parse(record: Bytes) -> Result<Self, Error> {
        if record.len() > MAX_CONFIG_BYTES {
            return Err(Error::TooLarge(record.len()));
        }
        let mut b = Bits {
            data: &record,
            pos: 0,
        };
        let object_type = b.object_type()?;
        if object_type == 0 {
            return Err(Error::ObjectType(0));
        }
        let sample_rate = b.frequency()?;
        let channel_config = b.bits(4)? as u8;
        let channels = match channel_config {
            1..=6 => channel_config,
            7 | 12 | 14 => 8,
            11 => 7,
            13 => 24,
            other => return Err(Error::Channels(other)),
        };
        let mut core_type = object_type;
        if object_type == 5 || object_type == 29 {
            let _extension_rate = b.frequency()?;
            core_type = b.object_type()?;
        }
        // GASpecificConfig starts with frameLengthFlag for the general audio object types.
        let mut samples_per_frame = 1024;
        if matches!(core_type, 1..=4 | 6 | 7 | 17 | 19..=23) && b.bits(1)? == 1 {
            samples_per_frame = 960;
        }
        if core_type == 23 {
            samples_per_frame /= 2;
        }
        Ok(AudioSpecificConfig {
            object_type,
            sample_rate,
            channels,
            samples_per_frame,
            record,
        })
    }

    /// RFC 6381 codecs string, `mp4a.40.<object type>`.
    pub fn codec(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{self, AudioBody};

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/testsrc.flv");

    fn parse(bytes: &'static [u8]) -> Result<AudioSpecificConfig, Error> {
        AudioSpecificConfig::parse(Bytes::from_static(bytes))
    }

    #[test]
    fn fixture_config() {
        let tags = flv::parse_file(FIXTURE).expect("fixture");
        let record = tags
            .iter()
            .find_map(|t| match flv::parse_audio(&t.body) {
                Ok(AudioBody::AacConfig(r)) => Some(r),
                _ => None,
            })
            .expect("sequence header");
        let asc = AudioSpecificConfig::parse(record).expect("parses");
        assert_eq!(asc.codec(), "mp4a.40.2");
        assert_eq!((asc.sample_rate, asc.channels), (44_100, 2));
        assert_eq!(asc.samples_per_frame, 1024);
    }

    #[test]
    fn variants() {
        // AAC-LC 48 kHz mono.
        let lc = parse(&[0x11, 0x88]).expect("lc");
        assert_eq!(
            (lc.object_type, lc.sample_rate, lc.channels),
            (2, 48_000, 1)
        );
        // HE-AAC (SBR) explicit: core 24 kHz, extension 48 kHz, stereo, core AAC-LC.
        let he = parse(&[0x2b, 0x11, 0x88, 0x00]).expect("he");
        assert_eq!(he.codec(), "mp4a.40.5");
        assert_eq!((he.sample_rate, he.channels), (24_000, 2));
        // Escape: object type 31 + 6 bits (42 = USAC) with explicit 24-bit rate 50000 Hz.
        // 11111 001010 1111 <24 bits of 50000> 0010
        let usac = parse(&[0xf9, 0x5e, 0x01, 0x86, 0xa0, 0x40]).expect("escape");
        assert_eq!(usac.object_type, 42);
        assert_eq!(usac.codec(), "mp4a.40.42");
        assert_eq!((usac.sample_rate, usac.channels), (50_000, 2));
        // frameLengthFlag: 960-sample frames.
        assert_eq!(parse(&[0x12, 0x14]).expect("960").samples_per_frame, 960);
        // 7.1 (channel configuration 7).
        assert_eq!(parse(&[0x11, 0xb8]).expect("7.1").channels, 8);
    }

    #[test]
    fn rejects_bad_configs() {
        assert_eq!(parse(&[]), Err(Error::Truncated));
        assert_eq!(parse(&[0x12]), Err(Error::Truncated));
        assert_eq!(parse(&[0x00, 0x10]), Err(Error::ObjectType(0)));
        assert_eq!(parse(&[0x16, 0x90]), Err(Error::FrequencyIndex(13)));
        assert_eq!(parse(&[0x12, 0x00]), Err(Error::Channels(0)));
        assert_eq!(
            parse(&[0x17, 0x80, 0x00, 0x00, 0x10]),
            Err(Error::SampleRate)
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_does_not_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
            let _ = AudioSpecificConfig::parse(Bytes::from(data));
        }
    }
}
