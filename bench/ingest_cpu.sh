#!/usr/bin/env bash
# Ingest CPU per stream: N concurrent publishers of a pre-encoded 3 Mbit/s 720p30 H.264/AAC
# file (-re -c copy) into dvrgate (fMP4 recording, fsync per segment) and, side by side, into
# nginx-rtmp recording HLS (MPEG-TS) when libnginx-mod-rtmp is installed. dvrgate runs twice:
# with LL-HLS parts (part_target 500ms: every part appended and fdatasync'd) and without.
# Usage: bench/ingest_cpu.sh [N=8] [SECONDS=30]
source "$(dirname "$0")/common.sh"
N=${1:-8}; SECS=${2:-30}
command -v ffmpeg >/dev/null || { echo "needs ffmpeg"; exit 1; }
build
HZ=$(getconf CLK_TCK)
encode_source "$SECS"


# measure NAME PID URL_PREFIX: prints CPU% per stream and peak RSS.
measure() {
  local t0 t1 start end
  t0=$(cpu_ticks "$2"); start=$(date +%s.%N)
  publish_all "$N" "$SECS" "$3"
  end=$(date +%s.%N); t1=$(cpu_ticks "$2")
  awk -v n="$1" -v t="$((t1 - t0))" -v hz="$HZ" -v s="$start" -v e="$end" -v k="$N" -v rss="$(rss_kib "$2")" \
    'BEGIN { cpu = t / hz / (e - s) * 100; printf "%-24s %3d streams  total CPU %6.1f%%  per stream %5.2f%%  RSS %6.1f MiB\n", n, k, cpu, cpu / k, rss / 1024 }'
}

# dvrgate PART_TARGET: one node recording the N streams with LL-HLS parts of PART_TARGET
# ("off": whole segments only); prints its figures.
dvrgate() {
  local http rtmp; http=$(free_port); rtmp=$(free_port)
  cat > "$WORK/dvrgate-$1.toml" <<TOML
[http]
listen = "127.0.0.1:$http"
[rtmp]
listen = "127.0.0.1:$rtmp"
[record]
dir = "$WORK/rec-$1"
part_target = "$1"
TOML
  start_dvrgate "$WORK/dvrgate-$1.toml"
  measure "dvrgate parts $1" "$DVR_PID" "rtmp://127.0.0.1:$rtmp/live/s"
  local m; m=$(curl -s "http://127.0.0.1:$http/metrics")
  awk -v n="$(awk '/^dvrgate_segments_written_total/ {print $2}' <<<"$m")" \
      -v s="$(awk '/^dvrgate_segment_write_seconds_total/ {print $2}' <<<"$m")" \
      -v p="$(awk '/^dvrgate_parts_written_total/ {print $2}' <<<"$m")" \
    'BEGIN { printf "  segments written %d, parts written %d, mean durable segment write %.2f ms\n", n, p, n ? s / n * 1000 : 0 }'
  kill "$DVR_PID"; wait "$DVR_PID" 2>/dev/null || true
}
dvrgate 500ms
dvrgate off

MOD=/usr/lib/nginx/modules/ngx_rtmp_module.so
if command -v nginx >/dev/null && [ -f "$MOD" ]; then
  NRTMP=$(free_port)
  mkdir -p "$WORK/hls"
  cat > "$WORK/nginx.conf" <<CONF
load_module $MOD;
daemon off; master_process off; worker_processes 1;
error_log $WORK/nginx.err warn; pid $WORK/nginx.pid;
events { worker_connections 1024; }
rtmp { server { listen 127.0.0.1:$NRTMP; application live { live on; hls on; hls_path $WORK/hls; hls_fragment 2s; hls_playlist_length 60s; } } }
CONF
  nginx -c "$WORK/nginx.conf" -p "$WORK" & NGINX_PID=$!; PIDS+=("$NGINX_PID")
  sleep 0.5
  measure "nginx-rtmp (HLS/TS)" "$NGINX_PID" "rtmp://127.0.0.1:$NRTMP/live/s"
else
  echo "nginx-rtmp reference skipped: apt-get install nginx libnginx-mod-rtmp"
fi
