//! Interop with ffmpeg: it publishes a test pattern with B-frames over RTMP; ffmpeg then
//! decodes the HLS playlist with zero errors (at the origin and through a relay) and the
//! decoded duration matches what was sent.
//! Skips without ffmpeg locally; fails without it under CI=true.

mod common;

use std::time::Duration;

use common::*;

const SECONDS: u32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_and_decodes_the_hls_playlist() {
    if !have("ffmpeg") || !have("ffprobe") {
        return;
    }
    let node = TestNode::origin();
    let url = node.rtmp_url("pattern");
    let seconds = SECONDS.to_string();
    let out = run_tool(
        "ffmpeg",
        &ffmpeg_pattern_args(&seconds, &url),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        out.status.success(),
        "ffmpeg publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_ended(&node, "pattern").await;

    let playlist = node.url("/streams/pattern/index.m3u8");
    // The same playlist through a relay that has never seen the stream decodes just as well.
    let relay = relay_of(&node);
    for url in [playlist.clone(), relay.url("/streams/pattern/index.m3u8")] {
        if let Err(e) = ffmpeg_decode(&url).await {
            panic!("decode of {url}: {e}");
        }
    }

    let duration = probe_duration(&playlist).await;
    assert!(
        (duration - f64::from(SECONDS)).abs() <= 1.0,
        "decoded {duration} s of {SECONDS} s (one GOP = 1 s)"
    );
    let index = get_json(&node.url("/streams/pattern/index.json")).await;
    let p = &index["periods"][0];
    assert_eq!(
        (p["width"].as_u64(), p["height"].as_u64()),
        (Some(320), Some(240))
    );
    // The codecs string is derived from the stream: it names the profile ffprobe sees.
    let probe = ffprobe(
        &["-select_streams", "v:0", "-show_entries", "stream=profile"],
        &playlist,
    )
    .await;
    let profile = probe
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned();
    let hex = match profile.as_str() {
        "High" => "avc1.64",
        "Main" => "avc1.4d",
        _ => "avc1.42",
    };
    assert!(
        p["codecs"].as_str().unwrap().starts_with(hex),
        "{profile} -> {}",
        p["codecs"]
    );
}

/// A republish continues the timeline as a new period: across the discontinuity no stream's
/// decode time goes back (the last segment of the first publish covers its audio tail), so
/// ffmpeg decodes the whole playlist without a complaint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dts_never_goes_back_across_a_republish() {
    if !have("ffmpeg") || !have("ffprobe") {
        return;
    }
    let node = TestNode::origin();
    publish_and_end(&node, "again").await;
    publish_and_end(&node, "again").await;
    let playlist = node.url("/streams/again/index.m3u8");
    let text = ffprobe(
        &["-show_entries", "packet=stream_index,dts_time"],
        &playlist,
    )
    .await;
    let mut last: Vec<(u32, f64)> = Vec::new();
    let mut packets = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split(',');
        let (Some(stream), Some(dts)) = (fields.next(), fields.next()) else {
            panic!("ffprobe line {line:?}");
        };
        let (stream, dts): (u32, f64) =
            (stream.trim().parse().unwrap(), dts.trim().parse().unwrap());
        if let Some((_, prev)) = last.iter_mut().find(|(s, _)| *s == stream) {
            assert!(dts >= *prev, "stream {stream}: dts {dts} after {prev}");
            *prev = dts;
        } else {
            last.push((stream, dts));
        }
        packets += 1;
    }
    assert_eq!(last.len(), 2, "video and audio: {text}");
    // Two publishes of the 10 s fixture: ~20 s of packets reached ffprobe.
    assert!(packets > 1000, "{packets} packets");
    assert!(
        last.iter().all(|&(_, dts)| dts > 19.0),
        "both publishes probed: {last:?}"
    );
    let decode = run_tool(
        "ffmpeg",
        &["-v", "warning", "-i", &playlist, "-f", "null", "-"],
        Duration::from_secs(120),
    )
    .await;
    let stderr = String::from_utf8_lossy(&decode.stderr);
    assert!(decode.status.success(), "decode failed: {stderr}");
    assert!(
        !stderr.contains("monoton"),
        "ffmpeg saw decode times going back: {stderr}"
    );
}
