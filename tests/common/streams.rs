//! Streams at a node: publish and wait, read the index, follow status events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::{eventually, get_bytes, get_json, http, read_flv, FlvTag, Publisher, TestNode, CLIP};

/// How long a stream may take to show as ended, or to list the segments a test waits for.
const STREAM_WAIT: Duration = Duration::from_secs(30);

/// Publishes the fixture once as `name`, unpublishes, and waits until the node says it ended.
pub async fn publish_and_end(node: &TestNode, name: &str) {
    publish_tags_and_end(node, name, &read_flv(CLIP)).await;
}

/// Publishes `tags` as fast as they go as `name`, unpublishes, and waits until the node says
/// the stream ended; returns its status.
pub async fn publish_tags_and_end(
    node: &TestNode,
    name: &str,
    tags: &[FlvTag],
) -> serde_json::Value {
    publish_then_end(node, name, tags, false).await
}

/// Publishes `tags` in real time (as a camera or `ffmpeg -re` does) as `name`, unpublishes,
/// and waits until the node says the stream ended; returns its status. A DVR window of N s
/// takes N s to record: segment times are never ahead of the wall clock.
pub async fn publish_real_time_and_end(
    node: &TestNode,
    name: &str,
    tags: &[FlvTag],
) -> serde_json::Value {
    publish_then_end(node, name, tags, true).await
}

async fn publish_then_end(
    node: &TestNode,
    name: &str,
    tags: &[FlvTag],
    realtime: bool,
) -> serde_json::Value {
    let mut p = Publisher::connect(node.rtmp.expect("rtmp enabled"), "live", name)
        .await
        .expect("publish accepted");
    p.send_all(tags, 0, realtime).await.expect("tags sent");
    p.close().await;
    wait_ended(node, name).await
}

/// `rounds` copies of the fixture back to back (timestamps shifted by 10 s a round).
pub fn looped_clip(rounds: u32) -> Vec<FlvTag> {
    let tags = read_flv(CLIP);
    (0..rounds)
        .flat_map(|round| {
            tags.iter().map(move |t| FlvTag {
                timestamp_ms: t.timestamp_ms + round * 10_000,
                ..t.clone()
            })
        })
        .collect()
}

/// Publishes the fixture in real time as `name` in the background (connected when this
/// returns); the task ends with the unpublish, or with the first send error.
pub async fn publish_live(
    node: &TestNode,
    name: &str,
) -> tokio::task::JoinHandle<Result<(), String>> {
    publish_live_tags(node, name, read_flv(CLIP)).await
}

/// Publishes `tags` in real time as `name` in the background, like [`publish_live`].
pub async fn publish_live_tags(
    node: &TestNode,
    name: &str,
    tags: Vec<FlvTag>,
) -> tokio::task::JoinHandle<Result<(), String>> {
    let mut p = Publisher::connect(node.rtmp.expect("rtmp enabled"), "live", name)
        .await
        .expect("publish accepted");
    tokio::spawn(async move {
        p.send_all(&tags, 0, true).await?;
        p.close().await;
        Ok(())
    })
}

/// Waits until `GET /streams/{name}` says the stream is not live; returns that status.
pub async fn wait_ended(node: &TestNode, name: &str) -> serde_json::Value {
    let url = node.url(&format!("/streams/{name}"));
    eventually(STREAM_WAIT, || async {
        let s = get_json(&url).await;
        (s["live"] == false).then_some(s)
    })
    .await
}

/// `index.json` of a stream (panics unless 2xx).
pub async fn index(node: &TestNode, name: &str) -> serde_json::Value {
    get_json(&node.url(&format!("/streams/{name}/index.json"))).await
}

/// The segments `index.json` of a stream lists.
pub async fn segments(node: &TestNode, name: &str) -> Vec<serde_json::Value> {
    index(node, name).await["segments"]
        .as_array()
        .expect("segments")
        .clone()
}

/// Waits until `index.json` of a stream lists at least `n` segments (errors and unparsable
/// answers count as not yet); returns them.
pub async fn wait_segments(node: &TestNode, name: &str, n: usize) -> Vec<serde_json::Value> {
    let url = node.url(&format!("/streams/{name}/index.json"));
    eventually(STREAM_WAIT, || async {
        let r = http().get(&url).send().await.ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        let segs = v["segments"].as_array()?;
        (segs.len() >= n).then(|| segs.clone())
    })
    .await
}

/// The bytes of each listed segment of a stream (each a 200 of the listed length).
pub async fn segment_bytes(node: &TestNode, name: &str, segs: &[serde_json::Value]) -> Vec<Bytes> {
    let mut out = Vec::new();
    for s in segs {
        let url = node.url(&format!("/streams/{name}/{}", s["url"].as_str().unwrap()));
        let body = get_bytes(&url).await;
        assert_eq!(body.len() as u64, s["length"].as_u64().unwrap(), "{url}");
        out.push(body);
    }
    out
}

/// Every status event of a node (or of one stream), collected in the background from its SSE
/// stream.
#[derive(Clone)]
pub struct Events(Arc<Mutex<Vec<serde_json::Value>>>);

impl Events {
    /// Subscribes to `GET {path}` (`/events` or `/streams/{name}/events`); returns once the
    /// subscription is in place.
    pub async fn subscribe(node: &TestNode, path: &str) -> Events {
        let resp = tokio::time::timeout(Duration::from_secs(10), http().get(node.url(path)).send())
            .await
            .expect("SSE subscribe timed out")
            .expect("SSE subscribe");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let events = Events(Arc::default());
        let sink = events.0.clone();
        tokio::spawn(async move {
            let mut resp = resp;
            let mut buf = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line);
                    if let Some(json) = line.trim_end().strip_prefix("data:") {
                        // Data that is not JSON is kept as a marker for the test to trip on.
                        let v = serde_json::from_str(json.trim())
                            .unwrap_or_else(|_| serde_json::json!({ "unparsable": json }));
                        sink.lock().unwrap().push(v);
                    }
                }
            }
        });
        events
    }

    /// Every event so far, in order.
    pub fn all(&self) -> Vec<serde_json::Value> {
        self.0.lock().unwrap().clone()
    }

    /// The codes of every event so far, in order.
    pub fn codes(&self) -> Vec<String> {
        self.all()
            .iter()
            .map(|e| e["code"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn with_code(&self, code: &str) -> Vec<serde_json::Value> {
        self.all()
            .into_iter()
            .filter(|e| e["code"] == code)
            .collect()
    }

    /// Waits for an event with `code` (about `stream`, when given).
    pub async fn wait_for(
        &self,
        code: &str,
        stream: Option<&str>,
        timeout: Duration,
    ) -> serde_json::Value {
        eventually(timeout, || async {
            self.with_code(code)
                .into_iter()
                .find(|e| stream.is_none_or(|s| e["stream"] == s))
        })
        .await
    }
}
