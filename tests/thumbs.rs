//! Thumbnails over HTTP: one JPEG per video segment (unless skipped under overload, counted),
//! immutable headers, 404 no-store when missing or audio-only, deleted by retention.

mod common;

use std::time::Duration;

use common::*;

async fn metric(node: &TestNode, name: &str) -> u64 {
    let text = http()
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until the worker has accounted for `n` segments (made + skipped + failed).
async fn wait_accounted(node: &TestNode, n: u64) {
    for _ in 0..200 {
        let done = metric(node, "dvrgate_thumbs_made_total").await
            + metric(node, "dvrgate_thumbs_skipped_total").await
            + metric(node, "dvrgate_thumbs_failed_total").await;
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
    assert_eq!(metric(&node, "dvrgate_thumbs_failed_total").await, 0);
    let made = metric(&node, "dvrgate_thumbs_made_total").await;
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
    assert_eq!(metric(&node, "dvrgate_thumbs_made_total").await, 0);
    assert!(!node.recordings().join("radio/thumbs").exists());
}
