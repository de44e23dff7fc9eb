use std::time::Duration;

use futures_util::StreamExt;

use super::*;

fn key(seq: u64) -> Key {
    Key::Segment {
        stream: "s#0".into(),
        seq,
    }
}

fn body(seq: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u64 * 31 + seq) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn expect(b: &Bytes) -> Expect {
    Expect {
        length: b.len() as u64,
        hash: Some(xxhash_rust::xxh3::xxh3_64(b)),
    }
}

async fn collect(f: Fetched) -> Result<Bytes, PullError> {
    match f {
        Fetched::Ready(b) => Ok(b),
        Fetched::Streaming(r) => {
            let mut out = Vec::new();
            let mut s = std::pin::pin!(r.all());
            while let Some(c) = s.next().await {
                out.extend_from_slice(&c?);
            }
            Ok(out.into())
        }
    }
}

/// A pull that sends `data` in `chunks` pieces with a pause between them.
async fn slow_pull(
    mut sink: Sink,
    data: Bytes,
    chunks: usize,
    pause: Duration,
) -> Result<(), String> {
    let step = data.len().div_ceil(chunks);
    for start in (0..data.len()).step_by(step) {
        tokio::time::sleep(pause).await;
        sink.push(data.slice(start..(start + step).min(data.len())))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_misses_share_one_pull_and_stream_as_it_arrives() {
    let cache = Cache::new(64 << 20);
    let data = body(1, 100_000);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let cache = cache.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            let d = data.clone();
            let f = cache
                .get_or_pull(key(1), expect(&data), move |sink| {
                    slow_pull(sink, d, 10, Duration::from_millis(20))
                })
                .await;
            collect(f).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), data);
    }
    assert_eq!(cache.stats.pulls.load(Ordering::Relaxed), 1);
    assert_eq!(cache.stats.coalesced.load(Ordering::Relaxed), 49);
    // Now a hit.
    let f = cache
        .get_or_pull(key(1), expect(&data), |_| async {
            Err("must not pull".to_string())
        })
        .await;
    assert!(matches!(f, Fetched::Ready(ref b) if *b == data));
}

#[tokio::test]
async fn waiters_get_bytes_before_the_pull_ends() {
    let cache = Cache::new(64 << 20);
    let data = body(2, 10_000);
    let d = data.clone();
    let f = cache
        .get_or_pull(key(2), expect(&data), move |sink| {
            slow_pull(sink, d, 4, Duration::from_millis(300))
        })
        .await;
    let Fetched::Streaming(r) = f else {
        panic!("expected a streaming answer")
    };
    let mut s = std::pin::pin!(r.all());
    let first = tokio::time::timeout(Duration::from_millis(800), s.next())
        .await
        .expect("first chunk in time");
    assert_eq!(first.unwrap().unwrap(), data.slice(0..2500));
}

#[tokio::test]
async fn ranges_of_a_streaming_entry() {
    let cache = Cache::new(64 << 20);
    let data = body(3, 1000);
    let d = data.clone();
    let f = cache
        .get_or_pull(key(3), expect(&data), move |sink| {
            slow_pull(sink, d, 7, Duration::from_millis(5))
        })
        .await;
    let Fetched::Streaming(r) = f else { panic!() };
    for (a, b) in [
        (0, 999),
        (10, 10),
        (140, 300),
        (999, 999),
        (0, 0),
        (500, 998),
    ] {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(r.range(a, b));
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        assert_eq!(out, data[a as usize..=b as usize], "{a}-{b}");
    }
}

#[tokio::test]
async fn bad_bodies_are_never_cached_or_completed() {
    let cache = Cache::new(64 << 20);
    let data = body(4, 1000);
    type Case = (
        &'static str,
        Box<
            dyn FnOnce(Sink) -> futures_util::future::BoxFuture<'static, Result<(), String>> + Send,
        >,
    );
    let d1 = data.clone();
    let d2 = data.clone();
    let d3 = data.clone();
    let cases: Vec<Case> = vec![
        (
            "truncated",
            Box::new(move |mut s: Sink| {
                Box::pin(async move { s.push(d1.slice(0..500)).map_err(|e| e.to_string()) })
            }),
        ),
        (
            "oversized",
            Box::new(move |mut s: Sink| {
                Box::pin(async move {
                    s.push(d2.clone()).map_err(|e| e.to_string())?;
                    s.push(Bytes::from_static(b"x")).map_err(|e| e.to_string())
                })
            }),
        ),
        (
            "garbage",
            Box::new(move |mut s: Sink| {
                Box::pin(async move {
                    let mut v = d3.to_vec();
                    v[999] ^= 0xff;
                    s.push(v.into()).map_err(|e| e.to_string())
                })
            }),
        ),
        (
            "failed",
            Box::new(|_s: Sink| Box::pin(async { Err("HTTP 500".to_string()) })),
        ),
    ];
    for (i, (what, pull)) in cases.into_iter().enumerate() {
        let f = cache.get_or_pull(key(4), expect(&data), pull).await;
        let got = collect(f).await;
        let err = got.expect_err(what);
        assert!(!err.to_string().is_empty());
        assert_eq!(
            cache.stats.pull_failures.load(Ordering::Relaxed),
            i as u64 + 1,
            "{what}"
        );
    }
    // Nothing was cached: a good pull now succeeds and is the one cached.
    let d = data.clone();
    let f = cache
        .get_or_pull(key(4), expect(&data), move |mut s| async move {
            s.push(d).map_err(|e| e.to_string())
        })
        .await;
    assert_eq!(collect(f).await.unwrap(), data);
    assert_eq!(cache.stats.pulls.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn a_panicking_pull_ends_its_waiters_and_frees_the_key() {
    let cache = Cache::new(64 << 20);
    let data = body(6, 1000);
    let d = data.clone();
    let f = cache
        .get_or_pull(key(6), expect(&data), move |mut s| async move {
            s.push(d.slice(0..10)).map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            panic!("a bug in a pull");
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        })
        .await;
    let got = tokio::time::timeout(Duration::from_secs(5), collect(f))
        .await
        .expect("the waiter is not left hanging");
    assert!(got.is_err());
    let d = data.clone();
    let f = cache
        .get_or_pull(key(6), expect(&data), move |mut s| async move {
            s.push(d).map_err(|e| e.to_string())
        })
        .await;
    assert_eq!(
        collect(f).await.unwrap(),
        data,
        "a new fetch, not the dead one"
    );
}

#[tokio::test]
async fn started_tells_a_failure_before_the_first_byte() {
    let cache = Cache::new(64 << 20);
    let data = body(7, 1000);
    let Fetched::Streaming(r) = cache
        .get_or_pull(key(7), expect(&data), |_s| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err("HTTP 500".to_string())
        })
        .await
    else {
        panic!("a miss streams");
    };
    assert!(r.started().await.is_err());
    let d = data.clone();
    let Fetched::Streaming(r) = cache
        .get_or_pull(key(8), expect(&data), move |s| {
            slow_pull(s, d, 4, Duration::from_millis(20))
        })
        .await
    else {
        panic!("a miss streams");
    };
    r.started().await.expect("bytes arrive");
    assert_eq!(collect(Fetched::Streaming(r)).await.unwrap(), data);
    // A body that arrives in one piece and fails verification: nothing was ever readable.
    let mut bad = data.to_vec();
    bad[0] ^= 1;
    let Fetched::Streaming(r) = cache
        .get_or_pull(key(9), expect(&data), move |mut s| async move {
            s.push(bad.into()).map_err(|e| e.to_string())
        })
        .await
    else {
        panic!("a miss streams");
    };
    assert!(r.started().await.is_err());
}

#[tokio::test]
async fn evicted_entries_spill_to_disk_and_come_back_without_a_pull() {
    let dir = tempfile::tempdir().unwrap();
    let disk_max = 2_000_000;
    let cache = Cache::with_disk(
        1_000_000,
        Some(DiskTier {
            dir: dir.path().to_owned(),
            max_bytes: disk_max,
        }),
    )
    .await;
    let n = 12u64;
    for seq in 0..n {
        let data = body(seq, 300_000);
        let d = data.clone();
        let f = cache
            .get_or_pull(key(seq), expect(&data), move |mut s| async move {
                s.push(d).map_err(|e| e.to_string())
            })
            .await;
        assert_eq!(collect(f).await.unwrap(), data);
        // Let the flight finish so the entry is in memory.
        tokio::time::sleep(Duration::from_millis(5)).await;
        cache.run_pending_tasks().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cache.stats.spills.load(Ordering::Relaxed) < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cache.stats.memory_evictions.load(Ordering::Relaxed) >= 8);
    assert!(
        cache.disk_bytes() <= disk_max,
        "disk tier {} > {disk_max}",
        cache.disk_bytes()
    );
    let on_disk: Vec<u64> = (0..n).filter(|s| cache.on_disk(&key(*s))).collect();
    assert!(on_disk.len() >= 2, "on disk: {on_disk:?}");
    let pulls = cache.stats.pulls.load(Ordering::Relaxed);
    // The newest two: reading one back puts it in memory, which evicts (and spills) another,
    // which may push the oldest file out of the disk tier.
    for &seq in on_disk.iter().rev().take(2) {
        let data = body(seq, 300_000);
        let f = cache
            .get_or_pull(key(seq), expect(&data), |_| async {
                Err("must come from disk".to_string())
            })
            .await;
        assert_eq!(collect(f).await.unwrap(), data, "seq {seq}");
    }
    assert_eq!(cache.stats.pulls.load(Ordering::Relaxed), pulls);
    assert!(cache.stats.disk_hits.load(Ordering::Relaxed) >= 2);
    // Bound on the files themselves.
    let total: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= disk_max, "files {total} > {disk_max}");
}

#[tokio::test]
async fn a_damaged_disk_file_falls_back_to_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::with_disk(
        400_000,
        Some(DiskTier {
            dir: dir.path().to_owned(),
            max_bytes: 10_000_000,
        }),
    )
    .await;
    for seq in 0..4 {
        let data = body(seq, 300_000);
        let d = data.clone();
        collect(
            cache
                .get_or_pull(key(seq), expect(&data), move |mut s| async move {
                    s.push(d).map_err(|e| e.to_string())
                })
                .await,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        cache.run_pending_tasks().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cache.on_disk(&key(0)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cache.on_disk(&key(0)));
    for e in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(e.unwrap().path(), b"garbage").unwrap();
    }
    let data = body(0, 300_000);
    let d = data.clone();
    let pulls = cache.stats.pulls.load(Ordering::Relaxed);
    let f = cache
        .get_or_pull(key(0), expect(&data), move |mut s| async move {
            s.push(d).map_err(|e| e.to_string())
        })
        .await;
    assert_eq!(collect(f).await.unwrap(), data);
    assert_eq!(cache.stats.pulls.load(Ordering::Relaxed), pulls + 1);
}

#[tokio::test]
async fn an_unusable_disk_dir_means_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let cache = Cache::with_disk(
        1 << 20,
        Some(DiskTier {
            dir: file,
            max_bytes: 1 << 20,
        }),
    )
    .await;
    let data = body(9, 1000);
    let d = data.clone();
    let f = cache
        .get_or_pull(key(9), expect(&data), move |mut s| async move {
            s.push(d).map_err(|e| e.to_string())
        })
        .await;
    assert_eq!(collect(f).await.unwrap(), data);
}
