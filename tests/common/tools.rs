//! External programs (ffmpeg, ffprobe, ...): presence checks and runs that never block the
//! runtime.

use std::process::{Command, Stdio};
use std::time::Duration;

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

/// ffmpeg arguments publishing `seconds` of a live test pattern (320x240 H.264 with B-frames,
/// 1 s GOPs, AAC tone) in real time to `url` (`rtmp://` or `rtmps://`).
pub fn ffmpeg_pattern_args<'a>(seconds: &'a str, url: &'a str) -> Vec<&'a str> {
    vec![
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=1000:sample_rate=48000",
        "-t",
        seconds,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-bf",
        "2",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "flv",
        url,
    ]
}
