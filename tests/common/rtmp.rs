//! The fixture and an RTMP test publisher built on rml_rtmp's client session (an
//! implementation independent of ours); FLV reading independent of dvrgate's parser.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The fixture clip (10 s H.264 + AAC).
pub const CLIP: &[u8] = include_bytes!("../fixtures/testsrc.flv");

/// One FLV tag of the fixture.
#[derive(Debug, Clone)]
pub struct FlvTag {
    pub kind: u8,
    pub timestamp_ms: u32,
    pub body: Bytes,
}

/// Reads an FLV file (independent of dvrgate's parser).
pub fn read_flv(data: &[u8]) -> Vec<FlvTag> {
    assert_eq!(&data[..3], b"FLV");
    let mut pos = u32::from_be_bytes(data[5..9].try_into().unwrap()) as usize + 4;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let kind = data[pos] & 0x1f;
        let size = u32::from_be_bytes([0, data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([data[pos + 7], data[pos + 4], data[pos + 5], data[pos + 6]]);
        let body = Bytes::copy_from_slice(&data[pos + 11..pos + 11 + size]);
        tags.push(FlvTag {
            kind,
            timestamp_ms: ts,
            body,
        });
        pos += 11 + size + 4;
    }
    tags
}

/// An RTMP publisher built on rml_rtmp's client session.
pub struct Publisher {
    socket: TcpStream,
    session: ClientSession,
    pending: Vec<u8>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl Publisher {
    /// Connects to `app` and publishes `stream_key`. Err carries what the server said or did.
    pub async fn connect(
        addr: SocketAddr,
        app: &str,
        stream_key: &str,
    ) -> Result<Publisher, String> {
        tokio::time::timeout(IO_TIMEOUT, Self::connect_inner(addr, app, stream_key))
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    async fn connect_inner(
        addr: SocketAddr,
        app: &str,
        stream_key: &str,
    ) -> Result<Publisher, String> {
        let mut socket = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        socket.set_nodelay(true).ok();
        let mut hs = Handshake::new(PeerType::Client);
        let p0p1 = hs
            .generate_outbound_p0_and_p1()
            .map_err(|e| format!("{e:?}"))?;
        socket.write_all(&p0p1).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 8192];
        let remaining = loop {
            let n = socket.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed during handshake".into());
            }
            match hs
                .process_bytes(&buf[..n])
                .map_err(|e| format!("handshake: {e:?}"))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    socket
                        .write_all(&response_bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket
                        .write_all(&response_bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                    break remaining_bytes;
                }
            }
        };
        let (session, results) =
            ClientSession::new(ClientSessionConfig::new()).map_err(|e| format!("{e:?}"))?;
        let mut p = Publisher {
            socket,
            session,
            pending: remaining,
        };
        p.send_results(results).await?;
        let r = p
            .session
            .request_connection(app.to_owned())
            .map_err(|e| format!("{e:?}"))?;
        p.send_results(vec![r]).await?;
        p.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
            .await?;
        let r = p
            .session
            .request_publishing(stream_key.to_owned(), PublishRequestType::Live)
            .map_err(|e| format!("{e:?}"))?;
        p.send_results(vec![r]).await?;
        p.wait_for(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
            .await?;
        Ok(p)
    }

    async fn send_results(
        &mut self,
        results: Vec<ClientSessionResult>,
    ) -> Result<Vec<ClientSessionEvent>, String> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.socket
                        .write_all(&packet.bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                ClientSessionResult::RaisedEvent(e) => events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(events)
    }

    async fn wait_for(&mut self, done: impl Fn(&ClientSessionEvent) -> bool) -> Result<(), String> {
        let mut buf = vec![0u8; 65536];
        let mut seen = Vec::new();
        loop {
            let input = if self.pending.is_empty() {
                let n = self
                    .socket
                    .read(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err(format!("server closed the connection; events: {seen:?}"));
                }
                buf[..n].to_vec()
            } else {
                std::mem::take(&mut self.pending)
            };
            let results = self
                .session
                .handle_input(&input)
                .map_err(|e| format!("{e:?}"))?;
            for e in self.send_results(results).await? {
                if done(&e) {
                    return Ok(());
                }
                seen.push(format!("{e:?}"));
            }
        }
    }

    /// Sends one FLV tag (audio or video; metadata is skipped).
    pub async fn send(&mut self, tag: &FlvTag) -> Result<(), String> {
        let ts = RtmpTimestamp::new(tag.timestamp_ms);
        let r = match tag.kind {
            8 => self.session.publish_audio_data(tag.body.clone(), ts, false),
            9 => self.session.publish_video_data(tag.body.clone(), ts, false),
            _ => return Ok(()),
        }
        .map_err(|e| format!("{e:?}"))?;
        tokio::time::timeout(IO_TIMEOUT, self.send_results(vec![r]))
            .await
            .map_err(|_| "send timed out".to_owned())??;
        Ok(())
    }

    /// Sends every tag, with timestamps shifted by `offset_ms`; paced in real time when `realtime`.
    pub async fn send_all(
        &mut self,
        tags: &[FlvTag],
        offset_ms: u32,
        realtime: bool,
    ) -> Result<(), String> {
        let start = tokio::time::Instant::now();
        for t in tags {
            if realtime {
                tokio::time::sleep_until(start + Duration::from_millis(u64::from(t.timestamp_ms)))
                    .await;
            }
            self.send(&FlvTag {
                timestamp_ms: t.timestamp_ms + offset_ms,
                ..t.clone()
            })
            .await?;
        }
        Ok(())
    }

    /// Unpublishes and closes.
    pub async fn close(mut self) {
        if let Ok(r) = self.session.stop_publishing() {
            let _ = self.send_results(r).await;
        }
        let _ = self.socket.shutdown().await;
    }
}
