#!/usr/bin/env bash
# Time from the packet that completes a segment (the keyframe that closes it) to the segment's
# announcement in index.json, seen by a long-poll client. The publisher replays the fixture in
# real time. Usage: bench/announce_latency.sh [LOOPS=3]
source "$(dirname "$0")/common.sh"
LOOPS=${1:-3}
build --example announce_latency
HTTP=$(free_port); RTMP=$(free_port)
cat > "$WORK/dvrgate.toml" <<TOML
[http]
listen = "127.0.0.1:$HTTP"
[rtmp]
listen = "127.0.0.1:$RTMP"
[record]
dir = "$WORK/rec"
TOML
start_dvrgate "$WORK/dvrgate.toml"
"$ROOT/target/release/examples/announce_latency" "127.0.0.1:$RTMP" "127.0.0.1:$HTTP" "$LOOPS"
curl -s "http://127.0.0.1:$HTTP/metrics" | awk '
  /^dvrgate_segments_written_total/ {n=$2} /^dvrgate_segment_write_seconds_total/ {s=$2}
  END { printf "reference: mean durable write (segment fsync+rename+dir fsync+index fsync) %.2f ms over %d segments\n", n ? s/n*1000 : 0, n }'
