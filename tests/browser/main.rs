//! The web player in real headless Chromium (chromedriver + fantoccini) against in-process
//! nodes (the intermediate, killed at the end, is a real process), through two relays:
//! origin -> intermediate -> edge -> browser.
//!
//! The publisher sends the fixture in a loop in real time (segment times are never ahead of the
//! wall clock, so a 60 s DVR window takes 60 s to record). The relays start once the origin has
//! that window, so its older segments are in neither relay's cache until someone asks: what the
//! two-hop seek measurement needs.

#[path = "../common/mod.rs"]
mod common;
mod driver;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use driver::*;
use fantoccini::key::Key;
use tokio::sync::oneshot;

const STREAM: &str = "cam";
/// DVR window recorded before the relays and the browser start.
const WINDOW: Duration = Duration::from_secs(60);

fn is_header(t: &FlvTag) -> bool {
    let b = &t.body;
    b.len() >= 2
        && b[1] == 0
        && ((t.kind == 9 && b[0] & 0x0f == 7) || (t.kind == 8 && b[0] >> 4 == 10))
}

/// Publishes the fixture in a loop in real time until `stop`.
async fn publish(addr: SocketAddr, mut stop: oneshot::Receiver<()>) {
    let (headers, media): (Vec<FlvTag>, Vec<FlvTag>) =
        read_flv(CLIP).into_iter().partition(is_header);
    let step = |kind| {
        let ts: Vec<u32> = media
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.timestamp_ms)
            .collect();
        ts[ts.len() - 1] + (ts[ts.len() - 1] - ts[ts.len() - 2])
    };
    let loop_ms = u64::from(step(9).max(step(8)));
    let mut p = Publisher::connect(addr, "live", STREAM)
        .await
        .expect("publish");
    for h in &headers {
        p.send(h).await.unwrap();
    }
    let live_from = tokio::time::Instant::now();
    // Bounded: at most ten minutes of media.
    for n in 0..60 {
        for t in &media {
            let ts = n * loop_ms + u64::from(t.timestamp_ms);
            let due = live_from + Duration::from_millis(ts);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = &mut stop => { p.close().await; return; }
            }
            let tag = FlvTag {
                timestamp_ms: ts as u32,
                ..t.clone()
            };
            if p.send(&tag).await.is_err() {
                return;
            }
        }
    }
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_through_two_relays() {
    if !have("chromedriver") || !have("chromium") || !have("ffmpeg") {
        return;
    }
    let started = Instant::now();
    let origin = TestNode::origin();
    let (stop, stop_rx) = oneshot::channel();
    let publisher = tokio::spawn(publish(origin.rtmp.unwrap(), stop_rx));
    let window_url = origin.url(&format!("/streams/{STREAM}"));
    eventually(WINDOW + Duration::from_secs(30), || async {
        let st: serde_json::Value = http()
            .get(&window_url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (st["dvr"]["duration_ms"].as_u64()? >= WINDOW.as_millis() as u64).then_some(())
    })
    .await;
    println!("recorded a {WINDOW:?} window in {:?}", started.elapsed());
    // Killed with -9 at the end (the edge's upstream goes away): a process.
    let mut intermediate = relay_on(Backend::Process, &[origin.base()], "");
    let edge = relay_of(&intermediate);

    let b = Browser::start(1280, 860).await;
    let page = edge.url(&format!("/?stream={STREAM}"));
    b.goto(&page).await;
    b.js("performance.setResourceTimingBufferSize(5000)").await;

    // Opens live and plays.
    let st = b
        .wait_state("live start", PLAY, |s| {
            s["mode"] == "mse" && s["startup"].is_object() && playing(s)
        })
        .await;
    let target_ms = f(&st["targetDurationMs"]);
    let behind = f(&st["startup"]["edgeAtSeekMs"]) - f(&st["startup"]["landedWallMs"]);
    assert!(
        (0.0..=2.0 * target_ms).contains(&behind),
        "opens within two segments of the live edge: {st:#}"
    );
    println!(
        "start-up to first frame (live, two hops): {} ms",
        st["startup"]["ms"]
    );
    advances(&b, "playback advances", 1.0, Duration::from_secs(5)).await;

    // Opened with the newest minute of the index only; the rest of the window follows in the
    // background: the index soon starts at the stream's first segment.
    let first_seq = f(&get_json(&window_url).await["dvr"]["first_seq"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = b
            .js("const ix = window.dvrgate.player.s.index; return [ix.first.seq, ix.segs.length]")
            .await;
        if f(&v[0]) <= first_seq && f(&v[1]) > 30.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the index was not backfilled: {v}, first {first_seq}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened = b
        .js("return performance.getEntriesByType('resource').filter((e) => /index\\.json\\?(limit|to)=/.test(e.name)).map((e) => e.name.replace(/^.*index/, 'index'))")
        .await;
    assert!(
        opened.as_array().unwrap().len() >= 2,
        "a tail first, then the rest: {opened}"
    );

    // video.seekable spans the DVR window.
    b.wait_state(
        "seekable spans the DVR window",
        Duration::from_secs(5),
        |s| {
            let (Some(sk), Some(w)) = (s["seekable"].as_array(), s["window"].as_array()) else {
                return false;
            };
            f(&sk[0]) <= f(&w[0]) + 0.05
                && f(&sk[1]) >= f(&w[1]) - 0.05
                && f(&w[1]) - f(&w[0]) > 55.0
        },
    )
    .await;

    // A script sets currentTime to 30 s behind live: it lands there and plays on.
    let seek = timed_seek(
        &b,
        "seek to -30 s",
        "v.currentTime = ix.mediaAt(ix.wallEnd - 30000);",
    )
    .await;
    let want = f(&seek["edgeAtSeekMs"]) - 30000.0;
    let landed = f(&seek["landedWallMs"]);
    assert!(
        (landed - want).abs() < 1000.0,
        "-30 s seek landed {} ms off: {seek:#}",
        landed - want
    );
    let cold_30 = f(&seek["ms"]);
    println!("seek to -30 s (two hops): first frame after {cold_30} ms");
    b.wait_state("plays after the seek", PLAY, playing).await;
    advances(
        &b,
        "playback advances after the seek",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    b.screenshot("player-desktop").await;

    // Pause (space) for 5 s, resume (the play button): continues from the paused position.
    key(&b, ' ').await;
    let paused = b
        .wait_state("paused", Duration::from_secs(5), |s| s["paused"] == true)
        .await;
    let w0 = f(&paused["wallClockMs"]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still = b.state().await;
    assert!(
        still["paused"] == true && (f(&still["wallClockMs"]) - w0).abs() < 100.0,
        "{still:#}"
    );
    press(&b, "play").await;
    b.wait_state("resumed", PLAY, playing).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resumed = b.state().await;
    let w1 = f(&resumed["wallClockMs"]);
    assert!(
        w1 > w0 && w1 - w0 < 4000.0,
        "resume continues from the paused position: paused at {w0}, now {w1}"
    );
    assert!(f(&resumed["behindLiveMs"]) > 30000.0, "{resumed:#}");

    // ← goes back 10 s.
    b.js("window.dvrgate.player.s.lastSeek = null").await;
    let before = f(&b.state().await["wallClockMs"]);
    key(&b, Key::Left.into()).await;
    let back = b
        .wait_state("back 10 s", PLAY, |s| s["lastSeek"].is_object())
        .await;
    let moved = f(&back["lastSeek"]["landedWallMs"]) - before;
    assert!(
        (moved + 10000.0).abs() < 1000.0,
        "← moved {moved} ms: {back:#}"
    );

    // → goes forward 10 s.
    b.js("window.dvrgate.player.s.lastSeek = null").await;
    let before = f(&b.state().await["wallClockMs"]);
    key(&b, Key::Right.into()).await;
    let fwd = b
        .wait_state("forward 10 s", PLAY, |s| s["lastSeek"].is_object())
        .await;
    let moved = f(&fwd["lastSeek"]["landedWallMs"]) - before;
    assert!(
        (moved - 10000.0).abs() < 1000.0,
        "→ moved {moved} ms: {fwd:#}"
    );

    // LIVE catches up to within two segment durations of the live edge.
    let live = timed_seek(&b, "LIVE", "document.getElementById('live').click();").await;
    let behind = f(&live["edgeAtSeekMs"]) - f(&live["landedWallMs"]);
    assert!(
        behind >= 0.0 && behind <= 2.0 * target_ms,
        "LIVE landed {behind} ms behind the edge: {live:#}"
    );
    b.wait_state("plays at live", PLAY, playing).await;
    let now = b.state().await;
    assert!(f(&now["behindLiveMs"]) <= 3.0 * target_ms, "{now:#}");

    // Seek-to-first-frame: segments of the burst nobody fetched yet (pulled through both
    // relays) alternating with ones warmed at the edge by a plain GET first.
    let segs = segments(&edge, STREAM).await;
    let seen = fetched(&b).await;
    let first_seen = segs
        .iter()
        .position(|s| seen.contains(s["url"].as_str().unwrap().rsplit('/').next().unwrap()))
        .unwrap();
    let (mut cold, mut warm) = (vec![cold_30], vec![]);
    let mut k = first_seen;
    let mut is_warm = false;
    while k >= 2 && cold.len() + warm.len() < 9 {
        k -= 2;
        let seg = &segs[k];
        let url = seg["url"].as_str().unwrap();
        if is_warm {
            let r = http()
                .get(edge.url(&format!("/streams/{STREAM}/{url}")))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap();
        }
        let pulls = metric(&intermediate, "dvrgate_upstream_pulls_total").await;
        let wall = dvrgate::time::parse_rfc3339(seg["time"].as_str().unwrap()).unwrap() + 500;
        let s = timed_seek(
            &b,
            "timed seek",
            &format!("v.currentTime = ix.mediaAt({wall});"),
        )
        .await;
        assert!(
            (f(&s["landedWallMs"]) - wall as f64).abs() < 1000.0,
            "{s:#}"
        );
        let pulled = metric(&intermediate, "dvrgate_upstream_pulls_total").await - pulls;
        let fetch = b
            .js(&format!(
                "const e = performance.getEntriesByType('resource').find((e) => e.name.endsWith('/{url}')); \
                 return e ? Math.round(e.responseEnd - e.startTime) : null"
            ))
            .await;
        println!(
            "seek to seq {} ({}): first frame after {} ms (segment fetch {fetch} ms, \
             seeked after {} ms); intermediate pulls from origin meanwhile: {pulled}",
            seg["seq"],
            if is_warm {
                "cached at the edge"
            } else {
                "two hops"
            },
            s["ms"],
            s["seekedMs"]
        );
        if is_warm { &mut warm } else { &mut cold }.push(f(&s["ms"]));
        is_warm = !is_warm;
        // Let the look-ahead settle so that the next sample measures only its own fetch.
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.wait_state("look-ahead done", Duration::from_secs(10), |s| {
            s["fetching"].is_null()
        })
        .await;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "seek-to-first-frame, median: cached at the edge {} ms ({} samples), two hops {} ms ({} samples)",
        median(&mut warm),
        warm.len(),
        median(&mut cold),
        cold.len()
    );

    // The L key catches up with live, like the LIVE button.
    b.js("window.dvrgate.player.s.lastSeek = null").await;
    key(&b, 'l').await;
    let live = b
        .wait_state("L to live", PLAY, |s| s["lastSeek"].is_object())
        .await;
    let behind = f(&live["lastSeek"]["edgeAtSeekMs"]) - f(&live["lastSeek"]["landedWallMs"]);
    assert!(
        behind >= 0.0 && behind <= 2.0 * target_ms,
        "L landed {behind} ms behind the edge: {live:#}"
    );

    // Dragging on the timeline seeks to the wall-clock time under the pointer.
    let before = b.state().await;
    let (start, end) = (f(&before["dvrStartMs"]), f(&before["liveEdgeMs"]));
    b.js("window.dvrgate.player.s.lastSeek = null").await;
    drag_timeline(&b, 0.5, 0.6).await;
    let st = b
        .wait_state("timeline drag", PLAY, |s| s["lastSeek"].is_object())
        .await;
    let want = start + 0.6 * (end - start);
    let landed = f(&st["lastSeek"]["landedWallMs"]);
    assert!(
        (landed - want).abs() < 1500.0,
        "drag to 60% ({want}) landed at {landed}: {st:#}"
    );
    b.wait_state("plays after the drag", PLAY, playing).await;

    // Zoom: the 1 min preset shows a minute of the (longer) window, the overview box shrinks to
    // match, the mouse wheel zooms back out around the pointer, All restores the whole window.
    let span = "const d = window.dvrgate.ui.domain(), w = window.dvrgate.ui.windowRange(); \
                return [d[1] - d[0], w[1] - w[0], \
                  document.getElementById('overview-view').getBoundingClientRect().width / \
                  document.getElementById('overview').getBoundingClientRect().width]";
    let whole = b.js(span).await;
    assert!(
        f(&whole[0]) == f(&whole[1]) && f(&whole[2]) > 0.95,
        "unzoomed: {whole}"
    );
    b.js("document.querySelector('[data-span=\"60000\"]').click()")
        .await;
    let zoomed = b.js(span).await;
    assert!(
        (f(&zoomed[0]) - 60000.0).abs() < 1.0 && f(&zoomed[1]) > 61000.0,
        "1 min preset: {zoomed}"
    );
    let want = 60000.0 / f(&zoomed[1]);
    assert!(
        (f(&zoomed[2]) - want).abs() < 0.05,
        "overview box {zoomed} != {want}"
    );
    b.js(
        "const t = document.getElementById('timeline'), r = t.getBoundingClientRect(); \
          t.dispatchEvent(new WheelEvent('wheel', {deltaY: 100, clientX: r.left + r.width / 2, \
            clientY: r.top + 10, bubbles: true, cancelable: true}))",
    )
    .await;
    let wheeled = b.js(span).await;
    assert!(
        f(&wheeled[0]) > f(&zoomed[0]) + 1000.0,
        "wheel out: {wheeled}"
    );
    // Dragging the time ruler pans the zoomed view (to the right = earlier), by the dragged
    // fraction of its span, clamped to the window; the span stays.
    b.js("document.querySelector('[data-span=\"60000\"]').click()")
        .await;
    let view = "const d = window.dvrgate.ui.domain(), w = window.dvrgate.ui.windowRange(); \
                return [d[0], d[1], w[0]]";
    let before = b.js(view).await;
    drag_along(&b, "ticks", 0.3, 0.9).await;
    let after = b.js(view).await;
    let want = (f(&before[0]) - 0.6 * 60000.0).max(f(&before[2]));
    assert!(
        (f(&after[0]) - want).abs() < 1500.0 && (f(&after[1]) - f(&after[0]) - 60000.0).abs() < 1.0,
        "ruler drag pans: before {before}, after {after}, want start {want}"
    );
    b.screenshot("player-zoomed").await;
    b.js("document.querySelector('[data-span=\"all\"]').click()")
        .await;
    let all = b.js(span).await;
    assert!(f(&all[0]) == f(&all[1]), "All: {all}");

    // Hovering the timeline shows the wall-clock time under the pointer, and the thumbnail of
    // that segment once the server has `thumbs/{seq}.jpg` (built on another branch): the image
    // assertion switches on by itself when HEAD of that thumbnail answers 200; until then the
    // hover must degrade to the time alone.
    let hover = b
        .js("const ui = window.dvrgate.ui, r = document.getElementById('track').getBoundingClientRect(); \
             ui.showHover(r.left + r.width * 0.4); \
             const s = window.dvrgate.player.s, ix = s.index; \
             const seg = ix.segs[ix.floorMedia(ix.mediaAt(ui.wallFromX(r.left + r.width * 0.4)))]; \
             return fetch(s.base + 'thumbs/' + seg.seq + '.jpg', {method: 'HEAD'}).then((h) => \
               new Promise((ok) => setTimeout(ok, 1500)).then(() => { ui.showHover(r.left + r.width * 0.4); \
               return [h.status, document.getElementById('hover-time').textContent, \
                       !document.getElementById('hover-img').hidden]; }))")
        .await;
    assert!(
        hover[1].as_str().unwrap_or("").contains(':'),
        "hover shows the time: {hover}"
    );
    if hover[0] == 200 {
        assert_eq!(
            hover[2],
            serde_json::json!(true),
            "hover shows the thumbnail: {hover}"
        );
    } else {
        assert_eq!(
            hover[2],
            serde_json::json!(false),
            "no thumbnail, no broken image: {hover}"
        );
    }
    b.screenshot("player-hover").await;
    b.js("document.getElementById('hover').hidden = true").await;

    // Go to a typed local time (HH:MM:SS of the viewer's zone): lands there. Nonsense and a
    // time outside the window each get a sentence.
    let goto = |text: String| {
        format!(
            "const i = document.getElementById('goto-input'); i.value = {text:?}; \
             document.getElementById('goto').requestSubmit(); \
             return new Promise((ok) => setTimeout(ok, 700)).then(() => \
               document.getElementById('goto-error').textContent)"
        )
    };
    let st = b.state().await;
    let target = f(&st["dvrStartMs"]) + 0.3 * (f(&st["liveEdgeMs"]) - f(&st["dvrStartMs"]));
    let local = b
        .js(&format!(
            "const d = new Date({target}), p = (n) => String(n).padStart(2, '0'); \
             return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds())"
        ))
        .await;
    b.js("window.dvrgate.player.s.lastSeek = null").await;
    let err = b.js(&goto(local.as_str().unwrap().to_string())).await;
    assert_eq!(err, serde_json::json!(""), "go to {local}: {err}");
    let st = b
        .wait_state("go to a local time", PLAY, |s| s["lastSeek"].is_object())
        .await;
    let landed = f(&st["lastSeek"]["landedWallMs"]);
    assert!(
        (landed - target).abs() < 2500.0,
        "go to {local} ({target}) landed at {landed}: {st:#}"
    );
    let err = b.js(&goto("soonish".into())).await;
    assert!(
        err.as_str().unwrap_or("").ends_with('.'),
        "invalid -> a sentence: {err}"
    );
    let err = b.js(&goto("2020-01-01 12:00".into())).await;
    assert!(
        err.as_str().unwrap_or("").contains("outside the recording"),
        "outside the window -> a sentence: {err}"
    );
    b.screenshot("player-goto-error").await;
    b.wait_state("plays after go to", PLAY, playing).await;

    // `?` opens the keyboard help, its Close button closes it.
    key(&b, '?').await;
    let shown = b.js("return !document.getElementById('help').hidden").await;
    assert_eq!(shown, serde_json::json!(true), "? shows the help");
    b.screenshot("player-help").await;
    press(&b, "help-close").await;
    let shown = b.js("return !document.getElementById('help').hidden").await;
    assert_eq!(shown, serde_json::json!(false), "Close hides the help");

    // Deep links: RFC 3339 and a negative duration from live.
    let mid = dvrgate::time::parse_rfc3339(segs[segs.len() / 2]["time"].as_str().unwrap()).unwrap()
        + 1300;
    let t = dvrgate::time::format_rfc3339(mid);
    b.goto(&format!("{page}&t={t}")).await;
    let st = b
        .wait_state("deep link (RFC 3339)", PLAY, |s| {
            s["startup"].is_object() && playing(s)
        })
        .await;
    let landed = f(&st["startup"]["landedWallMs"]);
    assert!(
        (landed - mid as f64).abs() < 1000.0,
        "deep link t={t} landed at {landed}: {st:#}"
    );
    advances(&b, "deep link plays", 1.0, Duration::from_secs(5)).await;
    b.goto(&format!("{page}&t=-20s")).await;
    let st = b
        .wait_state("deep link (-20s)", PLAY, |s| {
            s["startup"].is_object() && playing(s)
        })
        .await;
    let behind = f(&st["startup"]["edgeAtSeekMs"]) - f(&st["startup"]["landedWallMs"]);
    assert!(
        (behind - 20000.0).abs() < 1000.0,
        "t=-20s landed {behind} ms behind: {st:#}"
    );

    // A stream that does not exist says so.
    b.goto(&edge.url("/?stream=nosuch")).await;
    b.wait_state("not found", Duration::from_secs(10), |s| {
        s["errorCode"] == "not-found"
    })
    .await;
    let title = b
        .js("return document.getElementById('overlay-title').textContent")
        .await;
    assert!(title.as_str().unwrap().contains("not found"), "{title}");
    b.screenshot("player-not-found").await;

    // Phone-sized layout.
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(&page).await;
    b.wait_state("phone layout plays", PLAY, playing).await;
    b.screenshot("player-phone").await;

    // A clip from the timeline: I at 30 s behind live, O 12 s later (keys at the playhead).
    // Preview plays the section and pauses at its end; the panel's Download saves clip.mp4
    // (once the server has accepted the section), and that file plays: ffmpeg decodes it
    // without a message, about as long as marked (whole segments: at most two more).
    b.client.set_window_size(1280, 860).await.unwrap();
    b.js("if (document.activeElement) document.activeElement.blur()")
        .await;
    timed_seek(
        &b,
        "seek for the in mark",
        "v.currentTime = ix.mediaEnd - 30;",
    )
    .await;
    key(&b, 'i').await;
    timed_seek(
        &b,
        "seek for the out mark",
        "v.currentTime = v.currentTime + 12;",
    )
    .await;
    key(&b, 'o').await;
    let marks = b
        .js("const c = window.dvrgate.ui.clip; \
             return [c.in, c.out, document.getElementById('clip-length').textContent, \
                     document.getElementById('clip-download').getAttribute('href')]")
        .await;
    let marked_s = (f(&marks[1]) - f(&marks[0])) / 1000.0;
    assert!(
        (10.0..=14.0).contains(&marked_s) && marks[2].as_str().unwrap().contains("marked"),
        "I/O marks: {marks}"
    );
    assert!(
        marks[3].as_str().unwrap().contains("clip.mp4?from="),
        "download link: {marks}"
    );
    press(&b, "clip-preview").await;
    let out_ms = f(&marks[1]);
    let st = b
        .wait_state("preview pauses at the out mark", PLAY, |s| {
            s["paused"] == true && (f(&s["wallClockMs"]) - out_ms).abs() < 1000.0
        })
        .await;
    println!(
        "clip preview stopped {} ms from the out mark",
        f(&st["wallClockMs"]) - out_ms
    );
    b.screenshot("player-clip").await;
    press(&b, "clip-download").await;
    let file = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let done = std::fs::read_dir(&b.downloads)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "mp4"));
            if let Some(p) = done {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "no clip downloaded into {}: {}",
                b.downloads.display(),
                b.js("return document.getElementById('clip-error').textContent")
                    .await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let path = file.to_str().unwrap();
    ffmpeg_decode(path)
        .await
        .unwrap_or_else(|e| panic!("the downloaded clip {path} does not decode cleanly: {e}"));
    let d = probe_duration(path).await;
    let seg_s = target_ms / 1000.0;
    assert!(
        d >= marked_s - 0.5 && d <= marked_s + 2.0 * seg_s + 0.5,
        "downloaded clip lasts {d} s for {marked_s} s marked"
    );
    println!(
        "downloaded clip {}: {d:.2} s for {marked_s:.2} s marked",
        file.display()
    );
    b.js("window.dvrgate.ui.clip.clear()").await;
    press(&b, "live").await;
    b.wait_state("live again after the clip", PLAY, playing)
        .await;

    // The publisher stops: the page shows the stream as ended.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .unwrap()
        .unwrap();
    b.wait_state("ended", Duration::from_secs(30), |s| s["ended"] == true)
        .await;
    let badge = b
        .js("return document.getElementById('badge').textContent")
        .await;
    assert_eq!(badge, "ENDED");
    // Played to its end, it says so.
    timed_seek(&b, "seek near the end", "v.currentTime = ix.mediaEnd - 1;").await;
    let overlay = "return document.getElementById('overlay').hidden ? '' : document.getElementById('overlay-title').textContent";
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.js(overlay).await != "Stream ended" {
        if Instant::now() >= deadline {
            // What the MSE engine holds, to tell a stall from a fetch loop.
            let detail = b
                .js("const s = window.dvrgate.player.s, e = s && s.engine, v = window.dvrgate.player.video; \
                     const b = []; for (let i = 0; i < v.buffered.length; i++) b.push([v.buffered.start(i), v.buffered.end(i)]); \
                     const last = s && s.index && s.index.last; \
                     return { buffered: b, last: last && { seq: last.seq, startS: last.startS, endS: last.endS }, \
                       appended: e && e.appended ? [...e.appended].slice(-5) : null, \
                       inert: e && e.inert ? [...e.inert] : null, \
                       fetches: performance.getEntriesByType('resource').map((r) => r.name.split('/').pop()).slice(-8), \
                       msState: e && e.ms ? e.ms.readyState : null };")
                .await;
            panic!(
                "no 'Stream ended' within 20 s: {:#}\nengine: {detail:#}",
                b.state().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A clip of the last 20 s, exported by the edge, plays as a file in a plain <video> with
    // its real duration.
    b.js(&format!(
        "const c = document.createElement('video'); c.id = 'cliptest'; c.muted = true; \
         c.src = '/streams/{STREAM}/clip.mp4?from=-20s'; document.body.appendChild(c); \
         c.play().catch(() => {{}});"
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = b
            .js("const c = document.getElementById('cliptest'); \
                 return {t: c.currentTime, d: c.duration, e: c.error && c.error.code};")
            .await;
        assert!(v["e"].is_null(), "the clip failed to play: {v}");
        if f(&v["t"]) > 1.0 {
            let d = f(&v["d"]);
            assert!(
                (18.0..=24.0).contains(&d),
                "clip duration {d} s for 20 s asked"
            );
            println!("clip.mp4 plays in the browser: duration {d:.2} s");
            break;
        }
        assert!(Instant::now() < deadline, "the clip does not play: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Republished: the timeline marks the restart; a clip across it is refused with a sentence,
    // by the page itself and, when the page's own check is bypassed, by the server.
    let (stop2, stop2_rx) = oneshot::channel();
    let publisher2 = tokio::spawn(publish(origin.rtmp.unwrap(), stop2_rx));
    b.wait_state("live again", Duration::from_secs(60), |s| s["live"] == true)
        .await;
    let disc = "const ui = window.dvrgate.ui, d = ui.shape().discontinuities, ix = window.dvrgate.player.s.index; \
                return d.length && ix.wallEnd > d[d.length - 1] + 4000 ? \
                  [d[d.length - 1], document.querySelectorAll('#marks i').length] : null";
    let deadline = Instant::now() + Duration::from_secs(30);
    let at = loop {
        let v = b.js(disc).await;
        if !v.is_null() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no discontinuity after the republish: {:#}",
            b.state().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        f(&at[1]) >= 1.0,
        "the restart is drawn on the timeline: {at}"
    );
    let cut = f(&at[0]);
    b.js(&format!(
        "const c = window.dvrgate.ui.clip; c.mark('in', {}); c.mark('out', {});",
        cut - 6000.0,
        cut + 3000.0
    ))
    .await;
    let own = b
        .js("return document.getElementById('clip-error').textContent")
        .await;
    assert!(
        own.as_str().unwrap().contains("restart of the broadcast"),
        "the page explains the refusal: {own}"
    );
    b.screenshot("player-discontinuity").await;
    b.js("const ui = window.dvrgate.ui, real = ui.shape.bind(ui); \
          ui.shape = () => ({ ...real(), discontinuities: [] }); ui.clip.render(); \
          document.getElementById('clip-download').click();")
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let server = loop {
        let v = b
            .js("return document.getElementById('clip-error').textContent")
            .await;
        if v.as_str().is_some_and(|t| !t.is_empty()) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no sentence for the server's refusal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = server.as_str().unwrap();
    assert!(
        text.contains("restart of the broadcast")
            && !text.contains("NetStream")
            && !text.contains("400"),
        "the server's refusal as a sentence: {text}"
    );
    println!("clip across a republish: {text}");
    b.js("delete window.dvrgate.ui.shape; window.dvrgate.ui.clip.clear()")
        .await;

    // The stream overview at `/`: a card per stream with its state and DVR length, and the
    // newest thumbnail where the node has one; the card opens the player.
    b.goto(&edge.url("/")).await;
    let card = "const c = [...document.querySelectorAll('.card')].find((a) => \
                  a.querySelector('.card-name').textContent === arguments[0]); \
                return c ? [c.querySelector('.card-summary').textContent, \
                  c.querySelector('.pic').classList.contains('none'), \
                  c.querySelector('img').naturalWidth] : null";
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let v = b
            .js(&card.replace("arguments[0]", &format!("'{STREAM}'")))
            .await;
        if v.is_array()
            && (!v[1].as_bool().unwrap() || Instant::now() + Duration::from_secs(8) > deadline)
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no card for {STREAM} on the overview"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        seen[0].as_str().unwrap().starts_with("Live · DVR "),
        "card summary: {seen}"
    );
    let last = b
        .js(&format!(
            "return fetch('/streams/{STREAM}').then((r) => r.json()).then((s) => \
               fetch('/streams/{STREAM}/thumbs/' + (s.dvr.last_seq - 1) + '.jpg', {{method: 'HEAD'}})).then((r) => r.status)"
        ))
        .await;
    if last == 200 {
        assert!(
            seen[1] == false && f(&seen[2]) > 0.0,
            "the card shows the newest thumbnail: {seen}"
        );
    }
    b.screenshot("overview").await;
    b.client
        .find(fantoccini::Locator::Css(".card"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_state("the card opens the player", PLAY, |s| {
        s["stream"] == STREAM && playing(s)
    })
    .await;
    let _ = stop2.send(());
    tokio::time::timeout(Duration::from_secs(10), publisher2)
        .await
        .unwrap()
        .unwrap();

    // The edge's upstream goes away: its status event shows in the panel, and a stream the
    // edge does not have yet cannot be fetched.
    intermediate.stop_hard();
    let deadline = Instant::now() + Duration::from_secs(20);
    let panel = "return [...document.querySelectorAll('#events .code')].map((e) => e.textContent)";
    while !b
        .js(panel)
        .await
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "NetConnection.Proxy.NotResponding")
    {
        assert!(
            Instant::now() < deadline,
            "no NotResponding event in the panel: {}",
            b.js(panel).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.screenshot("player-ended").await;
    b.goto(&edge.url("/?stream=other")).await;
    b.wait_state("upstream down", Duration::from_secs(20), |s| {
        s["errorCode"] == "network"
    })
    .await;
    let title = b
        .js("return document.getElementById('overlay-title').textContent")
        .await;
    assert_eq!(title, "Upstream unavailable");
    b.screenshot("player-upstream-down").await;
    b.close().await;
    println!("browser test took {:?}", started.elapsed());
}
