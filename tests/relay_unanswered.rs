//! A relayed stream that no upstream has ever answered has nothing to serve: its status, index
//! and playlists are 502 (refused, errors) or 504 (timed out) JSON errors, never a 200 with an
//! empty live index. The first probe of an on-demand stream at a silent upstream is a 504 too.

mod common;

use common::{http, proxy_of, relay, TestNode};

async fn expect_error(node: &TestNode, path: &str, status: u16) {
    let r = http().get(node.url(path)).send().await.unwrap();
    assert_eq!(r.status(), status, "{path}");
    assert_eq!(
        r.headers()["cache-control"],
        "no-store",
        "{path}: errors are not cached"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["code"], "NetConnection.Proxy.NotResponding",
        "{path}: {body}"
    );
    assert_eq!(body["level"], "error");
}

#[tokio::test]
async fn a_proxy_whose_upstream_refuses_is_a_502_everywhere() {
    // Port 9 (discard) is closed on loopback: connections are refused at once.
    let node = proxy_of(&["http://127.0.0.1:9".to_owned()], "");
    for path in [
        "/streams/cam",
        "/streams/cam/index.json",
        "/streams/cam/index.m3u8",
        "/streams/cam/index.m3u8?start=-10s",
    ] {
        expect_error(&node, path, 502).await;
    }
}

#[tokio::test]
async fn a_silent_upstream_is_a_504_for_proxies_and_on_demand_probes() {
    // Accepts connections (the kernel completes the handshake) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let proxy = proxy_of(std::slice::from_ref(&url), "");
    let on_demand = relay(&[url], "");
    let (a, b) = tokio::join!(
        expect_error(&proxy, "/streams/cam/index.json", 504),
        expect_error(&on_demand, "/streams/other/index.m3u8", 504),
    );
    let ((), ()) = (a, b);
    drop(silent);
}
