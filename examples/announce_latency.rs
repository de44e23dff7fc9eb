//! Measures the time from the packet that completes a segment (the keyframe that closes it)
//! leaving the publisher to the segment's announcement through an `index.json` long-poll.
//! Used by `bench/announce_latency.sh`: `announce_latency RTMP_ADDR HTTP_ADDR [LOOPS]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{read_flv, FlvTag, Publisher, CLIP};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rtmp = args
        .get(1)
        .expect("RTMP address")
        .parse()
        .expect("RTMP address");
    let http = args.get(2).expect("HTTP address").to_owned();
    let loops: u32 = args.get(3).map_or(3, |v| v.parse().expect("loops"));
    let tags = read_flv(CLIP);
    let clip_ms = tags.iter().map(|t| t.timestamp_ms).max().unwrap_or(0) + 34;
    let first_video = tags
        .iter()
        .find(|t| t.kind == 9 && t.body.get(1) == Some(&1))
        .map_or(0, |t| t.timestamp_ms);
    let name = format!("lat{}", std::process::id());
    let mut p = Publisher::connect(rtmp, "live", &name)
        .await
        .expect("publish");
    let sent: std::sync::Arc<std::sync::Mutex<HashMap<u32, Instant>>> = Default::default();
    let sent2 = sent.clone();
    let publisher = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for n in 0..loops {
            for t in &tags {
                if t.kind != 8 && t.kind != 9 {
                    continue;
                }
                let is_seq_header = t.body.get(1) == Some(&0);
                if n > 0 && is_seq_header {
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
                if t.kind == 9 && t.body.first().is_some_and(|b| b >> 4 == 1) && !is_seq_header {
                    sent2.lock().unwrap().insert(ts, Instant::now());
                }
            }
        }
        p.close().await;
    });
    let client = reqwest::Client::new();
    let mut after: Option<u64> = None;
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(u64::from(loops) * 12 + 20);
    while Instant::now() < deadline {
        let url = match after {
            Some(a) => format!("http://{http}/streams/{name}/index.json?after={a}&wait=10s"),
            None => format!("http://{http}/streams/{name}/index.json"),
        };
        let Ok(resp) = client.get(&url).send().await else {
            continue;
        };
        let got = Instant::now();
        let v: serde_json::Value = resp.json().await.expect("json");
        for s in v["segments"].as_array().unwrap() {
            let seq = s["seq"].as_u64().unwrap();
            let end = s["start_ms"].as_u64().unwrap() + s["duration_ms"].as_u64().unwrap();
            // The keyframe that closed the segment: the one at the segment's end.
            let key = u32::try_from(end).unwrap() + first_video;
            let sent = sent.lock().unwrap();
            if let Some((_, at)) = sent
                .iter()
                .filter(|(ts, _)| ts.abs_diff(key) <= 40)
                .min_by_key(|(ts, _)| ts.abs_diff(key))
            {
                if after.is_some() {
                    latencies.push(got.duration_since(*at).as_secs_f64() * 1000.0);
                }
            }
            after = Some(seq);
        }
        if v["live"] == false && after.is_some() {
            break;
        }
    }
    publisher.await.unwrap();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    assert!(!latencies.is_empty(), "no segment was measured");
    println!(
        "segments={} announce_latency_ms median={:.1} p90={:.1} max={:.1}",
        latencies.len(),
        pick(0.5),
        pick(0.9),
        pick(1.0)
    );
}
