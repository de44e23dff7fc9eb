//! The server side of one RTMP connection, sans-IO: bytes in, [`Output`]s out.
//!
//! [`ServerSession::handle_input`] runs the handshake, then decodes chunks into messages and
//! answers the NetConnection/NetStream commands a publisher sends (connect, releaseStream,
//! FCPublish, createStream, publish, FCUnpublish, deleteStream, closeStream).
//!
//! Invariants:
//! - Outputs are in wire order; every `Send` must be written before the next output is acted on.
//! - After a [`Output::PublishRequest`] no more input is parsed until the application answers
//!   with [`ServerSession::accept_publish`] or [`ServerSession::reject_publish`]; then call
//!   `handle_input(&[])` to process what was buffered meanwhile. So media sent right after
//!   `publish` is neither lost nor forwarded before the decision.
//! - Media is forwarded only while a publish is accepted; before, it is dropped.
//! - After a rejection the session wants the connection closed ([`ServerSession::wants_close`])
//!   and ignores further input.
//! - A malformed command or data message drops that message; only chunk-level errors (which
//!   desynchronise the stream) and command-sequence violations fail the session.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::amf0::{self, Value};
use super::chunk::{kind, Decoder, Encoder, Message};
use super::handshake::{Handshake, Step};
use super::{Error, Refusal};
use crate::events::Code;
use crate::media::flv::{Tag, TagKind};

/// Input held while a publish decision is pending (the pump does not read then, so this is
/// one read's worth at most); more means a broken caller.
pub const MAX_PENDING_INPUT: usize = 1024 * 1024;
/// Window Acknowledgement Size we announce (and ack by, until the peer announces its own):
/// the common 2.5 MB of FMS, nginx-rtmp and OBS.
pub const WINDOW_ACK_SIZE: u32 = 2_500_000;
/// Chunk size we send with: 4 KiB like ffmpeg/OBS, so replies need few chunks.
pub const SERVER_CHUNK_SIZE: u32 = 4096;
/// Most `createStream`s per connection: a publisher needs one; each costs a few bytes of
/// state, so the cap only stops a loop from growing it.
pub const MAX_STREAMS: usize = 8;

const CSID_CONTROL: u32 = 2;
const CSID_COMMAND: u32 = 3;
const CSID_STATUS: u32 = 5;

/// What the session asks of its caller, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the peer.
    Send(Bytes),
    /// The peer wants to publish `stream` (as sent, possibly with `?key=..`) in `app` (as
    /// sent in connect, trailing `/` removed);
    /// answer with `accept_publish` or `reject_publish`.
    PublishRequest { app: String, stream: String },
    /// A media or script tag of the accepted publish.
    Media(Tag),
    /// The accepted publish ended (FCUnpublish, deleteStream or closeStream).
    Unpublished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Publish {
    Idle,
    Pending { stream_id: u32, name: String },
    Live { stream_id: u32, name: String },
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct ServerSession {
    input: BytesMut,
    /// Encoded replies not yet handed out as `Output::Send`.
    wire: BytesMut,
    handshake: Handshake,
    decoder: Decoder,
    encoder: Encoder,
    app: Option<String>,
    streams: Vec<u32>,
    next_stream_id: u32,
    publish: Publish,
    closing: bool,
    received: u64,
    acked: u64,
    ack_window: u32,
}

impl Default for ServerSession {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerSession {
    /// A session awaiting the client's handshake.
    pub fn new() -> Self {
        Self {
            input: BytesMut::new(),
            wire: BytesMut::new(),
            handshake: Handshake::new(),
            decoder: Decoder::new(),
            encoder: Encoder::new(),
            app: None,
            streams: Vec::new(),
            next_stream_id: 1,
            publish: Publish::Idle,
            closing: false,
            received: 0,
            acked: 0,
            ack_window: WINDOW_ACK_SIZE,
        }
    }

    /// True once the handshake has completed.
    pub fn handshake_done(&self) -> bool {
        self.handshake.is_done()
    }

    /// True while a publish is accepted and not yet ended.
    pub fn is_publishing(&self) -> bool {
        matches!(self.publish, Publish::Live { .. })
    }

    /// True after a rejection: flush the outputs, then close the connection.
    pub fn wants_close(&self) -> bool {
        self.closing
    }

    /// Feeds bytes received from the peer; returns what to do, in order.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<Vec<Output>, Error> {
        let mut out = Vec::new();
        if self.closing {
            return Ok(out);
        }
        self.received = self.received.saturating_add(bytes.len() as u64);
        self.input.extend_from_slice(bytes);
        while !self.handshake.is_done() {
            match self.handshake.advance(&self.input)? {
                None => break,
                Some(Step::Reply { consumed, reply }) => {
                    self.input.advance(consumed);
                    self.wire.extend_from_slice(&reply);
                }
                Some(Step::Done { consumed }) => self.input.advance(consumed),
            }
        }
        while self.handshake.is_done() && !self.closing && !self.pending() {
            let Some(msg) = self.decoder.decode(&mut self.input)? else {
                break;
            };
            self.on_message(msg, &mut out)?;
        }
        if self.input.len() > MAX_PENDING_INPUT {
            return Err(Error::InputOverflow);
        }
        if self.received - self.acked >= u64::from(self.ack_window) {
            self.acked = self.received;
            // The sequence number is the byte count modulo 2^32.
            let seq = (self.received & u64::from(u32::MAX)) as u32;
            self.control(kind::ACKNOWLEDGEMENT, &seq.to_be_bytes());
        }
        self.flush(&mut out);
        Ok(out)
    }

    /// Accepts the pending publish: StreamBegin and `NetStream.Publish.Start`.
    pub fn accept_publish(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if let Publish::Pending { stream_id, name } =
            std::mem::replace(&mut self.publish, Publish::Idle)
        {
            let mut begin = BytesMut::new();
            begin.put_u16(0); // StreamBegin
            begin.put_u32(stream_id);
            self.control(kind::USER_CONTROL, &begin);
            let description = format!("{name} is now published.");
            self.on_status(
                stream_id,
                "status",
                Code::PublishStart.as_str(),
                &description,
            );
            self.publish = Publish::Live { stream_id, name };
        }
        self.flush(&mut out);
        out
    }

    /// Refuses the pending publish with an error onStatus; the connection should then close.
    pub fn reject_publish(&mut self, refusal: &Refusal) -> Vec<Output> {
        let mut out = Vec::new();
        let stream_id = match std::mem::replace(&mut self.publish, Publish::Idle) {
            Publish::Pending { stream_id, .. } | Publish::Live { stream_id, .. } => stream_id,
            Publish::Idle => 0,
        };
        self.on_status(
            stream_id,
            "error",
            refusal.code.as_str(),
            &refusal.description,
        );
        self.closing = true;
        self.flush(&mut out);
        out
    }

    fn pending(&self) -> bool {
        matches!(self.publish, Publish::Pending { .. })
    }

    fn flush(&mut self, out: &mut Vec<Output>) {
        if !self.wire.is_empty() {
            out.push(Output::Send(self.wire.split().freeze()));
        }
    }

    /// Pushes a non-`Send` output after any replies encoded before it.
    fn emit(&mut self, out: &mut Vec<Output>, o: Output) {
        self.flush(out);
        out.push(o);
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Bytes) {
        let msg = Message {
            csid,
            timestamp: 0,
            type_id,
            stream_id,
            payload,
        };
        self.encoder.encode(&msg, &mut self.wire);
    }

    fn control(&mut self, type_id: u8, payload: &[u8]) {
        self.send(CSID_CONTROL, type_id, 0, Bytes::copy_from_slice(payload));
    }

    fn command(&mut self, stream_id: u32, values: &[Value]) {
        let csid = if stream_id == 0 {
            CSID_COMMAND
        } else {
            CSID_STATUS
        };
        self.send(
            csid,
            kind::AMF0_COMMAND,
            stream_id,
            amf0::encode_all(values).freeze(),
        );
    }

    fn on_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let info = Value::Object(vec![
            ("level".into(), Value::String(level.into())),
            ("code".into(), Value::String(code.into())),
            ("description".into(), Value::String(description.into())),
        ]);
        self.command(
            stream_id,
            &[
                Value::String("onStatus".into()),
                Value::Number(0.0),
                Value::Null,
                info,
            ],
        );
    }

    fn result(&mut self, txn: f64, object: Value, info: Value) {
        self.command(
            0,
            &[
                Value::String("_result".into()),
                Value::Number(txn),
                object,
                info,
            ],
        );
    }

    fn error(&mut self, txn: f64, description: &str) {
        let info = Value::Object(vec![
            ("level".into(), Value::String("error".into())),
            (
                "code".into(),
                Value::String(Code::CallFailed.as_str().into()),
            ),
            ("description".into(), Value::String(description.into())),
        ]);
        self.command(
            0,
            &[
                Value::String("_error".into()),
                Value::Number(txn),
                Value::Null,
                info,
            ],
        );
    }

    fn on_message(&mut self, msg: Message, out: &mut Vec<Output>) -> Result<(), Error> {
        match msg.type_id {
            kind::WINDOW_ACK_SIZE => {
                if let Some(size) = be_u32(&msg.payload).filter(|&s| s > 0) {
                    self.ack_window = size;
                }
            }
            // PingRequest (6) carries a timestamp to echo in a PingResponse (7).
            kind::USER_CONTROL if msg.payload.get(..2) == Some(&[0, 6]) => {
                if let Some(ts) = msg.payload.get(2..6) {
                    self.control(kind::USER_CONTROL, &[&[0, 7], ts].concat());
                }
            }
            kind::AUDIO => self.media(out, TagKind::Audio, msg.timestamp, msg.payload),
            kind::VIDEO => self.media(out, TagKind::Video, msg.timestamp, msg.payload),
            kind::AMF0_DATA => self.data(out, msg.timestamp, msg.payload),
            kind::AMF3_DATA => self.data(out, msg.timestamp, skip_amf3_switch(msg.payload)),
            kind::AMF0_COMMAND => self.on_command(out, msg.stream_id, &msg.payload)?,
            kind::AMF3_COMMAND => {
                self.on_command(out, msg.stream_id, &skip_amf3_switch(msg.payload))?
            }
            kind::AGGREGATE => self.aggregate(out, msg.timestamp, msg.payload),
            // Set Chunk Size and Abort were applied by the decoder; Acknowledgement and Set
            // Peer Bandwidth need nothing from an ingest server.
            _ => {}
        }
        Ok(())
    }

    fn media(&mut self, out: &mut Vec<Output>, kind: TagKind, timestamp_ms: u32, body: Bytes) {
        // An empty body is not a tag a remuxer can use.
        if self.is_publishing() && !body.is_empty() {
            let tag = Tag {
                kind,
                timestamp_ms,
                body,
            };
            self.emit(out, Output::Media(tag));
        }
    }

    /// Script data: `@setDataFrame` is removed so the body reads `"onMetaData", {..}` as in
    /// an FLV file; `@clearDataFrame` and undecodable names are dropped.
    fn data(&mut self, out: &mut Vec<Output>, timestamp_ms: u32, body: Bytes) {
        let body = match amf0::decode_first(&body) {
            Ok((Value::String(name), rest)) if name == "@setDataFrame" => {
                body.slice(body.len().saturating_sub(rest.len())..)
            }
            Ok((Value::String(name), _)) if name != "@clearDataFrame" => body,
            _ => return,
        };
        self.media(out, TagKind::Script, timestamp_ms, body);
    }

    /// Aggregate messages hold FLV tags (11-byte header, body, 4-byte back pointer) whose
    /// timestamps are relative to the first one's, rebased on the message's.
    fn aggregate(&mut self, out: &mut Vec<Output>, timestamp_ms: u32, mut payload: Bytes) {
        let mut first_ts = None;
        while let Some(h) = payload.get(..11) {
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
            let type_id = h[0];
            // 11-byte header, body, 4-byte back pointer; size < 2^24 so this cannot overflow.
            let (body_end, next) = (11 + size, 11 + size + 4);
            if body_end > payload.len() {
                return;
            }
            let body = payload.slice(11..body_end);
            let base = *first_ts.get_or_insert(ts);
            let ts = timestamp_ms.wrapping_add(ts.wrapping_sub(base));
            match type_id {
                kind::AUDIO => self.media(out, TagKind::Audio, ts, body),
                kind::VIDEO => self.media(out, TagKind::Video, ts, body),
                kind::AMF0_DATA => self.data(out, ts, body),
                _ => {}
            }
            payload = payload.slice(next.min(payload.len())..);
        }
    }

    fn on_command(
        &mut self,
        out: &mut Vec<Output>,
        stream_id: u32,
        body: &[u8],
    ) -> Result<(), Error> {
        let mut values = amf0::decode_lenient(body).into_iter();
        let Some(Value::String(name)) = values.next() else {
            return Ok(());
        };
        let txn = values.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
        let object = values.next().unwrap_or(Value::Null);
        let args: Vec<Value> = values.collect();
        let arg_str = |i: usize| {
            args.get(i)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match name.as_str() {
            "connect" => self.connect(txn, &object),
            "releaseStream" => self.result(txn, Value::Null, Value::Undefined),
            "FCPublish" => {
                let info = Value::Object(vec![
                    (
                        "code".into(),
                        Value::String(Code::PublishStart.as_str().into()),
                    ),
                    ("description".into(), Value::String(arg_str(0))),
                ]);
                self.command(
                    0,
                    &[
                        Value::String("onFCPublish".into()),
                        Value::Number(0.0),
                        Value::Null,
                        info,
                    ],
                );
            }
            "createStream" => {
                if self.streams.len() >= MAX_STREAMS {
                    self.error(txn, "too many streams");
                } else {
                    let id = self.next_stream_id;
                    self.next_stream_id = id.saturating_add(1);
                    self.streams.push(id);
                    self.result(txn, Value::Null, Value::Number(id.into()));
                }
            }
            "publish" => self.publish(out, stream_id, arg_str(0))?,
            "FCUnpublish" | "closeStream" => self.unpublish(out),
            "deleteStream" => {
                let id = args
                    .first()
                    .and_then(Value::as_f64)
                    .map_or(stream_id, |n| n as u32);
                self.streams.retain(|&s| s != id);
                self.unpublish(out);
            }
            _ if txn != 0.0 => self.error(txn, "unsupported command"),
            _ => {}
        }
        Ok(())
    }

    fn connect(&mut self, txn: f64, object: &Value) {
        if self.app.is_some() {
            self.error(txn, "already connected");
            return;
        }
        let app = object
            .get("app")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.app = Some(app.trim_end_matches('/').to_owned());
        self.control(kind::WINDOW_ACK_SIZE, &WINDOW_ACK_SIZE.to_be_bytes());
        let mut bandwidth = WINDOW_ACK_SIZE.to_be_bytes().to_vec();
        bandwidth.push(2); // dynamic limit
        self.control(kind::SET_PEER_BANDWIDTH, &bandwidth);
        self.control(kind::SET_CHUNK_SIZE, &SERVER_CHUNK_SIZE.to_be_bytes());
        self.encoder.set_chunk_size(SERVER_CHUNK_SIZE);
        let props = Value::Object(vec![
            ("fmsVer".into(), Value::String("FMS/3,0,1,123".into())),
            ("capabilities".into(), Value::Number(31.0)),
        ]);
        let info = Value::Object(vec![
            ("level".into(), Value::String("status".into())),
            (
                "code".into(),
                Value::String(Code::ConnectSuccess.as_str().into()),
            ),
            (
                "description".into(),
                Value::String("Connection succeeded.".into()),
            ),
            ("objectEncoding".into(), Value::Number(0.0)),
        ]);
        self.result(txn, props, info);
    }

    fn publish(
        &mut self,
        out: &mut Vec<Output>,
        stream_id: u32,
        name: String,
    ) -> Result<(), Error> {
        let Some(app) = self.app.clone() else {
            return Err(Error::Protocol("publish before connect"));
        };
        if self.publish != Publish::Idle {
            let code = Code::PublishBadName.as_str();
            self.on_status(
                stream_id,
                "error",
                code,
                "already publishing on this connection",
            );
            return Ok(());
        }
        self.publish = Publish::Pending {
            stream_id,
            name: name.clone(),
        };
        self.emit(out, Output::PublishRequest { app, stream: name });
        Ok(())
    }

    fn unpublish(&mut self, out: &mut Vec<Output>) {
        if let Publish::Live { stream_id, name } =
            std::mem::replace(&mut self.publish, Publish::Idle)
        {
            self.emit(out, Output::Unpublished);
            let description = format!("{name} is now unpublished.");
            self.on_status(
                stream_id,
                "status",
                Code::UnpublishSuccess.as_str(),
                &description,
            );
        }
    }
}

/// AMF3 command/data messages (types 17, 15) start with a 0 format byte before AMF0 values.
fn skip_amf3_switch(payload: Bytes) -> Bytes {
    match payload.first() {
        Some(0) => payload.slice(1..),
        _ => payload,
    }
}

fn be_u32(b: &[u8]) -> Option<u32> {
    b.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests;
