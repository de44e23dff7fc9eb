//! `access.publish_hook`: asked before each publish; a 2xx allows, anything else (a refusal,
//! a redirect, silence past 3 s, no hook at all) refuses with `NetStream.Publish.BadName`, and
//! one slow hook answer stalls no other publisher.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;

type Asked = Arc<Mutex<Vec<serde_json::Value>>>;

async fn decide(
    axum::extract::State(asked): axum::extract::State<Asked>,
    axum::Json(ask): axum::Json<serde_json::Value>,
) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    asked.lock().unwrap().push(ask.clone());
    let none = [("x-hook", "1")];
    match ask["name"].as_str().unwrap_or_default() {
        "denied" => (StatusCode::FORBIDDEN, none, Vec::new()),
        "moved" => (
            StatusCode::FOUND,
            [("location", "http://127.0.0.1:9/")],
            Vec::new(),
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            (StatusCode::OK, none, Vec::new())
        }
        "huge" => (StatusCode::OK, none, vec![b'x'; 10 << 20]),
        _ => (StatusCode::NO_CONTENT, none, Vec::new()),
    }
}

/// The hook's app: answers by [`decide`], remembering every question.
fn hook_app() -> (Asked, axum::Router) {
    let asked = Asked::default();
    let app = axum::Router::new()
        .route("/publish", axum::routing::post(decide))
        .with_state(asked.clone());
    (asked, app)
}

/// Waits for the `NetStream.Publish.BadName` of `stream` and checks its description has `text`.
async fn refusal_says(events: &Events, stream: &str, text: &str) {
    let refused = events
        .wait_for(
            "NetStream.Publish.BadName",
            Some(stream),
            Duration::from_secs(5),
        )
        .await;
    let why = refused["description"].as_str().unwrap_or_default();
    assert!(why.contains(text), "{refused}");
}

async fn start_hook() -> (Asked, String) {
    let (asked, app) = hook_app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/publish", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (asked, url)
}

fn with_hook(url: &str) -> String {
    format!("[node]\nname = \"origin-1\"\n[access]\npublish_hook = \"{url}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_decides_each_publish() {
    let (asked, url) = start_hook().await;
    let node = TestNode::start_with(|_| with_hook(&url));
    let rtmp = node.rtmp.unwrap();
    let events = Events::subscribe(&node, "/events").await;

    let p = Publisher::connect(rtmp, "live", "allowed?key=abc")
        .await
        .expect("allowed");
    p.close().await;
    let ask = asked.lock().unwrap()[0].clone();
    assert_eq!(ask["action"], "publish");
    assert_eq!(ask["app"], "live");
    assert_eq!(ask["name"], "allowed");
    assert_eq!(ask["key"], "abc");
    assert_eq!(ask["node"], "origin-1");
    assert!(
        ask["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{ask}"
    );

    for name in ["denied", "moved"] {
        assert!(
            Publisher::connect(rtmp, "live", name).await.is_err(),
            "{name}"
        );
    }
    refusal_says(&events, "moved", "HTTP 302").await;
    let denied = events.with_code("NetStream.Publish.BadName");
    assert!(denied.iter().any(
        |e| e["stream"] == "denied" && e["description"].as_str().unwrap().contains("HTTP 403")
    ));

    // A huge answer allows (the body is never read) and harms nothing.
    let p = Publisher::connect(rtmp, "live", "huge")
        .await
        .expect("a 2xx allows");
    p.close().await;
    // Bad names never reach the hook.
    let before = asked.lock().unwrap().len();
    assert!(Publisher::connect(rtmp, "live", "bad/name").await.is_err());
    assert_eq!(asked.lock().unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_hook_refuses_in_3_s_and_stalls_no_one_else() {
    let (_asked, url) = start_hook().await;
    let node = TestNode::start_with(|_| with_hook(&url));
    let rtmp = node.rtmp.unwrap();
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let r = Publisher::connect(rtmp, "live", "slow").await;
        (r.is_err(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let p = Publisher::connect(rtmp, "live", "fast")
        .await
        .expect("fast is allowed");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stalled: {:?}",
        started.elapsed()
    );
    p.close().await;
    let (refused, took) = slow.await.unwrap();
    assert!(refused, "no answer in time refuses");
    assert!(
        took >= Duration::from_millis(2_900) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(
        node.log().contains("publish hook did not answer within 3s"),
        "{}",
        node.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hook_at_all_refuses() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/publish", closed.local_addr().unwrap());
    drop(closed);
    let node = TestNode::start_with(|_| with_hook(&url));
    assert!(Publisher::connect(node.rtmp.unwrap(), "live", "cam")
        .await
        .is_err());
    assert!(
        node.log().contains("publish hook unreachable"),
        "{}",
        node.log()
    );
    let r = http().get(node.url("/streams/cam")).send().await.unwrap();
    assert_eq!(r.status(), 404, "nothing recorded");
}

/// The hook app of [`start_hook`] served over HTTPS with the test CA's certificate.
async fn start_https_hook() -> (Asked, String) {
    let (asked, app) = hook_app();
    let p = pki();
    let certs = dvrgate::tls::Certs::load(&p.cert, &p.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/publish", listener.local_addr().unwrap());
    let tls = dvrgate::http::conn::TlsListener::new(
        listener,
        certs.server_config(&dvrgate::tls::HTTP_ALPN).unwrap(),
        Duration::from_secs(30),
        Arc::default(),
    )
    .unwrap();
    tokio::spawn(async move { axum::serve(tls, app).await });
    (asked, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_hook_is_trusted_through_relay_ca_file_only() {
    let (asked, url) = start_https_hook().await;
    // Trusting the hook's CA: asked and allowed.
    let ca = pki().ca.clone();
    let node = TestNode::start_with(|_| format!("{}[relay]\nca_file = {ca:?}\n", with_hook(&url)));
    let p = Publisher::connect(node.rtmp.unwrap(), "live", "allowed")
        .await
        .expect("allowed over https");
    p.close().await;
    assert_eq!(asked.lock().unwrap().len(), 1);
    // Without the CA the certificate is not trusted: refused, saying so, and never asked.
    let untrusting = TestNode::start_with(|_| with_hook(&url));
    let events = Events::subscribe(&untrusting, "/events").await;
    assert!(
        Publisher::connect(untrusting.rtmp.unwrap(), "live", "allowed")
            .await
            .is_err()
    );
    refusal_says(
        &events,
        "allowed",
        "TLS handshake failed: invalid peer certificate",
    )
    .await;
    assert_eq!(asked.lock().unwrap().len(), 1);
}
