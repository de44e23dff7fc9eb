//! Relays: origin -> intermediate -> edge (in-process nodes; the two that are killed with -9 are
//! processes). Identical bytes at every hop, live propagation through long-polls, one upstream
//! pull per hop for concurrent misses, the control API, and failover between two origins
//! recording the same feed.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `[relay]` settings of the relays here: fail over after 3 s without a new segment.
const IDLE_3S: &str = "idle_timeout = \"3s\"\n";

/// An in-process relay of `up` that fails over after 3 s without a new segment.
fn relay_3s(up: &TestNode) -> TestNode {
    relay(&[up.base()], IDLE_3S)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hops_serve_identical_bytes_and_follow_live() {
    let origin = TestNode::origin();
    let intermediate = relay_3s(&origin);
    let edge = relay_3s(&intermediate);
    let publisher = publish_live(&origin, "cam").await;

    // The edge learns the stream on demand and follows it live.
    let first = wait_segments(&edge, "cam", 1).await[0]["seq"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let next =
        get_json(&edge.url(&format!("/streams/cam/index.json?after={first}&wait=20s"))).await;
    assert_eq!(next["segments"][0]["seq"], first + 1);
    let at_edge = started.elapsed();
    let at_origin = index(&origin, "cam").await;
    assert!(at_origin["segments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["seq"] == first + 1));
    assert!(
        at_edge < Duration::from_secs(4),
        "live segment reached the edge in {at_edge:?}"
    );
    let status = get_json(&edge.url("/streams/cam")).await;
    assert_eq!(status["source"]["kind"], "proxy");
    assert_eq!(status["source"]["upstream"], intermediate.base());
    assert_eq!(status["live"], true);

    tokio::time::timeout(Duration::from_secs(30), publisher)
        .await
        .unwrap()
        .unwrap()
        .expect("send");
    wait_ended(&origin, "cam").await;
    wait_ended(&edge, "cam").await;
    let o = index(&origin, "cam").await;
    let e = index(&edge, "cam").await;
    let i = index(&intermediate, "cam").await;
    for key in ["seq", "time", "duration_ms", "length", "start_ms", "hash"] {
        let pick = |ix: &serde_json::Value| {
            ix["segments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s[key].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(&o), pick(&e), "{key} differs between origin and edge");
        assert_eq!(
            pick(&o),
            pick(&i),
            "{key} differs between origin and intermediate"
        );
    }
    let c = http();
    for s in o["segments"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&serde_json::json!({"url": "init/0.mp4"})])
    {
        let path = format!("/streams/cam/{}", s["url"].as_str().unwrap());
        let a = c.get(origin.url(&path)).send().await.unwrap();
        let b = c.get(edge.url(&path)).send().await.unwrap();
        assert_eq!(b.status(), 200, "{path}");
        assert_eq!(a.headers()["etag"], b.headers()["etag"], "{path}");
        assert_eq!(b.headers()["via"], "1.1 test-node");
        assert_eq!(
            a.bytes().await.unwrap(),
            b.bytes().await.unwrap(),
            "{path} bytes identical"
        );
    }
    let text = get_text(&edge.url("/streams/cam/index.m3u8")).await;
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    // Ranges at the edge, on a cold and on a warm segment.
    let r = c
        .get(edge.url("/streams/cam/segments/2.m4s"))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let whole = get_bytes(&origin.url("/streams/cam/segments/2.m4s")).await;
    assert_eq!(r.bytes().await.unwrap(), whole.slice(100..200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_pull_per_hop() {
    let origin = TestNode::origin();
    publish_and_end(&origin, "cam").await;
    let intermediate = relay_3s(&origin);
    let edge = relay_3s(&intermediate);
    index(&edge, "cam").await;
    let before_edge = metric(&edge, "dvrgate_upstream_pulls_total").await;
    let before_mid = metric(&intermediate, "dvrgate_upstream_pulls_total").await;
    let url = edge.url("/streams/cam/segments/3.m4s");
    let c = http();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            c.get(&url).send().await.unwrap().bytes().await.unwrap()
        }));
    }
    let expected = get_bytes(&origin.url("/streams/cam/segments/3.m4s")).await;
    for t in tasks {
        assert_eq!(t.await.unwrap(), expected);
    }
    assert_eq!(
        metric(&edge, "dvrgate_upstream_pulls_total").await - before_edge,
        1.0,
        "one pull at the edge"
    );
    assert_eq!(
        metric(&intermediate, "dvrgate_upstream_pulls_total").await - before_mid,
        1.0,
        "one pull at the intermediate"
    );
    // Now warm: no more pulls.
    c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(
        metric(&edge, "dvrgate_upstream_pulls_total").await - before_edge,
        1.0
    );
}

#[tokio::test]
async fn unknown_names_are_cheap_404s() {
    let origin = TestNode::origin();
    let edge = relay_3s(&origin);
    let c = http();
    for i in 0..50 {
        let r = c
            .get(edge.url(&format!("/streams/nothing{i}/index.m3u8")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    assert!(
        get_json(&edge.url("/streams"))
            .await
            .as_array()
            .unwrap()
            .is_empty(),
        "no state for missing names"
    );
    // A dead upstream is a 502/504, not a 404 or a 500.
    let dead = relay(&["http://127.0.0.1:9".to_owned()], "");
    let r = c
        .get(dead.url("/streams/any/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert!(r.status() == 502 || r.status() == 504, "{}", r.status());
}

#[tokio::test]
async fn control_api_creates_lists_and_stops_proxies() {
    let origin = TestNode::origin();
    publish_and_end(&origin, "cam").await;
    let up = origin.base();
    let allow = up.clone();
    let relay = TestNode::start_with(move |_| {
        format!("[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"s3cret\"\nallow_upstreams = [\"{allow}\"]\n\n[rtmp]\nlisten = \"off\"\n")
    });
    let c = http();
    let api = relay.url("/api/proxies");
    let post = |body: &serde_json::Value, token| admin(c.post(&api).json(body), token);
    let body = serde_json::json!({"local": "copy", "remote": "cam", "upstreams": [up]});
    assert_eq!(post(&body, None).await.0, 401, "no token");
    assert_eq!(post(&body, Some("wrong")).await.0, 401, "wrong token");
    let bad =
        serde_json::json!({"local": "x", "remote": "cam", "upstreams": ["http://127.0.0.9:1"]});
    let (status, v) = post(&bad, Some("s3cret")).await;
    assert_eq!(status, 403);
    assert_eq!(v["code"], "NetConnection.Connect.Rejected");
    let (status, v) = post(&body, Some("s3cret")).await;
    assert_eq!(status, 201);
    assert_eq!(v["code"], "ProxyStream.Proxy.Start");
    let (status, v) = post(&body, Some("s3cret")).await;
    assert_eq!(status, 409, "local taken");
    assert_eq!(v["code"], "ProxyStream.Proxy.BadName");
    let bad_name = serde_json::json!({"local": "a/b", "remote": "cam", "upstreams": [up]});
    assert_eq!(post(&bad_name, Some("s3cret")).await.0, 409);
    let (status, list) = admin(c.get(&api), Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["local"], "copy");
    assert_eq!(list[0]["upstream"], up);
    let segs = wait_segments(&relay, "copy", 1).await.len();
    assert_eq!(segs, segments(&origin, "cam").await.len());
    let (status, v) = admin(c.delete(relay.url("/api/proxies/copy")), Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(v["code"], "ProxyStream.Proxy.Stop");
    assert_eq!(
        c.get(relay.url("/streams/copy"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// A control API call with an optional bearer token: the status and the JSON body (`null`
/// when there is none).
async fn admin(
    req: reqwest::RequestBuilder,
    token: Option<&'static str>,
) -> (u16, serde_json::Value) {
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_a_continuous_timeline() {
    // `a` is killed with -9: a process.
    let mut a = TestNode::process_origin();
    let b = TestNode::origin();
    let (ua, ub) = (a.base(), b.base());
    // One feed pushed to both origins at once (two publishers, same tags, same pacing).
    let tags = read_flv(CLIP);
    let mut pa = Publisher::connect(a.rtmp.unwrap(), "live", "cam")
        .await
        .expect("publish a");
    let mut pb = Publisher::connect(b.rtmp.unwrap(), "live", "cam")
        .await
        .expect("publish b");
    let feed = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut a_alive = true;
        for round in 0..2u32 {
            for t in &tags {
                let ts = round * 10_033 + t.timestamp_ms;
                if round > 0 && t.body.get(1) == Some(&0) {
                    continue;
                }
                tokio::time::sleep_until(start + Duration::from_millis(u64::from(ts))).await;
                let tag = FlvTag {
                    timestamp_ms: ts,
                    ..t.clone()
                };
                if a_alive && pa.send(&tag).await.is_err() {
                    a_alive = false;
                }
                pb.send(&tag).await.expect("b keeps publishing");
            }
        }
        pb.close().await;
    });
    // The relay starts once both origins have the stream, so that the only failover it makes
    // is the one the kill causes (idle_timeout well above the segment duration).
    for node in [&a, &b] {
        wait_segments(node, "cam", 1).await;
    }
    let relay = proxy_of(&[ua, ub], "\n[relay]\nidle_timeout = \"5s\"\n");
    let events = Events::subscribe(&relay, "/streams/cam/events").await;
    wait_segments(&relay, "cam", 3).await;
    a.stop_hard();
    tokio::time::timeout(Duration::from_secs(40), feed)
        .await
        .expect("feed finished")
        .unwrap();
    let ix = eventually(Duration::from_secs(20), || async {
        let ix = index(&relay, "cam").await;
        (ix["live"] == false).then_some(ix)
    })
    .await;
    let segs = ix["segments"].as_array().unwrap();
    let times: Vec<i64> = segs
        .iter()
        .map(|s| dvrgate::time::parse_rfc3339(s["time"].as_str().unwrap()).unwrap())
        .collect();
    for (i, w) in segs.windows(2).enumerate() {
        assert_eq!(
            w[1]["seq"].as_u64().unwrap(),
            w[0]["seq"].as_u64().unwrap() + 1,
            "relay seq contiguous at {i}"
        );
        let gap = times[i + 1] - (times[i] + w[0]["duration_ms"].as_i64().unwrap());
        assert!(gap > -1000, "no repeated segment at {i}: gap {gap} ms");
        assert!(gap < 1000, "no skipped segment at {i}: gap {gap} ms");
    }
    let total: u64 = segs
        .iter()
        .map(|s| s["duration_ms"].as_u64().unwrap())
        .sum();
    assert!(total >= 19_000, "the whole feed is there: {total} ms");
    let status = get_json(&relay.url("/streams/cam")).await;
    assert_eq!(status["source"]["upstream"], b.base(), "no failback");
    // NotResponding (naming the dead upstream), then Failover.
    events
        .wait_for("ProxyStream.Proxy.Failover", None, Duration::from_secs(2))
        .await;
    let all = events.all();
    let i = all
        .iter()
        .position(|e| e["code"] == "NetConnection.Proxy.NotResponding")
        .unwrap_or_else(|| panic!("no NotResponding: {all:#?}"));
    assert!(
        all[i..]
            .iter()
            .any(|e| e["code"] == "ProxyStream.Proxy.Failover"),
        "{all:#?}"
    );
    assert!(
        all[i..].iter().any(|e| e["upstream"] == a.base()),
        "{all:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_lists_what_its_upstreams_offer() {
    let origin = TestNode::origin();
    let intermediate = relay_3s(&origin);
    let edge = relay_3s(&intermediate);
    publish_and_end(&origin, "cam").await;
    // Nobody has watched through the edge yet: it lists the stream as available upstream.
    let list = get_json(&edge.url("/streams")).await;
    let cam = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "cam")
        .unwrap_or_else(|| panic!("cam missing at the edge: {list}"));
    assert_eq!(cam["source"]["kind"], "proxy", "{cam}");
    assert_eq!(cam["source"]["state"], "available", "{cam}");
    assert_eq!(cam["source"]["upstream"], intermediate.base());
    assert_eq!(cam["node"], "test-node");
    // Once watched, it is a relay of its own.
    let ix = index(&edge, "cam").await;
    assert!(!ix["segments"].as_array().unwrap().is_empty());
    let st = get_json(&edge.url("/streams/cam")).await;
    assert_eq!(st["source"]["kind"], "proxy");
    assert_ne!(st["source"]["state"], "available", "{st}");
    let list = get_json(&edge.url("/streams")).await;
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == "cam")
            .count(),
        1,
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_listed_by_a_dead_upstream_comes_from_its_twin() {
    let origin = TestNode::origin();
    publish_and_end(&origin, "cam").await;
    // Killed with -9 below: a process.
    let mut mid_a = relay_on(Backend::Process, &[origin.base()], IDLE_3S);
    let mid_b = relay_3s(&origin);
    let edge = relay(&[mid_a.base(), mid_b.base()], "");
    let ix = index(&edge, "cam").await;
    assert_eq!(
        get_json(&edge.url("/streams/cam")).await["source"]["upstream"],
        mid_a.base()
    );
    let seq = ix["segments"][2]["seq"].as_u64().unwrap();
    mid_a.stop_hard();
    // Listed by the dead intermediate, never fetched at the edge: the twin has the same
    // segment (same origin, same path, same content hash), so the edge serves it from there.
    let path = format!("/streams/cam/segments/{seq}.m4s");
    let r = http().get(edge.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let want = get_bytes(&origin.url(&path)).await;
    assert_eq!(r.bytes().await.unwrap(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwatched_on_demand_relay_lets_go() {
    let origin = TestNode::origin();
    publish_and_end(&origin, "cam").await;
    let edge = relay(&[origin.base()], &format!("{IDLE_3S}idle_reap = \"1s\"\n"));
    let events = Events::subscribe(&edge, "/events").await;
    index(&edge, "cam").await;
    let state = |v: serde_json::Value| v["source"]["state"].as_str().unwrap_or_default().to_owned();
    assert_ne!(
        state(get_json(&edge.url("/streams/cam")).await),
        "available"
    );
    // Nobody asks for it (listing /streams does not count): it stops and frees its state,
    // and goes back to being merely available upstream.
    eventually(Duration::from_secs(10), || async {
        let list = get_json(&edge.url("/streams")).await;
        let cam = list
            .as_array()?
            .iter()
            .find(|s| s["name"] == "cam")?
            .clone();
        (state(cam) == "available").then_some(())
    })
    .await;
    events
        .wait_for("ProxyStream.Proxy.Stop", None, Duration::from_secs(2))
        .await;
    // Watching again relays it again.
    assert!(!index(&edge, "cam").await["segments"]
        .as_array()
        .unwrap()
        .is_empty());
}
