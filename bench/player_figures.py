"""The web player's scrubbing figures over a 24-hour window, in headless Chromium at an edge.

Usage: player_figures.py EDGE_URL TARGETS_JSON ARTIFACT_DIR

TARGETS_JSON (from synth_day.py) lists the playable regions. Region 0 is where the player opens;
regions 1-9 are seek targets; regions 10-15 are where scrub gestures release. Browser A (a fresh
profile) finds nothing in the edge's cache: its figures are "uncached" (two relay hops to the
origin). Browser B (another fresh profile) then repeats A's hovers and seeks: "edge-cached".
Prints one line per figure; every wait is bounded.
"""
import json
import statistics
import sys
import time

from webdriver import Browser

EDGE, TARGETS, ART = sys.argv[1:4]
T = json.load(open(TARGETS))
targets = T["targets"]
if len(targets) < 16:
    sys.exit("need 16 regions")


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{int(ms % 1000):03d}Z"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def open_player(b):
    b.goto(f"{EDGE}/?stream=day&t={iso(targets[0])}")
    b.wait("const p = window.dvrgate && window.dvrgate.player; const s = p && p.state(); "
           "return s && s.mode === 'mse' && s.startup && s.readyState >= 2", timeout=60)
    b.js("performance.setResourceTimingBufferSize(100000)")
    return b.js("return window.dvrgate.player.state()")


def seek(b, ms):
    b.js("const p = window.dvrgate.player; p.s.lastSeek = null; p.seekWall(arguments[0]); p.play();", ms)
    rec = b.wait("const s = window.dvrgate.player.state(); return s.lastSeek", timeout=30, every=0.02)
    time.sleep(0.5)
    return rec


def hovers(b, n=30):
    """Hovers n places across the whole window; ms until each thumbnail is on screen."""
    out = []
    for i in range(n):
        frac = 0.04 + 0.92 * i / (n - 1)
        seq = b.js("const ui = window.dvrgate.ui, r = document.getElementById('track').getBoundingClientRect(); "
                   "ui.el.hover.hidden = false; ui.showHover(r.left + r.width * arguments[0]); return ui.hoverSeq;", frac)
        deadline = time.time() + 5
        rec = None
        while time.time() < deadline and rec is None:
            rec = b.js("const t = window.dvrgate.ui.thumbTimes || []; "
                       "for (let k = t.length - 1; k >= 0; k--) if (t[k].seq === arguments[0]) return t[k]; return null;", seq)
            if rec is None:
                time.sleep(0.01)
        out.append(rec or {"seq": seq, "ms": None, "from": "timeout"})
        time.sleep(0.15)
    b.js("window.dvrgate.ui.el.hover.hidden = true; window.dvrgate.ui.hoverSeq = null;")
    return out


def gesture(b, to_ms):
    """A scrub: press at the playhead, drag across the 24 h timeline in 30 moves over about a
    second, release over to_ms; bytes fetched from the press until 2 s after the first frame."""
    geo = b.js("const ui = window.dvrgate.ui, r = document.getElementById('track').getBoundingClientRect(), "
               "d = ui.domain(), s = window.dvrgate.player.state(); "
               "const x = (w) => r.left + (w - d[0]) / (d[1] - d[0]) * r.width; "
               "return [x(s.wallClockMs), x(arguments[0]), r.top + r.height / 2, performance.now()];", to_ms)
    x0, x1, y, mark = geo
    moves = [{"type": "pointerMove", "duration": 0, "x": int(x0), "y": int(y), "origin": "viewport"},
             {"type": "pointerDown", "button": 0}]
    for k in range(1, 31):
        moves.append({"type": "pointerMove", "duration": 33, "origin": "viewport",
                      "x": int(x0 + (x1 - x0) * k / 30), "y": int(y)})
    moves.append({"type": "pointerUp", "button": 0})
    b.js("window.dvrgate.player.s.lastSeek = null; window.__upAt = null; "
         "document.getElementById('timeline').addEventListener('pointerup', () => { window.__upAt = performance.now(); }, "
         "{ capture: true, once: true });")
    b._call("POST", b.s("/actions"), {"actions": [{"type": "pointer", "id": "mouse",
                                                     "parameters": {"pointerType": "mouse"}, "actions": moves}]})
    b._call("DELETE", b.s("/actions"))
    rec = b.wait("return window.dvrgate.player.state().lastSeek", timeout=30, every=0.02)
    up = b.js("return window.__upAt")
    count = lambda until: b.js("const m = arguments[0], until = arguments[1]; const by = {}; let n = 0; "
               "for (const e of performance.getEntriesByType('resource')) { if (e.startTime < m || e.startTime > until) continue; "
               "const k = /thumbs\\//.test(e.name) ? 'thumbs' : /segments\\//.test(e.name) ? 'segments' : "
               "/init\\//.test(e.name) ? 'init' : /index\\.json/.test(e.name) ? 'index' : 'other'; "
               "by[k] = (by[k] || 0) + e.transferSize; by[k + '_n'] = (by[k + '_n'] || 0) + 1; n++; } "
               "return by;", mark, until)
    drag = count(up)
    first = count(up + rec["ms"])
    time.sleep(2)
    return drag, first, count(up + rec["ms"] + 2000), rec


def summary(name, xs):
    xs = [x for x in xs if x is not None]
    return f"{name}: median {statistics.median(xs):6.0f} ms  p95 {pct(xs, 95):6.0f} ms  (n={len(xs)})" if xs else f"{name}: no samples"


a = Browser(1280, 860)
try:
    st = open_player(a)
    idx = a.js("return performance.getEntriesByType('resource').filter((e) => /index\\.json$/.test(e.name))"
               ".map((e) => [e.transferSize, e.decodedBodySize, e.duration])")
    print(f"window: {T['segments']} segments, {T['window_ms'] / 3600000:.1f} h; opened in {st['startup']['ms']} ms "
          f"(index.json {idx[0][0] / 1e6:.2f} MB on the wire, {idx[0][1] / 1e6:.2f} MB decoded, {idx[0][2]:.0f} ms)"
          if idx else f"opened in {st['startup']['ms']} ms")
    a.screenshot(f"{ART}/day-opened.png")
    hover_a = hovers(a)
    a.screenshot(f"{ART}/day-hover.png")
    seeks_a = [seek(a, targets[i]) for i in range(1, 10)]
    gestures = [gesture(a, targets[i]) for i in range(10, 16)]
    a.screenshot(f"{ART}/day-after-gestures.png")
finally:
    a.close()

b = Browser(1280, 860)
try:
    open_player(b)
    hover_b = hovers(b)
    seeks_b = [seek(b, targets[i]) for i in range(1, 10)]
finally:
    b.close()

print(summary("seek -> first frame at the edge, uncached (2 hops to the origin)", [s["ms"] for s in seeks_a]))
print(summary("seek -> first frame at the edge, edge-cached                   ", [s["ms"] for s in seeks_b]))
off = [abs(s["landedWallMs"] - s["wantWallMs"]) for s in seeks_a + seeks_b]
print(f"  seeks landed within {max(off)} ms of the asked time")
for name, hs in (("uncached", hover_a), ("edge-cached", hover_b)):
    net = [h["ms"] for h in hs if h["from"] == "network"]
    page = sum(1 for h in hs if h["from"] == "page")
    lost = sum(1 for h in hs if h["from"] == "timeout")
    print(summary(f"hover -> thumbnail on screen, {name:<11}", net) + f"; {page} already preloaded, {lost} never shown")
def kib(g):
    return sum(v for k, v in g.items() if not k.endswith("_n")) / 1024


def parts(g):
    return ", ".join(f"{k} {g[k] / 1024:.0f} KiB/{g.get(k + '_n', 0)} req" for k in sorted(g) if not k.endswith("_n"))


print("bytes per scrub gesture (press at the playhead, drag ~1 s across the 24 h view, release):")
for name, k in (("while dragging (thumbnails)", 0), ("until the first frame", 1), ("until 2 s after it (buffering ahead)", 2)):
    xs = [kib(g[k]) for g in gestures]
    print(f"  {name:<38} median {statistics.median(xs):5.0f} KiB, max {max(xs):5.0f} KiB (n={len(xs)})")
for d, f, a2, rec in gestures:
    print(f"  first frame {rec['ms']:4d} ms after release, landed {rec['landedWallMs'] - rec['wantWallMs']:+5d} ms from "
          f"the release point; drag: {parts(d)}; to first frame: {parts(f)}; +2 s: {parts(a2)}")
