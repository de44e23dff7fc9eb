//! Server side of the plain RTMP handshake, sans-IO.
//!
//! C0+C1 (1 + 1536 bytes) are answered with S0+S1+S2 in one reply, where S2 echoes C1; then C2
//! (1536 bytes) is read and ignored. The digest ("FP9") handshake is not needed: ffmpeg, OBS
//! and GStreamer all accept the echo when publishing.
//!
//! Invariant: [`Handshake::advance`] either consumes a whole step or returns `Ok(None)` and
//! consumes nothing, so the caller can retry with more bytes appended.

use bytes::{BufMut, Bytes, BytesMut};

use super::Error;

/// Size of C1/C2/S1/S2.
pub const PACKET_SIZE: usize = 1536;
/// The only protocol version accepted in C0 (6 would be RTMPE, which we do not speak).
pub const VERSION: u8 = 3;

/// Where the handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    C0C1,
    C2,
    Done,
}

/// One completed handshake step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// C0+C1 read (`consumed` bytes): send `reply` (S0+S1+S2).
    Reply { consumed: usize, reply: Bytes },
    /// C2 read (`consumed` bytes): the chunk stream starts right after.
    Done { consumed: usize },
}

/// Server handshake state machine.
#[derive(Debug)]
pub struct Handshake {
    stage: Stage,
}

impl Default for Handshake {
    fn default() -> Self {
        Self::new()
    }
}

impl Handshake {
    /// A handshake waiting for C0+C1.
    pub fn new() -> Self {
        Self { stage: Stage::C0C1 }
    }

    /// True once C2 has been read.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Tries the next step on the front of `input`; `Ok(None)` means more bytes are needed
    /// (or the handshake is already done). A bad C0 fails as soon as its byte arrives.
    pub fn advance(&mut self, input: &[u8]) -> Result<Option<Step>, Error> {
        match self.stage {
            Stage::C0C1 => {
                let Some(&version) = input.first() else {
                    return Ok(None);
                };
                if version != VERSION {
                    return Err(Error::BadVersion(version));
                }
                let Some(c1) = input.get(1..1 + PACKET_SIZE) else {
                    return Ok(None);
                };
                let mut reply = BytesMut::with_capacity(1 + 2 * PACKET_SIZE);
                reply.put_u8(VERSION);
                // S1: time 0, four zero bytes (which also tells ffmpeg not to expect a
                // digest), then filler; nothing checks the filler in the plain handshake.
                reply.put_bytes(0, 8);
                let mut x: u32 = 0x9e37_79b9;
                for _ in 0..(PACKET_SIZE - 8) {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    reply.put_u8(x.to_le_bytes()[0]);
                }
                reply.put_slice(c1);
                self.stage = Stage::C2;
                Ok(Some(Step::Reply {
                    consumed: 1 + PACKET_SIZE,
                    reply: reply.freeze(),
                }))
            }
            Stage::C2 => {
                if input.len() < PACKET_SIZE {
                    return Ok(None);
                }
                self.stage = Stage::Done;
                Ok(Some(Step::Done {
                    consumed: PACKET_SIZE,
                }))
            }
            Stage::Done => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c0c1() -> Vec<u8> {
        let mut v = vec![VERSION];
        v.extend((0..PACKET_SIZE).map(|i| (i % 251) as u8));
        v
    }

    #[test]
    fn full_handshake_echoes_c1() {
        let mut hs = Handshake::new();
        let input = c0c1();
        let Some(Step::Reply { consumed, reply }) = hs.advance(&input).unwrap() else {
            panic!("expected reply");
        };
        assert_eq!(consumed, 1 + PACKET_SIZE);
        assert_eq!(reply.len(), 1 + 2 * PACKET_SIZE);
        assert_eq!(reply[0], VERSION);
        assert_eq!(&reply[1 + PACKET_SIZE..], &input[1..]);
        assert!(!hs.is_done());
        assert_eq!(hs.advance(&[0; 100]).unwrap(), None);
        assert_eq!(
            hs.advance(&[0; PACKET_SIZE + 5]).unwrap(),
            Some(Step::Done {
                consumed: PACKET_SIZE
            })
        );
        assert!(hs.is_done());
    }

    #[test]
    fn incomplete_consumes_nothing() {
        let mut hs = Handshake::new();
        let input = c0c1();
        for n in 0..input.len() {
            assert_eq!(hs.advance(&input[..n]).unwrap(), None);
        }
        assert!(hs.advance(&input).unwrap().is_some());
    }

    #[test]
    fn rejects_bad_version_on_first_byte() {
        let mut hs = Handshake::new();
        assert!(matches!(hs.advance(b"G"), Err(Error::BadVersion(b'G'))));
        assert!(matches!(
            Handshake::new().advance(&[6]),
            Err(Error::BadVersion(6))
        ));
    }

    proptest! {
        #[test]
        fn does_not_panic(data in proptest::collection::vec(any::<u8>(), 0..4000), cut in 0usize..4000) {
            let mut hs = Handshake::new();
            let cut = cut.min(data.len());
            let (mut buf, mut off) = (Vec::new(), 0);
            for part in [&data[..cut], &data[cut..]] {
                buf.extend_from_slice(part);
                while let Ok(Some(Step::Reply { consumed, .. } | Step::Done { consumed })) =
                    hs.advance(&buf[off..])
                {
                    off += consumed;
                }
            }
            prop_assert!(off <= data.len());
        }
    }
}
