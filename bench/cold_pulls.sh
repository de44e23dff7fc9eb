#!/usr/bin/env bash
# Memory with pulls in flight: N concurrent cold GETs spread over M distinct large segments at an
# edge (and its intermediate) whose memory budget is far smaller than what is asked for, as when
# viewers scrub a high-bitrate DVR window or a CDN refills after a purge. Prints the peak RSS of
# both relays beside the target (budget + 64 MiB, SPEC) and the total time; every body is checked
# for its length.
# Usage: bench/cold_pulls.sh [GETS=400] [SEGMENTS=20] [SEGMENT_MB=8] [BUDGET_MIB=32]
# SRC=file.flv reuses a source encoded before; BIN_OVERRIDE=path runs another build (a "before" figure).
source "$(dirname "$0")/common.sh"
N=${1:-400}; M=${2:-20}; MB=${3:-8}; BUDGET=${4:-32}
for p in ffmpeg curl; do command -v $p >/dev/null || { echo "needs $p"; exit 1; }; done
[ -n "${BIN_OVERRIDE:-}" ] && BIN=$BIN_OVERRIDE || build
ulimit -n 65536 2>/dev/null || true
# Constant bit rate with filler, a keyframe every 8 s: each segment is MB megabytes.
RATE=$(( MB * 1000 ))k
if [ -n "${SRC:-}" ]; then cp "$SRC" "$WORK/src.flv"; else
echo "encoding $M segments of ~$MB MB (8 s GOPs at $RATE bit/s)..."
ffmpeg -v error -f lavfi -i "testsrc2=size=1280x720:rate=30" -t $(( M * 8 + 8 )) -c:v libx264 \
  -preset ultrafast -pix_fmt yuv420p -b:v "$RATE" -minrate "$RATE" -maxrate "$RATE" \
  -bufsize "$RATE" -x264-params nal-hrd=cbr -g 240 -keyint_min 240 -sc_threshold 0 -an \
  -f flv "$WORK/src.flv"; fi
chain "[cache]
memory = \"${BUDGET}MiB\""
INTER_PID=$(pgrep -f "$WORK/intermediate.toml" | head -1)
publish_fast "$WORK/src.flv" big
wait_ended "$ORIGIN/streams/big"
curl -s "$EDGE/streams/big/index.json" | python3 -c '
import json,sys; s=json.load(sys.stdin)["segments"][:'"$M"']
print("segments: %d, %.1f MB in all, largest %.1f MB" % (len(s), sum(x["length"] for x in s)/1e6,
      max(x["length"] for x in s)/1e6), file=sys.stderr)
for x in s: print(x["seq"], x["length"])' > "$WORK/segs"
python3 - "$WORK/segs" "$N" > "$WORK/reqs" <<'PY'
import sys
segs = [l.split() for l in open(sys.argv[1])]
for i in range(int(sys.argv[2])):
    seq, length = segs[i % len(segs)]
    print(seq, length)
PY
echo "edge RSS before: $(( $(rss_kib "$EDGE_PID") / 1024 )) MiB, intermediate $(( $(rss_kib "$INTER_PID") / 1024 )) MiB"
echo "$N concurrent cold GETs over $M segments, memory budget $BUDGET MiB at every node..."
start=$(date +%s.%N)
xargs -P "$N" -L 1 sh -c 'curl -s -o /dev/null -m 120 -w "%{http_code} %{size_download} $1\n" "'"$EDGE"'/streams/big/segments/$0.m4s"' \
  < "$WORK/reqs" > "$WORK/results" &
XARGS=$!
peak_e=0; peak_i=0
while kill -0 "$XARGS" 2>/dev/null; do
  r=$(rss_kib "$EDGE_PID"); [ "$r" -gt "$peak_e" ] && peak_e=$r
  r=$(rss_kib "$INTER_PID"); [ "$r" -gt "$peak_i" ] && peak_i=$r
  sleep 0.05
done
end=$(date +%s.%N)
ok=$(awk '$1 == 200 && $2 == $3' "$WORK/results" | wc -l)
echo "answers: $ok of $N complete 200s with the right length ($(awk '$1 != 200 || $2 != $3' "$WORK/results" | wc -l) others)"
awk -v s="$start" -v e="$end" 'BEGIN { printf "total time: %.2f s\n", e - s }'
for n in EDGE INTER; do
  url=${!n}
  curl -s "$url/metrics" | awk -v n="$n" '/^dvrgate_(upstream_pulls|cache_memory_waits|cache_memory_wait_abandoned|cache_coalesced)_total/ {printf "  %s %s %d\n", n, $1, $2}'
done
awk -v p="$peak_e" -v q="$peak_i" -v b="$BUDGET" 'BEGIN {
  printf "| node | peak RSS | budget | target (budget + 64 MiB) | result |\n|---|---|---|---|---|\n"
  printf "| edge | %.1f MiB | %d MiB | %d MiB | %s |\n", p/1024, b, b+64, (p/1024 <= b+64) ? "met" : "MISSED"
  printf "| intermediate | %.1f MiB | %d MiB | %d MiB | %s |\n", q/1024, b, b+64, (q/1024 <= b+64) ? "met" : "MISSED" }'
