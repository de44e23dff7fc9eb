//! Low-latency HLS at the origin, from outside over real RTMP and HTTP: the playlist's LL
//! tags, blocking reloads, the held preload-hint part, delta updates, and parts whose bytes
//! joined are their segment. The spec rules are quoted where they are checked.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `(seq, part)` of the playlist's `EXT-X-PRELOAD-HINT`.
fn hint(playlist: &str) -> (u64, u64) {
    let uri = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no preload hint in\n{playlist}"));
    let stem = uri
        .strip_prefix("parts/")
        .and_then(|u| u.strip_suffix(".m4s"))
        .expect("part uri");
    let (seq, part) = stem.split_once('.').expect("seq.part");
    (seq.parse().unwrap(), part.parse().unwrap())
}

/// The part URIs the playlist lists for segment `seq`.
fn parts_of(playlist: &str, seq: u64) -> Vec<String> {
    let prefix = format!("parts/{seq}.");
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|attrs| attrs.split("URI=\"").nth(1)?.split('"').next())
        .filter(|u| u.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// A blocking reload for the part `playlist` hints at: RFC 8216bis 6.2.5.2, the answer comes
/// once that part exists (or, past the segment's last part, part 0 of the next one), within
/// `limit`, cacheable briefly. Returns the answer.
async fn blocking_reload(playlist_url: &str, playlist: &str, limit: Duration) -> String {
    let (seq, part) = hint(playlist);
    let started = Instant::now();
    let r = get(&format!("{playlist_url}?_HLS_msn={seq}&_HLS_part={part}")).await;
    let waited = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=6");
    let blocked = r.text().await.unwrap();
    assert!(
        blocked.contains(&format!("parts/{seq}.{part}.m4s\""))
            || parts_of(&blocked, seq + 1)
                .first()
                .is_some_and(|u| u.ends_with(".0.m4s")),
        "{blocked}"
    );
    assert!(waited < limit, "held {waited:?}");
    blocked
}

/// The newest sealed segment (seq `min_seq` or later) whose parts `node`'s playlist still
/// lists: its seq, its listed parts' bytes joined, and its bytes, all from `node`.
async fn sealed_with_parts(node: &TestNode, min_seq: u64) -> (u64, Vec<u8>, bytes::Bytes) {
    let playlist_url = node.url("/streams/ll/index.m3u8");
    let (sealed, text) = eventually(Duration::from_secs(10), || async {
        let text = get(&playlist_url).await.text().await.ok()?;
        if !text.contains("#EXT-X-PRELOAD-HINT:") {
            return None;
        }
        let sealed = hint(&text).0.checked_sub(1).filter(|&s| s >= min_seq)?;
        (!parts_of(&text, sealed).is_empty() && text.contains(&format!("segments/{sealed}.m4s")))
            .then_some((sealed, text))
    })
    .await;
    let mut joined = Vec::new();
    for uri in parts_of(&text, sealed) {
        joined.extend_from_slice(&get_bytes(&node.url(&format!("/streams/ll/{uri}"))).await);
    }
    let segment = get_bytes(&node.url(&format!("/streams/ll/segments/{sealed}.m4s"))).await;
    (sealed, joined, segment)
}

async fn get(url: &str) -> reqwest::Response {
    http().get(url).send().await.expect("request")
}

#[tokio::test]
async fn origin_serves_low_latency_hls() {
    let node = TestNode::origin();
    let publisher = publish_live_tags(&node, "ll", looped_clip(2)).await;
    let playlist_url = node.url("/streams/ll/index.m3u8");

    // The first parts appear within about a part of the first frames.
    let first = eventually(Duration::from_secs(10), || async {
        let text = get(&playlist_url).await.text().await.ok()?;
        text.contains("#EXT-X-PART:").then_some(text)
    })
    .await;
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines[1], "#EXT-X-VERSION:9", "{first}");
    let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix));
    // RFC 8216bis 4.4.3.8: "PART-HOLD-BACK ... MUST be at least twice the Part Target
    // Duration"; CAN-SKIP-UNTIL "MUST be at least six times the Target Duration".
    assert!(
        first.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500,CAN-SKIP-UNTIL=12.000\n"
        ),
        "{first}"
    );
    assert!(first.contains("#EXT-X-PART-INF:PART-TARGET=0.500\n"));
    // Playlist tags come before the first Media Segment tag.
    let first_media = at("#EXT-X-MAP:").expect("map");
    assert!(at("#EXT-X-SERVER-CONTROL:").unwrap() < first_media);
    assert!(at("#EXT-X-PART-INF:").unwrap() < first_media);

    // Blocking reload: ask for the hinted part; the answer comes when it exists and lists it.
    let blocked = blocking_reload(&playlist_url, &first, Duration::from_millis(1500)).await;

    // The preload hint is held until that part is whole, then served immutable.
    let (seq, part) = hint(&blocked);
    let started = Instant::now();
    let r = get(&node.url(&format!("/streams/ll/parts/{seq}.{part}.m4s"))).await;
    let held = started.elapsed();
    assert_eq!(r.status(), 200, "hinted part");
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let hinted = r.bytes().await.unwrap();
    assert_eq!(&hinted[4..8], b"moof", "a part is moof + mdat");
    assert!(held < Duration::from_millis(1500), "held {held:?}");

    // Too far ahead: RFC 8216bis 6.2.5.2 "more than two segments ... SHOULD return 400".
    let r = get(&format!("{playlist_url}?_HLS_msn={}", seq + 3)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["cache-control"], "no-store");
    // A part that will never be hinted soon: 404 no-store, never cached.
    let r = get(&node.url(&format!("/streams/ll/parts/{}.0.m4s", seq + 5))).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["cache-control"], "no-store");
    for bad in ["_HLS_part=1", "_HLS_msn=x", "_HLS_skip=NO"] {
        let r = get(&format!("{playlist_url}?{bad}")).await;
        assert_eq!(r.status(), 400, "{bad}");
    }

    // A sealed segment whose parts are still listed: its bytes are its parts joined, and
    // each part's durations are within the target (checked by the segmenter's tests).
    let (sealed, joined, segment) = sealed_with_parts(&node, 0).await;
    assert!(
        joined == segment.as_ref(),
        "segment {sealed} = its parts joined"
    );
    let hinted_seq = hint(&blocked).0;
    if hinted_seq == sealed {
        assert!(segment.windows(hinted.len()).any(|w| w == hinted.as_ref()));
    }

    // Delta update once the playlist is longer than CAN-SKIP-UNTIL (12 s).
    let delta = eventually(Duration::from_secs(20), || async {
        let text = get(&format!("{playlist_url}?_HLS_skip=YES"))
            .await
            .text()
            .await
            .ok()?;
        text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=")
            .then_some(text)
    })
    .await;
    let full = get(&playlist_url).await.text().await.unwrap();
    assert!(delta.len() < full.len());
    assert!(delta.contains("#EXT-X-MEDIA-SEQUENCE:0\n"), "{delta}");

    publisher.await.unwrap().unwrap();
    wait_ended(&node, "ll").await;
    // Ended: a plain playlist with ENDLIST, no hint; no part is held any more.
    let ended = get(&playlist_url).await.text().await.unwrap();
    assert!(ended.ends_with("#EXT-X-ENDLIST\n") && !ended.contains("PRELOAD-HINT"));
    let r = get(&node.url(&format!("/streams/ll/parts/{}.0.m4s", seq + 20))).await;
    assert_eq!(r.status(), 404);
    assert!(metric(&node, "dvrgate_parts_written_total").await >= 30.0);
}

#[tokio::test]
async fn part_target_off_serves_plain_hls() {
    let node = TestNode::start_with(|dir| {
        format!(
            "[record]\ndir = {:?}\npart_target = \"off\"\n",
            dir.join("rec")
        )
    });
    let publisher = publish_live(&node, "plain").await;
    wait_segments(&node, "plain", 1).await;
    let text = get(&node.url("/streams/plain/index.m3u8"))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("#EXT-X-VERSION:7\n"), "{text}");
    assert!(!text.contains("EXT-X-PART") && !text.contains("SERVER-CONTROL"));
    let r = get(&node.url("/streams/plain/parts/0.0.m4s")).await;
    assert_eq!(r.status(), 404);
    publisher.abort();
}

/// The `EXT-X-SERVER-CONTROL` and `EXT-X-PART-INF` lines of a playlist.
fn ll_control(playlist: &str) -> Vec<&str> {
    playlist
        .lines()
        .filter(|l| l.starts_with("#EXT-X-SERVER-CONTROL:") || l.starts_with("#EXT-X-PART-INF:"))
        .collect()
}

/// LL-HLS through two relays: the edge learns parts from its upstream's index long-poll,
/// answers blocking reloads and preload hints from its own index, serves parts byte-identical
/// to the origin's, and pulls each part once per hop whatever the number of viewers.
#[tokio::test]
async fn parts_pass_through_two_relays() {
    let origin = TestNode::origin();
    let intermediate = relay_of(&origin);
    let edge = relay_of(&intermediate);
    let publisher = publish_live_tags(&origin, "ll", looped_clip(3)).await;
    let playlist_url = edge.url("/streams/ll/index.m3u8");

    let first = eventually(Duration::from_secs(15), || async {
        let text = get(&playlist_url).await.text().await.ok()?;
        (text.contains("#EXT-X-PART:") && text.contains("#EXT-X-PRELOAD-HINT:")).then_some(text)
    })
    .await;
    let at_origin = get(&origin.url("/streams/ll/index.m3u8"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        ll_control(&first),
        ll_control(&at_origin),
        "every hop announces the same part target and hold-backs"
    );

    // Blocking reload at the edge, from its own index: held until the hinted part exists.
    let blocked = blocking_reload(&playlist_url, &first, Duration::from_millis(2000)).await;

    // Twenty viewers ask for the next hinted part at once: held, then all get the origin's
    // bytes.
    let (seq, part) = hint(&blocked);
    let uri = format!("/streams/ll/parts/{seq}.{part}.m4s");
    let viewers: Vec<_> = (0..20)
        .map(|_| {
            let url = edge.url(&uri);
            tokio::spawn(async move {
                let r = get(&url).await;
                (r.status(), r.bytes().await.unwrap_or_default())
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for v in viewers {
        let (status, body) = v.await.unwrap();
        assert_eq!(status, 200, "hinted part at the edge");
        bodies.push(body);
    }
    let from_origin = get_bytes(&origin.url(&uri)).await;
    assert!(
        bodies.iter().all(|b| *b == from_origin),
        "byte-identical to the origin's part"
    );

    // A sealed segment at the edge (one whose parts it announced): its parts there, joined,
    // are its bytes, and the origin's.
    let (sealed, joined, segment) = sealed_with_parts(&edge, seq).await;
    let origin_segment =
        get_bytes(&origin.url(&format!("/streams/ll/segments/{sealed}.m4s"))).await;
    assert!(joined == segment.as_ref() && segment == origin_segment);

    publisher.await.unwrap().unwrap();
    wait_ended(&edge, "ll").await;
    // Each hop pulled every part at most once (20 viewers of one part cost one pull), and
    // joined sealed segments from their parts rather than pulling them again.
    let written = metric(&origin, "dvrgate_parts_written_total").await;
    let (mid, end) = (
        metric(&intermediate, "dvrgate_upstream_part_pulls_total").await,
        metric(&edge, "dvrgate_upstream_part_pulls_total").await,
    );
    println!("parts written {written}, pulled by the intermediate {mid}, by the edge {end}");
    assert!(
        end > 0.0 && end <= mid && mid <= written,
        "{end} <= {mid} <= {written}"
    );
    for node in [&intermediate, &edge] {
        assert!(metric(node, "dvrgate_segments_from_parts_total").await >= 1.0);
    }
    let ended = get(&playlist_url).await.text().await.unwrap();
    assert!(ended.ends_with("#EXT-X-ENDLIST\n") && !ended.contains("PRELOAD-HINT"));
}

/// Failover with parts: an edge of two intermediates loses the first mid-stream. It goes on
/// with the second, its parts resume (with the next segment at the latest), no seq repeats or
/// is skipped, and every part it lists, before and after, is byte-identical to the origin's
/// part of that name (a part name never names two bodies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_survive_a_failover() {
    let origin = TestNode::origin();
    let first = relay_of(&origin);
    let second = relay_of(&origin);
    let cut = FaultyProxy::start(first.http).await;
    let edge = relay(&[format!("http://{}", cut.addr), second.base()], "");
    let publisher = publish_live_tags(&origin, "ll", looped_clip(3)).await;
    let playlist_url = edge.url("/streams/ll/index.m3u8");
    let before = eventually(Duration::from_secs(15), || async {
        let text = get(&playlist_url).await.text().await.ok()?;
        (text.contains("#EXT-X-PART:") && hint(&text).0 >= 2).then_some(text)
    })
    .await;
    let cut_at = hint(&before).0;
    cut.set_failing(true);
    // Parts again, two segments on.
    let after = eventually(Duration::from_secs(20), || async {
        let text = get(&playlist_url).await.text().await.ok()?;
        let (seq, _) = hint(&text);
        (seq >= cut_at + 2 && !parts_of(&text, seq - 1).is_empty()).then_some(text)
    })
    .await;
    let status = get_json(&edge.url("/streams/ll")).await;
    assert_eq!(status["source"]["upstream"], second.base(), "{status}");
    for text in [&before, &after] {
        let seqs: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("segments/")?.split('.').next()?.parse().ok())
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        for seq in seqs.iter().rev().take(3) {
            for uri in parts_of(text, *seq) {
                let at_edge = get(&edge.url(&format!("/streams/ll/{uri}"))).await;
                if at_edge.status() == 404 {
                    continue; // no longer listed there (older than the part history)
                }
                let at_edge = at_edge.bytes().await.unwrap();
                let at_origin = get_bytes(&origin.url(&format!("/streams/ll/{uri}"))).await;
                assert!(at_edge == at_origin, "{uri} differs from the origin's");
            }
        }
    }
    publisher.await.unwrap().unwrap();
}

/// A stream that ends and is published again: every hop follows the new period with parts,
/// the numbering goes on without a repeat, and nothing of the first publish is renamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republish_goes_on_through_the_relays() {
    let origin = TestNode::origin();
    let intermediate = relay_of(&origin);
    let edge = relay_of(&intermediate);
    let publisher = publish_live_tags(&origin, "ll", looped_clip(1)).await;
    let playlist_url = edge.url("/streams/ll/index.m3u8");
    eventually(Duration::from_secs(15), || async {
        let text = get(&playlist_url).await.text().await.ok()?;
        text.contains("#EXT-X-PART:").then_some(())
    })
    .await;
    publisher.await.unwrap().unwrap();
    let ended = wait_ended(&edge, "ll").await;
    let last_before = ended["dvr"]["last_seq"].as_u64().unwrap();
    let publisher = publish_live_tags(&origin, "ll", looped_clip(1)).await;
    let text = eventually(Duration::from_secs(15), || async {
        let text = get(&playlist_url).await.text().await.ok()?;
        if !text.contains("#EXT-X-PRELOAD-HINT:") {
            return None;
        }
        let (seq, _) = hint(&text);
        (seq > last_before + 2 && text.contains("#EXT-X-DISCONTINUITY\n")).then_some(text)
    })
    .await;
    let seqs: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("segments/")?.split('.').next()?.parse().ok())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    let (seq, _) = hint(&text);
    for uri in parts_of(&text, seq) {
        let at_edge = get_bytes(&edge.url(&format!("/streams/ll/{uri}"))).await;
        let at_origin = get_bytes(&origin.url(&format!("/streams/ll/{uri}"))).await;
        assert!(at_edge == at_origin, "{uri}");
    }
    // The new period's init segment and sealed segments, as a player fetches them.
    let uris: Vec<String> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("#EXT-X-MAP:URI=\"")
                .and_then(|r| r.strip_suffix('"'))
                .or_else(|| l.starts_with("segments/").then_some(l))
        })
        .map(str::to_owned)
        .collect();
    for uri in uris.iter().rev().take(4) {
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            get(&edge.url(&format!("/streams/ll/{uri}"))),
        )
        .await
        .unwrap_or_else(|_| panic!("{uri} at the edge: no answer within 5 s"));
        assert_eq!(r.status(), 200, "{uri}");
        let body = tokio::time::timeout(Duration::from_secs(5), r.bytes())
            .await
            .unwrap_or_else(|_| panic!("{uri} at the edge: body not within 5 s"))
            .unwrap();
        assert!(!body.is_empty());
        println!("{uri}: {} bytes in {:?}", body.len(), started.elapsed());
    }
    publisher.await.unwrap().unwrap();
}
