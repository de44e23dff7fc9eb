//! Headless Chromium through chromedriver for the browser tests: chromedriver on an ephemeral
//! loopback port, in its own process group so that dropping [`Browser`] ends it and the
//! browser it started, whatever state the test is in. Every wait is bounded.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{
    InputSource, KeyAction, KeyActions, MouseActions, PointerAction, MOUSE_BUTTON_LEFT,
};
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long a seek or a start-up may take to show a frame.
pub const PLAY: Duration = Duration::from_secs(30);
/// How long chromedriver may take to listen.
const DRIVER_START: Duration = Duration::from_secs(15);

pub struct Browser {
    pub client: Client,
    /// Where the browser saves downloads (inside its profile directory).
    pub downloads: PathBuf,
    /// chromedriver, until killed and reaped.
    driver: Option<Child>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a `width`x`height` window.
    pub async fn start(width: u32, height: u32) -> Browser {
        Browser::start_with(width, height, &[]).await
    }

    /// [`Browser::start`] with extra Chromium flags (e.g. `--ignore-certificate-errors` for
    /// pages served with the test CA's certificates).
    pub async fn start_with(width: u32, height: u32, extra: &[&str]) -> Browser {
        let mut driver = Command::new("chromedriver")
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let stdout = driver.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let _ = tx.send(rest.trim_end_matches('.').trim().to_owned());
                }
            }
        });
        let port = match rx.recv_timeout(DRIVER_START) {
            Ok(port) => port,
            Err(_) => {
                kill_group(&mut Some(driver));
                panic!("chromedriver did not start listening within {DRIVER_START:?}");
            }
        };
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
            "--mute-audio".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.push("--hide-scrollbars".into());
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads dir");
        let mut opts = json!({ "args": args, "prefs": {
            "download.default_directory": downloads.display().to_string(),
            "download.prompt_for_download": false,
        }});
        if let Some(bin) = which("chromium") {
            opts["binary"] = json!(bin);
        }
        let mut caps = Capabilities::new();
        caps.insert("goog:chromeOptions".into(), opts);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(caps);
        let client = match tokio::time::timeout(
            Duration::from_secs(30),
            builder.connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        {
            Ok(Ok(c)) => c,
            other => {
                kill_group(&mut Some(driver));
                panic!("no WebDriver session: {other:?}");
            }
        };
        Browser {
            client,
            downloads,
            driver: Some(driver),
            _profile: profile,
        }
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn js(&self, script: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(20), self.client.execute(script, vec![]))
            .await
            .expect("script timed out")
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// `window.dvrgate.player.state()` (null before the player has booted).
    pub async fn state(&self) -> Value {
        self.js("return window.dvrgate ? window.dvrgate.player.state() : null")
            .await
    }

    /// Polls the player state until `ok`; panics with the last state after `timeout`.
    pub async fn wait_state(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.state().await;
            if !st.is_null() && ok(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; player state: {st:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn goto(&self, url: &str) {
        tokio::time::timeout(Duration::from_secs(20), self.client.goto(url))
            .await
            .expect("navigation timed out")
            .expect("navigate");
    }

    /// Saves a PNG of the window under `<target dir>/browser-artifacts/` and prints its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = tokio::time::timeout(Duration::from_secs(20), self.client.screenshot())
            .await
            .expect("screenshot timed out")
            .expect("screenshot");
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).expect("artifacts dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
        path
    }

    /// Ends the session (the browser), then chromedriver.
    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        kill_group(&mut self.driver);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills chromedriver's process group (itself and the browser it launched). The group is
/// signalled before chromedriver is reaped, so its id cannot have been reused yet.
fn kill_group(driver: &mut Option<Child>) {
    let Some(mut child) = driver.take() else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `$CARGO_TARGET_DIR/browser-artifacts` (the binary under test lives in `<target>/<profile>/`).
pub fn artifacts_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_dvrgate"));
    bin.parent()
        .and_then(|p| p.parent())
        .map_or_else(std::env::temp_dir, |p| p.to_owned())
        .join("browser-artifacts")
}

// ---- interacting with the player

pub fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

pub fn playing(s: &Value) -> bool {
    s["paused"] == false && s["seeking"] == false && f(&s["readyState"]) >= 3.0
}

/// Asserts that the playhead moves: `min_s` of media time within `within`.
pub async fn advances(b: &Browser, what: &str, min_s: f64, within: Duration) {
    let t0 = f(&b.state().await["currentTime"]);
    b.wait_state(what, within, |s| f(&s["currentTime"]) >= t0 + min_s)
        .await;
}

/// Runs `script` (which sets `video.currentTime` or presses a control) with the player's
/// last seek cleared, and returns the seek's record once its first frame is on screen.
pub async fn timed_seek(b: &Browser, what: &str, script: &str) -> Value {
    b.js(&format!(
        "const p = window.dvrgate.player, v = p.video, ix = p.s.index; p.s.lastSeek = null; {script}"
    ))
    .await;
    let st = b
        .wait_state(what, PLAY, |s| s["lastSeek"].is_object())
        .await;
    st["lastSeek"].clone()
}

/// Segment URLs the page has fetched so far.
pub async fn fetched(b: &Browser) -> HashSet<String> {
    let v = b
        .js("return performance.getEntriesByType('resource').map((e) => e.name)")
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|u| Some(u.as_str()?.rsplit('/').next()?.to_owned()))
        .filter(|u| u.ends_with(".m4s"))
        .collect()
}

/// A real key press (WebDriver input), to whatever has focus.
pub async fn key(b: &Browser, value: char) {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value })
        .then(KeyAction::Up { value });
    b.client.perform_actions(keys).await.unwrap();
}

/// Drags the mouse along the timeline from `from` to `to` (fractions of its width).
pub async fn drag_timeline(b: &Browser, from: f64, to: f64) {
    drag_along(b, "track", from, to).await
}

/// Drags the mouse across element `id` from `from` to `to` (fractions of its width).
pub async fn drag_along(b: &Browser, id: &str, from: f64, to: f64) {
    let track = b.client.find(Locator::Id(id)).await.unwrap();
    let width = f(&b
        .js(&format!(
            "return document.getElementById('{id}').getBoundingClientRect().width"
        ))
        .await);
    let x = |frac: f64| (frac - 0.5) * width;
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: track,
            duration: None,
            x: x(from),
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(200)),
            x: x(to) - x(from),
            y: 0.0,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    b.client.perform_actions(mouse).await.unwrap();
}

pub async fn press(b: &Browser, id: &str) {
    b.client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}
