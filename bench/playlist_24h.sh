#!/usr/bin/env bash
# Time to build the playlist and index of a 24-hour DVR window (43,200 two-second segments),
# side by side with nginx serving the same playlist bytes as a static file.
# Usage: bench/playlist_24h.sh [REQUESTS=50]
source "$(dirname "$0")/common.sh"
REQ=${1:-50}
build
python3 - "$WORK/rec/day" <<'PY'
import json, os, sys, time
root = sys.argv[1]
os.makedirs(root + "/init"); os.makedirs(root + "/segments")
n, dur = 43200, 2000
t0 = int(time.time() * 1000) - n * dur
with open(root + "/init/0.mp4", "wb") as f: f.write(b"\0" * 700)
with open(root + "/index.jsonl", "w") as ix:
    ix.write(json.dumps({"t": "period", "id": 0, "codecs": "avc1.64001f,mp4a.40.2", "width": 1280, "height": 720,
                         "start_ms": 0, "time_ms": t0, "init_hash": 1, "init_length": 700}) + "\n")
    for seq in range(n):
        length = 500000 + seq % 1000
        ix.write(json.dumps({"t": "seg", "seq": seq, "period": 0, "start_ms": seq * dur, "duration_ms": dur,
                             "time_ms": t0 + seq * dur, "length": length, "hash": seq}) + "\n")
        with open(f"{root}/segments/{seq}.m4s", "wb") as f: f.truncate(length)   # sparse
PY
HTTP=$(free_port)
cat > "$WORK/dvrgate.toml" <<TOML
[http]
listen = "127.0.0.1:$HTTP"
[rtmp]
listen = "off"
[record]
dir = "$WORK/rec"
retention = "48h"
playlist_window = "24h"
TOML
start=$(date +%s.%N)
start_dvrgate "$WORK/dvrgate.toml"
echo "startup with recovery of 43,200 segments: $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.2f s", e-s}')"
base="http://127.0.0.1:$HTTP/streams/day"
curl -s "$base/index.m3u8" > "$WORK/static.m3u8"
echo "playlist: $(grep -c EXTINF "$WORK/static.m3u8") segments, $(wc -c < "$WORK/static.m3u8") bytes"

# timed URL: median and p90 of REQ sequential requests (curl time_total).
timed() {
  for _ in $(seq "$REQ"); do curl -s -o /dev/null -w '%{time_total}\n' "$2"; done | sort -n |
    awk -v n="$1" '{a[NR]=$1} END { printf "%-34s median %7.2f ms  p90 %7.2f ms\n", n, a[int(NR*0.5)+0]*1000, a[int(NR*0.9)+0]*1000 }'
}
timed "dvrgate index.m3u8 (24 h)" "$base/index.m3u8"
timed "dvrgate index.m3u8?start=-23h" "$base/index.m3u8?start=-23h"
timed "dvrgate index.json (24 h)" "$base/index.json"
if command -v nginx >/dev/null; then
  NPORT=$(free_port)
  mkdir -p "$WORK/www" && cp "$WORK/static.m3u8" "$WORK/www/"
  cat > "$WORK/nginx-http.conf" <<CONF
daemon off; master_process off; worker_processes 1;
error_log $WORK/nginx.err warn; pid $WORK/nginx-http.pid;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$NPORT; root $WORK/www; } }
CONF
  nginx -c "$WORK/nginx-http.conf" -p "$WORK" & PIDS+=($!)
  sleep 0.5
  timed "nginx static file (same bytes)" "http://127.0.0.1:$NPORT/static.m3u8"
fi
