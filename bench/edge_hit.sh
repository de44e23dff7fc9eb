#!/usr/bin/env bash
# Edge cache-hit throughput for a ~1 MB segment, side by side with nginx serving the same bytes
# as a static file, at the same concurrency (wrk, loopback; both servers on this machine).
# Usage: bench/edge_hit.sh [CONNECTIONS=64] [SECONDS=10]
source "$(dirname "$0")/common.sh"
C=${1:-64}; SECS=${2:-10}
for p in ffmpeg wrk nginx; do command -v $p >/dev/null || { echo "needs $p"; exit 1; }; done
build
ulimit -n 65536 2>/dev/null || true
echo "encoding a 4 Mbit/s source with 2 s GOPs (segments of about 1 MB)..."
ffmpeg -v error -f lavfi -i "testsrc2=size=1280x720:rate=30" -t 12 -c:v libx264 -preset ultrafast \
  -pix_fmt yuv420p -b:v 4M -minrate 4M -maxrate 4M -bufsize 1M -x264-params nal-hrd=cbr -g 60 -an -f flv "$WORK/src.flv"
chain
publish_fast "$WORK/src.flv" big
wait_ended "$ORIGIN/streams/big"
# The segment closest to 1 MB.
read -r SEQ LEN < <(curl -s "$ORIGIN/streams/big/index.json" | python3 -c '
import json,sys; s=json.load(sys.stdin)["segments"]
b=min(s, key=lambda x: abs(x["length"]-1_000_000)); print(b["seq"], b["length"])')
URL="$EDGE/streams/big/segments/$SEQ.m4s"
mkdir -p "$WORK/www"
curl -sf "$URL" -o "$WORK/www/seg.m4s"          # the first request pulls it through two hops
cmp <(curl -sf "$ORIGIN/streams/big/segments/$SEQ.m4s") "$WORK/www/seg.m4s" || { echo "edge bytes differ"; exit 1; }
start_nginx_static "$WORK/www"
echo "segment $SEQ: $LEN bytes; wrk -t2 -c$C -d${SECS}s"
wrk_row "dvrgate edge (cache hit)" "$URL"
wrk_row "nginx static file" "$NGINX_URL/seg.m4s"
curl -s "$EDGE/metrics" | awk '/^dvrgate_upstream_pulls_total/ {printf "edge upstream pulls during the run: %d (the warm-up pull only)\n", $2}'
awk -F'\t' 'NR==1 {d=$2} NR==2 {n=$2} END { printf "ratio dvrgate/nginx: %.2f (target >= 1.0)\n", d / n }' "$WORK/rps"
