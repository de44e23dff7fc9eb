/** The time index of one stream (from `index.json`): media time (s) <-> wall clock (ms).
 *
 * Invariants: `segs` is sorted by seq and by media time, seq grows by one per segment (a jump is
 * a hole, not an error); `merge` only ever appends newer segments; pure (no DOM, no fetch).
 * LL-HLS: `open` is the segment being written (its parts so far), from the newest answer that
 * reaches the live edge; it is always newer than `last`. Parts are media units like segments
 * (`seq`, `period`, `startS`, `endS`, `url`) with `part` (their index) and `key` ("seq.part"). */

/** Segments of one stream: media time (s) <-> wall clock (ms). */
export class TimeIndex {
  /** `parts`: keep the LL-HLS parts of `index.json` (else `open` stays null). */
  constructor({ parts = true } = {}) {
    this.useParts = parts;
    this.segs = [];
    this.periods = new Map();
    this.live = false;
    this.targetMs = 2000;
    this.bytes = 0; // media bytes listed
    this.version = 0; // bumped whenever `segs` changes (for caches of derived shapes)
    this.partTargetMs = null; // LL-HLS part target; null: the stream has no parts
    this.open = null; // LL-HLS: the segment being written, with its parts so far
    this.openChanged = false; // the last merge changed `open`
  }

  merge(doc) {
    if (!doc) return 0;
    this.live = !!doc.live;
    if (doc.target_duration_ms) this.targetMs = doc.target_duration_ms;
    for (const p of doc.periods || []) this.periods.set(p.id, p);
    const last = this.last ? this.last.seq : -Infinity;
    let added = 0;
    for (const s of doc.segments || []) {
      if (s.seq <= last) continue;
      this.segs.push(segOf(s));
      this.bytes += s.length || 0;
      added++;
    }
    if (added) this.version++;
    const parts = this.useParts && doc.live;
    this.partTargetMs = parts && doc.part_target_ms > 0 ? doc.part_target_ms : null;
    const before = this.open ? this.open.key : '';
    const open = parts && doc.open ? openOf(doc.open) : null;
    this.open = open && (!this.last || open.seq > this.last.seq) ? open : null;
    this.openChanged = (this.open ? this.open.key : '') !== before;
    return added;
  }

  /** How many parts of the segment after `last` are known (for `index.json?part=K`). */
  get knownParts() {
    return this.open && this.last && this.open.seq === this.last.seq + 1 ? this.open.parts.length : 0;
  }

  /** Media end including the open segment's parts. */
  get edgeS() { return this.open && this.open.parts.length ? Math.max(this.mediaEnd, this.open.endS) : this.mediaEnd; }

  /** Adds the segments of `doc` older than the first one held (the rest of the window, loaded
   * after a tail); keeps `live` and everything newer as they are. */
  prepend(doc) {
    if (!doc) return 0;
    for (const p of doc.periods || []) if (!this.periods.has(p.id)) this.periods.set(p.id, p);
    const first = this.first ? this.first.seq : Infinity;
    const older = (doc.segments || []).filter((s) => s.seq < first).sort((a, b) => a.seq - b.seq).map(segOf);
    if (!older.length) return 0;
    for (const s of older) this.bytes += s.length;
    this.segs.unshift(...older);
    this.version++;
    return older.length;
  }

  /** Drops segments older than `seq` (retention). */
  trimBefore(seq) {
    let i = 0;
    while (i < this.segs.length - 1 && this.segs[i].seq < seq) i++;
    for (const s of this.segs.slice(0, i)) this.bytes -= s.length;
    if (i) { this.segs.splice(0, i); this.version++; }
    return i;
  }

  get first() { return this.segs[0]; }
  get last() { return this.segs[this.segs.length - 1]; }
  get mediaStart() { return this.first ? this.first.startS : 0; }
  get mediaEnd() { return this.last ? this.last.endS : 0; }
  get wallStart() { return this.first ? this.first.wall : NaN; }
  get wallEnd() { return this.last ? this.last.wallEnd : NaN; }

  /** Index of the last segment starting at or before media time t (0 when before all). */
  floorMedia(t) {
    const a = this.segs;
    let lo = 0;
    let hi = a.length - 1;
    if (hi < 0) return -1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (a[mid].startS <= t + 1e-6) lo = mid; else hi = mid - 1;
    }
    return lo;
  }

  /** Index of the segment containing media time t, or -1 at or past the live edge. */
  indexAtMedia(t) {
    if (!this.segs.length || t >= this.mediaEnd - 1e-3) return -1;
    return this.floorMedia(t);
  }

  wallAt(t) {
    if (!this.segs.length || !Number.isFinite(t)) return NaN;
    const s = this.segs[this.floorMedia(t)];
    if (t < s.startS) return s.wall - (s.startS - t) * 1000;
    if (t > s.endS) return s.wallEnd + (t - s.endS) * 1000;
    return s.wall + (t - s.startS) * 1000;
  }

  /** Media time of wall-clock ms; a gap between periods maps to the next segment. */
  mediaAt(w) {
    const a = this.segs;
    if (!a.length || !Number.isFinite(w)) return NaN;
    if (w <= a[0].wall) return a[0].startS;
    if (w >= this.wallEnd) return this.mediaEnd;
    let lo = 0;
    let hi = a.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (a[mid].wall <= w) lo = mid; else hi = mid - 1;
    }
    const s = a[lo];
    if (w < s.wallEnd) return s.startS + (w - s.wall) / 1000;
    return lo + 1 < a.length ? a[lo + 1].startS : s.endS;
  }

  /** Wall-clock runs with media (gaps where the stream was not published). */
  coverage() {
    const runs = [];
    for (const s of this.segs) {
      const r = runs[runs.length - 1];
      if (r && s.wall - r[1] < 1500) r[1] = Math.max(r[1], s.wallEnd);
      else runs.push([s.wall, s.wallEnd]);
    }
    return runs;
  }
}

/** The parts of a segment starting at media `startS`, as media units. */
function partsOf(seq, period, startS, parts) {
  let at = startS;
  return (parts || []).map((p, i) => {
    const part = { seq, part: i, key: `${seq}.${i}`, period, startS: at, endS: at + p.duration_ms / 1000, url: p.url, offset: 0, length: p.length || 0, independent: !!p.independent };
    at = part.endS;
    return part;
  });
}

/** The `open` object of `index.json`. */
function openOf(o) {
  const startS = o.start_ms / 1000;
  const parts = partsOf(o.seq, o.period, startS, o.parts);
  return { seq: o.seq, period: o.period, startS, endS: parts.length ? parts[parts.length - 1].endS : startS, wall: Date.parse(o.time), parts, key: `${o.seq}.${parts.length}` };
}

/** One `index.json` segment as the index keeps it. */
function segOf(s) {
  const wall = Date.parse(s.time);
  return {
    parts: partsOf(s.seq, s.period, s.start_ms / 1000, s.parts),
    seq: s.seq,
    period: s.period,
    startS: s.start_ms / 1000,
    endS: (s.start_ms + s.duration_ms) / 1000,
    wall,
    wallEnd: wall + s.duration_ms,
    url: s.url,
    offset: s.offset || 0,
    length: s.length || 0,
  };
}
