"""Drives headless Chromium on bench/ll/page.html: warm-up, then samples hls.js latency for a
while. Prints one line: p50, p95, max (seconds), stalls. Usage: latency.py PAGE_URL WARMUP_S RUN_S"""
import os, statistics, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from webdriver import Browser

page, warmup, run = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
b = Browser(width=640, height=400)
try:
    b.goto(page)
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
print(f"hls.js {p['version']}: latency p50 {statistics.median(s):.2f} s, p95 {p95:.2f} s, "
      f"max {s[-1]:.2f} s over {len(s)} samples; stalls {p['stalls']} ({p['stalledMs'] / 1000:.1f} s); "
      f"fatal errors {p['errors'] or 'none'}")
