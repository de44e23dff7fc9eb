//! Play tokens (`access.play_secret`) over real HTTP: every read of a stream needs a valid
//! HS256 token for it (by `?token=` or `Authorization: Bearer`), refusals are the JSON error
//! and nothing else, tokenized playlists and indexes carry the token into their URLs, `/streams`
//! and `/events` show only what the caller may read, and relays check tokens themselves without
//! passing the viewer's token upstream.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::json;

const SECRET: &str = "play-secret-for-tests-0123456789";
const ADMIN: &str = "admin-token-for-tests";

/// `[access]` of the secured nodes here: `lobby` is public.
fn secured() -> String {
    format!(
        "[http]\nadmin_token = \"{ADMIN}\"\n[access]\nplay_secret = \"{SECRET}\"\npublic = [\"lobby\"]\n"
    )
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn mint_with(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A token for `streams`, valid for ten minutes.
fn token_for(streams: &[&str]) -> String {
    mint_with(
        Algorithm::HS256,
        SECRET,
        json!({"exp": now_s() + 600, "streams": streams}),
    )
}

/// One answer, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.status, self.text()))
    }

    fn cache_control(&self) -> &str {
        self.headers
            .get("cache-control")
            .map_or("", |v| v.to_str().unwrap())
    }
}

async fn fetch(method: reqwest::Method, url: &str, bearer: Option<&str>) -> Answer {
    let mut req = http().request(method, url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    Answer {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap(),
    }
}

async fn get(url: &str, bearer: Option<&str>) -> Answer {
    fetch(reqwest::Method::GET, url, bearer).await
}

/// `url` with `token=` added to its query.
fn with_token(url: &str, token: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}token={token}")
}

/// Asserts a refusal: `want`, the `NetStream.Play.Failed` JSON and nothing else, `no-store`,
/// and `WWW-Authenticate: Bearer` on a 401.
fn assert_refused(a: &Answer, want: StatusCode, what: &str) {
    assert_eq!(a.status, want, "{what}: {}", a.text());
    let v = a.json();
    assert_eq!(v["code"], "NetStream.Play.Failed", "{what}: {v}");
    assert_eq!(v["level"], "error", "{what}");
    assert!(v["description"].is_string(), "{what}: {v}");
    assert_eq!(
        v.as_object().unwrap().len(),
        3,
        "{what}: nothing but the error: {v}"
    );
    assert_eq!(a.cache_control(), "no-store", "{what}");
    assert_eq!(
        a.headers["content-type"], "application/json",
        "{what}: no media bytes"
    );
    if want == StatusCode::UNAUTHORIZED {
        assert!(
            a.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{what}"
        );
    }
}

/// Publishes the fixture as `name` and waits until the node says it ended, reading the status
/// with `token`.
async fn publish_and_end_with(node: &TestNode, name: &str, token: &str) {
    let mut p = Publisher::connect(node.rtmp.unwrap(), "live", name)
        .await
        .expect("publish accepted");
    p.send_all(&read_flv(CLIP), 0, false).await.expect("sent");
    p.close().await;
    let url = with_token(&node.url(&format!("/streams/{name}")), token);
    eventually(Duration::from_secs(30), || async {
        let a = get(&url, None).await;
        (a.status == 200 && a.json()["live"] == false).then_some(())
    })
    .await;
}

/// A secured node with `cam` (needs a token) and `lobby` (public) recorded.
async fn secured_node_with_cam() -> TestNode {
    let node = TestNode::start_with(|_| secured());
    publish_and_end_with(&node, "cam", &token_for(&["cam"])).await;
    publish_and_end_with(&node, "lobby", "unused").await;
    node
}

/// `index.json` of `cam` read with a token.
async fn cam_index(node: &TestNode, token: &str) -> serde_json::Value {
    get(
        &with_token(&node.url("/streams/cam/index.json"), token),
        None,
    )
    .await
    .json()
}

/// Every read endpoint of `cam`, with concrete seq, period and times from its index.
fn cam_reads(ix: &serde_json::Value) -> Vec<String> {
    let segs = ix["segments"].as_array().unwrap();
    let (first, second) = (&segs[0], &segs[1]);
    let t0 = first["time"].as_str().unwrap();
    let t1 = second["time"].as_str().unwrap();
    vec![
        "/streams/cam".into(),
        "/streams/cam/index.m3u8".into(),
        format!("/streams/cam/index.m3u8?start={t1}"),
        "/streams/cam/index.json".into(),
        format!("/streams/cam/init/{}.mp4", first["period"]),
        format!("/streams/cam/segments/{}.m4s", first["seq"]),
        format!("/streams/cam/seek?t={t1}"),
        format!("/streams/cam/clip.mp4?from={t0}&to={t1}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_opens_every_read_by_query_or_header() {
    let node = secured_node_with_cam().await;
    let token = token_for(&["cam"]);
    let ix = cam_index(&node, &token).await;
    for path in cam_reads(&ix) {
        let url = node.url(&path);
        let by_query = get(&with_token(&url, &token), None).await;
        assert_eq!(by_query.status, 200, "{path}?token=: {}", by_query.text());
        assert!(!by_query.body.is_empty(), "{path}");
        assert!(
            !by_query.cache_control().starts_with("private"),
            "{path}: a token in the URL keys caches apart: {}",
            by_query.cache_control()
        );
        let by_header = get(&url, Some(&token)).await;
        assert_eq!(by_header.status, 200, "{path} Bearer: {}", by_header.text());
        let cc = by_header.cache_control();
        assert!(
            !cc.contains("public"),
            "{path}: shared caches must not keep an answer allowed by a header: {cc}"
        );
        // Without a token: refused, whatever the endpoint.
        assert_refused(&get(&url, None).await, StatusCode::UNAUTHORIZED, &path);
        // HEAD is checked the same way.
        let head = fetch(reqwest::Method::HEAD, &url, None).await;
        assert_eq!(head.status, 401, "HEAD {path}");
        assert!(head.body.is_empty());
        let head = fetch(reqwest::Method::HEAD, &with_token(&url, &token), None).await;
        assert_eq!(head.status, 200, "HEAD {path}?token=");
    }
    // Segments keep their immutable caching for tokenized URLs.
    let seg = node.url(&format!(
        "/streams/cam/segments/{}.m4s",
        ix["segments"][0]["seq"]
    ));
    let a = get(&with_token(&seg, &token), None).await;
    assert_eq!(a.cache_control(), "public, max-age=31536000, immutable");
    let a = get(&seg, Some(&token)).await;
    assert_eq!(a.cache_control(), "private, max-age=31536000, immutable");

    // The stream's events, by query (EventSource cannot send headers) and by header.
    for (url, bearer) in [
        (with_token(&node.url("/streams/cam/events"), &token), None),
        (node.url("/streams/cam/events"), Some(token.as_str())),
    ] {
        let mut req = http().get(&url);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
    }
    assert_refused(
        &get(&node.url("/streams/cam/events"), None).await,
        StatusCode::UNAUTHORIZED,
        "events",
    );
    // The admin token reads every stream as a header (relays may pull with it), not as a query.
    let status = node.url("/streams/cam");
    assert_eq!(get(&status, Some(ADMIN)).await.status, 200);
    assert_refused(
        &get(&with_token(&status, ADMIN), None).await,
        StatusCode::UNAUTHORIZED,
        "admin token in the query",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_refused_and_neighbours_keep_playing() {
    let node = secured_node_with_cam().await;
    let good = token_for(&["cam"]);
    let ix = cam_index(&node, &good).await;
    let now = now_s();
    let claims = |extra: serde_json::Value| {
        let mut c = json!({"exp": now + 600, "streams": ["cam"]});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let b64 = |s: &str| {
        // base64url without padding, enough for the `alg: none` header and claims.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    };
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims(json!({})).to_string())
    );
    let hostile: Vec<(&str, String, StatusCode)> = vec![
        (
            "wrong secret",
            mint_with(
                Algorithm::HS256,
                "another-secret-0123456789",
                claims(json!({})),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "truncated",
            good[..good.len() - 5].to_owned(),
            StatusCode::UNAUTHORIZED,
        ),
        ("garbage", "Zm9v.YmFy.YmF6".into(), StatusCode::UNAUTHORIZED),
        ("alg none", alg_none, StatusCode::UNAUTHORIZED),
        (
            "HS512 with the right secret",
            mint_with(Algorithm::HS512, SECRET, claims(json!({}))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "longer than 4 KiB",
            format!("{good}{}", "A".repeat(5000)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            mint_with(Algorithm::HS256, SECRET, claims(json!({"exp": now - 1}))),
            StatusCode::FORBIDDEN,
        ),
        (
            "not yet valid",
            mint_with(Algorithm::HS256, SECRET, claims(json!({"nbf": now + 300}))),
            StatusCode::FORBIDDEN,
        ),
        (
            "another stream",
            token_for(&["other", "cam2", "ca"]),
            StatusCode::FORBIDDEN,
        ),
        (
            "no streams claim",
            mint_with(Algorithm::HS256, SECRET, json!({"exp": now + 600})),
            StatusCode::FORBIDDEN,
        ),
    ];
    // A neighbour with a good token polls the playlist all along.
    let neighbour_ok = Arc::new(AtomicUsize::new(0));
    let neighbour_bad = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = {
        let url = with_token(&node.url("/streams/cam/index.m3u8"), &good);
        let (ok, bad, stop) = (neighbour_ok.clone(), neighbour_bad.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let a = get(&url, None).await;
                let counter = if a.status == 200 && a.text().starts_with("#EXTM3U") {
                    &ok
                } else {
                    &bad
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let reads = cam_reads(&ix);
    for (what, token, want) in &hostile {
        for path in &reads {
            let url = node.url(path);
            let what = format!("{what}: {path}");
            assert_refused(&get(&with_token(&url, token), None).await, *want, &what);
            assert_refused(&get(&url, Some(token)).await, *want, &what);
        }
    }
    // Node-wide reads: a credential sent must be valid; a genuine token of other streams (or
    // of none) still sees the public ones.
    for (what, token, want) in &hostile {
        let node_wide = match *what {
            "another stream" | "no streams claim" => StatusCode::OK,
            _ => *want,
        };
        let a = get(&with_token(&node.url("/streams"), token), None).await;
        assert_eq!(a.status, node_wide, "{what}: /streams: {}", a.text());
        if node_wide != StatusCode::OK {
            assert_refused(&a, node_wide, &format!("{what}: /streams"));
        }
        // An answered event stream never ends: only its status is read.
        let r = http()
            .get(with_token(&node.url("/events"), token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), node_wide, "{what}: /events");
    }
    let missing = get(&node.url("/streams/cam/index.m3u8"), None).await;
    assert_refused(&missing, StatusCode::UNAUTHORIZED, "no token");
    stop.cancel();
    poller.await.unwrap();
    assert_eq!(neighbour_bad.load(Ordering::Relaxed), 0);
    assert!(neighbour_ok.load(Ordering::Relaxed) > 0);
    assert!(
        metric(&node, "dvrgate_http_responses_total{class=\"5xx\"}").await == 0.0,
        "never a 5xx"
    );
    // Tokens never reach the log.
    let log = node.log();
    for (what, token, _) in &hostile {
        assert!(!log.contains(token.as_str()), "{what} token in the log");
    }
    assert!(!log.contains(&good), "token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_token_places_and_scopes() {
    let node = TestNode::start_with(|_| secured());
    let any = token_for(&["*"]);
    publish_and_end_with(&node, "cam", &any).await;
    publish_and_end_with(&node, "demo-1", &any).await;
    publish_and_end_with(&node, "lobby", &any).await;
    let token = token_for(&["cam"]);
    let playlist = node.url("/streams/cam/index.m3u8");

    // Twice in the query, or in the query and a header: 400, whichever copy is valid.
    for url in [
        format!("{playlist}?token={token}&token={token}"),
        format!("{playlist}?token=garbage&token={token}"),
    ] {
        let a = get(&url, None).await;
        assert_eq!(a.status, 400, "{}", a.text());
        assert_eq!(a.json()["code"], "NetStream.Play.BadRequest");
    }
    let a = get(&with_token(&playlist, &token), Some(&token)).await;
    assert_eq!(a.status, 400, "{}", a.text());
    // In the path: no such resource, or not a stream name; never the stream.
    for (path, want) in [
        (format!("/streams/cam/token={token}/index.m3u8"), 404),
        (format!("/streams/cam/index.m3u8/{token}"), 404),
        (format!("/streams/cam;token={token}/index.m3u8"), 400),
        (format!("/streams/token={token}"), 400),
    ] {
        let a = get(&node.url(&path), None).await;
        assert_eq!(a.status, want, "{path}: {}", a.text());
        assert_eq!(a.headers["content-type"], "application/json", "{path}");
    }

    // Prefix scope.
    let demo = token_for(&["demo-*"]);
    let demo_playlist = node.url("/streams/demo-1/index.m3u8");
    assert_eq!(
        get(&with_token(&demo_playlist, &demo), None).await.status,
        200
    );
    assert_refused(
        &get(&with_token(&playlist, &demo), None).await,
        StatusCode::FORBIDDEN,
        "demo-* token on cam",
    );

    // Public: no token needed; a token sent is not looked at, nor carried into the URLs.
    let lobby = get(&node.url("/streams/lobby/index.m3u8"), None).await;
    assert_eq!(lobby.status, 200);
    let with = get(
        &with_token(&node.url("/streams/lobby/index.m3u8"), &token),
        None,
    )
    .await;
    assert_eq!(with.status, 200);
    assert_eq!(with.body, lobby.body, "public playlists carry no token");
    assert!(lobby.cache_control().starts_with("public"));

    // `/streams` lists only what the caller may read.
    let names = |a: Answer| -> Vec<String> {
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = node.url("/streams");
    assert_eq!(names(get(&list, None).await), ["lobby"]);
    assert_eq!(
        names(get(&with_token(&list, &token), None).await),
        ["cam", "lobby"]
    );
    let by_header = get(&list, Some(&demo)).await;
    assert!(
        by_header.cache_control().starts_with("private"),
        "a list filtered by a header is not shared: {}",
        by_header.cache_control()
    );
    assert_eq!(names(by_header), ["demo-1", "lobby"]);
    assert_eq!(
        names(get(&list, Some(ADMIN)).await),
        ["cam", "demo-1", "lobby"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_and_indexes_carry_the_token_and_following_them_works() {
    let node = secured_node_with_cam().await;
    let token = token_for(&["cam"]);
    let other = token_for(&["cam", "x"]);
    let base = node.url("/streams/cam/");
    let suffix = format!("token={token}");
    for path in ["index.m3u8", "index.m3u8?from=-1h"] {
        let a = get(&with_token(&format!("{base}{path}"), &token), None).await;
        assert_eq!(a.status, 200, "{path}");
        let text = a.text();
        let mut uris: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        uris.extend(text.lines().filter_map(|l| {
            let at = l.find("URI=\"")? + 5;
            Some(l[at..at + l[at..].find('"')?].to_owned())
        }));
        assert!(uris.len() > 2 && text.contains("#EXT-X-MAP:"), "{text}");
        for uri in &uris {
            assert!(uri.ends_with(&format!("?{suffix}")), "{uri}");
            let followed = get(&format!("{base}{uri}"), None).await;
            assert_eq!(followed.status, 200, "{uri}");
        }
    }
    // The live playlist cache is shared: another viewer's rendering never carries this token.
    let theirs = get(&with_token(&format!("{base}index.m3u8"), &other), None)
        .await
        .text();
    assert!(!theirs.contains(&token) && theirs.contains(&other));
    let by_header = get(&format!("{base}index.m3u8"), Some(&token)).await.text();
    assert!(
        !by_header.contains("token="),
        "a header client sends its header again: {by_header}"
    );

    let ix = cam_index(&node, &token).await;
    let mut urls: Vec<String> = ix["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["init"].as_str().unwrap().to_owned())
        .collect();
    urls.extend(
        ix["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["url"].as_str().unwrap().to_owned()),
    );
    assert!(urls.len() > 2);
    for url in &urls {
        assert!(url.ends_with(&format!("?{suffix}")), "{url}");
        assert_eq!(
            get(&format!("{base}{url}"), None).await.status,
            200,
            "{url}"
        );
    }
    let plain = get(&format!("{base}index.json"), Some(&token)).await;
    assert!(!plain.text().contains("token"), "{}", plain.text());

    let t = ix["segments"][1]["time"].as_str().unwrap();
    let seek = get(&with_token(&format!("{base}seek?t={t}"), &token), None)
        .await
        .json();
    for key in ["segment", "init", "playlist"] {
        let url = seek[key].as_str().unwrap();
        assert!(url.ends_with(&suffix), "{key}: {url}");
        assert_eq!(
            get(&format!("{base}{url}"), None).await.status,
            200,
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_events_are_filtered_and_end_with_the_token() {
    let node = TestNode::start_with(|_| secured());
    let anonymous = Events::subscribe(&node, "/events").await;
    let scoped = Events::subscribe(&node, &with_token("/events", &token_for(&["cam"]))).await;
    let admin = {
        // The admin token (as a header) reads every stream, and node-wide events.
        let r = http()
            .get(node.url("/events"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r
    };
    drop(admin);
    // Garbage is refused, not treated as anonymous.
    assert_refused(
        &get(&node.url("/events?token=garbage"), None).await,
        StatusCode::UNAUTHORIZED,
        "/events?token=garbage",
    );
    let any = token_for(&["*"]);
    publish_and_end_with(&node, "other", &any).await;
    publish_and_end_with(&node, "cam", &any).await;
    publish_and_end_with(&node, "lobby", &any).await;
    let wait = Duration::from_secs(20);
    anonymous
        .wait_for("NetStream.Unpublish.Success", Some("lobby"), wait)
        .await;
    scoped
        .wait_for("NetStream.Unpublish.Success", Some("lobby"), wait)
        .await;
    let streams = |e: &Events| -> std::collections::BTreeSet<String> {
        e.all()
            .iter()
            .map(|v| v["stream"].as_str().unwrap_or("(none)").to_owned())
            .collect()
    };
    // Events of `other` and `cam` came before those of `lobby`: had they been sent, they were
    // received by now.
    assert_eq!(streams(&anonymous), ["lobby".to_owned()].into());
    assert_eq!(
        streams(&scoped),
        ["cam".to_owned(), "lobby".to_owned()].into()
    );

    // A token that expires in 2 s: its event stream ends then.
    let short = mint_with(
        Algorithm::HS256,
        SECRET,
        json!({"exp": now_s() + 2, "streams": ["cam"]}),
    );
    let started = Instant::now();
    let mut r = http()
        .get(with_token(&node.url("/streams/cam/events"), &short))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = r.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "event stream outlived its token");
    assert!(started.elapsed() <= Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_node_ignores_tokens() {
    let node = TestNode::origin();
    publish_and_end(&node, "cam").await;
    let plain = get(&node.url("/streams/cam/index.m3u8"), None).await;
    let with = get(
        &node.url("/streams/cam/index.m3u8?token=garbage"),
        Some("x"),
    )
    .await;
    assert_eq!(with.status, 200);
    assert_eq!(with.body, plain.body, "no token carried into URLs");
    assert_eq!(with.cache_control(), plain.cache_control());
}

/// Checks an edge (with the same `play_secret`) against a fake upstream that logs every
/// request: the edge verifies viewers itself, never passes their token upstream (neither in a
/// URL nor a header), and caches by stream and seq, not by token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_checks_tokens_itself_and_never_forwards_them() {
    let source = Arc::new(fake_upstream::record_source().await);
    let fake = fake_upstream::Fake::start(source.clone()).await;
    fake.list("cam", fake_upstream::Listing::Good);
    let edge = relay(
        &[fake.url()],
        &format!("\n[access]\nplay_secret = \"{SECRET}\"\n"),
    );
    let (t1, t2) = (token_for(&["cam"]), token_for(&["cam", "b"]));
    let ix = eventually(Duration::from_secs(30), || async {
        let a = get(&with_token(&edge.url("/streams/cam/index.json"), &t1), None).await;
        let v = (a.status == 200).then(|| a.json())?;
        (v["segments"].as_array()?.len() == source.segments.len()).then_some(v)
    })
    .await;
    assert_refused(
        &get(&edge.url("/streams/cam/index.m3u8"), None).await,
        StatusCode::UNAUTHORIZED,
        "edge without a token",
    );
    let seg = &ix["segments"][1];
    let url = seg["url"].as_str().unwrap();
    assert!(url.ends_with(&format!("?token={t1}")), "{url}");
    let base = edge.url("/streams/cam/");
    let bytes = get(&format!("{base}{url}"), None).await;
    assert_eq!(bytes.status, 200);
    assert_eq!(bytes.body, source.segments[&seg["seq"].as_u64().unwrap()]);
    // The same segment for another viewer's token and by header: served from the cache.
    let plain = format!("{base}segments/{}.m4s", seg["seq"]);
    assert_eq!(get(&with_token(&plain, &t2), None).await.body, bytes.body);
    assert_eq!(get(&plain, Some(&t2)).await.body, bytes.body);
    let playlist = get(&with_token(&format!("{base}index.m3u8"), &t2), None).await;
    assert_eq!(playlist.status, 200);

    let seen = fake.log();
    let path = format!("/streams/cam/segments/{}.m4s", seg["seq"]);
    assert_eq!(
        seen.iter().filter(|s| s.path == path).count(),
        1,
        "one pull, whichever token: {seen:?}"
    );
    for s in &seen {
        assert!(!s.target.contains("token"), "token upstream: {}", s.target);
        let auth = s.authorization.as_deref().unwrap_or_default();
        assert!(
            !auth.contains(&t1) && !auth.contains(&t2),
            "viewer token upstream"
        );
    }
}

/// Origin and edge share `play_secret`; the edge pulls with `relay.token`, a token minted for
/// the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_chain_pulls_with_relay_token() {
    let origin = TestNode::start_with(|_| secured());
    let relay_token = token_for(&["cam"]);
    let edge = relay(
        &[origin.base()],
        &format!("token = \"{relay_token}\"\n\n[access]\nplay_secret = \"{SECRET}\"\n"),
    );
    publish_and_end_with(&origin, "cam", &relay_token).await;
    let viewer = token_for(&["cam"]);
    let ix = eventually(Duration::from_secs(30), || async {
        let a = get(&edge.url("/streams/cam/index.json"), Some(&viewer)).await;
        let v = (a.status == 200).then(|| a.json())?;
        (v["live"] == false).then_some(v)
    })
    .await;
    let at_origin = cam_index(&origin, &viewer).await;
    assert_eq!(
        ix["segments"].as_array().unwrap().len(),
        at_origin["segments"].as_array().unwrap().len()
    );
    for s in ix["segments"].as_array().unwrap() {
        let path = format!("/streams/cam/{}", s["url"].as_str().unwrap());
        let at_edge = get(&with_token(&edge.url(&path), &viewer), None).await;
        let direct = get(&origin.url(&path), Some(&viewer)).await;
        assert_eq!(at_edge.status, 200, "{path}");
        assert_eq!(at_edge.body, direct.body, "{path}");
    }
    assert_refused(
        &get(&edge.url("/streams/cam/index.m3u8"), None).await,
        StatusCode::UNAUTHORIZED,
        "edge without a token",
    );
    assert_refused(
        &get(
            &edge.url("/streams/cam/index.m3u8"),
            Some(&token_for(&["x"])),
        )
        .await,
        StatusCode::FORBIDDEN,
        "edge, token of another stream",
    );
}
