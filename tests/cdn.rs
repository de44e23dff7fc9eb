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
