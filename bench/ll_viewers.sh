#!/usr/bin/env bash
# LL-HLS fan-out behind a CDN: N viewers (bench/ll/viewers.py, hls.js's request pattern at the
# live edge: blocking delta reloads, then the listed parts) at nginx running
# config/nginx-cdn.conf in front of origin -> intermediate -> edge, ffmpeg publishing in real
# time. Prints, per part the origin wrote: requests reaching the edge (parts, playlists) and
# upstream part pulls at each relay hop.
# Usage: bench/ll_viewers.sh [N=50] [RUN_SECONDS=60]
source "$(dirname "$0")/common.sh"
source "$ROOT/bench/ll/chain.sh"
N=${1:-50}; RUN=${2:-60}
for p in ffmpeg nginx; do command -v "$p" >/dev/null || { echo "needs $p"; exit 1; }; done
build
ll_chain 500ms
written0=$(metric "http://127.0.0.1:$O" dvrgate_parts_written_total)
mid0=$(metric "http://127.0.0.1:$I" dvrgate_upstream_part_pulls_total)
edge0=$(metric "http://127.0.0.1:$E" dvrgate_upstream_part_pulls_total)
: > "$D/access.log"; kill -USR1 "$(cat "$D/nginx.pid")"; sleep 0.2
python3 "$ROOT/bench/ll/viewers.py" "http://127.0.0.1:$C" "$N" "$RUN"
written=$(( $(metric "http://127.0.0.1:$O" dvrgate_parts_written_total) - written0 ))
mid=$(( $(metric "http://127.0.0.1:$I" dvrgate_upstream_part_pulls_total) - mid0 ))
edge=$(( $(metric "http://127.0.0.1:$E" dvrgate_upstream_part_pulls_total) - edge0 ))
# Requests nginx passed to the edge: those with an upstream address.
to_edge() { awk -v k="$1" '$2 != "-" && $3 ~ k' "$D/access.log" | wc -l; }
parts_in=$(awk '$3 ~ /\/parts\//' "$D/access.log" | wc -l)
lists_in=$(awk '$3 ~ /index\.m3u8$/' "$D/access.log" | wc -l)
parts_edge=$(to_edge '/parts/'); lists_edge=$(to_edge 'index\\.m3u8$')
awk -v w="$written" -v n="$N" -v r="$RUN" -v pi="$parts_in" -v pe="$parts_edge" -v li="$lists_in" \
    -v le="$lists_edge" -v mid="$mid" -v edge="$edge" 'BEGIN {
  printf "origin wrote %d parts in %d s\n", w, r
  printf "at nginx: %d part requests (%.1f per part), %d playlist requests (%.1f/s)\n", pi, pi / w, li, li / r
  printf "reaching the edge: parts %.2f per part, playlists %.1f per part (%.1f/s)\n", pe / w, le / w, le / r
  printf "upstream part pulls per part: edge %.2f, intermediate %.2f\n", edge / w, mid / w }'
ll_stop
