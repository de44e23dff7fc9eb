//! Relays against faulty upstreams, and the disk tier on real nodes.
//!
//! The faulty upstream is `common::fake_upstream`: an HTTP/1.1 server on raw TCP serving what
//! a real origin recorded from the fixture, with faults injected per segment and per stream.
//!
//! What must hold at the relay (an in-process node):
//! - a bad segment is never served as a complete 200 body: a pull that fails before its first
//!   byte is a 502/504, a later failure ends the body short (the status is sent by then);
//! - nothing bad is cached: once the upstream is healed, the same URLs serve the right bytes;
//! - a broken transfer resumes from the same upstream with a Range for the missing bytes;
//! - an unusable index is refused (502), never followed, and never makes the relay request a
//!   URL outside the stream;
//! - the relay keeps answering `/healthz` and serving its other streams throughout.
//!
//! The disk tier, on an origin and a relay: with a memory budget below the working set, evicted
//! segments spill to a bounded disk dir and come back from it without any upstream traffic;
//! the dir never holds more than its bound.
//!
//! Every wait is bounded; every port is an ephemeral loopback port.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fake_upstream::{record_source, Fake, Fault, Listing, Source, SLOW_HALF};
use common::*;

/// What a client of the relay got.
#[derive(Debug)]
enum Outcome {
    /// A non-200 status.
    Status(u16),
    /// A 200 whose body broke off (or never came) before its Content-Length.
    Broken { got: usize, declared: Option<u64> },
    /// A 200 with the whole declared body.
    Complete(Bytes),
}

async fn fetch(client: &reqwest::Client, url: &str) -> Outcome {
    let mut r = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => panic!("GET {url}: no answer at all: {e}"),
    };
    let status = r.status().as_u16();
    if status != 200 {
        return Outcome::Status(status);
    }
    let declared = r.content_length();
    let mut body = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) if declared.is_none_or(|d| d == body.len() as u64) => {
                return Outcome::Complete(body.into())
            }
            Ok(None) | Err(_) => {
                return Outcome::Broken {
                    got: body.len(),
                    declared,
                }
            }
        }
    }
}

/// Waits until the relay lists every segment of `stream`: exactly `n`.
async fn relay_lists_all(relay: &TestNode, stream: &str, n: usize) {
    let listed = wait_segments(relay, stream, n).await.len();
    assert_eq!(listed, n, "{stream}: segments listed");
}

/// Polls `/healthz` and a good stream's segments until stopped; returns what went wrong.
fn watchdog(
    relay: &TestNode,
    good: &'static str,
    source: Arc<Source>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<String>, u32)> {
    let base = relay.url("");
    tokio::spawn(async move {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let seqs = source.seqs();
        let mut problems = Vec::new();
        let mut rounds = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let seq = seqs[rounds as usize % seqs.len()];
            let t = Instant::now();
            match c.get(format!("{base}/healthz")).send().await {
                Ok(r) if r.status() == 200 => {}
                other => problems.push(format!("healthz: {other:?}")),
            }
            let url = format!("{base}/streams/{good}/segments/{seq}.m4s");
            match c.get(&url).send().await {
                Ok(r) if r.status() == 200 => match r.bytes().await {
                    Ok(b) if b == source.segments[&seq] => {}
                    other => problems.push(format!("{url}: body {:?}", other.map(|b| b.len()))),
                },
                other => problems.push(format!("{url}: {other:?}")),
            }
            if t.elapsed() > Duration::from_secs(3) {
                problems.push(format!("a round took {:?}", t.elapsed()));
            }
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (problems, rounds)
    })
}

/// Stops the watchdog; asserts that it saw no problem in at least `min_rounds` rounds.
async fn stop_watchdog(
    stop: &AtomicBool,
    dog: tokio::task::JoinHandle<(Vec<String>, u32)>,
    min_rounds: u32,
) {
    stop.store(true, Ordering::Relaxed);
    let (problems, rounds) = tokio::time::timeout(Duration::from_secs(15), dog)
        .await
        .unwrap()
        .unwrap();
    assert!(problems.is_empty(), "the relay kept serving: {problems:#?}");
    assert!(
        rounds >= min_rounds,
        "the watchdog ran throughout ({rounds} rounds)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_bytes_as_they_arrive() {
    let source = Arc::new(record_source().await);
    let fake = Fake::start(source.clone()).await;
    let relay = relay(&[fake.url()], "");
    let seq = source.seqs()[1];
    fake.list("slow", Listing::Good);
    fake.fault("slow", seq, Fault::SlowHalf);
    relay_lists_all(&relay, "slow", source.seqs().len()).await;
    let pulls = metric(&relay, "dvrgate_upstream_pulls_total").await;
    let url = relay.url(&format!("/streams/slow/segments/{seq}.m4s"));
    let start = Instant::now();
    let viewers: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut r = http().get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let mut body = Vec::new();
                let mut first = None;
                while let Some(c) = r.chunk().await.unwrap() {
                    first.get_or_insert_with(|| start.elapsed());
                    body.extend_from_slice(&c);
                }
                (first.unwrap(), start.elapsed(), body)
            })
        })
        .collect();
    for v in viewers {
        let (first, done, body) = v.await.unwrap();
        assert!(body == source.segments[&seq], "whole and right");
        // The first half reaches every viewer long before the upstream sends the rest.
        assert!(first < SLOW_HALF * 2 / 3, "first bytes after {first:?}");
        assert!(done >= SLOW_HALF, "done after {done:?}");
    }
    assert_eq!(
        metric(&relay, "dvrgate_upstream_pulls_total").await - pulls,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_upstream_segments_are_never_served_or_cached() {
    let source = Arc::new(record_source().await);
    let fake = Fake::start(source.clone()).await;
    let relay = relay(&[fake.url()], "");
    let seqs = source.seqs();
    let n = seqs.len();
    // The second segment of each stream carries the fault.
    let seq = seqs[1];
    let len = source.segments[&seq].len();
    let faults: Vec<(&str, Fault)> = vec![
        ("drop-always", Fault::DropAlways(len / 8)),
        ("drop-then-200", Fault::DropThen200(len / 3)),
        ("short", Fault::Short(len / 8)),
        ("longer", Fault::Longer(100)),
        ("wrong-range", Fault::WrongRange),
        ("whole-wrong-size", Fault::WholeWrongSize),
        ("stall", Fault::Stall),
        ("no-headers", Fault::NoHeaders),
        ("status-500", Fault::Status500),
        ("garbage", Fault::Garbage),
    ];
    let resume_at = len / 3;
    fake.list("good", Listing::Good);
    fake.list("resume", Listing::Good);
    fake.fault("resume", seq, Fault::DropOnce(resume_at));
    for (stream, fault) in &faults {
        fake.list(stream, Listing::Good);
        fake.fault(stream, seq, *fault);
    }
    for stream in ["good", "resume"]
        .into_iter()
        .chain(faults.iter().map(|f| f.0))
    {
        relay_lists_all(&relay, stream, n).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let dog = watchdog(&relay, "good", source.clone(), stop.clone());
    let failures_before = metric(&relay, "dvrgate_upstream_pull_failures_total").await;

    // Every fault at once (their timeouts overlap); the garbage segment twice concurrently.
    let c = http();
    let url = |stream: &str| relay.url(&format!("/streams/{stream}/segments/{seq}.m4s"));
    let requests = faults
        .iter()
        .map(|(s, _)| s.to_string())
        .chain(["garbage".to_owned(), "resume".to_owned()]);
    let tasks: Vec<_> = requests
        .map(|stream| {
            let (c, u) = (c.clone(), url(&stream));
            tokio::spawn(async move { (stream, fetch(&c, &u).await) })
        })
        .collect();
    let expected = &source.segments[&seq];
    for t in tasks {
        let (stream, outcome) = tokio::time::timeout(Duration::from_secs(25), t)
            .await
            .expect("every request ends")
            .unwrap();
        if stream == "resume" {
            match outcome {
                Outcome::Complete(b) => assert!(b == *expected, "resumed bytes are right"),
                other => panic!("a resumable break was not resumed: {other:?}"),
            }
            continue;
        }
        let no_byte = [
            "wrong-range",
            "whole-wrong-size",
            "stall",
            "no-headers",
            "status-500",
        ];
        match outcome {
            // Timeouts are 504s (the gateway waited), everything else 502.
            Outcome::Status(s) if ["stall", "no-headers"].contains(&stream.as_str()) => {
                assert_eq!(s, 504, "{stream}")
            }
            Outcome::Status(s) => assert_eq!(s, 502, "{stream}"),
            // A pull that fails before its first byte is a 502/504: the status is still unsent.
            Outcome::Broken { .. } if no_byte.contains(&stream.as_str()) => {
                panic!("{stream}: a 200 for a pull that never delivered a byte: {outcome:?}")
            }
            Outcome::Broken { got, declared } => {
                assert_eq!(declared, Some(len as u64), "{stream}");
                assert!(got < len, "{stream}: {got} bytes");
            }
            Outcome::Complete(b) => panic!(
                "{stream}: a bad segment was served whole ({} bytes, right = {})",
                b.len(),
                b == *expected
            ),
        }
    }

    // The resume asked the same upstream for exactly the missing bytes.
    let path = format!("/streams/resume/segments/{seq}.m4s");
    let asks: Vec<_> = fake
        .log()
        .into_iter()
        .filter(|s| s.path == path)
        .map(|s| s.range)
        .collect();
    assert_eq!(
        asks,
        vec![
            Some((0, Some(len as u64 - 1))),
            Some((resume_at as u64, Some(len as u64 - 1)))
        ],
        "a full Range, then a Range for what was missing"
    );
    let failures = metric(&relay, "dvrgate_upstream_pull_failures_total").await - failures_before;
    assert_eq!(
        failures,
        faults.len() as f64,
        "one failed pull per faulty segment (the concurrent garbage requests share one)"
    );

    // Healed: nothing bad was cached, the same URLs now serve the right bytes.
    fake.heal();
    for (stream, _) in &faults {
        match fetch(&c, &url(stream)).await {
            Outcome::Complete(b) => assert!(b == *expected, "{stream}: right bytes after healing"),
            other => panic!("{stream}: after healing: {other:?}"),
        }
    }
    stop_watchdog(&stop, dog, 5).await;
    assert!(
        get_bytes(&relay.url("/streams/good/init/0.mp4")).await == source.init,
        "init of the good stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_indexes_are_refused() {
    let source = Arc::new(record_source().await);
    let fake = Fake::start(source.clone()).await;
    let relay = relay(&[fake.url()], "");
    let n = source.segments.len();
    fake.list("good", Listing::Good);
    relay_lists_all(&relay, "good", n).await;
    // Known to the relay, then its index turns into garbage: what is known stays served.
    fake.list("turns", Listing::Good);
    relay_lists_all(&relay, "turns", n).await;
    fake.list(
        "turns",
        Listing::Body(Bytes::from_static(b"<html>oops</html>")),
    );

    type Mutation = fn(&mut serde_json::Value);
    let hostile: Vec<(&str, Mutation)> = vec![
        ("huge-length", |ix| {
            ix["segments"][0]["length"] = (1u64 << 40).into()
        }),
        ("zero-length", |ix| ix["segments"][0]["length"] = 0.into()),
        ("dotdot-url", |ix| {
            ix["segments"][0]["url"] = "../../../etc/passwd".into()
        }),
        ("dotdot-inner", |ix| {
            ix["segments"][0]["url"] = "segments/../../other/segments/0.m4s".into()
        }),
        ("absolute-url", |ix| {
            ix["segments"][0]["url"] = "http://127.0.0.1:9/x.m4s".into()
        }),
        ("rooted-url", |ix| {
            ix["segments"][0]["url"] = "/etc/passwd".into()
        }),
        ("dotdot-init", |ix| {
            ix["periods"][0]["init"] = "../init/0.mp4".into()
        }),
        ("out-of-order", |ix| {
            let a = ix["segments"][0]["seq"].clone();
            ix["segments"][0]["seq"] = ix["segments"][1]["seq"].clone();
            ix["segments"][1]["seq"] = a;
        }),
        ("repeated-seq", |ix| {
            ix["segments"][1]["seq"] = ix["segments"][0]["seq"].clone()
        }),
        ("unknown-period", |ix| {
            ix["segments"][0]["period"] = 7.into()
        }),
        ("bad-time", |ix| {
            ix["segments"][0]["time"] = "yesterday".into()
        }),
        ("huge-offset", |ix| {
            ix["segments"][0]["offset"] = (u64::MAX - 10).into()
        }),
        ("max-seq", |ix| {
            let segs = ix["segments"].as_array_mut().unwrap();
            segs.truncate(1);
            segs[0]["seq"] = u64::MAX.into();
        }),
        ("huge-start", |ix| {
            ix["segments"][1]["start_ms"] = u64::MAX.into()
        }),
        ("huge-duration", |ix| {
            ix["segments"][0]["duration_ms"] = u64::MAX.into();
            ix["segments"][1]["duration_ms"] = u64::MAX.into();
        }),
        ("huge-init-length", |ix| {
            ix["periods"][0]["length"] = (1u64 << 40).into()
        }),
        ("wrong-types", |ix| ix["segments"][0]["seq"] = "one".into()),
    ];
    let mut names: Vec<String> = Vec::new();
    for (name, mutate) in &hostile {
        let mut ix = fake.index_of(name);
        mutate(&mut ix);
        fake.list(name, Listing::Body(serde_json::to_vec(&ix).unwrap().into()));
        names.push(name.to_string());
    }
    let garbage: [(&str, &[u8]); 4] = [
        ("junk", b"{\"live\": tru"),
        ("empty", b""),
        ("not-an-object", b"[1,2,3]"),
        ("binary", b"\x00\xff\xfe\x00garbage"),
    ];
    for (name, body) in garbage {
        fake.list(name, Listing::Body(Bytes::from_static(body)));
        names.push(name.to_owned());
    }
    fake.list("oversized", Listing::Oversized);
    names.push("oversized".to_owned());

    let stop = Arc::new(AtomicBool::new(false));
    let dog = watchdog(&relay, "good", source.clone(), stop.clone());
    let c = http();
    let tasks: Vec<_> = names
        .iter()
        .map(|name| {
            let c = c.clone();
            let base = relay.url(&format!("/streams/{name}"));
            let name = name.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for path in ["/index.json", "/index.m3u8", "", "/segments/0.m4s"] {
                    let r = c.get(format!("{base}{path}")).send().await;
                    statuses.push((
                        path,
                        r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()),
                    ));
                }
                (name, statuses)
            })
        })
        .collect();
    for t in tasks {
        let (name, statuses) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("answered in time")
            .unwrap();
        for (path, status) in statuses {
            assert_eq!(
                status,
                Ok(502),
                "{name}{path}: an unusable index is an upstream failure"
            );
        }
    }
    // Nothing outside the stream was ever asked for, and no segment of a refused stream.
    for seen in fake.log() {
        assert!(!seen.path.contains(".."), "relay requested {:?}", seen.path);
        let stream = seen.path.split('/').nth(2).unwrap_or("");
        if names.iter().any(|n| n == stream) {
            assert!(
                seen.path.ends_with("/index.json"),
                "relay followed a refused index: {:?}",
                seen.path
            );
        }
    }
    // The stream whose index turned bad keeps what it had.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ix = get_json(&relay.url("/streams/turns/index.json")).await;
    assert_eq!(ix["segments"].as_array().unwrap().len(), n);
    let seq = source.seqs()[0];
    assert!(
        get_bytes(&relay.url(&format!("/streams/turns/segments/{seq}.m4s"))).await
            == source.segments[&seq]
    );
    stop_watchdog(&stop, dog, 3).await;
}

/// Raises the flag when dropped, also when a failed assertion unwinds: a sampler thread must
/// not outlive its test (the runtime would wait for it).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Total size of every file in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Every media URL of `stream` at `node` (init first), with its bytes at the origin.
async fn media_of(origin: &TestNode, stream: &str) -> Vec<(String, Bytes)> {
    let mut paths = vec![format!("/streams/{stream}/init/0.mp4")];
    for seg in segments(origin, stream).await {
        paths.push(format!(
            "/streams/{stream}/{}",
            seg["url"].as_str().unwrap()
        ));
    }
    let mut out = Vec::new();
    for p in paths {
        let b = get_bytes(&origin.url(&p)).await;
        out.push((p, b));
    }
    out
}

/// Segment and init reads at a recording node (each request is a hit or a miss).
async fn origin_reads(origin: &TestNode) -> f64 {
    metric(origin, "dvrgate_cache_hits_total").await
        + metric(origin, "dvrgate_cache_misses_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_segments_spill_to_disk_and_are_served_without_pulls() {
    let origin = TestNode::origin();
    publish_and_end(&origin, "cam").await;
    publish_and_end(&origin, "cam2").await;
    let cam = media_of(&origin, "cam").await;
    let cam2 = media_of(&origin, "cam2").await;
    let size = |m: &[(String, Bytes)]| m.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
    let smallest = cam[1..].iter().map(|(_, b)| b.len() as u64).min().unwrap();
    // Memory holds one segment, never two; the disk holds all of `cam` but not `cam` + `cam2`.
    let memory: u64 = 200 << 10;
    let disk: u64 = 640 << 10;
    assert!(2 * smallest > memory, "segments of {smallest} bytes");
    assert!(size(&cam) < disk && size(&cam) + size(&cam2) > disk);
    let up = origin.base();
    let relay = TestNode::start_with(move |dir| {
        format!(
            "[rtmp]\nlisten = \"off\"\n\n[relay]\nupstreams = [\"{up}\"]\n\n[cache]\nmemory = {memory}\ndisk_dir = {:?}\ndisk = {disk}\n",
            dir.join("cache")
        )
    });
    let cache_dir = relay.dir.join("cache");
    // The disk bound holds at every moment, not only at the end.
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let sampler = {
        let (dir, stop) = (cache_dir.clone(), stop.0.clone());
        tokio::task::spawn_blocking(move || {
            let mut most = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                most = most.max(dir_bytes(&dir));
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    let fetch_all = |media: Vec<(String, Bytes)>| {
        let relay_url = relay.url("");
        async move {
            for (path, want) in media {
                let got = get_bytes(&format!("{relay_url}{path}")).await;
                assert!(got == want, "{path}: relayed bytes differ");
            }
        }
    };
    relay_lists_all(&relay, "cam", cam.len() - 1).await;
    fetch_all(cam.clone()).await;
    let pulls = metric(&relay, "dvrgate_upstream_pulls_total").await;
    assert_eq!(pulls, cam.len() as f64, "one pull per segment and init");
    // Everything but what memory holds spills.
    eventually(Duration::from_secs(10), || async {
        let spilled = metric(&relay, "dvrgate_cache_spills_total").await;
        (spilled >= (cam.len() - 2) as f64).then_some(())
    })
    .await;
    let reads = origin_reads(&origin).await;
    let disk_hits = metric(&relay, "dvrgate_cache_disk_hits_total").await;

    // The three earliest segments again: memory holds one of them at most, so at least two
    // come from the disk tier; right bytes, no upstream traffic.
    fetch_all(cam[1..4].to_vec()).await;
    let early_disk_hits = metric(&relay, "dvrgate_cache_disk_hits_total").await - disk_hits;
    assert!(
        early_disk_hits >= 2.0,
        "early segments came from disk ({early_disk_hits} disk hits)"
    );
    // Everything again: only the init and one segment fit in memory.
    fetch_all(cam.clone()).await;
    let all_disk_hits =
        metric(&relay, "dvrgate_cache_disk_hits_total").await - disk_hits - early_disk_hits;
    assert!(
        all_disk_hits >= (cam.len() - 2) as f64,
        "memory holds the init and one segment, the rest came from disk ({all_disk_hits} disk hits)"
    );
    assert_eq!(
        metric(&relay, "dvrgate_upstream_pulls_total").await,
        pulls,
        "no new pulls"
    );
    assert_eq!(
        origin_reads(&origin).await,
        reads,
        "the origin served no segment again"
    );
    assert_eq!(
        metric(&relay, "dvrgate_upstream_pull_failures_total").await,
        0.0
    );

    // More than the disk holds: the oldest files go, the bound holds.
    relay_lists_all(&relay, "cam2", cam2.len() - 1).await;
    fetch_all(cam2.clone()).await;
    eventually(Duration::from_secs(10), || async {
        (metric(&relay, "dvrgate_cache_disk_evictions_total").await > 0.0).then_some(())
    })
    .await;
    let gauge = metric(&relay, "dvrgate_cache_disk_bytes").await;
    assert!(gauge > 0.0 && gauge <= disk as f64, "disk gauge {gauge}");
    assert!(dir_bytes(&cache_dir) <= disk);
    // Whatever was evicted from disk is pulled again, correctly.
    fetch_all(cam.clone()).await;
    drop(stop);
    let most = tokio::time::timeout(Duration::from_secs(5), sampler)
        .await
        .unwrap()
        .unwrap();
    assert!(
        most > 0 && most <= disk,
        "the disk dir held at most {most} bytes, bound {disk}"
    );
    assert!(metric(&relay, "dvrgate_cache_memory_evictions_total").await > 0.0);
}
