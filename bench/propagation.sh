#!/usr/bin/env bash
# Live propagation latency origin -> intermediate -> edge: for each segment, how much later the
# edge's index.json long-poll announces it than the origin's, and when the edge has served its
# bytes. The publisher replays the fixture in real time. Target: median under 50 ms.
# Usage: bench/propagation.sh [LOOPS=3]
source "$(dirname "$0")/common.sh"
LOOPS=${1:-3}
build --example propagation
chain
"$ROOT/target/release/examples/propagation" "127.0.0.1:$RTMP" "${ORIGIN#http://}" "${EDGE#http://}" "$LOOPS"
