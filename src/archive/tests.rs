//! The archive end to end over an in-memory object store: real recordings on disk, the writer
//! and follower tasks, two origins racing for one stream's lease.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::cache::Cache;
use crate::store::index::tests::period;
use crate::store::{MinFree, Policy, Recording, SegmentMeta, Store};

const LEASE: Duration = Duration::from_secs(2);

fn policy() -> Policy {
    Policy {
        retention_ms: i64::MAX,
        max_bytes: u64::MAX,
    }
}

struct Origin {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    archive: Arc<Archive>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    fn start(name: &str, memory: &Arc<InMemory>) -> Origin {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), policy(), MinFree::Bytes(0)).unwrap();
        let store = Arc::new(store);
        let bucket = Bucket::new(memory.clone(), "site");
        let archive = Arc::new(Archive::new(bucket, name, LEASE, Bus::default()));
        let stop = CancellationToken::new();
        let task = archive.spawn_writers(store.clone(), stop.clone());
        Origin {
            _dir: dir,
            store,
            archive,
            stop,
            task,
        }
    }

    /// Kills the writer tasks (as kill -9 would: no release, no last chunk).
    async fn kill(self) -> Arc<Store> {
        self.stop.cancel();
        let _ = self.task.await;
        self.store
    }
}

fn meta(i: u64) -> SegmentMeta {
    SegmentMeta {
        seq: 0,
        period: 0,
        start_ms: i * 2000,
        duration_ms: 2000,
        time_ms: 1_800_000_000_000 + (i as i64) * 2000,
        length: 0,
        hash: 0,
    }
}

fn body(i: u64) -> Bytes {
    Bytes::from(format!("segment {i} ").repeat(50))
}

async fn record(rec: &mut Recording, range: std::ops::Range<u64>) {
    for i in range {
        rec.add_segment(body(i), meta(i)).await.unwrap();
    }
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node that only reads the archive (prefix "site").
fn reader(memory: &Arc<InMemory>) -> Arc<Archive> {
    Arc::new(Archive::new(
        Bucket::new(memory.clone(), "site"),
        "edge",
        LEASE,
        Bus::default(),
    ))
}

/// The writer state of `name` at `archive`, once its task is there.
async fn writer_of(archive: &Arc<Archive>, name: &str) -> Arc<writer::State> {
    let mut s = None;
    until("a writer task", Duration::from_secs(5), || {
        s = archive.writer(name);
        s.is_some()
    })
    .await;
    s.unwrap()
}

async fn followed(reader: &Arc<Archive>, name: &str) -> Arc<Followed> {
    let stop = CancellationToken::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(f) = reader.follow(name, &stop).await {
            return f;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never in the archive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_origin_uploads_and_any_node_serves_the_archive() {
    let memory = Arc::new(InMemory::new());
    let a = Origin::start("origin-a", &memory);
    let mut rec = a.store.begin_recording("cam").unwrap();
    rec.add_period(
        Bytes::from_static(b"init-a"),
        period(0, 0, 1_800_000_000_000),
    )
    .await
    .unwrap();
    record(&mut rec, 0..5).await;
    let state = writer_of(&a.archive, "cam").await;
    until("5 segments archived", Duration::from_secs(10), || {
        state.report().archived_seq == Some(4) && state.report().backlog == (0, 0)
    })
    .await;
    assert_eq!(state.report().writer.as_deref(), Some("origin-a"));

    let reader = reader(&memory);
    let f = followed(&reader, "cam").await;
    assert!(f.timeline.read().live);
    assert_eq!(f.timeline.read().segments.len(), 5);
    let cache = Cache::new(1 << 20);
    let got = f.segment(&reader, &cache, 3).await.unwrap();
    assert_eq!(whole(got).await, body(3));
    let again = f.segment(&reader, &cache, 3).await.unwrap();
    assert!(matches!(again, Fetched::Ready(_)), "cached");
    // New segments show up at the reader promptly; the end of the publish too.
    record(&mut rec, 5..7).await;
    until("the reader sees seq 6", Duration::from_secs(5), || {
        f.timeline.read().next_seq == 7
    })
    .await;
    rec.finish();
    until("the reader sees the end", Duration::from_secs(10), || {
        !f.timeline.read().live
    })
    .await;
    until("the lease released", Duration::from_secs(5), || {
        state.report().writer.is_none()
    })
    .await;
    a.kill().await;
}

use crate::cache::Fetched;

async fn whole(f: Fetched) -> Bytes {
    use futures_util::StreamExt;
    match f {
        Fetched::Ready(b) => b,
        Fetched::Streaming(r) => {
            let mut out = Vec::new();
            let mut body = std::pin::pin!(r.all());
            while let Some(chunk) = body.next().await {
                out.extend_from_slice(&chunk.expect("pulled"));
            }
            Bytes::from(out)
        }
    }
}

#[tokio::test]
async fn a_standby_takes_over_from_a_dead_writer_and_continues_the_seq() {
    let memory = Arc::new(InMemory::new());
    let a = Origin::start("origin-a", &memory);
    let b = Origin::start("origin-b", &memory);
    let mut rec_a = a.store.begin_recording("cam").unwrap();
    rec_a
        .add_period(Bytes::from_static(b"init"), period(0, 0, 1_800_000_000_000))
        .await
        .unwrap();
    record(&mut rec_a, 0..3).await;
    let wa = writer_of(&a.archive, "cam").await;
    until("a writes", Duration::from_secs(10), || {
        wa.report().archived_seq == Some(2)
    })
    .await;
    // B records the same feed (same cuts, its own copy), standing by.
    let mut rec_b = b.store.begin_recording("cam").unwrap();
    rec_b
        .add_period(Bytes::from_static(b"init"), period(0, 0, 1_800_000_000_000))
        .await
        .unwrap();
    record(&mut rec_b, 0..3).await;
    let wb = writer_of(&b.archive, "cam").await;
    tokio::time::sleep(LEASE).await;
    assert!(!wb.report().holding, "b stands by while a renews");
    assert_eq!(wb.report().writer.as_deref(), Some("origin-a"));

    // A dies; both had recorded segment 3, only B records on.
    record(&mut rec_a, 3..4).await;
    let mut events = b.archive.bus.subscribe();
    let killed = std::time::Instant::now();
    drop(rec_a);
    a.kill().await;
    record(&mut rec_b, 3..6).await;
    until("b takes over", LEASE * 2, || wb.report().holding).await;
    let took = killed.elapsed();
    assert!(took < LEASE + Duration::from_millis(500), "took {took:?}");
    let ev = events.recv().await.unwrap();
    assert_eq!(ev.code, crate::events::Code::ArchiveTakeover);
    assert_eq!(ev.extra["from"], "origin-a");
    assert_eq!(ev.extra["to"], "origin-b");
    until("b uploads what a had not", Duration::from_secs(10), || {
        wb.report().archived_seq == Some(5) && wb.report().backlog.0 == 0
    })
    .await;

    let reader = reader(&memory);
    let f = followed(&reader, "cam").await;
    let seqs: Vec<u64> = f.timeline.read().segments.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5], "seq continued, nothing twice");
    assert_eq!(
        f.timeline.read().periods.len(),
        1,
        "same numbering: no discontinuity"
    );
    let cache = Cache::new(1 << 20);
    for seq in 0..6 {
        let got = f.segment(&reader, &cache, seq).await.expect("indexed");
        assert_eq!(whole(got).await, body(seq), "segment {seq}");
    }
    rec_b.finish();
    b.kill().await;
}

/// The names under `folder` of the in-memory bucket (prefix "site").
async fn names(memory: &Arc<InMemory>, folder: &str) -> Vec<String> {
    use object_store::ObjectStore;
    let listed = memory
        .list_with_delimiter(Some(&object_store::path::Path::from(format!(
            "site/{folder}"
        ))))
        .await
        .unwrap();
    let mut v: Vec<String> = listed
        .objects
        .iter()
        .filter_map(|o| o.location.filename().map(str::to_owned))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_writer_trims_the_archive_and_readers_start_from_a_snapshot() {
    let memory = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), policy(), MinFree::Bytes(0)).unwrap();
    let store = Arc::new(store);
    let mut archive = Archive::new(
        Bucket::new(memory.clone(), "site"),
        "origin-a",
        LEASE,
        Bus::default(),
    );
    let seg_len = body(19).len() as u64;
    archive.policy = Policy {
        retention_ms: i64::MAX,
        max_bytes: 4 * seg_len,
    };
    archive.delete_grace = Duration::ZERO;
    archive.snapshot_every = 4;
    let archive = Arc::new(archive);
    let stop = CancellationToken::new();
    let task = archive.spawn_writers(store.clone(), stop.clone());
    let mut rec = store.begin_recording("cam").unwrap();
    rec.add_period(Bytes::from_static(b"init"), period(0, 0, 1_800_000_000_000))
        .await
        .unwrap();
    for i in 0..20 {
        record(&mut rec, i..i + 1).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let state = writer_of(&archive, "cam").await;
    until("everything archived", Duration::from_secs(10), || {
        state.report().archived_seq == Some(19)
    })
    .await;
    // Retention: at most max_bytes of segments stay, in the index and in the bucket.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let segs = names(&memory, "cam/segments").await;
        let chunks = names(&memory, "cam/index").await;
        let snaps = names(&memory, "cam/snapshot").await;
        if segs.len() <= 4 && snaps.len() <= 2 && chunks.len() <= 12 {
            assert!(
                segs.iter().all(|f| keys::seq_of(f).unwrap() >= 16),
                "{segs:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "garbage stays: {segs:?} {chunks:?} {snaps:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new reader starts from the newest snapshot, not from chunk 0 (deleted by now).
    let reader = reader(&memory);
    let f = followed(&reader, "cam").await;
    let seqs: Vec<u64> = f.timeline.read().segments.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [16, 17, 18, 19]);
    assert!(crate::metrics::get(&reader.stats.chunks_read) < 12.0);
    let cache = Cache::new(1 << 20);
    let got = f.segment(&reader, &cache, 18).await.unwrap();
    assert_eq!(whole(got).await, body(18));
    rec.finish();
    stop.cancel();
    let _ = task.await;
}

#[tokio::test]
async fn archive_streams_nobody_reads_are_let_go() {
    let memory = Arc::new(InMemory::new());
    let a = Origin::start("origin-a", &memory);
    let mut rec = a.store.begin_recording("cam").unwrap();
    rec.add_period(Bytes::from_static(b"init"), period(0, 0, 1_800_000_000_000))
        .await
        .unwrap();
    record(&mut rec, 0..2).await;
    let state = writer_of(&a.archive, "cam").await;
    until("archived", Duration::from_secs(10), || {
        state.report().archived_seq == Some(1)
    })
    .await;
    let reader = reader(&memory);
    let first = followed(&reader, "cam").await;
    let now = crate::time::now_ms();
    assert_eq!(reader.let_go_of_idle(now), 0, "just asked for");
    let later = now + i64::try_from(follow::FOLLOW_IDLE.as_millis()).unwrap() + 1;
    assert_eq!(reader.let_go_of_idle(later), 1);
    assert!(!first.following(), "its follower stops");
    // Asked for again (after the probe cache's few seconds), it is followed again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let again = followed(&reader, "cam").await;
    assert!(!Arc::ptr_eq(&first, &again));
    assert_eq!(again.timeline.read().segments.len(), 2);
    rec.finish();
    a.kill().await;
}
