//! Time shift by REST: `seek` at every boundary and in every time form, playlists that agree
//! with it, and `clip.mp4` (duration, decodability, keyframe start, identical through a relay).

mod common;

use common::*;
use reqwest::StatusCode;

/// A node with stream `cam`: the fixture three times back to back (30 s of media), published
/// in real time (a 30 s DVR window takes 30 s of wall clock), ended.
async fn recorded(extra: &str) -> TestNode {
    let extra = extra.to_owned();
    let node = TestNode::start_with(move |_| extra);
    publish_real_time_and_end(&node, "cam", &looped_clip(3)).await;
    node
}

async fn get(url: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let r = http().get(url).send().await.unwrap();
    let (s, h) = (r.status(), r.headers().clone());
    (s, h, r.text().await.unwrap())
}

/// The `max-age` of a response's `Cache-Control`.
fn max_age(h: &reqwest::header::HeaderMap) -> u64 {
    let cc = h["cache-control"].to_str().unwrap();
    cc.rsplit('=')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("max-age in {cc:?}"))
}

fn parse_time(s: &str) -> i64 {
    dvrgate::time::parse_rfc3339(s).unwrap_or_else(|| panic!("time {s}"))
}

async fn seek_boundaries_and_time_forms(node: &TestNode) {
    let segs = &segments(node, "cam").await;
    assert!(segs.len() >= 10, "{segs:?}");
    let first = &segs[0];
    let last = segs.last().unwrap();
    let t0 = parse_time(first["time"].as_str().unwrap());
    let last_t = parse_time(last["time"].as_str().unwrap());
    let edge = last_t + last["duration_ms"].as_i64().unwrap();
    let seek = |t: String| {
        let url = node.url(&format!("/streams/cam/seek?t={t}"));
        async move { get(&url).await }
    };

    // First segment, by unix ms and by RFC 3339.
    for t in [t0.to_string(), first["time"].as_str().unwrap().to_owned()] {
        let (s, h, body) = seek(t.clone()).await;
        assert_eq!(s, 200, "{t}: {body}");
        assert_eq!(h["cache-control"], "public, max-age=1");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "NetStream.Seek.Notify");
        assert_eq!(v["seq"], first["seq"], "{v}");
        assert_eq!(v["offset_ms"], 0);
        assert_eq!(v["segment"], format!("segments/{}.m4s", first["seq"]));
        assert!(
            v["playlist"]
                .as_str()
                .unwrap()
                .starts_with("index.m3u8?start="),
            "{v}"
        );
    }
    // Last millisecond of the last segment, `live`, and `-0s` all land in the last segment.
    for t in [(edge - 1).to_string(), "live".into(), "-0s".into()] {
        let (s, _, body) = seek(t.clone()).await;
        assert_eq!(s, 200, "{t}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["seq"], last["seq"], "{t}: {v}");
    }
    // A negative duration from live: -5s is 5 s before the edge.
    let (s, _, body) = seek("-5s".into()).await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parse_time(v["time"].as_str().unwrap()), edge - 5000);
    let seq = v["seq"].as_u64().unwrap();
    let seg = segs.iter().find(|s| s["seq"] == seq).unwrap();
    let st = parse_time(seg["time"].as_str().unwrap());
    assert!(st <= edge - 5000 && edge - 5000 < st + seg["duration_ms"].as_i64().unwrap());
    assert_eq!(v["offset_ms"].as_i64().unwrap(), edge - 5000 - st);

    // Just outside on both sides, and far in the future: 404 with the window's bounds.
    for t in [
        (t0 - 1).to_string(),
        (edge + 1).to_string(),
        (edge + 3_600_000).to_string(),
        "-1h".into(),
    ] {
        let (s, h, body) = seek(t.clone()).await;
        assert_eq!(s, 404, "{t}: {body}");
        assert_eq!(h["cache-control"], "no-store");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "NetStream.Seek.InvalidTime");
        assert_eq!(v["level"], "error");
        assert_eq!(v["dvr"]["start"], first["time"], "{v}");
        assert_eq!(parse_time(v["dvr"]["end"].as_str().unwrap()), edge);
    }
    // Malformed times: 400 saying what is accepted.
    for t in [
        "yesterday",
        "-",
        "--5s",
        "12:00",
        "2026-13-01T00:00:00Z",
        "1e9",
        "%00",
        "-5parsecs",
    ] {
        let (s, _, body) = seek(t.into()).await;
        assert_eq!(s, 400, "{t}: {body}");
        assert!(
            body.contains("RFC 3339") && body.contains("live"),
            "{t}: {body}"
        );
    }
    let (s, _, body) = get(&node.url("/streams/cam/seek")).await;
    assert_eq!(s, 400, "{body}");
    let (s, _, _) = get(&node.url("/streams/nope/seek?t=live")).await;
    assert_eq!(s, 404);
}

/// `(#EXT-X-START offset, [(seq, duration_ms)])` of a playlist.
fn playlist_segments(text: &str) -> (Option<f64>, Vec<(u64, f64)>) {
    let start = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-START:TIME-OFFSET="))
        .map(|v| v.split(',').next().unwrap().parse().unwrap());
    let mut out = Vec::new();
    let mut dur = 0.0;
    for l in text.lines() {
        if let Some(d) = l.strip_prefix("#EXTINF:") {
            dur = d
                .trim_end_matches(',')
                .split(',')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
                * 1000.0;
        } else if let Some(n) = l
            .strip_prefix("segments/")
            .and_then(|r| r.strip_suffix(".m4s"))
        {
            out.push((n.parse().unwrap(), dur));
        }
    }
    (start, out)
}

async fn playlists_agree_with_seek(node: &TestNode) {
    for t in ["-7s", "-12500ms", "-29s", "live"] {
        let v = get_json(&node.url(&format!("/streams/cam/seek?t={t}"))).await;
        let (s, _, text) = get(&node.url(&format!("/streams/cam/index.m3u8?start={t}"))).await;
        assert_eq!(s, 200, "{text}");
        let (offset, list) = playlist_segments(&text);
        let offset = offset.expect("EXT-X-START") * 1000.0;
        // The segment the start offset falls in is the one seek names, at the same offset.
        let mut acc = 0.0;
        let hit = list.iter().find(|(_, d)| {
            let inside = offset < acc + d - 0.5 || (offset - (acc + d)).abs() < 0.5 && t == "live";
            if !inside {
                acc += d;
            }
            inside
        });
        let (seq, _) = hit.unwrap_or_else(|| panic!("{t}: offset {offset} beyond {list:?}"));
        assert_eq!(*seq, v["seq"].as_u64().unwrap(), "{t}: {text}\n{v}");
        assert!(
            (offset - acc - v["offset_ms"].as_f64().unwrap()).abs() < 2.0,
            "{t}: {offset} {acc} {v}"
        );
    }
    // A window wholly in the past: a finished playlist with a long lifetime, the same segments
    // a clip of it holds.
    let seek_a = get_json(&node.url("/streams/cam/seek?t=-25s")).await;
    let seek_b = get_json(&node.url("/streams/cam/seek?t=-15s")).await;
    let (from, to) = (
        seek_a["time"].as_str().unwrap(),
        seek_b["time"].as_str().unwrap(),
    );
    let (s, h, text) =
        get(&node.url(&format!("/streams/cam/index.m3u8?from={from}&to={to}"))).await;
    assert_eq!(s, 200);
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    let max_age = max_age(&h);
    assert!(max_age >= 3600, "{:?}", h["cache-control"]);
    let (_, list) = playlist_segments(&text);
    assert_eq!(list.first().unwrap().0, seek_a["seq"].as_u64().unwrap());
    // `to` is exclusive: the last listed segment is the one containing to - 1 ms, unless `to`
    // falls exactly on a boundary.
    let last_seq = list.last().unwrap().0;
    let b = seek_b["seq"].as_u64().unwrap();
    assert!(
        last_seq == b || (last_seq + 1 == b && seek_b["offset_ms"] == 0),
        "{last_seq} {seek_b}"
    );
    // A window reaching live stays live (no ENDLIST) while the stream is live: checked on a
    // live stream in the relay test; here the stream has ended, so ENDLIST is right.
    let (_, _, text) =
        get(&node.url(&format!("/streams/cam/index.m3u8?from={from}&to=live"))).await;
    assert!(text.contains("#EXT-X-ENDLIST"));
}

async fn clips_are_standalone_mp4s_and_identical_through_a_relay(node: &TestNode) {
    let relay = relay_of(node);
    let segs = &segments(node, "cam").await;
    let from_seek = get_json(&node.url("/streams/cam/seek?t=-23500ms")).await;
    let to_seek = get_json(&node.url("/streams/cam/seek?t=-9s")).await;
    let (from, to) = (
        from_seek["time"].as_str().unwrap().to_owned(),
        to_seek["time"].as_str().unwrap().to_owned(),
    );
    let path = format!("/streams/cam/clip.mp4?from={from}&to={to}");

    let r = http().get(node.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    let declared: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let max_age = max_age(r.headers());
    assert!(max_age >= 3600, "a clip of the past is final");
    let clip = r.bytes().await.unwrap();
    assert_eq!(clip.len(), declared);

    // It holds exactly the segments from the one containing `from` to the one containing `to`.
    let a = from_seek["seq"].as_u64().unwrap();
    let b = to_seek["seq"].as_u64().unwrap();
    let b = if to_seek["offset_ms"] == 0 { b - 1 } else { b };
    let chosen: Vec<_> = segs
        .iter()
        .filter(|s| (a..=b).contains(&s["seq"].as_u64().unwrap()))
        .collect();
    let want_ms: i64 = chosen
        .iter()
        .map(|s| s["duration_ms"].as_i64().unwrap())
        .sum();
    let media: u64 = chosen.iter().map(|s| s["length"].as_u64().unwrap()).sum();
    assert!(clip.len() as u64 > media && (clip.len() as u64) < media + 4096);
    // Byte-identical when exported through a relay that has nothing cached.
    let via_relay = http().get(relay.url(&path)).send().await.unwrap();
    assert_eq!(via_relay.status(), 200);
    assert_eq!(via_relay.bytes().await.unwrap(), clip, "relay clip differs");

    // Too long, malformed, outside, missing `from`.
    let (s, _, body) = get(&node.url("/streams/cam/clip.mp4?from=-29s&to=live")).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("max_clip"), "{body}");
    let (s, _, _) = get(&node.url("/streams/cam/clip.mp4?from=soon")).await;
    assert_eq!(s, 400);
    let (s, _, body) = get(&node.url("/streams/cam/clip.mp4?from=-2h&to=-1h59m50s")).await;
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("NetStream.Seek.InvalidTime"));
    let (s, _, _) = get(&node.url("/streams/cam/clip.mp4")).await;
    assert_eq!(s, 400);

    if !have("ffprobe") || !have("ffmpeg") {
        eprintln!(
            "skipping the ffprobe/ffmpeg checks of clip.mp4: ffprobe or ffmpeg not installed"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clip.mp4");
    std::fs::write(&file, &clip).unwrap();
    let file = file.to_str().unwrap();
    let got = probe_duration(file).await;
    assert!(
        (got * 1000.0 - want_ms as f64).abs() < 100.0,
        "ffprobe duration {got} s, segments {want_ms} ms"
    );
    // Starts at zero, on a keyframe.
    let frames = ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=key_frame,pts_time",
            "-read_intervals",
            "%+#1",
        ],
        file,
    )
    .await;
    let first = frames.lines().next().unwrap_or_default().to_owned();
    let mut f = first.split(',');
    assert_eq!(
        f.next(),
        Some("1"),
        "first video frame is a keyframe: {first:?}"
    );
    let pts: f64 = f.next().unwrap_or("x").parse().unwrap_or(f64::NAN);
    assert!(pts.abs() < 0.2, "first pts {pts}");
    // Decodes without a single error.
    ffmpeg_decode(file).await.unwrap();
}

/// One recording for every check: a 30 s window takes 30 s of wall clock to record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_playlists_and_clips_on_one_recording() {
    let node = recorded("[http]\nmax_clip = \"20s\"\n").await;
    seek_boundaries_and_time_forms(&node).await;
    playlists_agree_with_seek(&node).await;
    clips_are_standalone_mp4s_and_identical_through_a_relay(&node).await;
}
