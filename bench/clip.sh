#!/usr/bin/env bash
# clip.mp4 of a 10-minute section: throughput and the node's peak RSS while it streams out,
# at the origin (from the recording) and at an edge two hops away (pulled through both caches).
# Memory caches are set to 16 MiB so that what the clip itself holds shows in RSS.
# Usage: bench/clip.sh [MINUTES=10]
source "$(dirname "$0")/common.sh"
MIN=${1:-10}
command -v ffmpeg >/dev/null || { echo "needs ffmpeg"; exit 1; }
command -v ffprobe >/dev/null || { echo "needs ffprobe"; exit 1; }
build
echo "encoding a 20 s 3 Mbit/s 720p source, looped to $((MIN + 1)) minutes..."
ffmpeg -v error -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
  -t 20 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -b:v 3M -maxrate 3M -bufsize 6M -g 60 \
  -c:a aac -b:a 128k -f flv "$WORK/20s.flv"
LOOPS=$(( (MIN + 1) * 3 ))
chain "[cache]
memory = \"16MiB\""
ffmpeg -v error -stream_loop "$LOOPS" -i "$WORK/20s.flv" -c copy -f flv "rtmp://127.0.0.1:$RTMP/live/long" </dev/null
wait_ended "$ORIGIN/streams/long"
curl -s "$ORIGIN/streams/long" | python3 -c 'import json,sys; d=json.load(sys.stdin)["dvr"]; print("recorded: %d segments, %.1f min, %.0f MB" % (d["segments"], d["duration_ms"]/60000, d["bytes"]/1e6))'
FROM=$(curl -s "$ORIGIN/streams/long" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dvr"]["start"])')
TO=$(python3 -c "import datetime,sys; t=datetime.datetime.fromisoformat('$FROM'.replace('Z','+00:00'))+datetime.timedelta(minutes=$MIN); print(t.strftime('%Y-%m-%dT%H:%M:%S.')+'%03dZ' % (t.microsecond//1000))")

# clip NAME BASE PID: downloads the clip, samples PID's RSS meanwhile, prints the figures.
clip() {
  local before peak out; before=$(rss_kib "$3"); peak=$before
  curl -s -o "$WORK/$1.mp4" -w '%{http_code} %{size_download} %{time_total} %{time_starttransfer}\n' \
    "$2/streams/long/clip.mp4?from=$FROM&to=$TO" > "$WORK/curl.out" &
  local c=$!
  while kill -0 "$c" 2>/dev/null; do r=$(rss_kib "$3"); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.05; done
  read -r code size total first < "$WORK/curl.out"
  curl -s "$2/metrics" | awk '/^dvrgate_cache_bytes/ {printf "  (cache holds %.1f MiB)\n", $2/1048576}'
  dur=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$WORK/$1.mp4")
  awk -v n="$1" -v c="$code" -v s="$size" -v t="$total" -v f="$first" -v b="$before" -v p="$peak" -v d="$dur" 'BEGIN {
    printf "%-34s HTTP %s  %6.1f MB in %5.2f s = %6.1f MB/s  first byte %4.0f ms  duration %.1f s  RSS %5.1f -> peak %5.1f MiB\n",
      n, c, s/1e6, t, s/1e6/t, f*1000, d, b/1024, p/1024 }'
}
ORIGIN_PID=$(pgrep -f "serve --config $WORK/origin.toml")
clip "origin (from the recording)" "$ORIGIN" "$ORIGIN_PID"
clip "edge (cold, pulled over 2 hops)" "$EDGE" "$EDGE_PID"
clip "edge (again)" "$EDGE" "$EDGE_PID"
cmp "$WORK/origin (from the recording).mp4" "$WORK/edge (again).mp4" && echo "edge and origin clips are byte-identical"
ffmpeg -v error -i "$WORK/edge (again).mp4" -f null - && echo "the clip decodes without errors"
