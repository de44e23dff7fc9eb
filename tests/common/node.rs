//! Test nodes: in-process (`dvrgate::node::start` on a runtime of its own) or a real
//! `dvrgate serve` process, on ephemeral loopback ports; relays and proxies of them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a node may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// RTMPS ingest (`rtmp.tls_listen`), when on.
    pub rtmps: Option<SocketAddr>,
    /// `https` when the node serves TLS, else `http`.
    pub scheme: &'static str,
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
                            let _ = tx.send(Ok((
                                handle.http_addr,
                                handle.rtmp_addr,
                                handle.rtmps_addr,
                                handle.tls.is_some(),
                            )));
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
        let (http, rtmp, rtmps, tls) = match rx.recv_timeout(START_TIMEOUT) {
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
            rtmps,
            scheme: if tls { "https" } else { "http" },
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
            rtmps: field("rtmps"),
            scheme: if line.contains("scheme=\"https\"") || line.contains("scheme=https") {
                "https"
            } else {
                "http"
            },
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

    /// The process id of a process node.
    pub fn pid(&self) -> Option<u32> {
        match &self.running {
            Running::Process(c) => Some(c.id()),
            _ => None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.http)
    }

    /// The node's base URL, as an upstream of a relay.
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.http)
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

/// The config of a test node: `extra`, with every listener on 127.0.0.1 and an ephemeral port
/// unless `extra` sets it (a `[http]` or `[rtmp]` section without `listen` gets one, so no test
/// node ever binds the default `0.0.0.0` ports).
fn base_config(dir: &Path, extra: &str) -> String {
    let has = |section: &str| extra.contains(&format!("[{section}]"));
    let mut extra = extra.to_owned();
    for section in ["http", "rtmp"] {
        let header = format!("[{section}]\n");
        if let Some(at) = extra.find(&header) {
            let body_start = at + header.len();
            let body_end = extra[body_start..]
                .find("\n[")
                .map_or(extra.len(), |i| body_start + i + 1);
            if !extra[body_start..body_end].contains("listen") {
                extra.insert_str(body_start, "listen = \"127.0.0.1:0\"\n");
            }
        }
    }
    let mut c = if has("node") {
        format!("{extra}\n")
    } else {
        format!("[node]\nname = \"test-node\"\n\n{extra}\n")
    };
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
            } else if l.starts_with("tls_listen = \"127.0.0.1:") {
                "tls_listen = \"127.0.0.1:0\"".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
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
