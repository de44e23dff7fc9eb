//! Crash safety and graceful shutdown: `kill -9` during a publish loses at most the segment
//! being written; SIGTERM finishes the segment being written and exits 0. Real processes: these
//! are the tests that kill, signal and restart the binary.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn kill_9_mid_publish_keeps_every_announced_segment() {
    let mut node = TestNode::process_origin();
    // Real time, so the kill lands mid-segment; errors are expected once the node dies.
    let rtmp_task = publish_live(&node, "cam").await;
    // Wait for a few announced segments, then kill -9 in the middle of the next one.
    wait_segments(&node, "cam", 3).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut before = segments(&node, "cam").await;
    let bytes_before = segment_bytes(&node, "cam", &before).await;
    // LL-HLS part lists of the newest segments are kept in memory only, for a live stream;
    // the segments themselves are what must survive.
    for s in &mut before {
        if let Some(o) = s.as_object_mut() {
            o.remove("parts");
        }
    }
    node.stop_hard();
    rtmp_task.abort();

    node.restart();
    let after = segments(&node, "cam").await;
    assert!(
        after.len() >= before.len(),
        "announced segments survive: {} -> {}",
        before.len(),
        after.len()
    );
    assert_eq!(
        after[..before.len()],
        before[..],
        "index unchanged for announced segments"
    );
    let bytes_after = segment_bytes(&node, "cam", &before).await;
    assert_eq!(bytes_before, bytes_after, "segment bytes intact");
    let status = get_json(&node.url("/streams/cam")).await;
    assert_eq!(status["live"], false);
    // No temp files or unindexed segments left behind.
    for e in std::fs::read_dir(node.recordings().join("cam/segments")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with(".m4s"), "stray file {name}");
    }
    if have("ffmpeg") {
        if let Err(e) = ffmpeg_decode(&node.url("/streams/cam/index.m3u8")).await {
            panic!("decodes cleanly: {e}");
        }
    }
    // Publishing again continues the recording.
    publish_and_end(&node, "cam").await;
    let next = wait_segments(&node, "cam", after.len() + 1).await;
    // The segment being written at the kill had announced LL-HLS parts (a CDN may hold them
    // by name), so its seq is never used again: numbering continues after it.
    assert_eq!(
        next[after.len()]["seq"],
        after.last().unwrap()["seq"].as_u64().unwrap() + 2,
        "seq continues past the lost segment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_last_segment_and_exits_0() {
    let mut node = TestNode::process_origin();
    let tags = read_flv(CLIP);
    let mut p = Publisher::connect(node.rtmp.unwrap(), "live", "cam")
        .await
        .expect("publish");
    // Everything sent, publisher still connected: the tail is buffered in the remuxer.
    p.send_all(&tags, 0, false).await.unwrap();
    wait_segments(&node, "cam", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let code = tokio::task::block_in_place(|| node.terminate());
    assert_eq!(code, Some(0), "clean exit; log:\n{}", node.log());
    drop(p);
    node.restart();
    let segs = segments(&node, "cam").await;
    let total: u64 = segs
        .iter()
        .map(|s| s["duration_ms"].as_u64().unwrap())
        .sum();
    assert!(
        total >= 9_900,
        "the segment being written was finished on shutdown: {total} ms"
    );
}
