#!/usr/bin/env bash
# HTTPS cache-hit throughput at an edge, side by side with the same edge over plain HTTP and
# with nginx serving the same ~1 MB segment as a static file over HTTP and over TLS (same
# certificate, same cipher choice left to the client; wrk keeps connections alive, so this
# measures TLS record encryption, not handshakes). Loopback, both servers on this machine.
# Usage: bench/edge_hit_tls.sh [CONNECTIONS=64] [SECONDS=10]
source "$(dirname "$0")/common.sh"
C=${1:-64}; SECS=${2:-10}
for p in ffmpeg wrk nginx openssl; do command -v $p >/dev/null || { echo "needs $p"; exit 1; }; done
build
ulimit -n 65536 2>/dev/null || true
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
echo "encoding a 4 Mbit/s source with 2 s GOPs (segments of about 1 MB)..."
ffmpeg -v error -f lavfi -i "testsrc2=size=1280x720:rate=30" -t 12 -c:v libx264 -preset ultrafast \
  -pix_fmt yuv420p -b:v 4M -minrate 4M -maxrate 4M -bufsize 1M -x264-params nal-hrd=cbr -g 60 -an -f flv "$WORK/src.flv"
o=$(free_port); e=$(free_port); s=$(free_port); RTMP=$(free_port)
printf '[node]\nname = "origin"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "127.0.0.1:%s"\n[record]\ndir = "%s/rec"\n' \
  "$o" "$RTMP" "$WORK" > "$WORK/origin.toml"
printf '[node]\nname = "edge"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[relay]\nupstreams = ["http://127.0.0.1:%s"]\n' \
  "$e" "$o" > "$WORK/edge.toml"
printf '[node]\nname = "edge-tls"\n[http]\nlisten = "127.0.0.1:%s"\ntls_cert = "%s"\ntls_key = "%s"\n[rtmp]\nlisten = "off"\n[relay]\nupstreams = ["http://127.0.0.1:%s"]\n' \
  "$s" "$WORK/cert.pem" "$WORK/key.pem" "$o" > "$WORK/edge-tls.toml"
start_node origin "$WORK/origin.toml"
start_node edge "$WORK/edge.toml"
"$BIN" serve --config "$WORK/edge-tls.toml" 2>"$WORK/edge-tls.log" & PIDS+=($!)
for _ in $(seq 200); do curl -skf "https://127.0.0.1:$s/healthz" >/dev/null && break; sleep 0.1; done
publish_fast "$WORK/src.flv" big
wait_ended "http://127.0.0.1:$o/streams/big"
read -r SEQ LEN < <(curl -s "http://127.0.0.1:$o/streams/big/index.json" | python3 -c '
import json,sys; s=json.load(sys.stdin)["segments"]
b=min(s, key=lambda x: abs(x["length"]-1_000_000)); print(b["seq"], b["length"])')
PLAIN="http://127.0.0.1:$e/streams/big/segments/$SEQ.m4s"
TLS="https://127.0.0.1:$s/streams/big/segments/$SEQ.m4s"
mkdir -p "$WORK/www"
curl -sf "$PLAIN" -o "$WORK/www/seg.m4s"
curl -skf "$TLS" -o "$WORK/tls.m4s"; cmp "$WORK/www/seg.m4s" "$WORK/tls.m4s" || { echo "https bytes differ"; exit 1; }
start_nginx_static "$WORK/www"
np=$(free_port)
cat > "$WORK/nginx-tls.conf" <<CONF
daemon off; worker_processes auto; worker_rlimit_nofile 4096;
error_log $WORK/nginx-tls.err warn; pid $WORK/nginx-tls.pid;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on; open_file_cache max=100;
       server { listen 127.0.0.1:$np ssl http2; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
                ssl_protocols TLSv1.2 TLSv1.3; root $WORK/www; } }
CONF
nginx -c "$WORK/nginx-tls.conf" -p "$WORK" & PIDS+=($!)
for _ in $(seq 50); do curl -skf -o /dev/null "https://127.0.0.1:$np/seg.m4s" && break; sleep 0.1; done
echo "segment $SEQ: $LEN bytes; wrk -t2 -c$C -d${SECS}s (HTTP/1.1 keep-alive)"
wrk_row "dvrgate edge, http" "$PLAIN"
wrk_row "dvrgate edge, https" "$TLS"
wrk_row "nginx static, http" "$NGINX_URL/seg.m4s"
wrk_row "nginx static, https" "https://127.0.0.1:$np/seg.m4s"
awk -F'\t' '{r[NR]=$2} END {
  printf "https/http at the edge: %.2f; at nginx: %.2f\n", r[2]/r[1], r[4]/r[3];
  printf "dvrgate https / nginx https: %.2f (target >= 1.0)\n", r[2]/r[4] }' "$WORK/rps"
