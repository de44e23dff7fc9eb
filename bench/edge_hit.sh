#!/usr/bin/env bash
# Edge cache-hit throughput for a segment of about SIZE bytes (1 MB by default; 16384 for the
# small-answer hot path of LL-HLS parts), side by side with nginx serving the same bytes as a
# static file, at the same concurrency (wrk, loopback; both servers on this machine).
# Usage: bench/edge_hit.sh [CONNECTIONS=64] [SECONDS=10] [SIZE=1000000]
source "$(dirname "$0")/common.sh"
C=${1:-64}; SECS=${2:-10}; SIZE=${3:-1000000}
KBPS=$((SIZE * 8 / 2 / 1000))   # 2 s segments of SIZE bytes
if [ "$SIZE" -ge 200000 ]; then RES=1280x720; else RES=320x180; fi
for p in ffmpeg wrk nginx; do command -v $p >/dev/null || { echo "needs $p"; exit 1; }; done
build
ulimit -n 65536 2>/dev/null || true
echo "encoding a ${KBPS} kbit/s $RES source with 2 s GOPs (segments of about $SIZE bytes)..."
ffmpeg -v error -f lavfi -i "testsrc2=size=$RES:rate=30" -t 12 -c:v libx264 -preset ultrafast \
  -pix_fmt yuv420p -b:v "${KBPS}k" -minrate "${KBPS}k" -maxrate "${KBPS}k" -bufsize "$((KBPS / 4 + 1))k" \
  -x264-params nal-hrd=cbr -g 60 -an -f flv "$WORK/src.flv"
chain
publish_fast "$WORK/src.flv" big
wait_ended "$ORIGIN/streams/big"
# The segment closest to SIZE.
read -r SEQ LEN < <(curl -s "$ORIGIN/streams/big/index.json" | python3 -c '
import json,sys; s=json.load(sys.stdin)["segments"]
b=min(s, key=lambda x: abs(x["length"]-int(sys.argv[1]))); print(b["seq"], b["length"])' "$SIZE")
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
