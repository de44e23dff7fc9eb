//! Thumbnails over HTTP: one JPEG per video segment (unless skipped under overload, counted),
//! immutable headers, 404 no-store when missing or audio-only, deleted by retention.

mod common;

use std::time::Duration;

use common::*;

/// A counter of the node's `/metrics` (common's `metric`), as a count.
async fn count(node: &TestNode, name: &str) -> u64 {
    metric(node, name).await as u64
}

/// Waits until the worker has accounted for `n` segments (made + skipped + failed).
async fn wait_accounted(node: &TestNode, n: u64) {
    for _ in 0..200 {
        let done = count(node, "dvrgate_thumbs_made_total").await
            + count(node, "dvrgate_thumbs_skipped_total").await
            + count(node, "dvrgate_thumbs_failed_total").await;
        if done >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("thumbnails of {n} segments not accounted for");
}

/// Width and height from the SOF0 header, after checking SOI and EOI.
fn jpeg_size(b: &[u8]) -> (u16, u16) {
    assert_eq!(&b[..2], [0xff, 0xd8], "SOI");
    assert_eq!(&b[b.len() - 2..], [0xff, 0xd9], "EOI");
    let mut i = 2;
    while i + 9 < b.len() {
        assert_eq!(b[i], 0xff, "marker at {i}");
        let marker = b[i + 1];
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        if (0xc0..=0xc2).contains(&marker) {
            let h = u16::from_be_bytes([b[i + 5], b[i + 6]]);
            let w = u16::from_be_bytes([b[i + 7], b[i + 8]]);
            return (w, h);
        }
        i += 2 + len;
    }
    panic!("no SOF header");
}

#[tokio::test(flavor = "multi_thread")]
async fn thumbnails_are_made_and_served_immutable() {
    let node = TestNode::origin();
    publish_and_end(&node, "cam").await;
    let segs = segments(&node, "cam").await;
    assert!(segs.len() >= 2, "{segs:?}");
    wait_accounted(&node, segs.len() as u64).await;
    assert_eq!(count(&node, "dvrgate_thumbs_failed_total").await, 0);
    let made = count(&node, "dvrgate_thumbs_made_total").await;
    assert!(made >= 1, "at least the first segment gets one");
    let client = http();
    let mut found = 0;
    for s in &segs {
        let seq = s["seq"].as_u64().unwrap();
        let url = node.url(&format!("/streams/cam/thumbs/{seq}.jpg"));
        let r = client.get(&url).send().await.unwrap();
        if r.status() == 404 {
            assert_eq!(r.headers()["cache-control"], "no-store");
            continue;
        }
        assert_eq!(r.status(), 200);
        found += 1;
        assert_eq!(r.headers()["content-type"], "image/jpeg");
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        assert!(etag.starts_with('"'), "strong ETag {etag}");
        let body = r.bytes().await.unwrap();
        let (w, h) = jpeg_size(&body);
        assert!(w <= 320 && w > 0 && h > 0, "{w}x{h}");
        let again = client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        let head = client.head(&url).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(
            head.headers()["content-length"],
            body.len().to_string().as_str()
        );
    }
    assert_eq!(found, made, "every thumbnail made is served");
    // A segment that does not exist.
    let r = client
        .get(node.url("/streams/cam/thumbs/999999.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["cache-control"], "no-store");
}

#[tokio::test(flavor = "multi_thread")]
async fn audio_only_has_no_thumbnails() {
    let node = TestNode::origin();
    let tags: Vec<FlvTag> = read_flv(CLIP).into_iter().filter(|t| t.kind == 8).collect();
    publish_tags_and_end(&node, "radio", &tags).await;
    let segs = segments(&node, "radio").await;
    assert!(!segs.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http()
        .get(node.url("/streams/radio/thumbs/0.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(count(&node, "dvrgate_thumbs_made_total").await, 0);
    assert!(!node.recordings().join("radio/thumbs").exists());
}

/// The seqs of `cam`'s segments whose thumbnail the origin serves, and those it does not.
async fn with_and_without(
    node: &TestNode,
    name: &str,
    token: Option<&str>,
) -> (Vec<u64>, Vec<u64>) {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let ix_url = tokenized(&node.url(&format!("/streams/{name}/index.json")), token);
    let ix = get_json(&ix_url).await;
    for s in ix["segments"].as_array().unwrap() {
        let seq = s["seq"].as_u64().unwrap();
        let url = tokenized(
            &node.url(&format!("/streams/{name}/thumbs/{seq}.jpg")),
            token,
        );
        match http().get(&url).send().await.unwrap().status().as_u16() {
            200 => with.push(seq),
            404 => without.push(seq),
            s => panic!("thumb {seq}: {s}"),
        }
    }
    (with, without)
}

fn tokenized(url: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("{url}?token={t}"),
        None => url.to_owned(),
    }
}

/// `(seq, duration_ms)` of every segment of a playlist, and its Cache-Control.
async fn playlist_segments(url: &str) -> (Vec<(u64, u64)>, String) {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let cc = r.headers()["cache-control"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    let mut out = Vec::new();
    let mut dur = None;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            let d = d.trim_end_matches(',');
            let (s, ms) = d.split_once('.').unwrap();
            dur = Some(s.parse::<u64>().unwrap() * 1000 + ms.parse::<u64>().unwrap());
        } else if let Some(seg) = line.strip_prefix("segments/") {
            let seq = seg.split(".m4s").next().unwrap().parse().unwrap();
            out.push((seq, dur.take().unwrap()));
        }
    }
    (out, cc)
}

/// A WebVTT cue: `(start_ms, end_ms, uri)`.
fn parse_vtt(text: &str) -> Vec<(u64, u64, String)> {
    fn ms(t: &str) -> u64 {
        let (hms, frac) = t.split_once('.').unwrap();
        let p: Vec<u64> = hms.split(':').map(|v| v.parse().unwrap()).collect();
        assert_eq!(p.len(), 3, "{t}");
        assert_eq!(frac.len(), 3, "{t}");
        ((p[0] * 60 + p[1]) * 60 + p[2]) * 1000 + frac.parse::<u64>().unwrap()
    }
    let mut blocks = text.split("\n\n");
    assert_eq!(blocks.next(), Some("WEBVTT"), "{text}");
    blocks
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let mut lines = b.lines();
            let timing = lines.next().unwrap();
            let (a, z) = timing.split_once(" --> ").unwrap();
            let uri = lines.next().unwrap().to_owned();
            assert_eq!(lines.next(), None, "one URI per cue: {b}");
            (ms(a), ms(z), uri)
        })
        .collect()
}

fn cue_seq(uri: &str) -> u64 {
    uri.strip_prefix("thumbs/")
        .and_then(|u| u.split(".jpg").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cue URI {uri}"))
}

/// Checks a track against the playlist of the same query: cue times are the summed durations
/// of the listed segments before each cue; `all` = one cue per listed segment.
fn assert_aligned(cues: &[(u64, u64, String)], listed: &[(u64, u64)], all: bool) {
    let mut at = 0;
    let mut starts = std::collections::HashMap::new();
    for &(seq, d) in listed {
        starts.insert(seq, (at, d));
        at += d;
    }
    for (a, z, uri) in cues {
        let seq = cue_seq(uri);
        let (start, d) = starts[&seq];
        assert_eq!((*a, *z), (start, start + d), "cue of {seq}");
    }
    if all {
        assert_eq!(cues.len(), listed.len());
        assert_eq!(cue_seq(&cues[0].2), listed[0].0, "same first segment");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_thumbnails_with_their_segments() {
    let node = TestNode::start_with(|d| {
        format!(
            "[record]\ndir = {:?}\nmax_bytes = \"300KiB\"\n",
            d.join("rec")
        )
    });
    let mut p = Publisher::connect(node.rtmp.unwrap(), "live", "cam")
        .await
        .unwrap();
    p.send_all(&looped_clip(1), 0, true).await.unwrap();
    p.close().await;
    wait_ended(&node, "cam").await;
    let segs = segments(&node, "cam").await;
    let first = segs[0]["seq"].as_u64().unwrap();
    let last = segs.last().unwrap()["seq"].as_u64().unwrap();
    wait_accounted(&node, last + 1).await;
    assert!(first > 0, "max_bytes dropped segments: {segs:?}");
    let made = count(&node, "dvrgate_thumbs_made_total").await;
    let dir = node.recordings().join("cam/thumbs");
    let mut on_disk = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let seq: u64 = name.strip_suffix(".jpg").unwrap().parse().unwrap();
        on_disk.push(seq);
    }
    assert!(
        on_disk.iter().all(|&s| s >= first),
        "thumbnails of dropped segments remain: {on_disk:?} (first {first})"
    );
    assert!(
        made > on_disk.len() as u64,
        "some were made and then deleted"
    );
    let r = http()
        .get(node.url("/streams/cam/thumbs/0.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["cache-control"], "no-store");
    // The track lists only what is still there.
    let vtt = http()
        .get(node.url("/streams/cam/thumbs.vtt"))
        .send()
        .await
        .unwrap();
    let cues = parse_vtt(&vtt.text().await.unwrap());
    assert_eq!(cues.len(), on_disk.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_relay_through_two_hops_with_one_pull_each() {
    let origin = TestNode::origin();
    publish_and_end(&origin, "cam").await;
    let n = segments(&origin, "cam").await.len() as u64;
    wait_accounted(&origin, n).await;
    let (with, without) = with_and_without(&origin, "cam", None).await;
    assert!(!with.is_empty());
    let intermediate = relay_of(&origin);
    let edge = relay_of(&intermediate);
    wait_ended(&edge, "cam").await;
    let seq = with[0];
    let path = format!("/streams/cam/thumbs/{seq}.jpg");
    let direct = http().get(origin.url(&path)).send().await.unwrap();
    let etag = direct.headers()["etag"].to_str().unwrap().to_owned();
    let expected = direct.bytes().await.unwrap();
    let (edge0, mid0) = (
        count(&edge, "dvrgate_upstream_thumb_pulls_total").await,
        count(&intermediate, "dvrgate_upstream_thumb_pulls_total").await,
    );
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = edge.url(&path);
        tasks.push(tokio::spawn(async move {
            let r = http().get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(
                r.headers()["cache-control"],
                "public, max-age=31536000, immutable"
            );
            assert_eq!(r.headers()["content-type"], "image/jpeg");
            let etag = r.headers()["etag"].to_str().unwrap().to_owned();
            (etag, r.bytes().await.unwrap())
        }));
    }
    for t in tasks {
        let (e, body) = t.await.unwrap();
        assert_eq!(body, expected, "byte-identical at the edge");
        assert_eq!(e, etag, "same strong ETag at every hop");
    }
    assert_eq!(
        count(&edge, "dvrgate_upstream_thumb_pulls_total").await - edge0,
        1,
        "one pull at the edge"
    );
    assert_eq!(
        count(&intermediate, "dvrgate_upstream_thumb_pulls_total").await - mid0,
        1,
        "one pull at the intermediate"
    );
    // Warm: 304, Range and HEAD from the edge's cache, no new pull.
    let c = http();
    let r = c
        .get(edge.url(&path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c
        .get(edge.url(&path))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), expected.slice(0..10));
    let r = c.head(edge.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        expected.len().to_string().as_str()
    );
    assert_eq!(
        count(&edge, "dvrgate_upstream_thumb_pulls_total").await - edge0,
        1
    );
    // Not in the index: 404 no-store at both ends, nothing asked upstream.
    for node in [&origin, &edge] {
        let r = c
            .get(node.url("/streams/cam/thumbs/999999.jpg"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    assert_eq!(
        count(&edge, "dvrgate_upstream_thumb_pulls_total").await - edge0,
        1,
        "a seq outside the index is not asked upstream"
    );
    // A skipped one: 404 no-store, and not cached (asked again next time).
    if let Some(&missing) = without.first() {
        let url = edge.url(&format!("/streams/cam/thumbs/{missing}.jpg"));
        for _ in 0..2 {
            let r = c.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 404);
            assert_eq!(r.headers()["cache-control"], "no-store");
        }
        assert_eq!(
            count(&edge, "dvrgate_upstream_thumb_pulls_total").await - edge0,
            3,
            "404s are not cached"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vtt_lines_up_with_the_playlist() {
    let origin = TestNode::origin();
    // Two periods: the track counts time across the discontinuity as players do.
    publish_and_end(&origin, "cam").await;
    publish_and_end(&origin, "cam").await;
    let segs = segments(&origin, "cam").await;
    wait_accounted(&origin, segs.len() as u64).await;
    let (with, _) = with_and_without(&origin, "cam", None).await;
    let edge = relay_of(&origin);
    wait_ended(&edge, "cam").await;
    let from = segs[2]["time"].as_str().unwrap();
    let to = segs[segs.len() - 2]["time"].as_str().unwrap();
    let window = format!("?from={from}&to={to}");
    let start = format!("?start={}", segs[1]["time"].as_str().unwrap());
    for (node, at_origin) in [(&origin, true), (&edge, false)] {
        for query in ["", start.as_str(), window.as_str()] {
            let (listed, playlist_cc) =
                playlist_segments(&node.url(&format!("/streams/cam/index.m3u8{query}"))).await;
            let r = http()
                .get(node.url(&format!("/streams/cam/thumbs.vtt{query}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "text/vtt; charset=utf-8");
            assert_eq!(
                r.headers()["cache-control"].to_str().unwrap(),
                playlist_cc,
                "{query}"
            );
            let head = http()
                .head(node.url(&format!("/streams/cam/thumbs.vtt{query}")))
                .send()
                .await
                .unwrap();
            assert_eq!(head.status(), 200);
            let cues = parse_vtt(&r.text().await.unwrap());
            assert!(!listed.is_empty());
            if at_origin {
                let expected: Vec<u64> = listed
                    .iter()
                    .map(|s| s.0)
                    .filter(|s| with.contains(s))
                    .collect();
                let got: Vec<u64> = cues.iter().map(|c| cue_seq(&c.2)).collect();
                assert_eq!(
                    got, expected,
                    "origin lists the thumbnails it has ({query})"
                );
                assert_aligned(&cues, &listed, false);
            } else {
                assert_aligned(&cues, &listed, true);
            }
        }
    }
    // The window is in the past: both cached long.
    let (_, cc) = playlist_segments(&origin.url(&format!("/streams/cam/index.m3u8{window}"))).await;
    assert!(cc.contains("max-age=3600"), "{cc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_thumbnail_names_are_client_errors() {
    let node = TestNode::origin();
    publish_and_end(&node, "cam").await;
    for file in [
        "abc.jpg",
        "1.png",
        "1",
        "-1.jpg",
        "+1.jpg",
        "99999999999999999999999999.jpg",
        "18446744073709551615.jpg",
        "1.jpg.jpg",
        "%2e%2e.jpg",
    ] {
        let r = http()
            .get(node.url(&format!("/streams/cam/thumbs/{file}")))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        assert!(s == 404 || s == 400, "{file}: {s}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{file}");
    }
    for q in ["?from=nonsense", "?from=-1s&to=-2s", "?start=1e99"] {
        let r = http()
            .get(node.url(&format!("/streams/cam/thumbs.vtt{q}")))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{q}: {}", r.status());
    }
    let r = http()
        .get(node.url("/streams/bad%20name/thumbs.vtt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http()
        .get(node.url("/streams/nope/thumbs.vtt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

const SECRET: &str = "play-secret-for-thumb-tests-0123456789";

fn token_for(streams: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"exp": exp, "streams": streams}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_tokens_gate_thumbnails_and_the_track() {
    let secured = format!("[access]\nplay_secret = \"{SECRET}\"\n");
    let origin = TestNode::start_with(|_| secured.clone());
    let token = token_for(&["cam"]);
    let mut p = Publisher::connect(origin.rtmp.unwrap(), "live", "cam")
        .await
        .unwrap();
    p.send_all(&read_flv(CLIP), 0, false).await.unwrap();
    p.close().await;
    let status = format!("/streams/cam?token={token}");
    eventually(Duration::from_secs(30), || async {
        let v = try_get_json(&origin.url(&status)).await?;
        (v["live"] == false).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (with, _) = with_and_without(&origin, "cam", Some(&token)).await;
    assert!(!with.is_empty());
    let edge = relay(
        &[origin.base()],
        &format!("token = \"{}\"\n\n{secured}", token_for(&["cam"])),
    );
    for node in [&origin, &edge] {
        let thumb = node.url(&format!("/streams/cam/thumbs/{}.jpg", with[0]));
        let vtt = node.url("/streams/cam/thumbs.vtt");
        for url in [&thumb, &vtt] {
            let r = http().get(url.as_str()).send().await.unwrap();
            assert_eq!(r.status(), 401, "{url} without a token");
            let r = http()
                .get(format!("{url}?token={}", token_for(&["other"])))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{url} with another stream's token");
        }
        let r = eventually(Duration::from_secs(30), || async {
            let r = http()
                .get(format!("{thumb}?token={token}"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(r)
        })
        .await;
        assert_eq!(&r.bytes().await.unwrap()[..2], [0xff, 0xd8]);
        let r = http()
            .get(format!("{vtt}?token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cues = parse_vtt(&r.text().await.unwrap());
        assert!(!cues.is_empty());
        for (_, _, uri) in &cues {
            assert!(uri.ends_with(&format!("?token={token}")), "{uri}");
            // The URI, resolved next to the track, is readable as it stands.
            let r = http()
                .get(node.url(&format!("/streams/cam/{uri}")))
                .send()
                .await
                .unwrap();
            assert_ne!(r.status().as_u16(), 401, "{uri}");
            assert_ne!(r.status().as_u16(), 403, "{uri}");
        }
        // A bearer header works too.
        let r = http()
            .get(&vtt)
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upstream_thumbnail_is_an_error_and_not_cached() {
    use common::fake_upstream::{record_source, Fake, Listing};
    let source = std::sync::Arc::new(record_source().await);
    let fake = Fake::start(source.clone()).await;
    let edge = relay(&[fake.url()], "");
    fake.list("cam", Listing::Good);
    let n = source.seqs().len();
    eventually(Duration::from_secs(30), || async {
        let v = try_get_json(&edge.url("/streams/cam/index.json")).await?;
        (v["segments"].as_array()?.len() == n).then_some(())
    })
    .await;
    let seq = source.seqs()[0];
    let path = format!("/streams/cam/thumbs/{seq}.jpg");
    for _ in 0..2 {
        let r = http().get(edge.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 502, "bigger than 256 KiB");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    let asked = fake.log().iter().filter(|s| s.path == path).count();
    assert_eq!(asked, 2, "a refused answer is not cached");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_track_survives_a_restart() {
    let mut node = TestNode::process_origin();
    publish_and_end(&node, "cam").await;
    let n = segments(&node, "cam").await.len() as u64;
    wait_accounted(&node, n).await;
    let before = get_text(&node.url("/streams/cam/thumbs.vtt")).await;
    assert!(!parse_vtt(&before).is_empty());
    node.restart();
    let after = eventually(Duration::from_secs(20), || async {
        let r = http()
            .get(node.url("/streams/cam/thumbs.vtt"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(r.text().await.ok()?)
    })
    .await;
    assert_eq!(after, before, "the set is rebuilt from the thumbs folder");
}
