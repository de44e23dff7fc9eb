#!/usr/bin/env bash
# LL-HLS latency at an edge behind nginx: origin -> intermediate -> edge -> nginx running
# config/nginx-cdn.conf (bench/ll/chain.sh), ffmpeg publishing the fixture in real time
# (looped), players in headless Chromium at the CDN: hls.js 1.x (lowLatencyMode, its defaults)
# and dvrgate's web player. Latency = wall clock - the playing EXT-X-PROGRAM-DATE-TIME (the
# origin stamps it at ingest). Runs with part_target 500ms, then "off" (plain HLS) to compare.
# Needs chromium, chromedriver, ffmpeg, nginx, npm (fetches hls.js from the npm registry once,
# into target/hlsjs).
# Usage: bench/ll_latency.sh [RUN_SECONDS=120] [WARMUP_SECONDS=15]
#   DIRECT=1: also hls.js at the edge through nginx without its cache (what the CDN adds).
#   PARTS="500ms": the part targets to run (default "500ms off"); PLAYERS="web": only one.
source "$(dirname "$0")/common.sh"
source "$ROOT/bench/ll/chain.sh"
RUN=${1:-120}; WARMUP=${2:-15}
for p in chromium chromedriver ffmpeg nginx npm; do command -v "$p" >/dev/null || { echo "needs $p"; exit 1; }; done
HLSJS_VERSION=1.7.4
HLSJS="$ROOT/target/hlsjs/$HLSJS_VERSION/hls.min.js"
if [ ! -f "$HLSJS" ]; then
  mkdir -p "$(dirname "$HLSJS")"
  (cd "$WORK" && npm pack --silent "hls.js@$HLSJS_VERSION" >/dev/null && tar xzf hls.js-*.tgz package/dist/hls.min.js)
  cp "$WORK/package/dist/hls.min.js" "$HLSJS"
fi
build

# probe LABEL URL [ENV...]: one player for WARMUP + RUN seconds; prints its figure line.
probe() {
  printf '%-34s ' "$1"
  env "${@:3}" python3 "$ROOT/bench/ll/latency.py" "$2" "$WARMUP" "$RUN"
}

echo "players at the CDN in front of the edge (origin -> intermediate -> edge -> nginx), ${RUN}s after ${WARMUP}s warm-up:"
for part in ${PARTS:-500ms off}; do
  ll_chain "$part"
  ll=1; [ "$part" = off ] && ll=0
  [ "${PLAYERS:-all}" = web ] ||
    probe "part_target $part, hls.js via nginx" "http://127.0.0.1:$C/probe/page.html?ll=$ll&src=/streams/ll/index.m3u8"
  [ -n "${DIRECT:-}" ] && probe "part_target $part, hls.js uncached" \
    "http://127.0.0.1:$C/probe/page.html?ll=$ll&src=/direct/streams/ll/index.m3u8"
  probe "part_target $part, web player ?ll=1" "http://127.0.0.1:$C/?stream=ll&ll=1" PLAYER=dvrgate
  ll_stop
done
