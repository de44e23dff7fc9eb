//! Hostile and broken RTMP input never disturbs a healthy concurrent publish.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_rtmp_port_leaves_a_live_stream_recording() {
    let node = TestNode::origin();
    let rtmp = node.rtmp.unwrap();
    let healthy = publish_live(&node, "healthy").await;

    // Garbage instead of a handshake.
    raw_exchange(rtmp, &[0xde; 4096], Duration::from_secs(2)).await;
    // A bad version byte.
    raw_exchange(rtmp, &[9u8; 1537], Duration::from_secs(2)).await;
    // A truncated handshake, then silence (the server's handshake timeout closes it).
    let mut half = tokio::net::TcpStream::connect(rtmp).await.unwrap();
    half.write_all(&[3u8; 700]).await.unwrap();
    // A valid handshake followed by a Set Chunk Size of 2^31-1 and a huge message length.
    let mut hello = vec![3u8];
    hello.extend_from_slice(&[0u8; 1536]);
    hello.extend_from_slice(&[0u8; 1536]); // C2
    hello.extend_from_slice(&[
        0x02, 0, 0, 0, 0, 0, 4, 0x01, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff,
    ]);
    raw_exchange(rtmp, &hello, Duration::from_secs(2)).await;
    let mut huge = vec![3u8];
    huge.extend_from_slice(&[0u8; 3072]);
    huge.extend_from_slice(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 0x09, 1, 0, 0, 0]);
    huge.extend_from_slice(&[0u8; 128]);
    raw_exchange(rtmp, &huge, Duration::from_secs(2)).await;
    // Random chunk streams after a valid handshake.
    let mut noise = vec![3u8];
    noise.extend_from_slice(&[0u8; 3072]);
    let mut x = 0x1234_5678u32;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    raw_exchange(rtmp, &noise, Duration::from_secs(2)).await;
    drop(half);
    // Bad HTTP requests against the live stream meanwhile: all 4xx, none harms the recording.
    let c = http();
    for path in [
        "/streams/healthy/segments/abc.m4s",
        "/streams/healthy/index.m3u8?start=tomorrow",
        "/streams/healthy/index.json?after=-1",
        "/streams/he%00lthy/index.json",
        "/streams/healthy/init/..%2F..%2Findex.jsonl",
    ] {
        let r = c.get(node.url(path)).send().await.unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
    }
    let seg0 = node.url("/streams/healthy/segments/0.m4s");
    eventually(Duration::from_secs(10), || {
        let (c, u) = (c.clone(), seg0.clone());
        async move { (c.head(&u).send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    let r = c
        .get(node.url("/streams/healthy/segments/0.m4s"))
        .header("Range", "bytes=99999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let r = c
        .get(node.url("/streams/healthy/segments/0.m4s"))
        .header("Range", "bytes=zz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an unparsable Range is ignored");

    tokio::time::timeout(Duration::from_secs(30), healthy)
        .await
        .expect("healthy publish finishes")
        .unwrap()
        .expect("healthy publisher keeps going");
    let s = wait_ended(&node, "healthy").await;
    let ms = s["dvr"]["duration_ms"].as_u64().unwrap();
    assert!(ms >= 9_900, "the whole clip was recorded: {ms} ms");
    assert_eq!(
        get_json(&node.url("/streams"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        http()
            .get(node.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
