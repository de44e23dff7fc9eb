# Shared by the LL-HLS benches (sourced after bench/common.sh): the chain origin ->
# intermediate -> edge -> nginx running config/nginx-cdn.conf (ports and paths replaced, an
# access log of what reached the edge, the probe page under /probe/, the uncached edge under
# /direct/), and ffmpeg publishing the fixture in real time, looped, as "ll".

# ll_chain PART_TARGET: starts it all under $WORK/$PART_TARGET. Sets D (that folder), O, I, E
# (node ports), C (nginx port), RTMP and LL_PIDS. Returns once the edge lists 8 segments (16 s:
# the window a viewer joining a running stream finds).
ll_chain() {
  O=$(free_port); I=$(free_port); E=$(free_port); C=$(free_port); RTMP=$(free_port)
  D="$WORK/$1"; mkdir -p "$D/page"
  printf '[node]\nname = "origin"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "127.0.0.1:%s"\n[record]\ndir = "%s/rec"\npart_target = "%s"\n' \
    "$O" "$RTMP" "$D" "$1" > "$D/origin.toml"
  printf '[node]\nname = "intermediate"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[relay]\nupstreams = ["http://127.0.0.1:%s"]\n' \
    "$I" "$O" > "$D/intermediate.toml"
  printf '[node]\nname = "edge"\n[http]\nlisten = "127.0.0.1:%s"\n[rtmp]\nlisten = "off"\n[relay]\nupstreams = ["http://127.0.0.1:%s"]\n' \
    "$E" "$I" > "$D/edge.toml"
  start_node "origin-$1" "$D/origin.toml"; LL_PIDS=("$NODE_PID")
  start_node "intermediate-$1" "$D/intermediate.toml"; LL_PIDS+=("$NODE_PID")
  start_node "edge-$1" "$D/edge.toml"; LL_PIDS+=("$NODE_PID")
  cp "$ROOT/bench/ll/page.html" "$D/page/"
  [ -n "${HLSJS:-}" ] && cp "$HLSJS" "$D/page/"
  sed -e "s|server 127.0.0.1:8082;|server 127.0.0.1:$E;|" -e "s|listen 8080;|listen 127.0.0.1:$C;|" \
      -e "s|/var/cache/nginx/|$D/cache-|g" \
      -e "s|    # Everything else (the player|    location /probe/ { alias $D/page/; }\n    location /direct/ { proxy_pass http://127.0.0.1:$E/; proxy_buffering off; }\n\n    # Everything else (the player|" \
      "$ROOT/config/nginx-cdn.conf" > "$D/cdn.conf"
  cat > "$D/nginx.conf" <<CONF
daemon off; master_process on; worker_processes 1; user root root;
error_log $D/nginx.err warn; pid $D/nginx.pid;
events { worker_connections 4096; }
http { log_format edge '\$upstream_cache_status \$upstream_addr \$uri \$args';
       access_log $D/access.log edge; include /etc/nginx/mime.types;
       client_body_temp_path $D/body; proxy_temp_path $D/proxy; fastcgi_temp_path $D/fcgi;
       uwsgi_temp_path $D/uwsgi; scgi_temp_path $D/scgi; include $D/cdn.conf; }
CONF
  nginx -c "$D/nginx.conf" -p "$D" & LL_PIDS+=($!); PIDS+=($!)
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$C/probe/page.html" && break; sleep 0.1; done
  ffmpeg -v quiet -re -stream_loop -1 -i "$ROOT/tests/fixtures/testsrc.flv" -c copy -f flv \
    "rtmp://127.0.0.1:$RTMP/live/ll" </dev/null & LL_PIDS+=($!); PIDS+=($!)
  for _ in $(seq 300); do
    [ "$(curl -sf "http://127.0.0.1:$E/streams/ll/index.m3u8" | grep -c EXTINF)" -ge 8 ] && break; sleep 0.1
  done
}

# ll_stop: stops what ll_chain started.
ll_stop() { kill "${LL_PIDS[@]}" 2>/dev/null || true; wait "${LL_PIDS[@]}" 2>/dev/null || true; }

# metric URL NAME: a counter's value at a node.
metric() { curl -s "$1/metrics" | awk -v n="$2" '$1 == n {print $2}'; }
