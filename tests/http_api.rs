//! HTTP behaviour for CDNs and curl: caching headers, ETags, ranges, HEAD, CORS, Via, JSON
//! errors for bad input, time windows.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;

async fn recorded_node() -> TestNode {
    let node = TestNode::origin();
    publish_and_end(&node, "cam").await;
    node
}

fn assert_json_error(status: StatusCode, body: &str, want: StatusCode) -> serde_json::Value {
    assert_eq!(status, want, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON error body: {body}"));
    assert_eq!(v["level"], "error");
    assert!(v["code"].is_string() && v["description"].is_string(), "{v}");
    v
}

#[tokio::test]
async fn segments_are_cdn_friendly() {
    let node = recorded_node().await;
    let c = http();
    let url = node.url("/streams/cam/segments/1.m4s");
    let full = c.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    let h = full.headers().clone();
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["via"], "1.1 test-node");
    assert_eq!(h["access-control-allow-origin"], "*");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "strong etag {etag}"
    );
    let body = full.bytes().await.unwrap();
    let len = body.len();

    let r = c
        .get(&url)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-19/{len}").as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), body.slice(10..20));

    let r = c
        .get(&url)
        .header("Range", format!("bytes=-{}", 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), body.slice(len - 5..));

    let r = c
        .get(&url)
        .header("Range", format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );

    let r = c
        .get(&url)
        .header("Range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "multi-range gets the whole resource");
    assert_eq!(r.bytes().await.unwrap().len(), len);

    let r = c
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());

    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], len.to_string().as_str());
    assert!(r.bytes().await.unwrap().is_empty());

    let r = c
        .head(node.url("/streams/cam/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(node.url("/streams/cam/init/0.mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(r.headers().contains_key("etag"));

    // A segment that does not exist yet: not cacheable.
    let r = c
        .get(node.url("/streams/cam/segments/999.m4s"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let status = r.status();
    assert_json_error(status, &r.text().await.unwrap(), StatusCode::NOT_FOUND);

    // Preflight.
    let r = c
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://x")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn bad_input_gets_json_errors_not_500() {
    let node = recorded_node().await;
    let c = http();
    let cases = [
        ("/streams/bad.name", StatusCode::BAD_REQUEST),
        // The client normalises %2e%2e itself: this reaches the server as /index.json.
        ("/streams/%2e%2e/index.json", StatusCode::NOT_FOUND),
        ("/streams/..%2F..%2Fetc/index.json", StatusCode::BAD_REQUEST),
        (
            "/streams/cam/segments/..%2F..%2Findex.jsonl",
            StatusCode::NOT_FOUND,
        ),
        ("/streams/cam/segments/-1.m4s", StatusCode::NOT_FOUND),
        (
            "/streams/cam/segments/99999999999999999999999.m4s",
            StatusCode::NOT_FOUND,
        ),
        ("/streams/cam/init/4294967296.mp4", StatusCode::NOT_FOUND),
        ("/streams/nope", StatusCode::NOT_FOUND),
        ("/streams/nope/index.m3u8", StatusCode::NOT_FOUND),
        (
            "/streams/cam/index.m3u8?start=yesterday",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/streams/cam/index.m3u8?start=2026-13-45T00:00:00Z",
            StatusCode::BAD_REQUEST,
        ),
        ("/streams/cam/index.m3u8?start=1", StatusCode::NOT_FOUND),
        (
            "/streams/cam/index.m3u8?from=-1s&to=-5s",
            StatusCode::BAD_REQUEST,
        ),
        ("/streams/cam/index.json?after=x", StatusCode::BAD_REQUEST),
        (
            "/streams/cam/index.json?after=1&wait=forever",
            StatusCode::BAD_REQUEST,
        ),
        ("/streams/cam/index.json?limit=0", StatusCode::BAD_REQUEST),
        ("/streams/cam/index.json?from=%ZZ", StatusCode::BAD_REQUEST),
        (
            &format!("/streams/{}", "x".repeat(65)),
            StatusCode::BAD_REQUEST,
        ),
        ("/nowhere", StatusCode::NOT_FOUND),
    ];
    for (path, want) in cases {
        let r = c.get(node.url(path)).send().await.unwrap();
        let status = r.status();
        let via = r.headers().get("via").cloned();
        let body = r.text().await.unwrap();
        assert_eq!(status, want, "{path}: {body}");
        assert_json_error(status, &body, want);
        assert!(via.is_some(), "Via on errors too: {path}");
    }
    let r = c.post(node.url("/streams")).send().await.unwrap();
    let status = r.status();
    assert_json_error(
        status,
        &r.text().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    );
    // The outside-window answer says where the window is.
    let r = c
        .get(node.url("/streams/cam/index.m3u8?start=1"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "NetStream.Seek.InvalidTime");
    assert!(
        v["dvr"]["start"].is_string() && v["dvr"]["end"].is_string(),
        "{v}"
    );
    // Sent raw, an encoded dot-dot reaches the name check.
    let out = raw_exchange(
        node.http,
        b"GET /streams/%2e%2e/index.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // Bad bytes in a raw request line never crash the server.
    let out = raw_exchange(
        node.http,
        b"GET /streams/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        c.get(node.url("/healthz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn playlist_windows_and_rewind() {
    // In real time: windows by wall clock need segment times that tile the wall clock.
    let node = TestNode::origin();
    publish_real_time_and_end(&node, "cam", &read_flv(CLIP)).await;
    let c = http();
    let segs = &segments(&node, "cam").await;
    let t1 = segs[1]["time"].as_str().unwrap();
    let t3 = segs[3]["time"].as_str().unwrap();

    // A window wholly in the past is final: ENDLIST and a long cache lifetime.
    let r = c
        .get(node.url(&format!("/streams/cam/index.m3u8?from={t1}&to={t3}")))
        .send()
        .await
        .unwrap();
    let cc = r.headers()["cache-control"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    assert!(cc.contains("max-age=3600"), "{cc}");
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{text}");
    assert_eq!(text.matches("#EXTINF").count(), 2, "{text}");
    assert!(text.ends_with("#EXT-X-ENDLIST\n"));

    let ix = get_json(&node.url(&format!("/streams/cam/index.json?from={t1}&to={t3}"))).await;
    assert_eq!(ix["segments"].as_array().unwrap().len(), 2);
    let ix = get_json(&node.url("/streams/cam/index.json?after=1&limit=2")).await;
    let seqs: Vec<u64> = ix["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
    let ix = get_json(&node.url("/streams/cam/index.json?limit=1")).await;
    assert_eq!(ix["segments"][0]["seq"], segs.last().unwrap()["seq"]);

    // Rewind 3 s from the live edge: EXT-X-START points into the right segment.
    let text = get_text(&node.url("/streams/cam/index.m3u8?start=-3s")).await;
    let offset: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-START:TIME-OFFSET="))
        .and_then(|v| v.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    let total: f64 = segs
        .iter()
        .map(|s| s["duration_ms"].as_f64().unwrap())
        .sum::<f64>()
        / 1000.0;
    // Within 150 ms: the last segment, cut at unpublish, lasts to the end of its last frames,
    // which had not been played out in real time when it was recorded; its time moves back by
    // that much so it does not end in the future.
    assert!(
        (offset - (total - 3.0)).abs() < 0.15,
        "offset {offset} vs {}",
        total - 3.0
    );
    assert!(text.contains("PRECISE=YES"));
    // Unix ms and RFC 3339 forms agree.
    let ms = segs[2]["start_ms"].as_u64().unwrap(); // media time, not wall clock: only check it parses
    let _ = ms;
    let r = c
        .get(node.url(&format!("/streams/cam/index.m3u8?start={t3}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn metrics_and_health() {
    let node = recorded_node().await;
    let c = http();
    let r = c.get(node.url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for name in [
        "dvrgate_segments_written_total",
        "dvrgate_http_responses_total",
        "dvrgate_stream_dvr_segments{stream=\"cam\"}",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
    let h = get_json(&node.url("/healthz")).await;
    assert_eq!(h["status"], "ok");
    let page = c.get(node.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

/// The player's files: every ES module `main.js` imports (transitively) is served as JavaScript,
/// so a new module cannot be forgotten in `src/http/ui.rs`; an unknown file is a 404.
#[tokio::test]
async fn player_modules_are_served() {
    let node = TestNode::origin();
    let c = http();
    let mut todo = vec!["main.js".to_owned()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(file) = todo.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let r = c.get(node.url(&format!("/{file}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(
            r.headers()["content-type"],
            "text/javascript; charset=utf-8",
            "{file}"
        );
        let body = r.text().await.unwrap();
        for part in body.split("from './").skip(1) {
            if let Some(name) = part.split('\'').next() {
                todo.push(name.to_owned());
            }
        }
    }
    for file in ["player.js", "engine-mse.js", "engine-hls.js", "mseplan.js"] {
        assert!(seen.contains(file), "{file} imported: {seen:?}");
    }
    for file in ["nope.js", "engine-x.js", "package.json"] {
        let r = c.get(node.url(&format!("/{file}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{file}");
    }
}
