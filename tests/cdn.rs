//! nginx as a CDN in front of an edge with play tokens, running `config/nginx-cdn.conf` as the
//! README gives it (ports and paths replaced): tokens are checked at the CDN on every request,
//! segments are cached once for every viewer, refused requests never get cached bytes, answers
//! allowed by an `Authorization` header are not shared. Skips without nginx locally; fails
//! without it under CI=true.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{encode, EncodingKey, Header};

const SECRET: &str = "cdn-test-secret-0123456789";

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 play token for `streams`, valid from `nbf` (now if `None`) for `ttl_s` seconds
/// (negative: expired).
fn token(streams: &[&str], ttl_s: i64) -> String {
    let exp = now_s() as i64 + ttl_s;
    encode(
        &Header::default(),
        &serde_json::json!({ "exp": exp, "streams": streams }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// nginx with the README's CDN config in front of `edge`, on a free loopback port.
struct Cdn {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Cdn {
    fn start(edge: SocketAddr) -> Cdn {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let readme_conf = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nginx-cdn.conf"),
        )
        .unwrap();
        for needle in [
            "server 127.0.0.1:8082;",
            "listen 8080;",
            "/var/cache/nginx/",
        ] {
            assert!(
                readme_conf.contains(needle),
                "config/nginx-cdn.conf lost {needle:?}"
            );
        }
        let conf = readme_conf
            .replace("server 127.0.0.1:8082;", &format!("server {edge};"))
            .replace("listen 8080;", &format!("listen {addr};"))
            .replace("/var/cache/nginx/", &format!("{}/cache-", d.display()));
        std::fs::write(d.join("cdn.conf"), conf).unwrap();
        let main = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root root;\n\
             error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             include {d}/cdn.conf; }}\n",
            d = d.display()
        );
        std::fs::write(d.join("nginx.conf"), main).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Cdn {
            child,
            addr,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Cdn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status, `X-Cache`, `Cache-Control` and body of a GET.
async fn get(url: &str, bearer: Option<&str>) -> (u16, String, String, bytes::Bytes) {
    let mut req = http().get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let h = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, cache, cc) = (r.status().as_u16(), h("x-cache"), h("cache-control"));
    (status, cache, cc, r.bytes().await.unwrap())
}

fn assert_refused(what: &str, status: u16, body: &[u8], want: u16) {
    assert_eq!(status, want, "{what}: {}", String::from_utf8_lossy(body));
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("{what}: not JSON: {}", String::from_utf8_lossy(body)));
    assert_eq!(v["code"], "NetStream.Play.Failed", "{what}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_cdn_checks_tokens_and_shares_segments() {
    if !have("nginx") {
        return;
    }
    let access = format!("[access]\nplay_secret = {SECRET:?}\n");
    let origin = TestNode::start_with({
        let a = access.clone();
        move |_| a
    });
    publish_and_end_with_token(&origin, "cam", &token(&["cam"], 600)).await;
    let relay_token = token(&["*"], 3600);
    let edge = relay(
        &[origin.base()],
        &format!("token = {relay_token:?}\n\n{access}"),
    );
    let cdn = Cdn::start(edge.http);

    let alice = token(&["cam"], 600);
    let bob = token(&["cam*"], 600);
    // A playlist through the CDN lists tokenized URLs; following them works.
    let (status, _, _, body) = get(
        &cdn.url(&format!("/streams/cam/index.m3u8?token={alice}")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let playlist = String::from_utf8(body.to_vec()).unwrap();
    let first = playlist
        .lines()
        .find(|l| l.starts_with("segments/"))
        .expect("a segment line")
        .to_owned();
    assert!(first.contains(&format!("token={alice}")), "{playlist}");
    let seg_path = first.split('?').next().unwrap().to_owned();

    // Alice's request fills the cache; Bob's, with his own token, is a hit with the same bytes.
    let (s1, c1, cc, b1) = get(&cdn.url(&format!("/streams/cam/{first}")), None).await;
    assert_eq!((s1, c1.as_str()), (200, "MISS"));
    assert!(cc.contains("immutable"), "{cc}");
    let (s2, c2, _, b2) = get(
        &cdn.url(&format!("/streams/cam/{seg_path}?token={bob}")),
        None,
    )
    .await;
    assert_eq!((s2, c2.as_str()), (200, "HIT"));
    assert_eq!(b1, b2);

    // The cached segment is never handed out without a valid token.
    let expired = token(&["cam"], -10);
    let elsewhere = token(&["other"], 600);
    let forged = format!("{}x", &alice[..alice.len() - 1]);
    for (what, query, want) in [
        ("no token", String::new(), 401),
        ("garbage", "?token=nope".to_owned(), 401),
        ("forged", format!("?token={forged}"), 401),
        ("expired", format!("?token={expired}"), 403),
        ("out of scope", format!("?token={elsewhere}"), 403),
    ] {
        let (status, _, cc, body) =
            get(&cdn.url(&format!("/streams/cam/{seg_path}{query}")), None).await;
        assert_refused(what, status, &body, want);
        assert!(cc.contains("no-store"), "{what}: {cc}");
    }

    // A playlist allowed by a bearer header is private: the next request without the header
    // is refused, not served from the CDN's cache.
    let url = cdn.url("/streams/cam/index.m3u8");
    let (status, _, cc, _) = get(&url, Some(&alice)).await;
    assert_eq!(status, 200);
    assert!(cc.contains("private"), "{cc}");
    let (status, _, _, body) = get(&url, None).await;
    assert_refused(
        "bearer playlist replayed without the header",
        status,
        &body,
        401,
    );

    // A valid token for a stream nobody has: the edge's own 404, not a CDN error.
    let ghost = token(&["ghost"], 600);
    let (status, _, _, body) = get(
        &cdn.url(&format!("/streams/ghost/index.json?token={ghost}")),
        None,
    )
    .await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

/// Publishes the fixture as `name` and waits (reading with `token`) until it has ended.
async fn publish_and_end_with_token(node: &TestNode, name: &str, token: &str) {
    let mut p = Publisher::connect(node.rtmp.unwrap(), "live", name)
        .await
        .unwrap();
    p.send_all(&read_flv(CLIP), 0, false).await.unwrap();
    p.close().await;
    let url = node.url(&format!("/streams/{name}?token={token}"));
    eventually(Duration::from_secs(30), || async {
        let s = get_json(&url).await;
        (s["live"] == false).then_some(())
    })
    .await;
}

/// LL-HLS through the shipped CDN config: blocking reloads are answered through nginx and
/// cached briefly under their full URL; a part is fetched from the edge once for many
/// viewers; what does not exist yet is never cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_cdn_carries_low_latency_hls() {
    if !have("nginx") {
        return;
    }
    let origin = TestNode::origin();
    let edge = relay_of(&origin);
    let cdn = Cdn::start(edge.http);
    let mut publisher = Publisher::connect(origin.rtmp.unwrap(), "live", "ll")
        .await
        .unwrap();
    let tags = looped_clip(2);
    let publishing = tokio::spawn(async move {
        publisher.send_all(&tags, 0, true).await.unwrap();
        publisher.close().await;
    });

    let playlist_url = cdn.url("/streams/ll/index.m3u8");
    let text = eventually(Duration::from_secs(15), || async {
        let (status, _, _, body) = get(&playlist_url, None).await;
        let text = String::from_utf8(body.to_vec()).ok()?;
        (status == 200 && text.contains("#EXT-X-PRELOAD-HINT:")).then_some(text)
    })
    .await;
    let hint = |text: &str| -> (u64, u64) {
        let uri = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"parts/"))
            .and_then(|r| r.strip_suffix(".m4s\""))
            .unwrap_or_else(|| panic!("no hint in {text}"));
        let (s, p) = uri.split_once('.').unwrap();
        (s.parse().unwrap(), p.parse().unwrap())
    };

    // A blocking reload through the CDN: held at the edge until the part exists, then cached
    // for everyone asking the same URL.
    let (seq, part) = hint(&text);
    let blocking = format!("{playlist_url}?_HLS_msn={seq}&_HLS_part={part}");
    let started = Instant::now();
    let (status, cache, cc, first) = get(&blocking, None).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    assert_eq!(cc, "public, max-age=6");
    let held = started.elapsed();
    assert!(
        held < Duration::from_secs(2),
        "held {held:?} for {seq}.{part}:\n{text}"
    );
    let (status, cache, _, again) = get(&blocking, None).await;
    assert_eq!((status, cache.as_str(), &again), (200, "HIT", &first));

    // A part not there yet: 404 through the CDN, not cached; once listed it is served.
    let seq_far = seq + 5;
    let far = cdn.url(&format!("/streams/ll/parts/{seq_far}.0.m4s"));
    let (status, _, cc, _) = get(&far, None).await;
    assert_eq!((status, cc.as_str()), (404, "no-store"));

    // The hinted part of that answer, asked by twenty viewers once it is listed: one request
    // reaches the edge, the others wait for it (the short LL lock) and share its bytes.
    let (seq, part) = hint(std::str::from_utf8(&first).unwrap());
    let listed = format!("{playlist_url}?_HLS_msn={seq}&_HLS_part={part}");
    let (status, _, _, _) = get(&listed, None).await;
    assert_eq!(status, 200);
    let part_url = cdn.url(&format!("/streams/ll/parts/{seq}.{part}.m4s"));
    let viewers: Vec<_> = (0..20)
        .map(|_| {
            let url = part_url.clone();
            tokio::spawn(async move { get(&url, None).await })
        })
        .collect();
    let mut misses = 0;
    let mut bodies = Vec::new();
    for v in viewers {
        let (status, cache, cc, body) = v.await.unwrap();
        assert_eq!(status, 200);
        assert!(cc.contains("immutable"), "{cc}");
        misses += usize::from(cache == "MISS");
        bodies.push(body);
    }
    assert_eq!(
        misses, 1,
        "one of twenty viewers' requests reached the edge"
    );
    let from_origin = get_bytes(&origin.url(&format!("/streams/ll/parts/{seq}.{part}.m4s"))).await;
    assert!(bodies.iter().all(|b| *b == from_origin));

    // The part that was a 404 is served once it exists: the 404 was not cached.
    let (_, body) = eventually(Duration::from_secs(10), || async {
        let (status, cache, _, body) = get(&far, None).await;
        (status == 200).then_some((cache, body))
    })
    .await;
    let far_origin = get_bytes(&origin.url(&format!("/streams/ll/parts/{}.0.m4s", seq_far))).await;
    assert_eq!(body, far_origin);
    publishing.await.unwrap();
}
