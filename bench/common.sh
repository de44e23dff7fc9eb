# Shared helpers for the bench scripts (sourced). Loopback only; every wait is bounded.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/target/release/dvrgate"
WORK=$(mktemp -d /tmp/dvrgate-bench.XXXXXX)
PIDS=()
cleanup() { [ -n "${KEEP_WORK:-}" ] && cp -r "$WORK" "$KEEP_WORK" 2>/dev/null; for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

build() { (cd "$ROOT" && cargo build --release --quiet "$@"); }

# free_port: an unused loopback TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_dvrgate CONFIG_FILE: starts the node, waits for /healthz (at most 20 s), sets DVR_PID.
start_dvrgate() {
  "$BIN" serve --config "$1" 2>"$WORK/dvrgate.log" &
  DVR_PID=$!; PIDS+=("$DVR_PID")
  local port; port=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$1" | head -1)
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "dvrgate did not start:"; cat "$WORK/dvrgate.log"; exit 1
}

# cpu_ticks PID: user+system clock ticks used so far by PID.
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# rss_kib PID
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# start_node NAME CONFIG_FILE: like start_dvrgate, for several nodes; sets NODE_PID.
start_node() {
  "$BIN" serve --config "$2" 2>"$WORK/$1.log" &
  NODE_PID=$!; PIDS+=("$NODE_PID")
  local port; port=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$2" | head -1)
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "$1 did not start:"; cat "$WORK/$1.log"; exit 1
}

# chain [EXTRA_TOML]: origin -> intermediate -> edge on free loopback ports, EXTRA_TOML added to
# every node's config (e.g. a [cache] section). Sets
# ORIGIN, INTER, EDGE (http://127.0.0.1:PORT), RTMP (port) and EDGE_PID.
chain() {
  local o i e; o=$(free_port); i=$(free_port); e=$(free_port); RTMP=$(free_port)
  printf '[node]\nname = "origin"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "127.0.0.1:%s"\n[record]\ndir = "%s/rec"\n%s\n' \
    "$o" "$RTMP" "$WORK" "${1:-}" > "$WORK/origin.toml"
  printf '[node]\nname = "intermediate"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[relay]\nupstreams = ["http://127.0.0.1:%s"]\n%s\n' \
    "$i" "$o" "${1:-}" > "$WORK/intermediate.toml"
  printf '[node]\nname = "edge"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[relay]\nupstreams = ["http://127.0.0.1:%s"]\n%s\n' \
    "$e" "$i" "${1:-}" > "$WORK/edge.toml"
  start_node origin "$WORK/origin.toml"
  start_node intermediate "$WORK/intermediate.toml"
  start_node edge "$WORK/edge.toml"; EDGE_PID=$NODE_PID
  ORIGIN="http://127.0.0.1:$o"; INTER="http://127.0.0.1:$i"; EDGE="http://127.0.0.1:$e"
}

# start_nginx_static DIR: nginx serving DIR on a free port (one worker per core, sendfile); sets NGINX_URL.
start_nginx_static() {
  local port; port=$(free_port)
  chmod -R a+rX "$WORK" "$1"   # nginx workers run unprivileged
  cat > "$WORK/nginx-static.conf" <<CONF
daemon off; worker_processes auto; worker_rlimit_nofile 4096;
error_log $WORK/nginx.err warn; pid $WORK/nginx-static.pid;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on; open_file_cache max=100;
       server { listen 127.0.0.1:$port; root $1; } }
CONF
  nginx -c "$WORK/nginx-static.conf" -p "$WORK" & PIDS+=($!)
  for _ in $(seq 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)" != 000 ] && break; sleep 0.1
  done
  NGINX_URL="http://127.0.0.1:$port"
}

# publish_fast FLV NAME: ffmpeg pushes a pre-encoded file as fast as it can (-c copy).
publish_fast() { ffmpeg -v error -i "$1" -c copy -f flv "rtmp://127.0.0.1:$RTMP/live/$2" </dev/null; }

# wait_ended URL: waits (at most 30 s) until the stream status says live=false.
wait_ended() {
  for _ in $(seq 300); do curl -s "$1" | grep -q '"live":false' && return 0; sleep 0.1; done
  echo "stream did not end: $1"; exit 1
}

# encode_source SECS: a 3 Mbit/s 720p30 H.264/AAC FLV of SECS+2 seconds at $WORK/src.flv.
encode_source() {
  echo "encoding a ${1}s 3 Mbit/s source..."
  ffmpeg -v error -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t $(($1 + 2)) -c:v libx264 -preset ultrafast -pix_fmt yuv420p -b:v 3M -maxrate 3M -bufsize 6M -g 60 \
    -c:a aac -b:a 128k -f flv "$WORK/src.flv"
}

# publish_all N SECS URL_PREFIX: N real-time publishers of $WORK/src.flv at once, as
# URL_PREFIX1..N (-re -c copy, SECS seconds each); waits for all.
publish_all() {
  local pids=()
  for i in $(seq "$1"); do
    ffmpeg -v error -re -i "$WORK/src.flv" -t "$2" -c copy -f flv "$3$i" </dev/null & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || echo "a publisher failed"; done
}

# wrk_row NAME WRK_ARGS...: runs wrk -t2 -c$C -d${SECS}s WRK_ARGS, prints one row (req/s,
# transfer, average latency) and any non-2xx count, and appends "NAME<TAB>req/s" to $WORK/rps.
wrk_row() {
  local name=$1; shift
  wrk -t2 -c"$C" -d"${SECS}s" "$@" > "$WORK/wrk.out"
  awk -v n="$name" '/Requests\/sec/ {r=$2} /Transfer\/sec/ {t=$2} /Latency/ && !l {l=$2}
    END { printf "%-34s %9.0f req/s  %9s/s  latency avg %s\n", n, r, t, l }' "$WORK/wrk.out"
  if grep -q "Non-2xx" "$WORK/wrk.out"; then echo "  $name answered errors:"; grep "Non-2xx" "$WORK/wrk.out"; fi
  awk -v n="$name" '/Requests\/sec/ {print n "\t" $2}' "$WORK/wrk.out" >> "$WORK/rps"
}
