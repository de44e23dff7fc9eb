#!/usr/bin/env bash
# The edge's resident memory while 1,000 connections fetch segments (a working set larger than
# its memory budget when BUDGET_MIB < 60), against the target: budget + 64 MiB.
# Usage: bench/edge_rss.sh [CONNECTIONS=1000] [SECONDS=20] [BUDGET_MIB=64]
# With a budget below ~60 MiB the working set does not fit and the edge keeps re-pulling:
# responses in flight then hold evicted segments beyond the budget.
source "$(dirname "$0")/common.sh"
C=${1:-1000}; SECS=${2:-20}; BUDGET=${3:-64}
for p in ffmpeg wrk; do command -v $p >/dev/null || { echo "needs $p"; exit 1; }; done
build
ulimit -n 65536 2>/dev/null || true
echo "encoding a 4 Mbit/s source (~1 MB segments, ~60 MB in all)..."
ffmpeg -v error -f lavfi -i "testsrc2=size=1280x720:rate=30" -t 120 -c:v libx264 -preset ultrafast \
  -pix_fmt yuv420p -b:v 4M -maxrate 4M -bufsize 2M -g 60 -an -f flv "$WORK/src.flv"
chain "[cache]
memory = \"${BUDGET}MiB\""
publish_fast "$WORK/src.flv" big
wait_ended "$ORIGIN/streams/big"
curl -s "$EDGE/streams/big/index.json" | python3 -c '
import json,sys; s=json.load(sys.stdin)["segments"]
print("segments: %d, %.1f MB" % (len(s), sum(x["length"] for x in s)/1e6), file=sys.stderr)
print("local urls = {" + ",".join("\"/streams/big/segments/%d.m4s\"" % x["seq"] for x in s) + "}")
print("request = function() return wrk.format(\"GET\", urls[math.random(#urls)]) end")' > "$WORK/random.lua"
echo "edge RSS before: $(( $(rss_kib "$EDGE_PID") / 1024 )) MiB; wrk -t2 -c$C -d${SECS}s over random segments"
wrk -t2 -c"$C" -d"${SECS}s" -s "$WORK/random.lua" "$EDGE" > "$WORK/wrk.out" &
WRK=$!
peak=0
while kill -0 "$WRK" 2>/dev/null; do
  r=$(rss_kib "$EDGE_PID"); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.2
done
awk '/Requests\/sec/ {printf "throughput: %s req/s\n", $2} /Socket errors|Non-2xx/ {print}' "$WORK/wrk.out"
curl -s "$EDGE/metrics" | awk '/^dvrgate_(cache_hits|upstream_pulls|cache_memory_evictions|cache_coalesced)_total/ {printf "  %s %d\n", $1, $2}'
awk -v p="$peak" -v b="$BUDGET" 'BEGIN { printf "edge peak RSS %.1f MiB with %d MiB budget: target <= %d MiB -> %s\n", p/1024, b, b+64, (p/1024 <= b+64) ? "met" : "MISSED" }'
