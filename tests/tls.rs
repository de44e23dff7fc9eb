//! TLS: HTTPS on the read/control listener (HTTP/1.1 and HTTP/2 by ALPN), relays pulling over
//! https with `relay.ca_file`, a bad upstream certificate reported as such, hostile TLS clients
//! that harm nobody, certificates reloaded on SIGHUP without dropping connections, and RTMPS
//! ingest from ffmpeg. Certificates come from a test CA made with rcgen (`common::pki`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An origin serving HTTPS with the test CA's leaf, with `extra` sections.
fn https_origin(extra: &str) -> TestNode {
    let extra = extra.to_owned();
    TestNode::start_with(move |_| format!("{}\n{extra}", https_section()))
}

/// A relay over https of `upstreams`, itself serving HTTPS, trusting the test CA.
fn https_relay(upstreams: &[String]) -> TestNode {
    let ca = pki().ca.clone();
    let list = upstreams
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    TestNode::start_with(move |_| {
        format!(
            "{}\n[rtmp]\nlisten = \"off\"\n\n[relay]\nupstreams = [{list}]\nca_file = {ca:?}\n",
            https_section()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_http2_and_http1_and_plain_http_gets_nothing() {
    let node = https_origin("");
    assert_eq!(node.scheme, "https");
    publish_and_end(&node, "cam").await;

    // ALPN picks HTTP/2 for a client that offers it.
    let r = http()
        .get(node.url("/streams/cam/index.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // An HTTP/1.1-only client is served too.
    let ca = reqwest::Certificate::from_pem(pki().ca_pem.as_bytes()).unwrap();
    let h1 = reqwest::Client::builder()
        .http1_only()
        .tls_certs_merge([ca])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let segs = segments(&node, "cam").await;
    let url = node.url(&format!(
        "/streams/cam/{}",
        segs[0]["url"].as_str().unwrap()
    ));
    let r = h1
        .get(&url)
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.bytes().await.unwrap().len(), 100);
    // The player and metrics are there too.
    assert!(get_text(&node.url("/")).await.contains("<html"));
    assert!(metric(&node, "dvrgate_tls_handshakes_total").await >= 2.0);

    // Plain HTTP to the TLS port: no HTTP answer at all (the handshake fails), nothing served.
    let answer = raw_exchange(
        node.http,
        b"GET /streams/cam/index.json HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("segments"),
        "plain HTTP got data from the TLS port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_chain_over_https_serves_the_same_bytes() {
    let origin = https_origin("");
    publish_and_end(&origin, "cam").await;
    let intermediate = https_relay(&[origin.base()]);
    let edge = https_relay(&[intermediate.base()]);
    let at_origin = segments(&origin, "cam").await;
    let at_edge = segments(&edge, "cam").await;
    assert_eq!(at_origin.len(), at_edge.len());
    let want = segment_bytes(&origin, "cam", &at_origin).await;
    let got = segment_bytes(&edge, "cam", &at_edge).await;
    assert_eq!(want, got, "segments differ after two https hops");
    let status = get_json(&edge.url("/streams/cam")).await;
    assert!(
        status["source"]["upstream"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_upstream_certificate_is_reported_not_retried_silently() {
    // The origin's certificate is signed by a CA the relay does not trust.
    let origin = TestNode::start_with(|dir| {
        let (c, k) = untrusted_pair(dir);
        format!("[http]\n{}", tls_lines((&c, &k)))
    });
    let mut p = Publisher::connect(origin.rtmp.unwrap(), "live", "cam")
        .await
        .unwrap();
    p.send_all(&read_flv(CLIP), 0, false).await.unwrap();
    p.close().await;
    // The origin has it (asked by a client that accepts any certificate).
    let anything = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        let r = anything.get(origin.url("/streams/cam")).send().await.ok()?;
        let s: serde_json::Value = r.json().await.ok()?;
        (s["live"] == false).then_some(())
    })
    .await;
    let says_certificate = |what: &serde_json::Value| {
        let why = what["description"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        assert!(
            why.contains("tls") && why.contains("certificate"),
            "the description should say the certificate is the problem: {what}"
        );
    };
    // On demand: the viewer's answer says so.
    let relay = https_relay(&[origin.base()]);
    let r = http()
        .get(relay.url("/streams/cam/index.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "NetConnection.Proxy.NotResponding", "{body}");
    says_certificate(&body);

    // An explicit proxy: a NotResponding event naming the upstream, then backoff (not a
    // tight loop of retries).
    let ca = pki().ca.clone();
    let up = origin.base();
    let proxy = TestNode::start_with(move |_| {
        format!(
            "[rtmp]\nlisten = \"off\"\n[relay]\nca_file = {ca:?}\n[[proxy]]\nlocal = \"cam\"\nremote = \"cam\"\nupstreams = [{up:?}]\n"
        )
    });
    let events = Events::subscribe(&proxy, "/events").await;
    let e = events
        .wait_for(
            "NetConnection.Proxy.NotResponding",
            Some("cam"),
            Duration::from_secs(10),
        )
        .await;
    says_certificate(&e);
    assert_eq!(e["upstream"], origin.base().as_str(), "{e}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reports = events.with_code("NetConnection.Proxy.NotResponding").len();
    assert!(
        reports <= 10,
        "{reports} failure reports in about 3 s: a retry loop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_stalled_tls_clients_delay_nobody() {
    let node = https_origin("");
    publish_and_end(&node, "cam").await;
    // Stalled: connect and never send a ClientHello; half a ClientHello; garbage.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(node.http).await.unwrap());
    }
    let mut half = TcpStream::connect(node.http).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut garbage = TcpStream::connect(node.http).await.unwrap();
    garbage.write_all(&[0xde; 4096]).await.unwrap();
    // The garbage connection is closed promptly, without an HTTP answer.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "garbage client not disconnected within 5 s");
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/"), "{buf:?}");

    // Meanwhile a good client is served at once.
    let started = Instant::now();
    let index = get_json(&node.url("/streams/cam/index.json")).await;
    assert!(index["segments"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a good client waited {:?} behind stalled handshakes",
        started.elapsed()
    );
    assert!(metric(&node, "dvrgate_tls_handshake_failures_total").await >= 1.0);
    let _ = tokio::time::timeout(Duration::from_millis(200), half.read(&mut [0; 16])).await;
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_connections() {
    let p = pki();
    let mut node = TestNode::process_with(|dir| {
        let (c, k) = (dir.join("live.crt"), dir.join("live.key"));
        std::fs::copy(&p.cert, &c).unwrap();
        std::fs::copy(&p.key, &k).unwrap();
        format!("[http]\n{}", tls_lines((&c, &k)))
    });
    let served = |node: &TestNode| {
        let url = node.url("/healthz");
        async move {
            let client = reqwest::Client::builder()
                .tls_certs_merge([reqwest::Certificate::from_pem(pki().ca_pem.as_bytes()).unwrap()])
                .tls_info(true)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|i| i.peer_certificate().map(<[u8]>::to_vec))
                .expect("peer certificate")
        }
    };
    let before = served(&node).await;
    // A long-lived connection open across the reload.
    let events = Events::subscribe(&node, "/events").await;

    let hup = |node: &TestNode| {
        let pid = node.pid().expect("process node");
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    };
    // A broken renewal (half-written file): logged, the old certificate stays.
    let cert = node.dir.join("live.crt");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    hup(&node);
    eventually(Duration::from_secs(10), || async {
        node.log()
            .contains("certificate not reloaded")
            .then_some(())
    })
    .await;
    assert_eq!(served(&node).await, before);

    // The real renewal.
    let (c2, k2) = p.new_leaf("renewed");
    std::fs::copy(&k2, node.dir.join("live.key")).unwrap();
    std::fs::copy(&c2, &cert).unwrap();
    hup(&node);
    eventually(Duration::from_secs(10), || async {
        node.log().contains("certificate reloaded").then_some(())
    })
    .await;
    let after = served(&node).await;
    assert_ne!(
        after, before,
        "new connections still get the old certificate"
    );
    assert_eq!(after, pem_der(&std::fs::read_to_string(&c2).unwrap()));

    // The connection opened before both reloads still delivers events.
    publish_and_end(&node, "after-reload").await;
    events
        .wait_for(
            "NetStream.Publish.Start",
            Some("after-reload"),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(node.terminate(), Some(0));
}

/// The DER of the first certificate in `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmps() {
    if !have("ffmpeg") {
        return;
    }
    let node = TestNode::start_with(|_| {
        format!(
            "{}\n[rtmp]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n",
            https_section()
        )
    });
    let rtmps = node.rtmps.expect("rtmps listener");
    // Garbage on the RTMPS port is dropped without affecting the publish that follows.
    let _ = raw_exchange(rtmps, &[0x03; 1537], Duration::from_secs(3)).await;
    let url = format!("rtmps://{rtmps}/live/secure");
    let out = run_tool(
        "ffmpeg",
        &ffmpeg_pattern_args("5", &url),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        out.status.success(),
        "ffmpeg rtmps publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = wait_ended(&node, "secure").await;
    assert!(
        status["dvr"]["segments"].as_u64().unwrap_or(0) >= 2,
        "{status}"
    );
    if let Err(e) = ffmpeg_decode(&node.url("/streams/secure/index.m3u8")).await {
        panic!("decode over https: {e}");
    }
}

#[test]
fn check_config_loads_the_certificate_and_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let (other_cert, _) = untrusted_pair(dir.path());
    let run = |toml: String| {
        let file = dir.path().join("c.toml");
        std::fs::write(&file, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dvrgate"))
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = format!(
        "[http]\n{}[relay]\nca_file = {:?}\n",
        tls_lines((&p.cert, &p.key)),
        p.ca
    );
    let (code, err) = run(good);
    assert_eq!(code, Some(0), "{err}");
    // The key of another certificate.
    let (code, err) = run(format!("[http]\n{}", tls_lines((&other_cert, &p.key))));
    assert_eq!(code, Some(1));
    assert!(err.contains("do not belong together"), "{err}");
    // A CA file that holds no certificate.
    let (code, err) = run(format!("[relay]\nca_file = {:?}\n", p.key));
    assert_eq!(code, Some(1));
    assert!(err.contains("relay.ca_file"), "{err}");
}
