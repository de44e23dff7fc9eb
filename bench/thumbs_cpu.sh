#!/usr/bin/env bash
# Thumbnail cost: N real-time publishers (-re) of a 720p30 libx264 test pattern into one origin
# for SECS seconds, once with record.thumbnails = true and once with false. Prints the CPU per
# thumbnail (dvrgate_thumb_cpu_seconds_total / dvrgate_thumbs_made_total, the worker thread's
# own CPU clock) and the origin process CPU (utime+stime from /proc/PID/stat) side by side.
# The pattern is encoded once beforehand (encode_source) and sent with -c copy, so the
# encoders do not compete with the origin for the CPU being measured. Loopback only; bounded.
# Usage: bench/thumbs_cpu.sh [N=4] [SECONDS=60]
source "$(dirname "$0")/common.sh"
N=${1:-4}; SECS=${2:-60}
command -v ffmpeg >/dev/null || { echo "needs ffmpeg"; exit 1; }
build
HZ=$(getconf CLK_TCK)
encode_source "$SECS"

metric() { curl -s "$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

# run MODE: one origin with record.thumbnails = MODE; appends a result row to $WORK/rows.
run() {
  local http rtmp t0 t1 start end url
  http=$(free_port); rtmp=$(free_port); url="http://127.0.0.1:$http"
  cat > "$WORK/thumbs-$1.toml" <<TOML
[http]
listen = "127.0.0.1:$http"
[rtmp]
listen = "127.0.0.1:$rtmp"
[record]
dir = "$WORK/rec-$1"
thumbnails = $1
TOML
  start_dvrgate "$WORK/thumbs-$1.toml"
  t0=$(cpu_ticks "$DVR_PID"); start=$(date +%s.%N)
  publish_all "$N" "$SECS" "rtmp://127.0.0.1:$rtmp/live/s"
  sleep 1   # the last segments' thumbnails
  end=$(date +%s.%N); t1=$(cpu_ticks "$DVR_PID")
  local made skipped failed cpu segs
  made=$(metric "$url" dvrgate_thumbs_made_total); skipped=$(metric "$url" dvrgate_thumbs_skipped_total)
  failed=$(metric "$url" dvrgate_thumbs_failed_total); cpu=$(metric "$url" dvrgate_thumb_cpu_seconds_total)
  segs=$(metric "$url" dvrgate_segments_written_total)
  awk -v mode="$1" -v t="$((t1 - t0))" -v hz="$HZ" -v s="$start" -v e="$end" -v k="$N" \
      -v made="${made:-0}" -v skipped="${skipped:-0}" -v failed="${failed:-0}" -v cpu="${cpu:-0}" -v segs="${segs:-0}" \
    'BEGIN { secs = t / hz; pct = secs / (e - s) * 100;
             per = made > 0 ? sprintf("%.2f ms", cpu / made * 1000) : "-";
             printf "thumbnails=%-5s  %d streams  segments %4d  thumbs made %4d skipped %3d failed %d  CPU/thumb %9s  origin CPU %6.2f s (%5.1f%% of a core, %5.2f%% per stream)\n",
                    mode, k, segs, made, skipped, failed, per, secs, pct, pct / k }' >> "$WORK/rows"
  kill "$DVR_PID"; wait "$DVR_PID" 2>/dev/null || true
}

echo "publishing $N x 720p30 for ${SECS}s, thumbnails on, then off..."
run true
run false
echo
cat "$WORK/rows"
awk '/thumbnails=true/ {on=$0} /thumbnails=false/ {off=$0}
     END { match(on, /origin CPU +[0-9.]+/); a = substr(on, RSTART + 11, RLENGTH - 11) + 0;
           match(off, /origin CPU +[0-9.]+/); b = substr(off, RSTART + 11, RLENGTH - 11) + 0;
           printf "thumbnails add %.2f s of origin CPU over the run (%+.1f%%)\n", a - b, (b > 0 ? (a - b) / b * 100 : 0) }' "$WORK/rows"
