#!/usr/bin/env bash
# LL-HLS latency at an edge behind nginx: origin -> intermediate -> edge -> nginx running
# config/nginx-cdn.conf, ffmpeg publishing the fixture in real time (looped), hls.js 1.x
# (lowLatencyMode) in headless Chromium at the CDN. Latency = wall clock - the playing
# EXT-X-PROGRAM-DATE-TIME (stamped by the origin at ingest). Runs twice: part_target 500ms and
# part_target "off" (plain HLS, for comparison).
# Needs chromium, chromedriver, ffmpeg, nginx, npm (fetches hls.js from the npm registry once,
# into target/hlsjs).
# Usage: bench/ll_latency.sh [RUN_SECONDS=120] [WARMUP_SECONDS=15]
#   DIRECT=1: also play the edge through nginx without its cache (what the CDN adds).
source "$(dirname "$0")/common.sh"
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

# run PART_TARGET: one measurement; prints its figure line.
run() {
  local o i e c rtmp; o=$(free_port); i=$(free_port); e=$(free_port); c=$(free_port); rtmp=$(free_port)
  local d="$WORK/$1"; mkdir -p "$d/page"
  printf '[node]\nname = "origin"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "127.0.0.1:%s"\n[record]\ndir = "%s/rec"\npart_target = "%s"\n' \
    "$o" "$rtmp" "$d" "$1" > "$d/origin.toml"
  printf '[node]\nname = "intermediate"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[relay]\nupstreams = ["http://127.0.0.1:%s"]\n' \
    "$i" "$o" > "$d/intermediate.toml"
  printf '[node]\nname = "edge"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[relay]\nupstreams = ["http://127.0.0.1:%s"]\n' \
    "$e" "$i" > "$d/edge.toml"
  start_node "origin-$1" "$d/origin.toml"; local pids=("$NODE_PID")
  start_node "intermediate-$1" "$d/intermediate.toml"; pids+=("$NODE_PID")
  start_node "edge-$1" "$d/edge.toml"; pids+=("$NODE_PID")
  # nginx with the shipped CDN config (ports and paths replaced) plus the probe page.
  cp "$ROOT/bench/ll/page.html" "$HLSJS" "$d/page/"
  sed -e "s|server 127.0.0.1:8082;|server 127.0.0.1:$e;|" -e "s|listen 8080;|listen 127.0.0.1:$c;|" \
      -e "s|/var/cache/nginx/|$d/cache-|g" \
      -e "s|    # Everything else (the player|    location /probe/ { alias $d/page/; }\n    location /direct/ { proxy_pass http://127.0.0.1:$e/; proxy_buffering off; }\n\n    # Everything else (the player|" \
      "$ROOT/config/nginx-cdn.conf" > "$d/cdn.conf"
  cat > "$d/nginx.conf" <<CONF
daemon off; master_process on; worker_processes 1; user root root;
error_log $d/nginx.err warn; pid $d/nginx.pid;
events { worker_connections 1024; }
http { access_log off; include /etc/nginx/mime.types; client_body_temp_path $d/body; proxy_temp_path $d/proxy;
       fastcgi_temp_path $d/fcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi; include $d/cdn.conf; }
CONF
  nginx -c "$d/nginx.conf" -p "$d" & local ngx=$!; pids+=("$ngx"); PIDS+=("$ngx")
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$c/probe/page.html" && break; sleep 0.1; done
  ffmpeg -v error -re -stream_loop -1 -i "$ROOT/tests/fixtures/testsrc.flv" -c copy -f flv \
    "rtmp://127.0.0.1:$rtmp/live/ll" </dev/null & local ff=$!; pids+=("$ff"); PIDS+=("$ff")
  # A window of 8 segments (16 s) first, as a viewer joining a running stream finds it.
  for _ in $(seq 300); do [ "$(curl -sf "http://127.0.0.1:$e/streams/ll/index.m3u8" | grep -c EXTINF)" -ge 8 ] && break; sleep 0.1; done
  local ll=1; [ "$1" = off ] && ll=0
  printf 'part_target %-6s via nginx:      ' "$1"
  python3 "$ROOT/bench/ll/latency.py" \
    "http://127.0.0.1:$c/probe/page.html?ll=$ll&src=/streams/ll/index.m3u8" "$WARMUP" "$RUN"
  if [ -n "${DIRECT:-}" ]; then   # the same edge without the cache (nginx only proxies)
    printf 'part_target %-6s edge, uncached: ' "$1"
    python3 "$ROOT/bench/ll/latency.py" \
      "http://127.0.0.1:$c/probe/page.html?ll=$ll&src=/direct/streams/ll/index.m3u8" "$WARMUP" "$RUN"
  fi
  kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true
}

echo "hls.js at the CDN in front of the edge (origin -> intermediate -> edge -> nginx), ${RUN}s after ${WARMUP}s warm-up:"
run 500ms
run off
