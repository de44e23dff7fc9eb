//! `record.min_free` on a small real volume (a tmpfs mount): a full recordings volume trims the
//! oldest segments and live recording goes on; a volume full of other files ends the publish
//! with `NetStream.Record.NoAccess`, keeps serving, and records again once space is back.
//!
//! Mounting needs root. Where it is refused the tests print why and pass, except under
//! `CI=true`, where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

/// A tmpfs mounted on a temp dir; unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts `size_mib` MiB, or `None` (after printing why) when mounting is refused.
    fn mount(size_mib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(!ci(), "mounting a tmpfs is required when CI=true: {why}");
                eprintln!("SKIP: cannot mount a tmpfs (needs root): {why}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        dvrgate::store::space::free_space(self.path())
            .expect("statvfs")
            .expect("statvfs supported")
            .free
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process that did not exit yet): detach it now, freed when idle.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn node_on(volume: &Path, min_free: &str) -> TestNode {
    let rec: PathBuf = volume.join("rec");
    let min_free = min_free.to_owned();
    TestNode::start_with(move |_| format!("[record]\ndir = {rec:?}\nmin_free = {min_free:?}\n"))
}

/// Fetches every segment `index.json` lists; asserts 200 and the listed length. Returns the
/// listed segments.
async fn check_all_served(node: &TestNode, name: &str) -> Vec<serde_json::Value> {
    let segs = segments(node, name).await;
    segment_bytes(node, name, &segs).await;
    segs
}

/// Files in a stream's segments folder: exactly the listed segments, no temp files.
fn check_files_match(volume: &Path, name: &str, listed: &[serde_json::Value]) {
    let dir = volume.join("rec").join(name).join("segments");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut want: Vec<String> = listed
        .iter()
        .map(|s| format!("{}.m4s", s["seq"].as_u64().unwrap()))
        .collect();
    want.sort();
    assert_eq!(files, want, "files on disk of {name} = its index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_volume_trims_oldest_and_keeps_recording() {
    const VOLUME_MIB: u64 = 16;
    let Some(volume) = Tmpfs::mount(VOLUME_MIB) else {
        return;
    };
    let node = node_on(volume.path(), "4MiB");
    let events = Events::subscribe(&node, "/events").await;
    // An older, ended recording: the oldest segments of the volume.
    publish_and_end(&node, "old").await;
    let old_segments = check_all_served(&node, "old").await.len();
    assert!(old_segments >= 3, "{old_segments}");

    // Sample free space in the background while publishing.
    let lowest = Arc::new(Mutex::new(u64::MAX));
    let sampler = {
        let lowest = lowest.clone();
        let path = volume.path().to_owned();
        tokio::spawn(async move {
            loop {
                if let Ok(Some(s)) = dvrgate::store::space::free_space(&path) {
                    let mut l = lowest.lock().unwrap();
                    *l = (*l).min(s.free);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let tags = read_flv(CLIP);
    let clip_bytes: u64 = tags.iter().map(|t| t.body.len() as u64).sum();
    let mut p = Publisher::connect(node.rtmp.unwrap(), "live", "cam")
        .await
        .expect("publish");
    // Faster than real time, until three volumes' worth has been sent (bounded in time).
    let started = Instant::now();
    let mut sent = 0u64;
    let mut round = 0u32;
    while sent < 3 * VOLUME_MIB * MIB {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "publishing took too long (sent {sent} bytes)"
        );
        p.send_all(&tags, round * 10_000, false)
            .await
            .unwrap_or_else(|e| panic!("publisher cut off after {sent} bytes: {e}"));
        sent += clip_bytes;
        round += 1;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    // The recorder may still be behind the publisher: wait until trimming reached the live stream.
    let trimmed_cam = events
        .wait_for(
            "NetStream.Record.Trimmed",
            Some("cam"),
            Duration::from_secs(60),
        )
        .await;
    let status = get_json(&node.url("/streams/cam")).await;
    assert_eq!(status["live"], true, "publisher still connected: {status}");
    p.close().await;
    wait_ended(&node, "cam").await;
    sampler.abort();

    assert!(
        events.with_code("NetStream.Record.NoAccess").is_empty(),
        "no NoAccess: {:?}",
        events.with_code("NetStream.Record.NoAccess")
    );
    let trims = events.with_code("NetStream.Record.Trimmed");
    assert_eq!(
        trims[0]["stream"], "old",
        "the oldest segments (of the ended stream) go first: {:?}",
        trims[0]
    );
    assert_eq!(trims[0]["first_seq"], 0);
    for t in &trims {
        assert_eq!(t["level"], "warning");
        assert!(t["first_seq"].as_u64().unwrap() <= t["last_seq"].as_u64().unwrap());
        assert!(t["bytes"].as_u64().unwrap() > 0);
    }
    assert!(trimmed_cam["last_seq"].is_u64());
    let trimmed_bytes: u64 = trims.iter().map(|t| t["bytes"].as_u64().unwrap()).sum();

    // Everything listed is there, with the listed length, and nothing else is on disk.
    let cam = check_all_served(&node, "cam").await;
    assert!(!cam.is_empty());
    check_files_match(volume.path(), "cam", &cam);
    let old = check_all_served(&node, "old").await;
    check_files_match(volume.path(), "old", &old);
    let seqs: Vec<u64> = cam.iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "whole segments, oldest first: what is left is contiguous"
    );
    assert!(seqs[0] > 0, "the oldest segments of cam went too");
    assert_eq!(
        metric(&node, "dvrgate_record_errors_total").await,
        0.0,
        "no record errors"
    );

    let lowest = *lowest.lock().unwrap();
    eprintln!(
        "sent {:.1} MiB in {publish_secs:.1} s; {} Trimmed events, {:.1} MiB trimmed; \
         lowest free space seen {:.2} MiB (min_free 4 MiB); free now {:.2} MiB",
        sent as f64 / MIB as f64,
        trims.len(),
        trimmed_bytes as f64 / MIB as f64,
        lowest as f64 / MIB as f64,
        volume.free() as f64 / MIB as f64
    );
    // The reserve holds up to what the check cannot see (index compaction's temp copy).
    assert!(
        lowest >= 4 * MIB - 256 * 1024,
        "free space fell to {lowest} bytes"
    );
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_full_of_other_files_ends_publish_then_records_again() {
    let Some(volume) = Tmpfs::mount(16) else {
        return;
    };
    let node = node_on(volume.path(), "4MiB");
    let events = Events::subscribe(&node, "/events").await;
    publish_and_end(&node, "old").await;
    let before = check_all_served(&node, "old").await;
    assert!(!before.is_empty());

    // Other files take the volume down to 2 MiB free: deleting every recorded segment
    // (well under 2 MiB) would not bring back the 4 MiB reserve.
    let dummy = volume.path().join("other-files.bin");
    let fill = volume.free() - 2 * MIB;
    std::fs::write(&dummy, vec![0u8; fill as usize]).expect("fill the volume");

    let tags = read_flv(CLIP);
    let mut p = Publisher::connect(node.rtmp.unwrap(), "live", "cam")
        .await
        .expect("the publish is accepted; recording fails on the first write");
    // The first write (the init segment) fails: the publish is ended, so the connection closes
    // under the publisher (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    let cut_off = loop {
        assert!(Instant::now() < deadline, "publisher never cut off");
        if let Err(e) = p.send_all(&tags, round * 10_000, false).await {
            break e;
        }
        round += 1;
    };
    let no_access = events
        .wait_for(
            "NetStream.Record.NoAccess",
            Some("cam"),
            Duration::from_secs(10),
        )
        .await;
    let why = no_access["description"].as_str().unwrap().to_owned();
    assert!(why.contains("min_free"), "NoAccess says why: {why}");
    eprintln!("publisher cut off: {cut_off}; NoAccess: {why}");
    wait_ended(&node, "cam").await;
    assert!(
        events.with_code("NetStream.Record.Trimmed").is_empty(),
        "nothing deleted when deleting could not help"
    );
    // Still serving everything recorded.
    let after = check_all_served(&node, "old").await;
    assert_eq!(after, before, "the recording is untouched");
    check_files_match(volume.path(), "old", &after);
    assert_eq!(get_json(&node.url("/healthz")).await["status"], "ok");

    // Space is back: the same name publishes and records again.
    std::fs::remove_file(&dummy).unwrap();
    publish_and_end(&node, "cam").await;
    events
        .wait_for(
            "NetStream.Record.Start",
            Some("cam"),
            Duration::from_secs(10),
        )
        .await;
    let cam = check_all_served(&node, "cam").await;
    assert!(cam.len() >= 3, "recorded again: {} segments", cam.len());
    check_files_match(volume.path(), "cam", &cam);
    drop(node);
}

/// Fills the volume until a write fails (every page taken).
fn fill_completely(volume: &Tmpfs, name: &str) -> PathBuf {
    use std::io::Write;
    let path = volume.path().join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
    path
}

#[test]
fn enospc_leaves_no_partial_segment_and_no_torn_index_line() {
    use dvrgate::store::writer::{write_atomic, LineFile};
    use dvrgate::store::StreamIndex;
    let Some(volume) = Tmpfs::mount(1) else {
        return;
    };
    let dir = volume.path().join("cam/segments");
    std::fs::create_dir_all(&dir).unwrap();
    let index = volume.path().join("cam/index.jsonl");
    let mut lines = LineFile::open(&index).unwrap();
    let first = r#"{"t":"drop","before":7}"#.to_owned();
    lines.append(std::slice::from_ref(&first)).unwrap();
    let before = std::fs::read(&index).unwrap();

    let dummy = fill_completely(&volume, "other-files.bin");
    // A segment write fails: no file under the segment's name, no temp file.
    let seg = dir.join("7.m4s");
    let e = write_atomic(&seg, &vec![1u8; 64 * 1024]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert!(!seg.exists(), "no partial segment");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no temp file");
    // An index append that only partly fits (the file's last page has room for part of it)
    // is cut back: the file keeps exactly its complete lines.
    let long = format!(
        r#"{{"t":"drop","before":8,"pad":"{}"}}"#,
        "x".repeat(10_000)
    );
    lines.append(&[long]).unwrap_err();
    assert_eq!(std::fs::read(&index).unwrap(), before, "no torn line");

    // Space back: appends go on, and every line parses.
    std::fs::remove_file(&dummy).unwrap();
    let next = r#"{"t":"drop","before":9}"#.to_owned();
    lines.append(std::slice::from_ref(&next)).unwrap();
    let text = std::fs::read(&index).unwrap();
    let (ix, valid) = StreamIndex::from_jsonl(&text);
    assert_eq!(valid, text.len(), "no torn tail");
    assert_eq!(ix.next_seq, 9);
    write_atomic(&seg, &vec![1u8; 64 * 1024]).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 64 * 1024);
}
