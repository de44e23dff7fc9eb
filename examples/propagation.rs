//! Live propagation through a relay chain: publishes the fixture in real time into an origin
//! and long-polls `index.json` at the origin and at the edge at once; for each segment prints
//! how much later the edge announced it than the origin (matched by the segment's wall-clock
//! `time`, which relays keep), and how much later its bytes were fully served by the edge.
//! Used by `bench/propagation.sh`: `propagation RTMP_ADDR ORIGIN_HTTP EDGE_HTTP [LOOPS]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{read_flv, FlvTag, Publisher, CLIP};

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Follows `index.json` of `base` with long-polls until the stream ends or `deadline`;
/// records when each segment `time` was first seen; when `fetch`, downloads each new segment
/// and records when its body was complete under `time + "#body"`.
async fn follow(base: String, seen: Seen, fetch: bool, deadline: Instant) {
    let client = reqwest::Client::new();
    let mut after: Option<u64> = None;
    while Instant::now() < deadline {
        let url = match after {
            Some(a) => format!("{base}/index.json?after={a}&wait=10s"),
            None => format!("{base}/index.json"),
        };
        let Ok(resp) = client.get(&url).send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let at = Instant::now();
        let Ok(v) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let Some(segs) = v["segments"].as_array() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for s in segs {
            let time = s["time"].as_str().unwrap_or_default().to_owned();
            seen.lock().unwrap().entry(time.clone()).or_insert(at);
            if fetch && after.is_some() {
                let url = format!("{base}/{}", s["url"].as_str().unwrap_or_default());
                let (client, seen) = (client.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Ok(r) = client.get(&url).send().await {
                        if r.status() == 200 && r.bytes().await.is_ok() {
                            seen.lock()
                                .unwrap()
                                .insert(format!("{time}#body"), Instant::now());
                        }
                    }
                });
            }
            after = s["seq"].as_u64();
        }
        if v["live"] == false && after.is_some() {
            break;
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rtmp = args
        .get(1)
        .expect("RTMP address")
        .parse()
        .expect("RTMP address");
    let origin = args.get(2).expect("origin HTTP address").to_owned();
    let edge = args.get(3).expect("edge HTTP address").to_owned();
    let loops: u32 = args.get(4).map_or(3, |v| v.parse().expect("loops"));
    let tags = read_flv(CLIP);
    let clip_ms = tags.iter().map(|t| t.timestamp_ms).max().unwrap_or(0) + 34;
    let name = format!("prop{}", std::process::id());
    let mut p = Publisher::connect(rtmp, "live", &name)
        .await
        .expect("publish");
    // The first segment makes the edge relay the stream (on demand); the rest are measured.
    let publisher = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for n in 0..loops {
            for t in &tags {
                if n > 0 && t.body.get(1) == Some(&0) {
                    continue;
                }
                let ts = n * clip_ms + t.timestamp_ms;
                tokio::time::sleep_until(start + Duration::from_millis(u64::from(ts))).await;
                p.send(&FlvTag {
                    timestamp_ms: ts,
                    ..t.clone()
                })
                .await
                .expect("send");
            }
        }
        p.close().await;
    });
    let deadline = Instant::now() + Duration::from_secs(u64::from(loops) * 12 + 30);
    let (at_origin, at_edge): (Seen, Seen) = Default::default();
    // Wait for the stream to exist at the origin before the edge asks for it.
    let client = reqwest::Client::new();
    while Instant::now() < deadline {
        let r = client
            .get(format!("http://{origin}/streams/{name}/index.json"))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let o = tokio::spawn(follow(
        format!("http://{origin}/streams/{name}"),
        at_origin.clone(),
        false,
        deadline,
    ));
    let e = tokio::spawn(follow(
        format!("http://{edge}/streams/{name}"),
        at_edge.clone(),
        true,
        deadline,
    ));
    publisher.await.unwrap();
    let _ = tokio::join!(o, e);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (o, e) = (at_origin.lock().unwrap(), at_edge.lock().unwrap());
    let mut index_ms = Vec::new();
    let mut body_ms = Vec::new();
    let mut times: Vec<&String> = o.keys().collect();
    times.sort();
    // Skip the first two: seen before the edge was following.
    for t in times.iter().skip(2) {
        let origin_at = o[*t];
        if let Some(edge_at) = e.get(*t) {
            index_ms.push(edge_at.saturating_duration_since(origin_at).as_secs_f64() * 1000.0);
        }
        if let Some(body_at) = e.get(&format!("{t}#body")) {
            body_ms.push(body_at.saturating_duration_since(origin_at).as_secs_f64() * 1000.0);
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        if v.is_empty() {
            "none measured".to_owned()
        } else {
            format!(
                "n={} median={:.1} p90={:.1} max={:.1}",
                v.len(),
                pick(0.5),
                pick(0.9),
                pick(1.0)
            )
        }
    };
    println!(
        "edge index.json announcement after the origin's (ms): {}",
        stats(&mut index_ms)
    );
    println!(
        "edge segment body complete after the origin's announcement (ms): {}",
        stats(&mut body_ms)
    );
}
