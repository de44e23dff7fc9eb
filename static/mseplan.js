/** The MSE engine's plan (engine-mse.js runs it): where playback starts, where a seek or a skip
 * lands in media time, and what to do next around the playhead: fetch a segment, evict, end the
 * stream, or step over a small gap. Pure (no DOM, no fetch): the index is a `TimeIndex`,
 * buffered media comes in as runs `[[start, end], ...]` in media seconds (`runs(sb.buffered)`).
 *
 * Invariants: when nothing is buffered at the playhead, fetching it comes before any eviction (a
 * seek shows its frame first); otherwise what is buffered is kept to `BEHIND_S` behind and
 * `aheadS + 15` ahead of the playhead (2 s slack each side, so eviction does not thrash); a
 * segment in `bad` (404/410) is never planned again; a segment in `appended` that still
 * overlaps the buffer is not fetched twice, nor one in `inert` (appended, yet it added nothing
 * the element counts as buffered: a last segment with a frame of video and a tail of audio, say;
 * fetching it again would loop forever); end of stream only once the last segment of an ended
 * stream is in. */

export const BEHIND_S = 30; // media kept behind the playhead
export const AHEAD_S = 20; // media fetched ahead of the playhead (halved on QuotaExceededError)

/** `TimeRanges` (or anything with `length`, `start(i)`, `end(i)`) as `[[start, end], ...]`. */
export function runs(ranges) {
  const out = [];
  if (!ranges) return out;
  for (let i = 0; i < ranges.length; i++) out.push([ranges.start(i), ranges.end(i)]);
  return out;
}

/** The period (init segment, codecs) of `seg`; a default for one the index does not list. */
export function periodOf(ix, seg) {
  return ix.periods.get(seg.period) || { id: seg.period, init: `init/${seg.period}.mp4`, codecs: 'avc1.42e01e,mp4a.40.2' };
}

/** How far behind the live edge "live" plays: PART-HOLD-BACK (3 parts) when the stream has
 * parts, else 1.5 target durations. */
export function holdBackS(ix) {
  return (ix.partTargetMs && ix.open ? 3 * ix.partTargetMs : 1.5 * ix.targetMs) / 1000;
}

/** Where "live" plays: `holdBackS` behind the live edge (the open segment's newest part, when
 * the stream has parts), not before the window. */
export function liveMedia(ix) {
  return Math.max(ix.mediaStart, ix.edgeS - holdBackS(ix));
}

/** Playback rate that brings a live LL-HLS viewer who drifted a little behind (a stall, the
 * start-up's fetches) back to the hold-back: 1.1 while 0.3 to 3 s too far behind, else 1
 * (further behind is a choice: DVR viewing). */
export function catchUpRate(ix, t) {
  if (!ix.live || !ix.partTargetMs) return 1;
  const late = ix.edgeS - t - holdBackS(ix);
  return late > 0.3 && late < 3 ? 1.1 : 1;
}

/** Media time to open at: wall clock `startWall` if finite, else live, else the start. */
export function startMedia(ix, startWall) {
  if (Number.isFinite(startWall)) return Math.min(ix.mediaAt(startWall), Math.max(ix.mediaStart, ix.mediaEnd - 0.1));
  if (ix.live) return liveMedia(ix);
  return ix.mediaStart;
}

/** Media time of a seek to wall clock `ms`, inside the window (0.1 s short of its end). */
export function seekMedia(ix, ms) {
  const t = ix.mediaAt(ms);
  return Math.min(Math.max(t, ix.mediaStart), Math.max(ix.mediaStart, ix.mediaEnd - 0.1));
}

/** Media time `seconds` from `t`; null means "go live" (skipping past live on a live stream). */
export function skipMedia(ix, t, seconds) {
  let to = t + seconds;
  if (seconds > 0 && to > liveMedia(ix)) {
    if (ix.live) return null;
    to = Math.min(to, ix.mediaEnd - 0.1);
  }
  return Math.max(to, ix.mediaStart);
}

/** The buffered run that plays at `t` (0.3 s of slack before it, 0.05 s after), or null. */
export function bufferedAt(buf, t) {
  for (const r of buf) if (r[0] - 0.3 <= t && t <= r[1] + 0.05) return r;
  return null;
}

/** Whether `seg` is (mostly) in the buffer: an overlap beyond a small epsilon. */
export function overlaps(buf, seg) {
  const eps = Math.min(0.05, (seg.endS - seg.startS) / 4);
  return buf.some((r) => r[0] < seg.endS - eps && r[1] > seg.startS + eps);
}

/** The next part of `seg` (a sealed segment or the open one) once `partsIn` says some of its
 * parts are in: a segment begun by parts is finished by parts. `undefined`: none begun, or
 * none listed; null: all its listed parts are in. */
function nextPart(seg, partsIn, bad) {
  const k = partsIn ? partsIn.get(seg.seq) || 0 : 0;
  if (!k || !seg.parts.length) return undefined;
  const p = seg.parts[k];
  if (!p) return null;
  return bad.has(p.key) ? undefined : p;
}

/** The next segment (or LL-HLS part) to fetch for playhead `t`: from the end of the run playing
 * at `t`, within `aheadS`, skipping bad ones and ones already in; past the sealed segments, the
 * open segment's parts in order (`partsIn`: seq -> how many of its parts are appended); null
 * when the look-ahead is full. */
export function nextSegment(ix, buf, t, { aheadS, appended, bad, inert, partsIn }) {
  if (!ix.segs.length) return null;
  const r = bufferedAt(buf, t);
  const from = r ? Math.max(t, r[1]) : t;
  if (from >= t + aheadS) return null;
  let i = ix.indexAtMedia(Math.max(from, ix.mediaStart));
  for (; i >= 0 && i < ix.segs.length; i++) {
    const seg = ix.segs[i];
    if (seg.startS > t + aheadS) return null;
    if (bad.has(seg.seq)) continue;
    const part = nextPart(seg, partsIn, bad);
    if (part) return part;
    if (part === null) continue;
    if (appended.has(seg.seq) && (overlaps(buf, seg) || (inert && inert.has(seg.seq)))) continue;
    return seg;
  }
  const o = ix.open;
  if (!o || !partsIn || !o.parts.length) return null;
  const k = partsIn.get(o.seq) || 0;
  const p = o.parts[k];
  return p && !bad.has(p.key) && p.startS <= t + aheadS ? p : null;
}

/** The next job: `{ type: 'segment', seg }`, `{ type: 'remove', start, end }`, `{ type: 'eos' }`
 * or null (nothing to do). `canEnd`: the MediaSource is open and its SourceBuffer idle. */
export function nextJob(ix, buf, t, { aheadS, appended, bad, inert, canEnd, partsIn }) {
  const plan = { aheadS, appended, bad, inert, partsIn };
  // Nothing to play at the playhead (a seek): fetch that first, evict afterwards.
  if (!bufferedAt(buf, t)) {
    const seg = nextSegment(ix, buf, t, plan);
    if (seg) return { type: 'segment', seg };
  }
  if (buf.length) {
    const keepFrom = t - BEHIND_S;
    if (buf[0][0] < keepFrom - 2) return { type: 'remove', start: 0, end: keepFrom };
    const keepTo = t + aheadS + 15;
    const end = buf[buf.length - 1][1];
    if (end > keepTo + 2) return { type: 'remove', start: keepTo, end: end + 1 };
  }
  const seg = nextSegment(ix, buf, t, plan);
  if (seg) return { type: 'segment', seg };
  // Everything up to the end of an ended stream is in: let playback end.
  if (!ix.live && canEnd && ix.last && appended.has(ix.last.seq) && t > ix.mediaEnd - aheadS) {
    return { type: 'eos' };
  }
  return null;
}

/** A stalled playhead at `t` with (almost) nothing buffered ahead: the start of the next run
 * within 2.5 s to step to, or null (enough buffered, or no run close enough). */
export function gapAhead(buf, t) {
  let end = t;
  for (const r of buf) if (r[0] <= t + 0.01 && r[1] >= t) end = r[1];
  if (end - t > 0.3) return null;
  for (const r of buf) {
    if (r[0] > t && r[0] - t < 2.5) return r[0];
  }
  return null;
}

/** Buffered runs in wall-clock ms. */
export function toWall(ix, buf) {
  return buf.map((r) => [ix.wallAt(r[0]), ix.wallAt(r[1])]);
}
