//! `access.event_hook`: every status event POSTed in order, retried while the hook fails,
//! skipped when the hook refuses it; the node never waits for the hook.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use common::*;

/// What the fake hook answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ok,
    Unavailable,
    /// 404 for `NetStream.Record.Start`, 200 otherwise.
    RefuseRecordStart,
    /// 200 with a 10 MB body.
    Huge,
}

#[derive(Clone)]
struct Hook {
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
    attempts: Arc<Mutex<u32>>,
}

async fn receive(
    axum::extract::State(h): axum::extract::State<Hook>,
    body: axum::body::Bytes,
) -> (StatusCode, Vec<u8>) {
    *h.attempts.lock().unwrap() += 1;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON event");
    let mode = *h.mode.lock().unwrap();
    match mode {
        Mode::Unavailable => return (StatusCode::SERVICE_UNAVAILABLE, Vec::new()),
        Mode::RefuseRecordStart if v["code"] == "NetStream.Record.Start" => {
            return (StatusCode::NOT_FOUND, Vec::new())
        }
        _ => {}
    }
    h.got.lock().unwrap().push(v);
    let body = if mode == Mode::Huge {
        vec![b'x'; 10 << 20]
    } else {
        Vec::new()
    };
    (StatusCode::OK, body)
}

async fn start_hook(mode: Mode) -> (Hook, String) {
    let hook = Hook {
        mode: Arc::new(Mutex::new(mode)),
        got: Arc::default(),
        attempts: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/events", axum::routing::post(receive))
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (hook, url)
}

fn codes(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["code"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_hook_in_order_after_it_comes_back() {
    let (hook, url) = start_hook(Mode::Unavailable).await;
    let origin = TestNode::start_with(|_| format!("[access]\nevent_hook = \"{url}\"\n"));
    let sse = Events::subscribe(&origin, "/events").await;
    publish_and_end(&origin, "cam").await;
    // The node did not wait for the hook; the hook has seen attempts and taken nothing.
    assert!(hook.got.lock().unwrap().is_empty());
    eventually(Duration::from_secs(10), || async {
        (metric(&origin, "dvrgate_event_hook_failures_total").await >= 2.0).then_some(())
    })
    .await;
    *hook.mode.lock().unwrap() = Mode::Ok;
    let want = codes(&sse.all());
    assert!(
        want.contains(&"NetStream.Publish.Start".to_owned()),
        "{want:?}"
    );
    let got = eventually(Duration::from_secs(20), || async {
        let got = codes(&hook.got.lock().unwrap());
        (got.len() >= want.len()).then_some(got)
    })
    .await;
    assert_eq!(got, want, "every event, in order, once");
    assert_eq!(
        metric(&origin, "dvrgate_event_hook_delivered_total").await,
        want.len() as f64
    );
    assert_eq!(metric(&origin, "dvrgate_event_hook_queued").await, 0.0);
    assert_eq!(
        metric(&origin, "dvrgate_event_hook_dropped_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_skipped_and_a_huge_answer_harms_nothing() {
    let (hook, url) = start_hook(Mode::RefuseRecordStart).await;
    let origin = TestNode::start_with(|_| format!("[access]\nevent_hook = \"{url}\"\n"));
    let sse = Events::subscribe(&origin, "/events").await;
    publish_and_end(&origin, "cam").await;
    let want: Vec<String> = codes(&sse.all())
        .into_iter()
        .filter(|c| c != "NetStream.Record.Start")
        .collect();
    let got = eventually(Duration::from_secs(20), || async {
        let got = codes(&hook.got.lock().unwrap());
        (got.len() >= want.len()).then_some(got)
    })
    .await;
    assert_eq!(got, want);
    assert_eq!(
        metric(&origin, "dvrgate_event_hook_refused_total").await,
        1.0
    );
    *hook.mode.lock().unwrap() = Mode::Huge;
    publish_and_end(&origin, "cam2").await;
    eventually(Duration::from_secs(20), || async {
        hook.got
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["stream"] == "cam2" && e["code"] == "NetStream.Unpublish.Success")
            .then_some(())
    })
    .await;
    let r = http().get(origin.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
