//! Test harness: nodes on ephemeral loopback ports (in-process, or the real `dvrgate` binary
//! where a test needs a process), an RTMP test publisher
//! (rml_rtmp's client session, an implementation independent of ours), FLV fixture reading and
//! small HTTP helpers. Every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod fake_upstream;

/// The fixture clip (10 s H.264 + AAC).
pub const CLIP: &[u8] = include_bytes!("../fixtures/testsrc.flv");

/// How long a node may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// True when running under CI, where missing external tools are failures, not skips.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether an external program is available; under CI its absence fails the test.
pub fn have(program: &str) -> bool {
    let ok = Command::new(program)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(!ci(), "{program} is required when CI=true");
        eprintln!("SKIP: {program} not found; install it to run this test");
    }
    ok
}

/// The binary under test (only integration tests get it from cargo; examples do not start nodes).
fn binary() -> &'static str {
    #[cfg(test)]
    return env!("CARGO_BIN_EXE_dvrgate");
    #[cfg(not(test))]
    panic!("only integration tests start nodes")
}

/// How a test node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `dvrgate::node::start` on its own runtime and thread in the test process: the default.
    InProcess,
    /// A real `dvrgate serve` process: for tests that `kill -9` it, send it signals or restart it.
    Process,
}

/// How long an in-process node may take to shut down (the node's own flush timeout is 15 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A node started with `dvrgate::node::start` on a runtime of its own (two workers, on threads
/// of its own), so that a test that blocks its own thread never starves the node and a node can
/// be stopped from `Drop`.
struct InProcess {
    shutdown: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl InProcess {
    /// Cancels the shutdown token and joins the node's thread (bounded by `STOP_TIMEOUT`).
    fn stop(&mut self) -> Result<(), String> {
        self.shutdown.cancel();
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !thread.is_finished() {
            if Instant::now() > deadline {
                return Err(format!("did not shut down within {STOP_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        thread
            .join()
            .unwrap_or_else(|_| Err("node thread panicked".to_owned()))
    }
}

enum Running {
    Process(Child),
    InProcess(InProcess),
    Stopped,
}

/// A running node, in-process (the default) or a `dvrgate serve` process.
pub struct TestNode {
    running: Running,
    pub http: SocketAddr,
    pub rtmp: Option<SocketAddr>,
    /// Data folder (recordings under `rec/`).
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
    config: String,
}

impl TestNode {
    /// An in-process origin on ephemeral loopback ports.
    pub fn origin() -> TestNode {
        TestNode::start_with(|_| String::new())
    }

    /// Starts an in-process node whose config is the base config plus `extra(dir)` (it may add
    /// sections, e.g. `[rtmp]\npublish_key=..`; a section it names replaces the base one).
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> TestNode {
        TestNode::start_on(Backend::InProcess, extra)
    }

    /// An origin as a `dvrgate serve` process.
    pub fn process_origin() -> TestNode {
        TestNode::process_with(|_| String::new())
    }

    /// Starts a `dvrgate serve` process with the base config plus `extra(dir)`.
    pub fn process_with(extra: impl FnOnce(&Path) -> String) -> TestNode {
        TestNode::start_on(Backend::Process, extra)
    }

    /// Starts a node on `backend` with the base config plus `extra(dir)`.
    pub fn start_on(backend: Backend, extra: impl FnOnce(&Path) -> String) -> TestNode {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let config = base_config(&dir, &extra(&dir));
        let mut node = match backend {
            Backend::InProcess => TestNode::run_in_process(&dir, config),
            Backend::Process => TestNode::spawn(&dir, config),
        };
        node._tmp = Some(tmp);
        node
    }

    /// Parses `config` (the TOML text a process would read) and starts it in this process.
    fn run_in_process(dir: &Path, config: String) -> TestNode {
        let parsed = dvrgate::config::Config::parse(&config)
            .unwrap_or_else(|e| panic!("test config: {e}\n{config}"));
        let log = Arc::new(Mutex::new(String::new()));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (token, sink) = (shutdown.clone(), log.clone());
        let thread = std::thread::Builder::new()
            .name("test-node".into())
            .spawn(move || {
                // Each node logs into its own buffer: a dispatcher per thread of its runtime,
                // no global subscriber.
                let dispatch = log_dispatch(sink);
                let _guard = tracing::dispatcher::set_default(&dispatch);
                let workers = dispatch.clone();
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("test-node-worker")
                    .enable_all()
                    .on_thread_start(move || {
                        // The runtime's threads live as long as the runtime: keep it set.
                        std::mem::forget(tracing::dispatcher::set_default(&workers));
                    })
                    .build()
                    .map_err(|e| format!("runtime: {e}"))?;
                let result = runtime.block_on(async move {
                    let started = async {
                        let listeners = dvrgate::node::Listeners::bind(&parsed).await?;
                        dvrgate::node::start(parsed, listeners, token).await
                    };
                    match started.await {
                        Ok(handle) => {
                            let _ = tx.send(Ok((handle.http_addr, handle.rtmp_addr)));
                            handle.join().await.map_err(|e| format!("{e:#}"))
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("{e:#}")));
                            Err(format!("{e:#}"))
                        }
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(5));
                result
            })
            .expect("node thread");
        let (http, rtmp) = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => panic!("node did not start: {e}; log:\n{}", log.lock().unwrap()),
            Err(_) => panic!("node did not start; log:\n{}", log.lock().unwrap()),
        };
        TestNode {
            running: Running::InProcess(InProcess {
                shutdown,
                thread: Some(thread),
            }),
            http,
            rtmp,
            dir: dir.to_owned(),
            _tmp: None,
            log,
            config,
        }
    }

    fn spawn(dir: &Path, config: String) -> TestNode {
        let path = dir.join("dvrgate.toml");
        std::fs::write(&path, &config).expect("write config");
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dvrgate");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("node started") {
                    let _ = tx.send(line.clone());
                }
                append_log(&log2, line.as_bytes());
                append_log(&log2, b"\n");
            }
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("dvrgate did not start; log:\n{}", log.lock().unwrap());
            }
        };
        let field = |name: &str| -> Option<SocketAddr> {
            let start = line.find(&format!("{name}="))? + name.len() + 1;
            line[start..].split_whitespace().next()?.parse().ok()
        };
        TestNode {
            running: Running::Process(child),
            http: field("http").expect("http address in the start line"),
            rtmp: field("rtmp"),
            dir: dir.to_owned(),
            _tmp: None,
            log,
            config,
        }
    }

    /// Starts the binary again on the same data folder and config (new ports). Process only.
    pub fn restart(&mut self) {
        assert!(
            matches!(self.running, Running::Process(_) | Running::Stopped),
            "restart is for process nodes (TestNode::process_with)"
        );
        self.stop_hard();
        let tmp = self._tmp.take();
        let config = rebind(&self.config);
        let mut node = TestNode::spawn(&self.dir, config);
        node._tmp = tmp;
        *self = node;
    }

    /// `kill -9`. Process only: an in-process node cannot die like that.
    pub fn stop_hard(&mut self) {
        match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::Process(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Running::InProcess(_) => {
                panic!("kill -9 of an in-process node: start it with TestNode::process_with")
            }
            Running::Stopped => {}
        }
    }

    /// Graceful shutdown of an in-process node (cancels its token, joins it); panics when it
    /// fails or takes longer than `STOP_TIMEOUT`.
    pub fn stop(&mut self) {
        match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::InProcess(mut n) => n
                .stop()
                .unwrap_or_else(|e| panic!("node stop: {e}; log:\n{}", self.log())),
            Running::Process(_) => panic!("stop of a process node: use terminate or stop_hard"),
            Running::Stopped => {}
        }
    }

    /// SIGTERM; returns the exit code (bounded wait). Process only.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::Process(c) => c,
            Running::InProcess(_) => panic!("SIGTERM to an in-process node"),
            Running::Stopped => return None,
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        panic!("dvrgate did not exit within 20 s of SIGTERM");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The node's base URL, as an upstream of a relay.
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn rtmp_url(&self, stream: &str) -> String {
        format!("rtmp://{}/live/{stream}", self.rtmp.expect("rtmp enabled"))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn recordings(&self) -> PathBuf {
        self.dir.join("rec")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let stopped = match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::Process(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
                Ok(())
            }
            Running::InProcess(mut n) => n.stop(),
            Running::Stopped => Ok(()),
        };
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last log lines of node {} ---", self.http);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        } else if let Err(e) = stopped {
            panic!("node {}: {e}; log:\n{}", self.http, self.log());
        }
    }
}

/// Appends to a node's log, up to 4 MiB.
fn append_log(log: &Mutex<String>, bytes: &[u8]) {
    let mut l = log.lock().unwrap();
    if l.len() < 4 << 20 {
        l.push_str(&String::from_utf8_lossy(bytes));
    }
}

/// A tracing dispatcher writing `info` and above, without colours, into `log`.
fn log_dispatch(log: Arc<Mutex<String>>) -> tracing::Dispatch {
    struct Sink(Arc<Mutex<String>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            append_log(&self.0, buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(move || Sink(log.clone()))
        .finish();
    tracing::Dispatch::new(subscriber)
}

fn base_config(dir: &Path, extra: &str) -> String {
    let has = |section: &str| extra.contains(&format!("[{section}]"));
    let mut c = format!("[node]\nname = \"test-node\"\n\n{extra}\n");
    if !has("http") {
        c.push_str("[http]\nlisten = \"127.0.0.1:0\"\n");
    }
    if !has("rtmp") {
        c.push_str("[rtmp]\nlisten = \"127.0.0.1:0\"\n");
    }
    if !has("record") {
        c.push_str(&format!("[record]\ndir = {:?}\n", dir.join("rec")));
    }
    c
}

/// Replaces fixed ports with ephemeral ones (for restarts).
fn rebind(config: &str) -> String {
    config
        .lines()
        .map(|l| {
            if l.starts_with("listen = \"127.0.0.1:") {
                "listen = \"127.0.0.1:0\"".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

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

/// A shared HTTP client with a bounded timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// GET the whole body; panics unless the status is 200.
pub async fn get_bytes(url: &str) -> Bytes {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.bytes().await.unwrap()
}

/// GET the body as text; panics unless the status is 2xx.
pub async fn get_text(url: &str) -> String {
    let r = http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "GET {url}: {status} {text}");
    text
}

/// GET and parse JSON; panics with the body on a non-2xx status.
pub async fn get_json(url: &str) -> serde_json::Value {
    let text = get_text(url).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
}

/// Polls `f` until it returns Some, at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends raw bytes over TCP and returns what came back before close or `timeout`.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    out
}

/// Decodes an init segment with mp4-atom: `ftyp` then `moov`, nothing else.
pub fn decode_init(init: &[u8]) -> (mp4_atom::Ftyp, mp4_atom::Moov) {
    use mp4_atom::Decode;
    let mut buf = init;
    let ftyp = mp4_atom::Ftyp::decode(&mut buf).expect("ftyp");
    let moov = mp4_atom::Moov::decode(&mut buf).expect("moov");
    assert!(buf.is_empty(), "init = ftyp + moov");
    (ftyp, moov)
}

/// Decodes a media segment with mp4-atom: `moof` then `mdat`, nothing else.
pub fn decode_segment(seg: &[u8]) -> mp4_atom::Moof {
    use mp4_atom::Decode;
    let mut buf = seg;
    let moof = mp4_atom::Moof::decode(&mut buf).expect("moof");
    let mp4_atom::Any::Mdat(_) = mp4_atom::Any::decode(&mut buf).expect("mdat") else {
        panic!("segment = moof + mdat");
    };
    assert!(buf.is_empty(), "segment = moof + mdat");
    moof
}

/// Sample durations of a track fragment: per sample, else the `tfhd` default.
pub fn sample_durations(traf: &mp4_atom::Traf) -> Vec<u32> {
    traf.trun
        .iter()
        .flat_map(|t| t.samples.iter())
        .map(|e| {
            e.duration
                .or(traf.tfhd.default_sample_duration)
                .expect("sample duration")
        })
        .collect()
}

/// Whether the first sample of a track fragment is a sync sample (its flags: first-sample or
/// per-sample flags, else the `tfhd` default).
pub fn starts_with_sync(traf: &mp4_atom::Traf) -> bool {
    let first = traf.trun.first().and_then(|t| t.samples.iter().next());
    let flags = first
        .and_then(|e| e.flags)
        .or(traf.tfhd.default_sample_flags)
        .unwrap_or(0);
    flags & 0x0001_0000 == 0
}

/// Whether a track fragment carries composition offsets.
pub fn has_cts(traf: &mp4_atom::Traf) -> bool {
    traf.trun
        .iter()
        .any(|t| t.samples.iter().any(|e| e.cts.is_some()))
}

/// The value of an unlabelled metric from the node's `/metrics`.
pub async fn metric(node: &TestNode, name: &str) -> f64 {
    let text = get_text(&node.url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
}

/// How long a stream may take to show as ended, or to list the segments a test waits for.
const STREAM_WAIT: Duration = Duration::from_secs(30);

/// Publishes the fixture once as `name`, unpublishes, and waits until the node says it ended.
pub async fn publish_and_end(node: &TestNode, name: &str) {
    publish_tags_and_end(node, name, &read_flv(CLIP)).await;
}

/// Publishes `tags` as fast as they go as `name`, unpublishes, and waits until the node says
/// the stream ended; returns its status.
pub async fn publish_tags_and_end(
    node: &TestNode,
    name: &str,
    tags: &[FlvTag],
) -> serde_json::Value {
    let mut p = Publisher::connect(node.rtmp.expect("rtmp enabled"), "live", name)
        .await
        .expect("publish accepted");
    p.send_all(tags, 0, false).await.expect("tags sent");
    p.close().await;
    wait_ended(node, name).await
}

/// `rounds` copies of the fixture back to back (timestamps shifted by 10 s a round).
pub fn looped_clip(rounds: u32) -> Vec<FlvTag> {
    let tags = read_flv(CLIP);
    (0..rounds)
        .flat_map(|round| {
            tags.iter().map(move |t| FlvTag {
                timestamp_ms: t.timestamp_ms + round * 10_000,
                ..t.clone()
            })
        })
        .collect()
}

/// Publishes the fixture in real time as `name` in the background (connected when this
/// returns); the task ends with the unpublish, or with the first send error.
pub async fn publish_live(
    node: &TestNode,
    name: &str,
) -> tokio::task::JoinHandle<Result<(), String>> {
    let mut p = Publisher::connect(node.rtmp.expect("rtmp enabled"), "live", name)
        .await
        .expect("publish accepted");
    let tags = read_flv(CLIP);
    tokio::spawn(async move {
        p.send_all(&tags, 0, true).await?;
        p.close().await;
        Ok(())
    })
}

/// Waits until `GET /streams/{name}` says the stream is not live; returns that status.
pub async fn wait_ended(node: &TestNode, name: &str) -> serde_json::Value {
    let url = node.url(&format!("/streams/{name}"));
    eventually(STREAM_WAIT, || async {
        let s = get_json(&url).await;
        (s["live"] == false).then_some(s)
    })
    .await
}

/// `index.json` of a stream (panics unless 2xx).
pub async fn index(node: &TestNode, name: &str) -> serde_json::Value {
    get_json(&node.url(&format!("/streams/{name}/index.json"))).await
}

/// The segments `index.json` of a stream lists.
pub async fn segments(node: &TestNode, name: &str) -> Vec<serde_json::Value> {
    index(node, name).await["segments"]
        .as_array()
        .expect("segments")
        .clone()
}

/// Waits until `index.json` of a stream lists at least `n` segments (errors and unparsable
/// answers count as not yet); returns them.
pub async fn wait_segments(node: &TestNode, name: &str, n: usize) -> Vec<serde_json::Value> {
    let url = node.url(&format!("/streams/{name}/index.json"));
    eventually(STREAM_WAIT, || async {
        let r = http().get(&url).send().await.ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        let segs = v["segments"].as_array()?;
        (segs.len() >= n).then(|| segs.clone())
    })
    .await
}

/// The bytes of each listed segment of a stream (each a 200 of the listed length).
pub async fn segment_bytes(node: &TestNode, name: &str, segs: &[serde_json::Value]) -> Vec<Bytes> {
    let mut out = Vec::new();
    for s in segs {
        let url = node.url(&format!("/streams/{name}/{}", s["url"].as_str().unwrap()));
        let body = get_bytes(&url).await;
        assert_eq!(body.len() as u64, s["length"].as_u64().unwrap(), "{url}");
        out.push(body);
    }
    out
}

/// Every status event of a node (or of one stream), collected in the background from its SSE
/// stream.
#[derive(Clone)]
pub struct Events(Arc<Mutex<Vec<serde_json::Value>>>);

impl Events {
    /// Subscribes to `GET {path}` (`/events` or `/streams/{name}/events`); returns once the
    /// subscription is in place.
    pub async fn subscribe(node: &TestNode, path: &str) -> Events {
        let resp = tokio::time::timeout(Duration::from_secs(10), http().get(node.url(path)).send())
            .await
            .expect("SSE subscribe timed out")
            .expect("SSE subscribe");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let events = Events(Arc::default());
        let sink = events.0.clone();
        tokio::spawn(async move {
            let mut resp = resp;
            let mut buf = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line);
                    if let Some(json) = line.trim_end().strip_prefix("data:") {
                        // Data that is not JSON is kept as a marker for the test to trip on.
                        let v = serde_json::from_str(json.trim())
                            .unwrap_or_else(|_| serde_json::json!({ "unparsable": json }));
                        sink.lock().unwrap().push(v);
                    }
                }
            }
        });
        events
    }

    /// Every event so far, in order.
    pub fn all(&self) -> Vec<serde_json::Value> {
        self.0.lock().unwrap().clone()
    }

    /// The codes of every event so far, in order.
    pub fn codes(&self) -> Vec<String> {
        self.all()
            .iter()
            .map(|e| e["code"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn with_code(&self, code: &str) -> Vec<serde_json::Value> {
        self.all()
            .into_iter()
            .filter(|e| e["code"] == code)
            .collect()
    }

    /// Waits for an event with `code` (about `stream`, when given).
    pub async fn wait_for(
        &self,
        code: &str,
        stream: Option<&str>,
        timeout: Duration,
    ) -> serde_json::Value {
        eventually(timeout, || async {
            self.with_code(code)
                .into_iter()
                .find(|e| stream.is_none_or(|s| e["stream"] == s))
        })
        .await
    }
}

/// Runs an external program (killed if it takes longer than `timeout`) without blocking the
/// runtime.
pub async fn run_tool(program: &str, args: &[&str], timeout: Duration) -> std::process::Output {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(timeout, child)
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} took longer than {timeout:?}"))
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Decodes `input` (a URL or a file) with ffmpeg; Err with what it said unless it decoded
/// without a single message.
pub async fn ffmpeg_decode(input: &str) -> Result<(), String> {
    let out = run_tool(
        "ffmpeg",
        &["-v", "error", "-i", input, "-f", "null", "-"],
        Duration::from_secs(120),
    )
    .await;
    if out.status.success() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// What `ffprobe -v error {args} -of csv=p=0 {input}` prints.
pub async fn ffprobe(args: &[&str], input: &str) -> String {
    let mut all = vec!["-v", "error"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-of", "csv=p=0", input]);
    let out = run_tool("ffprobe", &all, Duration::from_secs(60)).await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The container duration ffprobe reads from `input`, in seconds.
pub async fn probe_duration(input: &str) -> f64 {
    let text = ffprobe(&["-show_entries", "format=duration"], input).await;
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe duration of {input}: {text:?}"))
}

/// An in-process relay (no RTMP) of `upstreams` (base URLs, in order); `relay_extra` is
/// appended inside its `[relay]` section (further sections may follow it).
pub fn relay(upstreams: &[String], relay_extra: &str) -> TestNode {
    relay_on(Backend::InProcess, upstreams, relay_extra)
}

/// [`relay`] on `backend`.
pub fn relay_on(backend: Backend, upstreams: &[String], relay_extra: &str) -> TestNode {
    let list = toml_list(upstreams);
    let extra = relay_extra.to_owned();
    TestNode::start_on(backend, move |_| {
        format!("[rtmp]\nlisten = \"off\"\n\n[relay]\nupstreams = [{list}]\n{extra}\n")
    })
}

/// An in-process relay of one node, on demand.
pub fn relay_of(up: &TestNode) -> TestNode {
    relay(&[up.base()], "")
}

/// An in-process node (no RTMP) proxying `cam` from `upstreams` (in order), with `extra`
/// sections appended.
pub fn proxy_of(upstreams: &[String], extra: &str) -> TestNode {
    let list = toml_list(upstreams);
    let extra = extra.to_owned();
    TestNode::start_with(move |_| {
        format!(
            "[rtmp]\nlisten = \"off\"\n\n[[proxy]]\nlocal = \"cam\"\nremote = \"cam\"\nupstreams = [{list}]\n{extra}\n"
        )
    })
}

/// `"a", "b"`: the inside of a TOML array of strings.
fn toml_list(items: &[String]) -> String {
    items
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
