"""Drives headless Chromium on a player: bench/ll/page.html (hls.js) or, with PLAYER=dvrgate,
the web player of static/ (latency = wall clock - the index's wall clock of the playhead).
Warm-up, then samples latency for a while. Prints one line: p50, p95, max (seconds), stalls.
Usage: [PLAYER=dvrgate] latency.py PAGE_URL WARMUP_S RUN_S"""
import os, statistics, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from webdriver import Browser

page, warmup, run = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
# The same probe as page.html's, for the web player (its engine maps media time to wall clock).
PROBE = """
const v = document.getElementById('video');
const probe = window.probe = { samples: [], stalls: 0, stalledMs: 0, errors: [], started: !v.paused && v.readyState > 2, version: 'web player' };
let waitingSince = null;
v.addEventListener('playing', () => {
  probe.started = true;
  if (waitingSince !== null) { probe.stalledMs += performance.now() - waitingSince; waitingSince = null; }
});
v.addEventListener('waiting', () => { if (probe.started && waitingSince === null) { probe.stalls++; waitingSince = performance.now(); } });
setInterval(() => {
  const s = window.dvrgate.player.s, e = s && s.engine;
  if (e && probe.started && !v.paused && waitingSince === null) probe.samples.push(Date.now() - e.wallAt(v.currentTime));
}, 250);
"""
b = Browser(width=640, height=400)
try:
    b.goto(page)
    if os.environ.get("PLAYER") == "dvrgate":
        b.wait("return !!(window.dvrgate && document.getElementById('video'))", timeout=30)
        b.js(PROBE)
    b.wait("return window.probe && window.probe.started", timeout=30)
    time.sleep(warmup)
    b.js("window.probe.samples = []; window.probe.stalls = 0; window.probe.stalledMs = 0;")
    time.sleep(run)
    p = b.js("return window.probe")
finally:
    b.close()
s = sorted(x / 1000 for x in p["samples"])
if not s:
    sys.exit(f"no samples (errors: {p['errors']})")
p95 = s[min(len(s) - 1, int(0.95 * len(s)))]
print(f"{'hls.js ' if p['version'][0].isdigit() else ''}{p['version']}: latency p50 {statistics.median(s):.2f} s, p95 {p95:.2f} s, "
      f"max {s[-1]:.2f} s over {len(s)} samples; stalls {p['stalls']} ({p['stalledMs'] / 1000:.1f} s); "
      f"fatal errors {p['errors'] or 'none'}")
