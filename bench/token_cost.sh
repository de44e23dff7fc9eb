#!/usr/bin/env bash
# Cost of play-token checks on small requests: the same ~1 KB init segment from a node without
# [access] and from one with play_secret (token in ?token= and in Authorization: Bearer), beside
# nginx serving the same bytes as a static file. wrk, keep-alive, loopback.
# Usage: bench/token_cost.sh [CONNECTIONS=64] [SECONDS=10]
source "$(dirname "$0")/common.sh"
C=${1:-64}; SECS=${2:-10}
for p in ffmpeg wrk nginx python3; do command -v $p >/dev/null || { echo "needs $p"; exit 1; }; done
build
ulimit -n 65536 2>/dev/null || true
SECRET="bench-secret-0123456789abcdef"
ffmpeg -v error -f lavfi -i "testsrc2=size=640x360:rate=30" -t 6 -c:v libx264 -preset ultrafast \
  -pix_fmt yuv420p -g 60 -an -f flv "$WORK/src.flv"
open_p=$(free_port); sec_p=$(free_port); r1=$(free_port); r2=$(free_port)
printf '[node]\nname = "open"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "127.0.0.1:%s"\n[record]\ndir = "%s/rec-open"\n' \
  "$open_p" "$r1" "$WORK" > "$WORK/open.toml"
printf '[node]\nname = "tokens"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "127.0.0.1:%s"\n[record]\ndir = "%s/rec-sec"\n[access]\nplay_secret = "%s"\n' \
  "$sec_p" "$r2" "$WORK" "$SECRET" > "$WORK/tokens.toml"
start_node open "$WORK/open.toml"
start_node tokens "$WORK/tokens.toml"
RTMP=$r1 publish_fast "$WORK/src.flv" cam
RTMP=$r2 publish_fast "$WORK/src.flv" cam
TOKEN=$(python3 - "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"exp": int(time.time()) + 3600, "streams": ["cam"]}).encode())
sig = b64(hmac.new(sys.argv[1].encode(), head + b"." + body, hashlib.sha256).digest())
print((head + b"." + body + b"." + sig).decode())
PY
)
wait_ended "http://127.0.0.1:$open_p/streams/cam"
wait_ended "http://127.0.0.1:$sec_p/streams/cam?token=$TOKEN"
OPEN="http://127.0.0.1:$open_p/streams/cam/init/0.mp4"
SEC="http://127.0.0.1:$sec_p/streams/cam/init/0.mp4"
mkdir -p "$WORK/www"; curl -sf "$OPEN" -o "$WORK/www/init.mp4"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$SEC")" = 401 ] || { echo "the token node served without a token"; exit 1; }
curl -sf "$SEC?token=$TOKEN" | cmp - "$WORK/www/init.mp4" || { echo "bytes differ"; exit 1; }
start_nginx_static "$WORK/www"
echo "init segment: $(stat -c %s "$WORK/www/init.mp4") bytes; wrk -t2 -c$C -d${SECS}s; token ${#TOKEN} bytes"
wrk_row "no [access]" "$OPEN"
wrk_row "play_secret, ?token=" "$SEC?token=$TOKEN"
wrk_row "play_secret, Authorization: Bearer" -H "Authorization: Bearer $TOKEN" "$SEC"
wrk_row "nginx static file" "$NGINX_URL/init.mp4"
awk -F'\t' 'NR==1 {o=$2} NR==2 {q=$2} NR==3 {b=$2} END {
  printf "token check cost: ?token= %.1f us/request, Bearer %.1f us/request (at 2 wrk threads, 2 cores)\n",
    (1e6/q - 1e6/o), (1e6/b - 1e6/o) }' "$WORK/rps"
