# Shared helpers for the bench scripts (sourced). Loopback only; every wait is bounded.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/target/release/dvrgate"
WORK=$(mktemp -d /tmp/dvrgate-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
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
