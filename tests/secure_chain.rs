//! End to end on the open internet's terms: ffmpeg publishes over RTMPS to an origin that
//! serves HTTPS and needs play tokens; an intermediate relays it over https, and an edge relays
//! the intermediate over https (both trusting the test CA with `relay.ca_file`, both pulling
//! with `relay.token`). ffmpeg plays the edge's tokenized playlist, and the web player plays it
//! in headless Chromium from one page URL with `?token=`. Without the token the same URLs are
//! refused. Skips without ffmpeg, chromium or chromedriver locally; fails without them under
//! CI=true.

#[path = "common/mod.rs"]
mod common;
#[path = "browser/driver.rs"]
#[allow(dead_code)]
mod driver;

use std::time::Duration;

use common::*;
use driver::*;
use jsonwebtoken::{encode, EncodingKey, Header};

const SECRET: &str = "e2e-secret-0123456789abcdef";
/// How long ffmpeg publishes (the test ends it sooner).
const PUBLISH_S: u32 = 90;

fn token(streams: &[&str], ttl_s: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::default(),
        &serde_json::json!({ "exp": now + ttl_s, "streams": streams }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A relay of `up` over https, serving HTTPS, with play tokens and `relay.token`.
fn secure_relay(up: &TestNode, relay_token: &str) -> TestNode {
    let (ca, upstream, t) = (pki().ca.clone(), up.base(), relay_token.to_owned());
    TestNode::start_with(move |_| {
        format!(
            "{}\n[rtmp]\nlisten = \"off\"\n\n[relay]\nupstreams = [{upstream:?}]\nca_file = {ca:?}\ntoken = {t:?}\n\n[access]\nplay_secret = {SECRET:?}\n",
            https_section()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmps_to_https_chain_with_tokens_plays_in_ffmpeg_and_chromium() {
    if !have("ffmpeg") || !have("chromedriver") || !have("chromium") {
        return;
    }
    let origin = TestNode::start_with(|_| {
        format!(
            "{}\n[rtmp]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\n[access]\nplay_secret = {SECRET:?}\n",
            https_section()
        )
    });
    let url = format!("rtmps://{}/live/cam", origin.rtmps.unwrap());
    let seconds = PUBLISH_S.to_string();
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(ffmpeg_pattern_args(&seconds, &url))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg");

    let relay_token = token(&["*"], 3600);
    let intermediate = secure_relay(&origin, &relay_token);
    let edge = secure_relay(&intermediate, &relay_token);
    let viewer = token(&["cam"], 600);

    // Refused without the token, at every hop, before anything else.
    for node in [&origin, &intermediate, &edge] {
        let r = http()
            .get(node.url("/streams/cam/index.m3u8"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{}", node.base());
    }
    // Six seconds of media at the edge, pulled over two https hops.
    let index_url = edge.url(&format!("/streams/cam/index.json?token={viewer}"));
    let segs = eventually(Duration::from_secs(40), || async {
        let v = try_get_json(&index_url).await?;
        let segs = v["segments"].as_array()?.clone();
        (segs.len() >= 3).then_some(segs)
    })
    .await;
    assert!(
        segs.iter()
            .all(|s| s["url"].as_str().unwrap().contains(&viewer)),
        "index.json URLs carry the viewer's token"
    );

    // ffmpeg decodes a finished window of it from the edge, from one tokenized URL.
    let from = segs[0]["time"].as_str().unwrap();
    let to = segs[2]["time"].as_str().unwrap();
    let window = edge.url(&format!(
        "/streams/cam/index.m3u8?from={from}&to={to}&token={viewer}"
    ));
    if let Err(e) = ffmpeg_decode(&window).await {
        panic!("ffmpeg decode over https with a token: {e}");
    }

    // The web player, from one page URL with ?token=.
    let b = Browser::start_with(1280, 860, &["--ignore-certificate-errors"]).await;
    b.goto(&edge.url(&format!("/?stream=cam&token={viewer}")))
        .await;
    b.wait_state("plays live over https with a token", PLAY, |s| {
        s["mode"] == "mse" && playing(s)
    })
    .await;
    advances(&b, "playback advances", 2.0, Duration::from_secs(10)).await;
    // Every request the page made to the stream carried the token (none was refused).
    let names = b
        .js("return performance.getEntriesByType('resource').map((e) => e.name)")
        .await;
    let urls: Vec<String> = names
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    let stream_urls: Vec<&String> = urls.iter().filter(|u| u.contains("/streams/cam")).collect();
    assert!(
        stream_urls.iter().any(|u| u.contains("/segments/")),
        "the player fetched no segment: {urls:?}"
    );
    assert!(!stream_urls.is_empty(), "{urls:?}");
    for u in &stream_urls {
        assert!(u.contains("token="), "request without the token: {u}");
    }
    b.close().await;
    let _ = ffmpeg.kill().await;
}
