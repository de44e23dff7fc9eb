//! HTTP and TCP client helpers; bounded polling.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TestNode;

/// A shared HTTP client with a bounded timeout; it trusts the test CA ([`super::pki`]), so
/// every helper works against https nodes too.
pub fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let ca = reqwest::Certificate::from_pem(super::pki().ca_pem.as_bytes()).expect("CA");
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .tls_certs_merge([ca])
                .build()
                .expect("client")
        })
        .clone()
}

/// GET the whole body; panics unless the status is 200.
pub async fn get_bytes(url: &str) -> Bytes {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.bytes().await.unwrap()
}

/// GET the body as text; panics unless the status is 2xx.
pub async fn get_text(url: &str) -> String {
    let r = http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "GET {url}: {status} {text}");
    text
}

/// GET and parse JSON; panics with the body on a non-2xx status.
pub async fn get_json(url: &str) -> serde_json::Value {
    let text = get_text(url).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
}

/// GET and parse JSON; `None` on any failure (for polling with [`eventually`]).
pub async fn try_get_json(url: &str) -> Option<serde_json::Value> {
    http().get(url).send().await.ok()?.json().await.ok()
}

/// Polls `f` until it returns Some, at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends raw bytes over TCP and returns what came back before close or `timeout`.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    out
}

/// The value of an unlabelled metric from the node's `/metrics`.
pub async fn metric(node: &TestNode, name: &str) -> f64 {
    let text = get_text(&node.url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
}
