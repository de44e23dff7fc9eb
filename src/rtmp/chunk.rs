//! RTMP chunk stream, sans-IO: [`Decoder`] reassembles messages from interleaved chunks,
//! [`Encoder`] splits outgoing messages into chunks.
//!
//! Invariants:
//! - [`Decoder::decode`] consumes whole chunks only; an incomplete chunk leaves the buffer and
//!   the decoder state untouched and yields `Ok(None)`.
//! - Memory held for a peer is bounded by the named caps below, whatever sizes it declares:
//!   partial payloads grow only with bytes actually received, and the input buffer never needs
//!   more than one chunk ([`MAX_HEADER_LEN`] + [`MAX_CHUNK_SIZE`]).
//! - Timestamps are 32-bit milliseconds; deltas are added with wrap-around, as RTMP intends.
//! - A type 3 chunk carries an extended timestamp whenever the last type 0-2 header of its
//!   chunk stream did, continuation chunks included (the spec, ffmpeg, librtmp and OBS agree).
//! - Set Chunk Size and Abort are applied here (they change how later chunks parse) and are
//!   also returned, so the caller sees every message.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Error;

/// Chunk size both sides start with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest Set Chunk Size accepted. Encoders use 4 KiB (ffmpeg, OBS) up to 64 KiB; a whole
/// chunk must sit in the input buffer before it is parsed, so this also caps that buffer.
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest message accepted. Far above any real frame (a 4K keyframe at 50 Mbit/s is a few
/// MB) and half the wire's 24-bit limit, so a single declared length cannot claim 16 MiB.
pub const MAX_MESSAGE_LEN: u32 = 8 * 1024 * 1024;
/// Most chunk stream ids tracked per connection. Encoders use a handful (2..=8); each id
/// keeps header state, so an unbounded number would be unbounded memory.
pub const MAX_CHUNK_STREAMS: usize = 64;
/// Most bytes held in partial messages across all chunk streams of a connection: one
/// maximal video message plus the audio interleaved with it fits; a peer opening many
/// half-sent messages cannot hold more. (Allocations grow by doubling, so the memory
/// behind it is at most twice this.)
pub const MAX_BUFFERED_BYTES: usize = MAX_MESSAGE_LEN as usize + 1024 * 1024;
/// Longest chunk header: 3-byte basic header, 11-byte message header, 4-byte extended timestamp.
pub const MAX_HEADER_LEN: usize = 18;

/// Timestamp field value meaning "see the 4-byte extended timestamp".
const EXTENDED: u32 = 0x00FF_FFFF;

/// RTMP message type ids.
pub mod kind {
    /// Protocol control: the sender's new chunk size.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Protocol control: drop the partial message of a chunk stream.
    pub const ABORT: u8 = 2;
    /// Protocol control: bytes received so far.
    pub const ACKNOWLEDGEMENT: u8 = 3;
    /// User control event (StreamBegin, PingRequest, ...).
    pub const USER_CONTROL: u8 = 4;
    /// Protocol control: acknowledge every this many bytes.
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Protocol control: limit the peer's output bandwidth.
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio; the payload is an FLV audio tag body.
    pub const AUDIO: u8 = 8;
    /// Video; the payload is an FLV video tag body.
    pub const VIDEO: u8 = 9;
    /// Data message in AMF3 framing.
    pub const AMF3_DATA: u8 = 15;
    /// Command message in AMF3 framing.
    pub const AMF3_COMMAND: u8 = 17;
    /// Data message (e.g. `@setDataFrame`) in AMF0.
    pub const AMF0_DATA: u8 = 18;
    /// Command message (connect, publish, ...) in AMF0.
    pub const AMF0_COMMAND: u8 = 20;
    /// Several FLV tags in one message.
    pub const AGGREGATE: u8 = 22;
}

/// One reassembled RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream it arrived on (or is sent on).
    pub csid: u32,
    /// Absolute timestamp in milliseconds (32-bit, wrapping).
    pub timestamp: u32,
    /// Message type id (see [`kind`]).
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// The message body.
    pub payload: Bytes,
}

/// Per chunk stream: the last header (for compressed headers) and the message in progress.
#[derive(Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    /// Last timestamp field: a delta, or the absolute timestamp after a type 0 header
    /// (ffmpeg and librtmp read a following type 3 header that way too).
    delta: u32,
    /// The last type 0-2 header used an extended timestamp, so type 3 chunks carry one too.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    partial: Option<BytesMut>,
}

/// What a parsed chunk header says, before anything is committed.
struct Parsed {
    csid: u32,
    header_len: usize,
    payload_len: usize,
    /// `Some(header)` starts a new message; `None` continues the partial one.
    start: Option<ChunkStream>,
}

/// Reassembles messages from the peer's chunks.
#[derive(Debug)]
pub struct Decoder {
    chunk_size: u32,
    streams: HashMap<u32, ChunkStream>,
    buffered: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder at the default chunk size.
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
            buffered: 0,
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Bytes currently held in partial messages.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Consumes whole chunks from the front of `buf` until a message completes.
    /// `Ok(None)`: need more bytes; what is left in `buf` is an incomplete chunk.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        loop {
            let Some(parsed) = self.parse(buf)? else {
                return Ok(None);
            };
            buf.advance(parsed.header_len);
            let payload = buf.split_to(parsed.payload_len);
            let Some(msg) = self.commit(parsed, payload) else {
                continue;
            };
            self.apply_control(&msg)?;
            return Ok(Some(msg));
        }
    }

    /// Reads one chunk header from `buf` without consuming or changing state.
    fn parse(&self, buf: &[u8]) -> Result<Option<Parsed>, Error> {
        let mut r = Reader { buf, pos: 0 };
        let Some(b0) = r.u8() else { return Ok(None) };
        let fmt = b0 >> 6;
        let csid = match b0 & 0x3f {
            0 => match r.u8() {
                Some(b) => 64 + u32::from(b),
                None => return Ok(None),
            },
            1 => match (r.u8(), r.u8()) {
                (Some(lo), Some(hi)) => 64 + u32::from(lo) + 256 * u32::from(hi),
                _ => return Ok(None),
            },
            n => u32::from(n),
        };
        let prev = self.streams.get(&csid);
        if prev.is_none() {
            if fmt != 0 {
                return Err(Error::NoPreviousHeader(csid));
            }
            if self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(Error::TooManyChunkStreams);
            }
        }
        let header = match (fmt, prev) {
            (0, _) => (|| Some((Some(r.uint(3)?), r.uint(3)?, r.u8()?, r.u32_le()?)))(),
            (1, Some(p)) => (|| Some((Some(r.uint(3)?), r.uint(3)?, r.u8()?, p.stream_id)))(),
            (2, Some(p)) => r
                .uint(3)
                .map(|d| (Some(d), p.length, p.type_id, p.stream_id)),
            (_, Some(p)) => Some((None, p.length, p.type_id, p.stream_id)),
            (_, None) => return Err(Error::NoPreviousHeader(csid)),
        };
        let Some((ts_field, length, type_id, stream_id)) = header else {
            return Ok(None);
        };
        let extended = match ts_field {
            Some(v) => v == EXTENDED,
            None => prev.is_some_and(|p| p.extended),
        };
        let ext = if extended {
            match r.uint(4) {
                Some(v) => Some(v),
                None => return Ok(None),
            }
        } else {
            None
        };
        if length > MAX_MESSAGE_LEN {
            return Err(Error::MessageTooLong(length));
        }

        let continuing = prev.and_then(|p| p.partial.as_ref().map(|b| b.len()));
        let (start, remaining) = match (fmt, continuing) {
            (3, Some(have)) => (None, (length as usize).saturating_sub(have)),
            _ => {
                let prev_ts = prev.map_or(0, |p| p.timestamp);
                let field = ext.or(ts_field);
                let (timestamp, delta) = match (fmt, field) {
                    (0, Some(t)) => (t, t),
                    (_, Some(d)) => (prev_ts.wrapping_add(d), d),
                    (_, None) => {
                        let d = prev.map_or(0, |p| p.delta);
                        (prev_ts.wrapping_add(d), d)
                    }
                };
                let header = ChunkStream {
                    timestamp,
                    delta,
                    extended,
                    length,
                    type_id,
                    stream_id,
                    partial: None,
                };
                (Some(header), length as usize)
            }
        };
        let payload_len = remaining.min(self.chunk_size as usize);
        if r.remaining() < payload_len {
            return Ok(None);
        }
        let completes = payload_len == remaining;
        if !completes {
            // A new message replaces (drops) any partial one on this chunk stream.
            let dropped = match start {
                Some(_) => continuing.unwrap_or(0),
                None => 0,
            };
            let after = self
                .buffered
                .saturating_sub(dropped)
                .saturating_add(payload_len);
            if after > MAX_BUFFERED_BYTES {
                return Err(Error::BufferedTooMuch);
            }
        }
        Ok(Some(Parsed {
            csid,
            header_len: r.pos,
            payload_len,
            start,
        }))
    }

    /// Applies a parsed chunk; returns the message if it is now complete.
    fn commit(&mut self, p: Parsed, payload: BytesMut) -> Option<Message> {
        let stream = self.streams.entry(p.csid).or_default();
        let fresh = p.start.is_some();
        if let Some(header) = p.start {
            if let Some(old) = stream.partial.take() {
                self.buffered = self.buffered.saturating_sub(old.len());
            }
            *stream = header;
        }
        let mut partial = match stream.partial.take() {
            Some(mut b) => {
                self.buffered = self.buffered.saturating_sub(b.len());
                b.extend_from_slice(&payload);
                b
            }
            None => payload,
        };
        if partial.len() >= stream.length as usize {
            partial.truncate(stream.length as usize);
            return Some(Message {
                csid: p.csid,
                timestamp: stream.timestamp,
                type_id: stream.type_id,
                stream_id: stream.stream_id,
                payload: partial.freeze(),
            });
        }
        if fresh {
            // Detach from the input buffer so that can be reused. Capacity then grows with
            // the bytes received (at most doubling), never with the declared length.
            partial = BytesMut::from(&partial[..]);
        }
        self.buffered = self.buffered.saturating_add(partial.len());
        stream.partial = Some(partial);
        None
    }

    /// Set Chunk Size and Abort change how later chunks parse.
    /// Applied whatever the message stream id (it must be 0, but ignoring a misaddressed one
    /// would desynchronise the chunk stream).
    fn apply_control(&mut self, msg: &Message) -> Result<(), Error> {
        let value = msg
            .payload
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match msg.type_id {
            kind::SET_CHUNK_SIZE => {
                // The top bit is reserved and must be zero.
                let size = value.unwrap_or(0);
                if !(1..=MAX_CHUNK_SIZE).contains(&size) {
                    return Err(Error::BadChunkSize(size));
                }
                self.chunk_size = size;
            }
            kind::ABORT => {
                if let Some(partial) = value
                    .and_then(|csid| self.streams.get_mut(&csid))
                    .and_then(|s| s.partial.take())
                {
                    self.buffered = self.buffered.saturating_sub(partial.len());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A bounds-checked cursor over the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    /// Big-endian unsigned integer of `n` <= 4 bytes.
    fn uint(&mut self, n: usize) -> Option<u32> {
        Some(self.take(n)?.iter().fold(0, |v, &b| v << 8 | u32::from(b)))
    }
    fn u32_le(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// Splits outgoing messages into chunks: a type 0 header, then type 3 continuations.
/// Header compression is not worth it for the few messages a server sends.
#[derive(Debug)]
pub struct Encoder {
    chunk_size: u32,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder at the default chunk size.
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// Switches chunk size; call right after encoding the Set Chunk Size message.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    /// Appends `msg` as chunks to `out`. `msg.csid` must be in `2..=65599` and the payload
    /// under 16 MiB (both hold for everything a server sends).
    pub fn encode(&self, msg: &Message, out: &mut BytesMut) {
        let csid = msg.csid.clamp(2, 65599);
        let extended = msg.timestamp >= EXTENDED;
        let basic = |out: &mut BytesMut, fmt: u8| match csid {
            2..=63 => out.put_u8(fmt << 6 | csid as u8),
            64..=319 => {
                out.put_u8(fmt << 6);
                out.put_u8((csid - 64) as u8);
            }
            _ => {
                out.put_u8(fmt << 6 | 1);
                out.put_u16_le((csid - 64) as u16);
            }
        };
        basic(out, 0);
        out.put_uint(u64::from(msg.timestamp.min(EXTENDED)), 3);
        out.put_uint(msg.payload.len().min(0xFF_FFFF) as u64, 3);
        out.put_u8(msg.type_id);
        out.put_u32_le(msg.stream_id);
        if extended {
            out.put_u32(msg.timestamp);
        }
        let mut chunks = msg.payload.chunks(self.chunk_size as usize);
        if let Some(first) = chunks.next() {
            out.put_slice(first);
        }
        for chunk in chunks {
            basic(out, 3);
            if extended {
                out.put_u32(msg.timestamp);
            }
            out.put_slice(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> Message {
        Message {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, Error> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    /// Type 0 header for csid 3..=63.
    fn h0(csid: u8, ts: u32, len: u32, ty: u8, sid: u32) -> Vec<u8> {
        let mut v = vec![csid];
        v.extend_from_slice(&ts.min(EXTENDED).to_be_bytes()[1..]);
        v.extend_from_slice(&len.to_be_bytes()[1..]);
        v.push(ty);
        v.extend_from_slice(&sid.to_le_bytes());
        if ts >= EXTENDED {
            v.extend_from_slice(&ts.to_be_bytes());
        }
        v
    }

    #[test]
    fn fmt0_to_fmt3_with_deltas() {
        let mut b = h0(4, 1000, 3, 9, 1);
        b.extend_from_slice(b"abc");
        // type 1: delta 40, new length 2, audio
        b.extend_from_slice(&[0x40 | 4, 0, 0, 40, 0, 0, 2, 8]);
        b.extend_from_slice(b"de");
        // type 2: delta 20
        b.extend_from_slice(&[0x80 | 4, 0, 0, 20]);
        b.extend_from_slice(b"fg");
        // type 3: same delta again
        b.extend_from_slice(&[0xC0 | 4]);
        b.extend_from_slice(b"hi");
        let got = decode_all(&mut Decoder::new(), &b).unwrap();
        assert_eq!(
            got,
            vec![
                msg(4, 1000, 9, 1, b"abc"),
                msg(4, 1040, 8, 1, b"de"),
                msg(4, 1060, 8, 1, b"fg"),
                msg(4, 1080, 8, 1, b"hi"),
            ]
        );
    }

    #[test]
    fn fmt3_after_fmt0_adds_the_absolute_timestamp() {
        let mut b = h0(4, 10, 1, 8, 1);
        b.push(b'a');
        b.extend_from_slice(&[0xC0 | 4, b'b']);
        let got = decode_all(&mut Decoder::new(), &b).unwrap();
        assert_eq!(got[1].timestamp, 20);
    }

    #[test]
    fn basic_header_sizes() {
        let mut b = vec![0x00, 100 - 64];
        b.extend_from_slice(&h0(3, 5, 1, 8, 1)[1..]);
        b.push(1);
        b.extend_from_slice(&[0x01, (1000u32 - 64) as u8, ((1000u32 - 64) >> 8) as u8]);
        b.extend_from_slice(&h0(3, 6, 1, 8, 1)[1..]);
        b.push(2);
        let got = decode_all(&mut Decoder::new(), &b).unwrap();
        assert_eq!(got[0].csid, 100);
        assert_eq!(got[1].csid, 1000);
        // and the encoder writes the same forms
        let e = Encoder::new();
        for csid in [2, 63, 64, 319, 320, 65599] {
            let mut out = BytesMut::new();
            e.encode(&msg(csid, 7, 9, 1, b"xyz"), &mut out);
            let got = decode_all(&mut Decoder::new(), &out).unwrap();
            assert_eq!(got, vec![msg(csid, 7, 9, 1, b"xyz")]);
        }
    }

    #[test]
    fn extended_timestamp_on_continuations() {
        let ts = 0x0123_4567;
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut b = h0(6, ts, 300, 9, 1);
        b.extend_from_slice(&payload[..128]);
        b.extend_from_slice(&[0xC0 | 6]);
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&payload[128..256]);
        b.extend_from_slice(&[0xC0 | 6]);
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&payload[256..]);
        // a new message with an extended delta on a type 3 header
        b.extend_from_slice(&[0x80 | 6, 0xff, 0xff, 0xff]);
        b.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        b.extend_from_slice(&payload[..128]);
        b.extend_from_slice(&[0xC0 | 6]);
        b.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        b.extend_from_slice(&payload[128..256]);
        b.extend_from_slice(&[0xC0 | 6]);
        b.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        b.extend_from_slice(&payload[256..]);
        let got = decode_all(&mut Decoder::new(), &b).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], msg(6, ts, 9, 1, &payload));
        assert_eq!(got[1], msg(6, ts + 0x0100_0000, 9, 1, &payload));

        let mut out = BytesMut::new();
        Encoder::new().encode(&msg(6, ts, 9, 1, &payload), &mut out);
        assert_eq!(&out[..], &b[..out.len()]);
    }

    #[test]
    fn timestamp_wraps() {
        let mut b = h0(4, u32::MAX - 5, 1, 8, 1);
        b.push(0);
        b.extend_from_slice(&[0x80 | 4, 0, 0, 10, 0]);
        let got = decode_all(&mut Decoder::new(), &b).unwrap();
        assert_eq!(got[1].timestamp, 4);
    }

    #[test]
    fn interleaved_chunk_streams() {
        let video: Vec<u8> = vec![0xAA; 200];
        let audio: Vec<u8> = vec![0xBB; 150];
        let mut b = h0(6, 0, 200, 9, 1);
        b.extend_from_slice(&video[..128]);
        b.extend_from_slice(&h0(4, 0, 150, 8, 1));
        b.extend_from_slice(&audio[..128]);
        b.push(0xC0 | 6);
        b.extend_from_slice(&video[128..]);
        b.push(0xC0 | 4);
        b.extend_from_slice(&audio[128..]);
        let got = decode_all(&mut Decoder::new(), &b).unwrap();
        assert_eq!(got, vec![msg(6, 0, 9, 1, &video), msg(4, 0, 8, 1, &audio)]);
    }

    #[test]
    fn chunk_size_change_mid_stream() {
        let mut b = h0(2, 0, 4, kind::SET_CHUNK_SIZE, 0);
        b.extend_from_slice(&300u32.to_be_bytes());
        let big: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
        b.extend_from_slice(&h0(6, 0, 600, 9, 1));
        b.extend_from_slice(&big[..300]);
        b.push(0xC0 | 6);
        b.extend_from_slice(&big[300..]);
        let mut d = Decoder::new();
        let got = decode_all(&mut d, &b).unwrap();
        assert_eq!(d.chunk_size(), 300);
        assert_eq!(got[1], msg(6, 0, 9, 1, &big));
    }

    #[test]
    fn one_byte_at_a_time() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut wire = BytesMut::new();
        let e = Encoder::new();
        e.encode(&msg(3, 0x0100_0000, 20, 0, &payload), &mut wire);
        e.encode(&msg(4, 33, 8, 1, b"aac"), &mut wire);
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in wire.iter() {
            buf.put_u8(byte);
            while let Some(m) = d.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(
            got,
            vec![
                msg(3, 0x0100_0000, 20, 0, &payload),
                msg(4, 33, 8, 1, b"aac")
            ]
        );
    }

    #[test]
    fn abort_drops_partial() {
        let mut b = h0(6, 0, 200, 9, 1);
        b.extend_from_slice(&[1; 128]);
        b.extend_from_slice(&h0(2, 0, 4, kind::ABORT, 0));
        b.extend_from_slice(&6u32.to_be_bytes());
        b.extend_from_slice(&h0(6, 5, 2, 9, 1));
        b.extend_from_slice(b"ok");
        let mut d = Decoder::new();
        let got = decode_all(&mut d, &b).unwrap();
        assert_eq!(got[1], msg(6, 5, 9, 1, b"ok"));
        assert_eq!(d.buffered_bytes(), 0);
    }

    #[test]
    fn rejects_bad_headers_and_sizes() {
        let mut d = Decoder::new();
        assert!(matches!(
            decode_all(&mut d, &[0x40 | 5, 0, 0, 0, 0, 0, 1, 8, 0]),
            Err(Error::NoPreviousHeader(5))
        ));
        let mut b = h0(2, 0, 4, kind::SET_CHUNK_SIZE, 0);
        b.extend_from_slice(&(MAX_CHUNK_SIZE + 1).to_be_bytes());
        assert!(matches!(
            decode_all(&mut Decoder::new(), &b),
            Err(Error::BadChunkSize(_))
        ));
        let b = h0(4, 0, MAX_MESSAGE_LEN + 1, 9, 1);
        assert!(matches!(
            decode_all(&mut Decoder::new(), &b),
            Err(Error::MessageTooLong(_))
        ));
        let mut d = Decoder::new();
        let mut b = Vec::new();
        for csid in 0..=MAX_CHUNK_STREAMS as u8 {
            b.extend_from_slice(&[0x00, csid]);
            b.extend_from_slice(&h0(3, 0, 1, 8, 1)[1..]);
            b.push(0);
        }
        assert!(matches!(
            decode_all(&mut d, &b),
            Err(Error::TooManyChunkStreams)
        ));
    }

    #[test]
    fn huge_declared_sizes_stay_within_caps() {
        // Many chunk streams each declare a maximal message and send part of it.
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut set = h0(2, 0, 4, kind::SET_CHUNK_SIZE, 0);
        set.extend_from_slice(&MAX_CHUNK_SIZE.to_be_bytes());
        buf.extend_from_slice(&set);
        assert!(d.decode(&mut buf).unwrap().is_some());
        let filler = vec![0u8; MAX_CHUNK_SIZE as usize];
        let mut result = Ok(None);
        'outer: for round in 0..200 {
            for csid in 3..63u8 {
                if round == 0 {
                    buf.extend_from_slice(&h0(csid, 0, MAX_MESSAGE_LEN, 9, 1));
                } else {
                    buf.put_u8(0xC0 | csid);
                }
                buf.extend_from_slice(&filler);
                result = d.decode(&mut buf);
                assert!(d.buffered_bytes() <= MAX_BUFFERED_BYTES);
                if result.is_err() {
                    break 'outer;
                }
            }
        }
        assert!(matches!(result, Err(Error::BufferedTooMuch)));
    }

    proptest! {
        #[test]
        fn does_not_panic(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut d = Decoder::new();
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
            prop_assert!(d.buffered_bytes() <= MAX_BUFFERED_BYTES);
        }

        #[test]
        fn encode_decode_roundtrip(
            msgs in proptest::collection::vec(
                (2u32..400, any::<u32>(), 1u8..30, 0u32..5, proptest::collection::vec(any::<u8>(), 0..700)),
                0..8),
            chunk_size in 1u32..600,
        ) {
            let mut e = Encoder::new();
            e.set_chunk_size(chunk_size);
            let mut wire = BytesMut::new();
            let mut set = BytesMut::new();
            Encoder::new().encode(&msg(2, 0, kind::SET_CHUNK_SIZE, 0, &chunk_size.to_be_bytes()), &mut set);
            let msgs: Vec<Message> = msgs
                .into_iter()
                .map(|(csid, ts, ty, sid, p)| msg(csid, ts, if ty == 1 || ty == 2 { 8 } else { ty }, sid, &p))
                .collect();
            for m in &msgs {
                e.encode(m, &mut wire);
            }
            let mut d = Decoder::new();
            set.unsplit(wire);
            let got = decode_all(&mut d, &set).unwrap();
            prop_assert_eq!(&got[1..], &msgs[..]);
        }
    }
}
