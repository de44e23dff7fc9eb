#!/usr/bin/env bash
# The web player over a 24-hour DVR window at an edge (origin -> intermediate -> edge), in
# headless Chromium: time to first frame after a seek (median, p95; uncached and edge-cached),
# hover -> thumbnail on screen (p95; uncached and edge-cached), and the bytes one scrub gesture
# fetches. The 24 h recording is synthesized (bench/synth_day.py) from 30 s really recorded
# by the origin (the fixture, with thumbnails), so the bench takes minutes, not a day.
# Needs chromium, chromedriver, ffmpeg, python3 (+ the xxhash module, installed if missing) and
# about 5 GB free under /tmp for HOURS=24 (deleted at exit).
# Usage: bench/player_figures.sh [HOURS=24]
source "$(dirname "$0")/common.sh"
HOURS=${1:-24}
for p in chromium chromedriver ffmpeg; do command -v "$p" >/dev/null || { echo "needs $p"; exit 1; }; done
python3 -c 'import xxhash' 2>/dev/null || pip install --quiet xxhash
build

# 1. 30 s of the fixture, recorded for real (segments, init, thumbnails).
O=$(free_port); RTMP=$(free_port)
printf '[node]\nname = "recorder"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "127.0.0.1:%s"\n[record]\ndir = "%s/src-rec"\n' \
  "$O" "$RTMP" "$WORK" > "$WORK/recorder.toml"
start_node recorder "$WORK/recorder.toml"; REC_PID=$NODE_PID
echo "recording 30 s of tests/fixtures/testsrc.flv..."
ffmpeg -v error -re -stream_loop 2 -i "$ROOT/tests/fixtures/testsrc.flv" -c copy -f flv "rtmp://127.0.0.1:$RTMP/live/src" </dev/null
wait_ended "http://127.0.0.1:$O/streams/src"
sleep 1
kill "$REC_PID"; wait "$REC_PID" 2>/dev/null || true

# 2. A day of it.
mkdir -p "$WORK/rec"
python3 "$ROOT/bench/synth_day.py" "$WORK/src-rec/src" "$WORK/rec/day" "$WORK/targets.json" "$HOURS"

# 3. The chain serving it; the relays learn it on demand.
o=$(free_port); i=$(free_port); e=$(free_port)
printf '[node]\nname = "origin"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[record]\ndir = "%s/rec"\nretention = "48h"\nplaylist_window = "24h"\n' \
  "$o" "$WORK" > "$WORK/origin.toml"
printf '[node]\nname = "intermediate"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[relay]\nupstreams = ["http://127.0.0.1:%s"]\n' \
  "$i" "$o" > "$WORK/intermediate.toml"
printf '[node]\nname = "edge"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[relay]\nupstreams = ["http://127.0.0.1:%s"]\n' \
  "$e" "$i" > "$WORK/edge.toml"
start_node origin "$WORK/origin.toml"
start_node intermediate "$WORK/intermediate.toml"
start_node edge "$WORK/edge.toml"
ART=${ARTIFACTS:-$ROOT/target/bench-artifacts}; mkdir -p "$ART"
if [ -n "${HOLD:-}" ]; then   # keep the chain up for a look: HOLD=SECONDS
  cp "$WORK/targets.json" /tmp/dvrgate-day-targets.json
  echo "edge: http://127.0.0.1:$e/?stream=day (targets in /tmp/dvrgate-day-targets.json); holding ${HOLD}s"; sleep "$HOLD"; exit 0
fi
cd "$ROOT/bench" && python3 player_figures.py "http://127.0.0.1:$e" "$WORK/targets.json" "$ART"
echo "screenshots: $ART/day-*.png"
