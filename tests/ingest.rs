//! RTMP ingest into a recording, checked over HTTP: index, playlist, fMP4 structure and timing,
//! status events, long-polls, refusals, single-track streams.

mod common;

use std::time::Duration;

use common::*;

async fn publish_clip(node: &TestNode, name: &str, filter: impl Fn(&FlvTag) -> bool) {
    let tags: Vec<FlvTag> = read_flv(CLIP).into_iter().filter(|t| filter(t)).collect();
    publish_tags_and_end(node, name, &tags).await;
}

/// Checks every segment of a stream: fMP4 structure, continuous tfdt, durations that tile.
async fn check_segments(node: &TestNode, name: &str) -> serde_json::Value {
    let index = index(node, name).await;
    let segs = index["segments"].as_array().unwrap().clone();
    assert!(!segs.is_empty(), "no segments: {index}");
    let client = http();
    let init = client
        .get(node.url(&format!("/streams/{name}/init/0.mp4")))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let init = init.bytes().await.unwrap();
    let (_, moov) = decode_init(&init);
    assert!(moov.mvex.is_some(), "moov has mvex");
    let mut next_tfdt: std::collections::HashMap<u32, u64> = Default::default();
    let mut next_start_ms = None;
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(
            s["seq"].as_u64().unwrap(),
            segs[0]["seq"].as_u64().unwrap() + i as u64,
            "seq grows by one"
        );
        if let Some(expected) = next_start_ms {
            assert_eq!(
                s["start_ms"].as_u64().unwrap(),
                expected,
                "segments tile the timeline"
            );
        }
        next_start_ms = Some(s["start_ms"].as_u64().unwrap() + s["duration_ms"].as_u64().unwrap());
        let url = node.url(&format!("/streams/{name}/{}", s["url"].as_str().unwrap()));
        let bytes = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, s["length"].as_u64().unwrap());
        for traf in &decode_segment(&bytes).traf {
            let track_id = traf.tfhd.track_id;
            let base_decode_time = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
            assert!(
                starts_with_sync(traf),
                "segment {i} track {track_id} starts with a sync sample"
            );
            if let Some(expected) = next_tfdt.get(&track_id) {
                if i > 0 && s["period"] != segs[i - 1]["period"] {
                    // A new period (discontinuity) starts where the previous one ended, give or
                    // take the last audio frame.
                    let diff = base_decode_time.abs_diff(*expected);
                    assert!(
                        diff <= 9_000,
                        "segment {i} track {track_id} jumps by {diff} at a period change"
                    );
                } else {
                    assert_eq!(
                        base_decode_time, *expected,
                        "segment {i} track {track_id} tfdt continuous"
                    );
                }
            }
            let duration: u64 = sample_durations(traf).iter().map(|&d| u64::from(d)).sum();
            next_tfdt.insert(track_id, base_decode_time + duration);
        }
    }
    index
}

#[tokio::test]
async fn publish_records_a_playable_index() {
    let node = TestNode::origin();
    publish_clip(&node, "cam1", |_| true).await;
    let index = check_segments(&node, "cam1").await;
    let segs = index["segments"].as_array().unwrap();
    let total: u64 = segs
        .iter()
        .map(|s| s["duration_ms"].as_u64().unwrap())
        .sum();
    assert!(
        (9_900..=10_100).contains(&total),
        "durations add up to the clip: {total}"
    );
    assert!(
        (4..=6).contains(&segs.len()),
        "about 2 s per segment: {}",
        segs.len()
    );
    let period = &index["periods"][0];
    assert_eq!(period["width"], 640);
    assert_eq!(period["height"], 360);
    let codecs = period["codecs"].as_str().unwrap();
    assert!(
        codecs.starts_with("avc1.4d") && codecs.ends_with(",mp4a.40.2"),
        "{codecs}"
    );
    assert_eq!(index["live"], false);

    // Video has B-frames: composition offsets present.
    let bytes = get_bytes(&node.url("/streams/cam1/segments/0.m4s")).await;
    let moof = decode_segment(&bytes);
    assert_eq!(moof.traf.len(), 2, "video and audio tracks");
    assert!(
        moof.traf.iter().any(has_cts),
        "composition offsets for B-frames"
    );

    let playlist = http()
        .get(node.url("/streams/cam1/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        playlist.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let text = playlist.text().await.unwrap();
    assert!(text.contains("#EXT-X-MAP:URI=\"init/0.mp4\""), "{text}");
    assert_eq!(text.matches("#EXTINF:").count(), segs.len());
    assert_eq!(
        text.matches("#EXT-X-PROGRAM-DATE-TIME:").count(),
        segs.len()
    );
    assert!(
        text.ends_with("#EXT-X-ENDLIST\n"),
        "ended stream has ENDLIST: {text}"
    );

    let status = get_json(&node.url("/streams/cam1")).await;
    assert_eq!(status["source"]["kind"], "ingest");
    assert_eq!(status["dvr"]["segments"], segs.len());
    let bytes: u64 = segs.iter().map(|s| s["length"].as_u64().unwrap()).sum();
    assert_eq!(
        status["dvr"]["bytes"], bytes,
        "dvr.bytes counts media segments only"
    );
    let list = get_json(&node.url("/streams")).await;
    assert_eq!(list[0]["name"], "cam1");
}

/// A publisher sending faster than real time (ffmpeg without `-re`, an encoder flushing its
/// buffer) never puts the live edge ahead of the wall clock; times stay ordered.
#[tokio::test]
async fn a_burst_is_never_ahead_of_the_wall_clock() {
    let node = TestNode::origin();
    // 30 s of media, sent as fast as the connection takes it (well under a second here).
    let sent_from = dvrgate::time::now_ms();
    let status = publish_tags_and_end(&node, "burst", &looped_clip(3)).await;
    let read_at = dvrgate::time::now_ms();
    let edge = dvrgate::time::parse_rfc3339(status["dvr"]["end"].as_str().unwrap()).unwrap();
    assert!(edge <= read_at, "live edge {} ms ahead", edge - read_at);
    let segs = segments(&node, "burst").await;
    assert!(segs.len() >= 14, "{}", segs.len());
    let mut prev: Option<(i64, i64)> = None;
    for s in &segs {
        let time = dvrgate::time::parse_rfc3339(s["time"].as_str().unwrap()).unwrap();
        let end = time + s["duration_ms"].as_i64().unwrap();
        assert!(time >= sent_from - 30_000 && end <= read_at, "{s}");
        if let Some((t, e)) = prev {
            assert!(time >= t && end >= e, "times go back at {s}");
        }
        prev = Some((time, end));
    }
    // A republish in real time afterwards starts at or after the burst's end.
    publish_real_time_and_end(&node, "burst", &read_flv(CLIP)[..60]).await;
    let after = segments(&node, "burst").await;
    let first_new = &after[segs.len()];
    let t = dvrgate::time::parse_rfc3339(first_new["time"].as_str().unwrap()).unwrap();
    assert!(t >= prev.unwrap().1, "{first_new}");
}

#[tokio::test]
async fn republish_continues_as_a_new_period() {
    let node = TestNode::origin();
    publish_clip(&node, "cam", |_| true).await;
    let n = segments(&node, "cam").await.len();
    publish_clip(&node, "cam", |_| true).await;
    let index = check_segments(&node, "cam").await;
    let segs = index["segments"].as_array().unwrap();
    assert!(segs.len() >= 2 * n - 1);
    assert_eq!(segs[n]["seq"], n as u64, "seq continues");
    assert_eq!(segs[n]["period"], 1);
    let text = get_text(&node.url("/streams/cam/index.m3u8")).await;
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    assert!(text.contains("#EXT-X-MAP:URI=\"init/1.mp4\""));
    let t0 = &segs[n - 1]["time"];
    let t1 = &segs[n]["time"];
    assert!(t1.as_str() > t0.as_str(), "wall clock grows across periods");
}

#[tokio::test]
async fn audio_only_and_video_only() {
    let node = TestNode::origin();
    publish_clip(&node, "audio", |t| t.kind == 8).await;
    publish_clip(&node, "video", |t| t.kind == 9).await;
    let a = check_segments(&node, "audio").await;
    assert_eq!(a["periods"][0]["codecs"], "mp4a.40.2");
    let v = check_segments(&node, "video").await;
    assert!(v["periods"][0]["codecs"]
        .as_str()
        .unwrap()
        .starts_with("avc1."));
    assert!(!v["periods"][0]["codecs"].as_str().unwrap().contains("mp4a"));
}

#[tokio::test]
async fn events_and_long_poll_follow_a_live_publish() {
    let node = TestNode::origin();
    let events = Events::subscribe(&node, "/streams/live1/events").await;
    let publisher = publish_live(&node, "live1").await;
    let first = wait_segments(&node, "live1", 1).await[0]["seq"]
        .as_u64()
        .unwrap();
    // A long-poll for the next segment returns as soon as it exists, well before `wait`.
    let started = std::time::Instant::now();
    let ix =
        get_json(&node.url(&format!("/streams/live1/index.json?after={first}&wait=20s"))).await;
    let waited = started.elapsed();
    assert_eq!(ix["segments"][0]["seq"], first + 1, "{ix}");
    assert!(
        waited < Duration::from_secs(5),
        "long-poll woke promptly: {waited:?}"
    );
    let playlist = http()
        .get(node.url("/streams/live1/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(playlist.headers()["cache-control"], "public, max-age=1");
    assert!(
        !playlist.text().await.unwrap().contains("ENDLIST"),
        "live playlist has no ENDLIST"
    );
    tokio::time::timeout(Duration::from_secs(20), publisher)
        .await
        .unwrap()
        .unwrap()
        .expect("send");

    events
        .wait_for("NetStream.Unpublish.Success", None, Duration::from_secs(15))
        .await;
    for v in events.all() {
        assert_eq!(v["stream"], "live1", "{v}");
        assert!(
            v["time"].is_string() && v["level"].is_string() && v["description"].is_string(),
            "{v}"
        );
    }
    assert_eq!(
        events.codes(),
        [
            "NetStream.Publish.Start",
            "NetStream.Record.Start",
            "NetStream.Record.Stop",
            "NetStream.Unpublish.Success"
        ]
    );
    // Ended: a long-poll answers at once with nothing.
    let started = std::time::Instant::now();
    let ix = get_json(&node.url("/streams/live1/index.json?after=1000&wait=10s")).await;
    assert!(ix["segments"].as_array().unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn refusals_leave_the_live_publisher_alone() {
    let node = TestNode::start_with(|_| {
        "[rtmp]\nlisten = \"127.0.0.1:0\"\npublish_key = \"k3y\"\n".into()
    });
    let rtmp = node.rtmp.unwrap();
    let tags = read_flv(CLIP);
    let mut good = Publisher::connect(rtmp, "live", "main?key=k3y")
        .await
        .expect("right key accepted");
    let half = tags.len() / 2;
    good.send_all(&tags[..half], 0, false).await.unwrap();
    for (app, key, why) in [
        ("live", "main?key=k3y", "already live"),
        ("live", "other", "missing key"),
        ("live", "other?key=nope", "wrong key"),
        ("live", "bad/name?key=k3y", "bad name"),
        ("live", "a.b?key=k3y", "bad name"),
        ("other", "x?key=k3y", "unknown app"),
    ] {
        let r = Publisher::connect(rtmp, app, key).await;
        assert!(r.is_err(), "{why}: publish of {app}/{key} must be refused");
    }
    good.send_all(&tags[half..], 0, false)
        .await
        .expect("first publisher unaffected");
    good.close().await;
    let s = wait_ended(&node, "main").await;
    assert!(s["dvr"]["segments"].as_u64().unwrap() >= 4, "{s}");
    assert!(
        get_json(&node.url("/streams"))
            .await
            .as_array()
            .unwrap()
            .len()
            == 1,
        "refused names created nothing"
    );
    let metrics = get_text(&node.url("/metrics")).await;
    assert!(
        metrics.contains("dvrgate_rtmp_publish_refused_total 6"),
        "{metrics}"
    );
}
