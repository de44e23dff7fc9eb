"""Builds a 24-hour recording for the player benchmarks out of a short real one.

Usage: synth_day.py SRC_STREAM_DIR DST_STREAM_DIR TARGETS_JSON [HOURS=24] [REGIONS=16]

The source is a stream directory recorded by dvrgate (index.jsonl, init/, segments/,
thumbs/). The result lists HOURS of back-to-back segments ending now, cycling through the
source's segments, each a real file (its tfdt rewritten, so the media timeline runs on and a
browser plays any moment; 24 h of the 640x360 fixture is about 5 GB, written in a minute).
Thumbnails are hard links to the source's, so every segment has one. TARGETS_JSON gets the
wall-clock ms of REGIONS moments spread over the window (what the benchmark seeks to).
"""
import json
import os
import struct
import sys
import time


def boxes(data, start=0, end=None):
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        head = 8
        if size == 1:
            size = struct.unpack(">Q", data[at + 8:at + 16])[0]
            head = 16
        if size < head or at + size > end:
            raise ValueError("bad box")
        yield kind, at, at + head, at + size
        at += size


def child(data, kind, start, end):
    for k, _, body, stop in boxes(data, start, end):
        if k == kind:
            return body, stop
    raise KeyError(kind)


def timescales(init):
    """track_ID -> timescale from an init segment."""
    out = {}
    mb, me = child(init, b"moov", 0, len(init))
    for k, _, tb, te in boxes(init, mb, me):
        if k != b"trak":
            continue
        hb, _ = child(init, b"tkhd", tb, te)
        tid = struct.unpack(">I", init[hb + (20 if init[hb] == 1 else 12):][:4])[0]
        db, de = child(init, b"mdia", tb, te)
        hb, _ = child(init, b"mdhd", db, de)
        ts = struct.unpack(">I", init[hb + (20 if init[hb] == 1 else 12):][:4])[0]
        out[tid] = ts
    return out


def shifted(seg, scales, delta_ms):
    """The segment with every tfdt moved by delta_ms (per track timescale)."""
    data = bytearray(seg)
    for k, _, mb, me in boxes(data):
        if k != b"moof":
            continue
        for tk, _, tb, te in boxes(data, mb, me):
            if tk != b"traf":
                continue
            hb, _ = child(data, b"tfhd", tb, te)
            tid = struct.unpack(">I", data[hb + 4:hb + 8])[0]
            db, _ = child(data, b"tfdt", tb, te)
            add = delta_ms * scales[tid] // 1000
            if data[db] == 1:
                v = struct.unpack(">Q", data[db + 4:db + 12])[0]
                data[db + 4:db + 12] = struct.pack(">Q", v + add)
            else:
                v = struct.unpack(">I", data[db + 4:db + 8])[0] + add
                if v >= 1 << 32:
                    raise ValueError("32-bit tfdt overflows")
                data[db + 4:db + 8] = struct.pack(">I", v)
    return bytes(data)


def xxh3(data):
    """The content hash dvrgate keeps per segment (relays verify what they pull against it)."""
    import xxhash  # pip install xxhash (bench/player_figures.sh installs it if missing)
    return xxhash.xxh3_64_intdigest(data)


def main():
    src, dst, targets_path = sys.argv[1:4]
    hours = float(sys.argv[4]) if len(sys.argv) > 4 else 24
    regions = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    lines = [json.loads(l) for l in open(os.path.join(src, "index.jsonl")) if l.strip()]
    period = next(l for l in lines if l.get("t") == "period")
    segs = [l for l in lines if l.get("t") == "seg" and l["period"] == period["id"]]
    # Whole source segments only, not the first (may start late) nor the last (may be cut short).
    segs = segs[1:-1]
    if len(segs) < 4:
        sys.exit("source too short")
    init = open(os.path.join(src, "init", f"{period['id']}.mp4"), "rb").read()
    scales = timescales(init)
    thumbs = os.path.join(src, "thumbs")
    have_thumbs = os.path.isdir(thumbs)
    for d in ("init", "segments", "thumbs"):
        os.makedirs(os.path.join(dst, d), exist_ok=True)
    with open(os.path.join(dst, "init", "0.mp4"), "wb") as f:
        f.write(init)
    cycle_ms = sum(s["duration_ms"] for s in segs)
    total_ms = int(hours * 3600_000)
    n = total_ms // cycle_ms * len(segs)
    t0 = int(time.time() * 1000) - 5000 - (total_ms // cycle_ms) * cycle_ms
    # Seek targets: REGIONS segments spread evenly.
    starts = {int((r + 0.5) * n / regions) for r in range(regions)}
    raw = {}
    out_targets = []
    with open(os.path.join(dst, "index.jsonl"), "w") as ix:
        p = dict(period, id=0, start_ms=0, time_ms=t0)
        ix.write(json.dumps(p) + "\n")
        start_ms = 0
        for seq in range(n):
            s = segs[seq % len(segs)]
            path = os.path.join(dst, "segments", f"{seq}.m4s")
            if s["seq"] not in raw:
                raw[s["seq"]] = open(os.path.join(src, "segments", f"{s['seq']}.m4s"), "rb").read()
            body = shifted(raw[s["seq"]], scales, start_ms - s["start_ms"])
            with open(path, "wb") as f:
                f.write(body)
            digest = xxh3(body)
            if have_thumbs and os.path.exists(os.path.join(thumbs, f"{s['seq']}.jpg")):
                os.link(os.path.join(thumbs, f"{s['seq']}.jpg"), os.path.join(dst, "thumbs", f"{seq}.jpg"))
            if seq in starts:
                out_targets.append(t0 + start_ms + 200)
            ix.write(json.dumps({"t": "seg", "seq": seq, "period": 0, "start_ms": start_ms,
                                 "duration_ms": s["duration_ms"], "time_ms": t0 + start_ms,
                                 "length": s["length"], "hash": digest}) + "\n")
            start_ms += s["duration_ms"]
    json.dump({"targets": sorted(out_targets), "segments": n,
               "window_ms": start_ms, "thumbs": have_thumbs}, open(targets_path, "w"))
    print(f"synthesized {n} segments ({start_ms / 3600_000:.1f} h), {regions} seek targets")


if __name__ == "__main__":
    main()
