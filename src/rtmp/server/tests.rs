use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::events::Code;
use crate::media::flv::TagKind;
use crate::rtmp::chunk::{kind, Encoder, Message};
use crate::rtmp::handshake::PACKET_SIZE;
use crate::rtmp::test_util::fixture_tags;
use crate::rtmp::Refusal;
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(10);

/// Records every publish and its tags; refuses while `refuse` is set.
#[derive(Default)]
struct Recorder {
    refuse: AtomicBool,
    requests: Mutex<Vec<(String, String)>>,
    tags: Arc<Mutex<Vec<Tag>>>,
    /// Publishes whose sender has been dropped.
    ended: Arc<AtomicUsize>,
}

impl PublishHandler for Recorder {
    fn publish(
        &self,
        app: &str,
        stream: &str,
        peer: SocketAddr,
    ) -> Result<mpsc::Sender<Tag>, Refusal> {
        assert!(peer.ip().is_loopback());
        self.requests
            .lock()
            .unwrap()
            .push((app.into(), stream.into()));
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Refusal {
                code: Code::PublishBadName,
                description: "stream is already live".into(),
            });
        }
        let (tx, mut rx) = mpsc::channel(16);
        let (tags, ended) = (self.tags.clone(), self.ended.clone());
        tokio::spawn(async move {
            while let Some(tag) = rx.recv().await {
                tags.lock().unwrap().push(tag);
            }
            ended.fetch_add(1, Ordering::SeqCst);
        });
        Ok(tx)
    }
}

struct TestServer {
    addr: SocketAddr,
    handler: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Stopped>,
}

impl TestServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(Recorder::default());
        let limits = Limits {
            handshake_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(2),
            ..Limits::default()
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, handler.clone(), limits, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            handler,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) -> Stopped {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(STEP, self.task)
            .await
            .expect("serve returns")
            .unwrap()
    }

    async fn wait_ended(&self, n: usize) {
        timeout(STEP, async {
            while self.handler.ended.load(Ordering::SeqCst) < n {
                sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("publish ends");
    }
}

/// `None` (with a skip notice) when ffmpeg is missing, except under CI=true.
fn ffmpeg() -> Option<&'static str> {
    let found = std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("ffmpeg");
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "ffmpeg is required under CI"
    );
    eprintln!("skipping: ffmpeg not found");
    None
}

async fn ffmpeg_publish(bin: &str, addr: SocketAddr, name: &str) -> std::process::Output {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/testsrc.flv");
    let child = tokio::process::Command::new(bin)
        .args([
            "-nostdin", "-v", "error", "-i", fixture, "-c", "copy", "-f", "flv",
        ])
        .arg(format!("rtmp://{addr}/live/{name}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("ffmpeg finishes")
        .unwrap()
}

#[tokio::test]
async fn ffmpeg_publishes_fixture() {
    let Some(bin) = ffmpeg() else { return };
    let server = TestServer::start().await;
    let out = ffmpeg_publish(bin, server.addr, "test?key=k").await;
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_ended(1).await;

    assert_eq!(
        *server.handler.requests.lock().unwrap(),
        vec![("live".to_string(), "test?key=k".to_string())]
    );
    let got = server.handler.tags.lock().unwrap().clone();
    let media = |tags: &[Tag]| -> Vec<Tag> {
        tags.iter()
            .filter(|t| t.kind != TagKind::Script)
            .cloned()
            .collect()
    };
    let (got_media, sent_media) = (media(&got), media(&fixture_tags()));
    assert_eq!(got_media.len(), sent_media.len());
    for (g, s) in got_media.iter().zip(&sent_media) {
        assert_eq!(
            (g.kind, g.timestamp_ms, &g.body),
            (s.kind, s.timestamp_ms, &s.body)
        );
    }
    let script = got
        .iter()
        .find(|t| t.kind == TagKind::Script)
        .expect("metadata");
    let (name, _) = crate::rtmp::amf0::decode_first(&script.body).unwrap();
    assert_eq!(name.as_str(), Some("onMetaData"));
    server.shutdown().await;
}

#[tokio::test]
async fn refusal_closes_and_server_accepts_the_next_publisher() {
    let Some(bin) = ffmpeg() else { return };
    let server = TestServer::start().await;
    server.handler.refuse.store(true, Ordering::SeqCst);
    let out = ffmpeg_publish(bin, server.addr, "taken").await;
    assert!(!out.status.success());
    assert!(server.handler.tags.lock().unwrap().is_empty());

    server.handler.refuse.store(false, Ordering::SeqCst);
    let out = ffmpeg_publish(bin, server.addr, "next").await;
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_ended(1).await;
    assert!(!server.handler.tags.lock().unwrap().is_empty());
    assert_eq!(server.handler.requests.lock().unwrap().len(), 2);
    server.shutdown().await;
}

/// Reads until EOF or error; panics if the server keeps the connection open.
async fn expect_closed(socket: &mut TcpStream) {
    let mut buf = [0u8; 8192];
    timeout(STEP, async {
        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
    .expect("server closes the connection");
}

/// Connects and completes the handshake.
async fn handshaken(addr: SocketAddr) -> TcpStream {
    let mut socket = timeout(STEP, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.resize(1 + PACKET_SIZE, 7);
    timeout(STEP, socket.write_all(&c0c1))
        .await
        .unwrap()
        .unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * PACKET_SIZE];
    timeout(STEP, socket.read_exact(&mut s0s1s2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s0s1s2[0], 3);
    assert_eq!(&s0s1s2[1 + PACKET_SIZE..], &c0c1[1..]);
    timeout(STEP, socket.write_all(&[0; PACKET_SIZE]))
        .await
        .unwrap()
        .unwrap();
    socket
}

#[tokio::test]
async fn hostile_clients_are_dropped_and_others_served() {
    let server = TestServer::start().await;

    let mut garbage = timeout(STEP, TcpStream::connect(server.addr))
        .await
        .unwrap()
        .unwrap();
    timeout(
        STEP,
        garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await
    .unwrap()
    .unwrap();
    expect_closed(&mut garbage).await;

    // stalls mid-handshake: closed at the handshake timeout
    let mut truncated = timeout(STEP, TcpStream::connect(server.addr))
        .await
        .unwrap()
        .unwrap();
    timeout(STEP, truncated.write_all(&[3; 100]))
        .await
        .unwrap()
        .unwrap();
    expect_closed(&mut truncated).await;

    let mut oversized = handshaken(server.addr).await;
    let mut wire = BytesMut::new();
    let set_chunk_size = Message {
        csid: 2,
        timestamp: 0,
        type_id: kind::SET_CHUNK_SIZE,
        stream_id: 0,
        payload: (1u32 << 30).to_be_bytes().to_vec().into(),
    };
    Encoder::new().encode(&set_chunk_size, &mut wire);
    timeout(STEP, oversized.write_all(&wire))
        .await
        .unwrap()
        .unwrap();
    expect_closed(&mut oversized).await;

    // silent after the handshake: closed at the idle timeout
    let mut idle = handshaken(server.addr).await;
    expect_closed(&mut idle).await;

    let _fine = handshaken(server.addr).await;
    assert!(server.handler.requests.lock().unwrap().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections() {
    let server = TestServer::start().await;
    let mut open = handshaken(server.addr).await;
    // Two more that end before the shutdown: not counted as closed by it.
    for _ in 0..2 {
        let gone = handshaken(server.addr).await;
        drop(gone);
    }
    // Let the server see them end (the next accept reaps them).
    sleep(Duration::from_millis(200)).await;
    let addr = server.addr;
    let started = Instant::now();
    let stopped = server.shutdown().await;
    assert_eq!(
        stopped,
        Stopped {
            closed: 1,
            aborted: 0
        }
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    expect_closed(&mut open).await;
    assert!(timeout(STEP, TcpStream::connect(addr))
        .await
        .unwrap()
        .is_err());
}

/// An RTMPS server (self-signed certificate) with the test limits; its address and stopper.
async fn start_rtmps() -> (SocketAddr, oneshot::Sender<()>, tokio_rustls::TlsConnector) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        handshake_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_on(
        listener,
        Transport::Tls(tokio_rustls::TlsAcceptor::from(Arc::new(server))),
        Arc::new(Recorder::default()),
        limits,
        async {
            let _ = stopped.await;
        },
    ));
    (
        addr,
        stop,
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

#[tokio::test]
async fn rtmps_handshakes_over_tls_and_a_stalled_tls_handshake_is_dropped() {
    let (addr, _stop, connector) = start_rtmps().await;
    // Connects and never sends a ClientHello: closed at the handshake timeout.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    expect_closed(&mut stalled).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    // Garbage instead of TLS: closed.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[3u8; 1537]).await.unwrap();
    expect_closed(&mut garbage).await;
    // A real TLS client gets the RTMP handshake answered inside TLS.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = timeout(STEP, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.resize(1 + PACKET_SIZE, 7);
    tls.write_all(&c0c1).await.unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * PACKET_SIZE];
    timeout(STEP, tls.read_exact(&mut s0s1s2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s0s1s2[0], 3);
    assert_eq!(&s0s1s2[1 + PACKET_SIZE..], &c0c1[1..]);
}
