use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rml_rtmp::handshake::{Handshake as RmlHandshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

use super::*;
use crate::rtmp::handshake::PACKET_SIZE;
use crate::rtmp::test_util::fixture_tags;

fn s(x: &str) -> Value {
    Value::String(x.into())
}

/// A hand-driven client: encodes its messages, decodes the server's replies.
struct Client {
    enc: Encoder,
    dec: Decoder,
    server: ServerSession,
    wire: BytesMut,
}

impl Client {
    fn handshaken() -> Self {
        let mut server = ServerSession::new();
        let mut c0c1 = vec![3u8];
        c0c1.extend((0..PACKET_SIZE).map(|i| i as u8));
        let out = server.handle_input(&c0c1).unwrap();
        assert!(matches!(&out[..], [Output::Send(b)] if b.len() == 1 + 2 * PACKET_SIZE));
        assert!(!server.handshake_done());
        assert_eq!(server.handle_input(&[0; PACKET_SIZE]).unwrap(), vec![]);
        assert!(server.handshake_done());
        Self {
            enc: Encoder::new(),
            dec: Decoder::new(),
            server,
            wire: BytesMut::new(),
        }
    }

    fn encode(
        &mut self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: Bytes,
    ) -> Bytes {
        let mut b = BytesMut::new();
        let msg = Message {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload,
        };
        self.enc.encode(&msg, &mut b);
        b.freeze()
    }

    fn command_bytes(&mut self, stream_id: u32, values: &[Value]) -> Bytes {
        let payload = amf0::encode_all(values).freeze();
        self.encode(3, 0, kind::AMF0_COMMAND, stream_id, payload)
    }

    fn command(&mut self, stream_id: u32, values: &[Value]) -> Vec<Output> {
        let bytes = self.command_bytes(stream_id, values);
        self.server.handle_input(&bytes).unwrap()
    }

    /// Server messages found in the `Send` outputs.
    fn replies(&mut self, outputs: &[Output]) -> Vec<Message> {
        for o in outputs {
            if let Output::Send(b) = o {
                self.wire.extend_from_slice(b);
            }
        }
        let mut msgs = Vec::new();
        while let Some(m) = self.dec.decode(&mut self.wire).unwrap() {
            msgs.push(m);
        }
        msgs
    }

    fn commands(&mut self, outputs: &[Output]) -> Vec<Vec<Value>> {
        self.replies(outputs)
            .into_iter()
            .filter(|m| m.type_id == kind::AMF0_COMMAND)
            .map(|m| amf0::decode_all(&m.payload).unwrap())
            .collect()
    }

    /// connect + createStream + publish; returns the PublishRequest outputs.
    fn up_to_publish(&mut self, name: &str) -> Vec<Output> {
        let connect = Value::Object(vec![
            ("app".into(), s("live/")),
            ("tcUrl".into(), s("rtmp://h/live")),
        ]);
        let out = self.command(0, &[s("connect"), Value::Number(1.0), connect]);
        let msgs = self.replies(&out);
        let types: Vec<u8> = msgs.iter().map(|m| m.type_id).collect();
        assert_eq!(
            types,
            [
                kind::WINDOW_ACK_SIZE,
                kind::SET_PEER_BANDWIDTH,
                kind::SET_CHUNK_SIZE,
                kind::AMF0_COMMAND
            ]
        );
        let result = amf0::decode_all(&msgs[3].payload).unwrap();
        assert_eq!(result[0], s("_result"));
        assert_eq!(result[1], Value::Number(1.0));
        assert_eq!(result[2].get("fmsVer"), Some(&s("FMS/3,0,1,123")));
        assert_eq!(
            result[3].get("code"),
            Some(&s("NetConnection.Connect.Success"))
        );
        assert_eq!(self.dec.chunk_size(), SERVER_CHUNK_SIZE);

        let out = self.command(
            0,
            &[s("releaseStream"), Value::Number(2.0), Value::Null, s(name)],
        );
        assert_eq!(self.commands(&out)[0][0], s("_result"));
        let out = self.command(
            0,
            &[s("FCPublish"), Value::Number(3.0), Value::Null, s(name)],
        );
        assert_eq!(self.commands(&out)[0][0], s("onFCPublish"));
        let out = self.command(0, &[s("createStream"), Value::Number(4.0), Value::Null]);
        assert_eq!(
            self.commands(&out),
            vec![vec![
                s("_result"),
                Value::Number(4.0),
                Value::Null,
                Value::Number(1.0)
            ]]
        );
        let out = self.command(
            1,
            &[
                s("publish"),
                Value::Number(5.0),
                Value::Null,
                s(name),
                s("live"),
            ],
        );
        assert_eq!(
            out,
            vec![Output::PublishRequest {
                app: "live".into(),
                stream: name.into()
            }]
        );
        out
    }

    fn video(&mut self, ts: u32, body: &[u8]) -> Bytes {
        self.encode(6, ts, kind::VIDEO, 1, Bytes::copy_from_slice(body))
    }
}

fn media(outputs: &[Output]) -> Vec<Tag> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Media(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn publish_accept_media_unpublish() {
    let mut c = Client::handshaken();
    let early = c.video(0, b"\x17early");
    assert_eq!(c.server.handle_input(&early).unwrap(), vec![]);
    c.up_to_publish("cam1?key=k");

    let out = c.server.accept_publish();
    let msgs = c.replies(&out);
    assert_eq!(msgs[0].type_id, kind::USER_CONTROL);
    assert_eq!(&msgs[0].payload[..], &[0, 0, 0, 0, 0, 1]);
    let status = amf0::decode_all(&msgs[1].payload).unwrap();
    assert_eq!(msgs[1].stream_id, 1);
    assert_eq!(status[0], s("onStatus"));
    assert_eq!(status[3].get("code"), Some(&s("NetStream.Publish.Start")));
    assert_eq!(status[3].get("level"), Some(&s("status")));
    assert!(c.server.is_publishing());

    let meta = amf0::encode_all(&[
        s("@setDataFrame"),
        s("onMetaData"),
        Value::EcmaArray(vec![("width".into(), Value::Number(640.0))]),
    ]);
    let data = c.encode(4, 0, kind::AMF0_DATA, 1, meta.freeze());
    let video = c.video(40, b"\x17\x01frame");
    let audio = c.encode(4, 23, kind::AUDIO, 1, Bytes::from_static(b"\xaf\x01aac"));
    let mut input = data.to_vec();
    input.extend_from_slice(&video);
    input.extend_from_slice(&audio);
    let tags = media(&c.server.handle_input(&input).unwrap());
    let expected_meta = amf0::encode_all(&[
        s("onMetaData"),
        Value::EcmaArray(vec![("width".into(), Value::Number(640.0))]),
    ]);
    assert_eq!(
        tags,
        vec![
            Tag {
                kind: TagKind::Script,
                timestamp_ms: 0,
                body: expected_meta.freeze()
            },
            Tag {
                kind: TagKind::Video,
                timestamp_ms: 40,
                body: Bytes::from_static(b"\x17\x01frame")
            },
            Tag {
                kind: TagKind::Audio,
                timestamp_ms: 23,
                body: Bytes::from_static(b"\xaf\x01aac")
            },
        ]
    );

    let out = c.command(
        0,
        &[
            s("FCUnpublish"),
            Value::Number(6.0),
            Value::Null,
            s("cam1?key=k"),
        ],
    );
    assert_eq!(out.first(), Some(&Output::Unpublished));
    let status = c.commands(&out);
    assert_eq!(
        status[0][3].get("code"),
        Some(&s("NetStream.Unpublish.Success"))
    );
    let out = c.command(
        0,
        &[
            s("deleteStream"),
            Value::Number(0.0),
            Value::Null,
            Value::Number(1.0),
        ],
    );
    assert!(!out.contains(&Output::Unpublished));
    // media after unpublish is dropped
    let video = c.video(80, b"\x27late");
    assert_eq!(media(&c.server.handle_input(&video).unwrap()), vec![]);
}

#[test]
fn media_pipelined_after_publish_waits_for_the_answer() {
    let mut c = Client::handshaken();
    let connect = Value::Object(vec![("app".into(), s("live"))]);
    c.command(0, &[s("connect"), Value::Number(1.0), connect]);
    c.command(0, &[s("createStream"), Value::Number(2.0), Value::Null]);
    let mut input = c
        .command_bytes(1, &[s("publish"), Value::Number(0.0), Value::Null, s("x")])
        .to_vec();
    input.extend_from_slice(&c.video(0, b"\x17a"));
    input.extend_from_slice(&c.video(33, b"\x27b"));
    let out = c.server.handle_input(&input).unwrap();
    assert!(matches!(out.last(), Some(Output::PublishRequest { .. })));
    assert!(media(&out).is_empty());
    // input while undecided is buffered, not parsed
    assert_eq!(c.server.handle_input(&[]).unwrap(), vec![]);
    c.server.accept_publish();
    let tags = media(&c.server.handle_input(&[]).unwrap());
    assert_eq!(
        tags.iter().map(|t| t.timestamp_ms).collect::<Vec<_>>(),
        [0, 33]
    );
}

#[test]
fn reject_sends_error_status_and_closes() {
    let mut c = Client::handshaken();
    c.up_to_publish("bad name");
    let refusal = Refusal {
        code: Code::PublishBadName,
        description: "invalid stream name".into(),
    };
    let out = c.server.reject_publish(&refusal);
    let status = c.commands(&out);
    assert_eq!(status[0][0], s("onStatus"));
    assert_eq!(status[0][3].get("level"), Some(&s("error")));
    assert_eq!(
        status[0][3].get("code"),
        Some(&s("NetStream.Publish.BadName"))
    );
    assert_eq!(
        status[0][3].get("description"),
        Some(&s("invalid stream name"))
    );
    assert!(c.server.wants_close());
    let video = c.video(0, b"\x17");
    assert_eq!(c.server.handle_input(&video).unwrap(), vec![]);
}

#[test]
fn amf3_command_ping_unknown_command_and_acks() {
    let mut c = Client::handshaken();
    // connect as an AMF3 command message: a 0 byte, then AMF0
    let mut payload = vec![0u8];
    payload.extend_from_slice(&amf0::encode_all(&[
        s("connect"),
        Value::Number(1.0),
        Value::Object(vec![
            ("app".into(), s("live")),
            ("objectEncoding".into(), Value::Number(3.0)),
        ]),
    ]));
    let bytes = c.encode(3, 0, kind::AMF3_COMMAND, 0, payload.into());
    let out = c.server.handle_input(&bytes).unwrap();
    assert_eq!(c.commands(&out)[0][0], s("_result"));

    let out = c.command(0, &[s("getStreamLength"), Value::Number(7.0), Value::Null]);
    let err = c.commands(&out);
    assert_eq!(err[0][0], s("_error"));
    assert_eq!(err[0][1], Value::Number(7.0));
    assert_eq!(
        c.command(0, &[s("someNotification"), Value::Number(0.0)]),
        vec![]
    );

    let ping = c.encode(
        2,
        0,
        kind::USER_CONTROL,
        0,
        Bytes::from_static(&[0, 6, 0, 0, 1, 2]),
    );
    let out = c.server.handle_input(&ping).unwrap();
    let msgs = c.replies(&out);
    assert_eq!(&msgs[0].payload[..], &[0, 7, 0, 0, 1, 2]);

    // peer asks for an ack every 1000 bytes
    let was = c.encode(
        2,
        0,
        kind::WINDOW_ACK_SIZE,
        0,
        Bytes::from_static(&[0, 0, 0x03, 0xe8]),
    );
    c.server.handle_input(&was).unwrap();
    let filler = c.encode(4, 0, kind::AUDIO, 1, Bytes::from(vec![0; 1200]));
    let out = c.server.handle_input(&filler).unwrap();
    let acks: Vec<Message> = c
        .replies(&out)
        .into_iter()
        .filter(|m| m.type_id == kind::ACKNOWLEDGEMENT)
        .collect();
    assert_eq!(acks.len(), 1);
}

#[test]
fn stream_cap_and_publish_before_connect() {
    let mut c2 = Client::handshaken();
    let bytes = c2.command_bytes(1, &[s("publish"), Value::Number(0.0), Value::Null, s("x")]);
    assert!(matches!(
        c2.server.handle_input(&bytes),
        Err(Error::Protocol(_))
    ));

    let mut c = Client::handshaken();
    c.command(
        0,
        &[s("connect"), Value::Number(1.0), Value::Object(vec![])],
    );
    for i in 0..MAX_STREAMS + 1 {
        let out = c.command(
            0,
            &[
                s("createStream"),
                Value::Number(2.0 + i as f64),
                Value::Null,
            ],
        );
        let expect = if i < MAX_STREAMS { "_result" } else { "_error" };
        assert_eq!(c.commands(&out)[0][0], s(expect));
    }
}

#[test]
fn aggregate_messages_are_unpacked() {
    let mut c = Client::handshaken();
    c.up_to_publish("agg");
    c.server.accept_publish();
    let mut agg = Vec::new();
    for (ty, ts, body) in [(9u8, 1000u32, &b"\x17v"[..]), (8, 1010, b"\xafa")] {
        agg.push(ty);
        agg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        agg.extend_from_slice(&ts.to_be_bytes()[1..]);
        agg.push((ts >> 24) as u8);
        agg.extend_from_slice(&[0, 0, 0]);
        agg.extend_from_slice(body);
        agg.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
    }
    let bytes = c.encode(4, 500, kind::AGGREGATE, 1, agg.into());
    let tags = media(&c.server.handle_input(&bytes).unwrap());
    assert_eq!(tags.len(), 2);
    assert_eq!((tags[0].kind, tags[0].timestamp_ms), (TagKind::Video, 500));
    assert_eq!((tags[1].kind, tags[1].timestamp_ms), (TagKind::Audio, 510));
}

/// Drives rml_rtmp's client against our server entirely in memory.
struct Pair {
    client: ClientSession,
    server: ServerSession,
    events: Vec<ClientSessionEvent>,
    requests: Vec<(String, String)>,
    tags: Vec<Tag>,
    unpublished: usize,
    /// Every byte the client sent, handshake included.
    sent: Vec<u8>,
}

impl Pair {
    fn deliver_to_server(&mut self, bytes: &[u8]) {
        self.sent.extend_from_slice(bytes);
        let mut outputs = self.server.handle_input(bytes).unwrap();
        loop {
            let mut answered = false;
            for o in outputs {
                match o {
                    Output::Send(b) => self.deliver_to_client(&b),
                    Output::PublishRequest { app, stream } => {
                        self.requests.push((app, stream));
                        answered = true;
                        for o in self.server.accept_publish() {
                            if let Output::Send(b) = o {
                                self.deliver_to_client(&b);
                            }
                        }
                    }
                    Output::Media(tag) => self.tags.push(tag),
                    Output::Unpublished => self.unpublished += 1,
                }
            }
            if !answered {
                break;
            }
            outputs = self.server.handle_input(&[]).unwrap();
        }
    }

    fn deliver_to_client(&mut self, bytes: &[u8]) {
        for r in self.client.handle_input(bytes).unwrap() {
            self.on_client(r);
        }
    }

    fn on_client(&mut self, r: ClientSessionResult) {
        match r {
            ClientSessionResult::OutboundResponse(p) => self.deliver_to_server(&p.bytes),
            ClientSessionResult::RaisedEvent(e) => self.events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
}

/// The byte stream an rml_rtmp client sends for a whole publish of the fixture (after the
/// handshake), and what our server made of it.
fn rml_publish(tags: &[Tag]) -> Pair {
    let mut hs = RmlHandshake::new(PeerType::Client);
    let c0c1 = hs.generate_outbound_p0_and_p1().unwrap();
    let mut server = ServerSession::new();
    let out = server.handle_input(&c0c1).unwrap();
    let [Output::Send(s0s1s2)] = &out[..] else {
        panic!("expected S0S1S2, got {out:?}");
    };
    let HandshakeProcessResult::Completed {
        response_bytes: c2,
        remaining_bytes,
    } = hs.process_bytes(s0s1s2).unwrap()
    else {
        panic!("rml handshake did not complete");
    };
    assert!(remaining_bytes.is_empty());
    assert_eq!(server.handle_input(&c2).unwrap(), vec![]);
    assert!(server.handshake_done());

    let (client, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let mut pair = Pair {
        client,
        server,
        events: Vec::new(),
        requests: Vec::new(),
        tags: Vec::new(),
        unpublished: 0,
        sent: [c0c1, c2].concat(),
    };
    let r = pair.client.request_connection("live".into()).unwrap();
    pair.on_client(r);
    assert!(pair
        .events
        .contains(&ClientSessionEvent::ConnectionRequestAccepted));
    let r = pair
        .client
        .request_publishing("test".into(), PublishRequestType::Live)
        .unwrap();
    pair.on_client(r);
    assert!(pair
        .events
        .contains(&ClientSessionEvent::PublishRequestAccepted));
    assert_eq!(
        pair.requests,
        vec![("live".to_string(), "test".to_string())]
    );

    for tag in tags {
        let ts = RtmpTimestamp::new(tag.timestamp_ms);
        let r = match tag.kind {
            TagKind::Video => pair.client.publish_video_data(tag.body.clone(), ts, false),
            TagKind::Audio => pair.client.publish_audio_data(tag.body.clone(), ts, false),
            TagKind::Script => {
                let mut meta = StreamMetadata::new();
                meta.video_width = Some(640);
                meta.encoder = Some("test".into());
                pair.client.publish_metadata(&meta)
            }
        };
        pair.on_client(r.unwrap());
    }
    for r in pair.client.stop_publishing().unwrap() {
        pair.on_client(r);
    }
    pair
}

#[test]
fn rml_client_publishes_fixture() {
    let tags = fixture_tags();
    assert!(tags.len() > 500);
    let pair = rml_publish(&tags);
    assert_eq!(pair.tags.len(), tags.len());
    for (got, sent) in pair.tags.iter().zip(&tags) {
        assert_eq!(got.kind, sent.kind);
        if sent.kind == TagKind::Script {
            let values = amf0::decode_all(&got.body).unwrap();
            assert_eq!(values[0], s("onMetaData"));
            assert_eq!(values[1].get("width"), Some(&Value::Number(640.0)));
            assert_eq!(values[1].get("encoder"), Some(&s("test")));
        } else {
            assert_eq!(got, sent);
        }
    }
    assert_eq!(pair.unpublished, 1);
}

/// Everything an rml_rtmp client sends for a short publish, handshake included.
fn recorded_client_bytes() -> Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES
        .get_or_init(|| {
            let tags: Vec<Tag> = fixture_tags().into_iter().take(40).collect();
            rml_publish(&tags).sent
        })
        .clone()
}

fn feed_all(data: &[u8], cut: usize) {
    let mut server = ServerSession::new();
    let cut = cut.min(data.len());
    for part in [&data[..cut], &data[cut..]] {
        match server.handle_input(part) {
            Ok(outputs) => {
                if outputs
                    .iter()
                    .any(|o| matches!(o, Output::PublishRequest { .. }))
                {
                    server.accept_publish();
                    if server.handle_input(&[]).is_err() {
                        return;
                    }
                }
            }
            Err(_) => return,
        }
    }
}

proptest! {
    #[test]
    fn does_not_panic_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..5000), cut in 0usize..5000) {
        feed_all(&data, cut);
        // and after a valid handshake
        let mut input = vec![3u8];
        input.extend(std::iter::repeat_n(0u8, 2 * PACKET_SIZE));
        input.extend_from_slice(&data);
        feed_all(&input, cut + 2 * PACKET_SIZE);
    }

    #[test]
    fn does_not_panic_on_mutated_session(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in 0usize..20_000,
    ) {
        let mut data = recorded_client_bytes();
        for (at, byte) in flips {
            let i = at.index(data.len());
            data[i] = byte;
        }
        feed_all(&data, cut);
    }
}
