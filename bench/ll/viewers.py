"""N LL-HLS viewers behaving like hls.js at the live edge, for bench/ll_viewers.sh: each asks a
blocking delta reload for the hinted part (`_HLS_msn`, `_HLS_part`, `_HLS_skip=YES`), then
fetches every part the answer lists that it has not fetched yet (at the live edge hls.js loads
parts, not whole segments). Runs RUN_S seconds; prints the requests made.
Usage: viewers.py BASE_URL N RUN_S"""
import http.client, re, sys, threading, time, urllib.parse

base, n, run = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
u = urllib.parse.urlparse(base)
PART = re.compile(r'#EXT-X-PART:.*URI="(parts/(\d+)\.(\d+)\.m4s)"')
HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="parts/(\d+)\.(\d+)\.m4s"')
counts = {"playlists": 0, "parts": 0, "errors": 0}
lock = threading.Lock()


def viewer(stop_at):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    seen = set()
    query = ""
    while time.time() < stop_at:
        try:
            c.request("GET", f"/streams/ll/index.m3u8{query}")
            r = c.getresponse()
            text = r.read().decode()
            with lock:
                counts["playlists"] += 1
            if r.status != 200:
                raise RuntimeError(f"playlist {r.status}")
            new = [m.group(1) for m in PART.finditer(text) if m.group(1) not in seen]
            for uri in new if seen else new[-1:]:
                c.request("GET", f"/streams/ll/{uri}")
                pr = c.getresponse()
                pr.read()
                with lock:
                    counts["parts"] += 1
                seen.add(uri)
            seen.update(new)
            h = HINT.search(text)
            if not h:
                raise RuntimeError("no preload hint")
            query = f"?_HLS_msn={h.group(1)}&_HLS_part={h.group(2)}&_HLS_skip=YES"
        except Exception:
            with lock:
                counts["errors"] += 1
            c.close()
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            query = ""
            time.sleep(0.2)


stop_at = time.time() + run
threads = [threading.Thread(target=viewer, args=(stop_at,)) for _ in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"{n} viewers made {counts['playlists']} playlist and {counts['parts']} part requests "
      f"({counts['errors']} errors)")
