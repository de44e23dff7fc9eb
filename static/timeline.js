/** Pure timeline math (no DOM; unit-tested with `node --test`): the visible view of the DVR
 * window, pixel <-> wall-clock mapping, zoom/pan and tick choice.
 *
 * A view is `[startMs, endMs]`, always inside the window `[a, b]` and at least `minSpan(...)`
 * long, unless the window itself is shorter (then the view is the whole window). */

/** The finest zoom shows about a minute. */
export const MIN_SPAN_MS = 60000;

/** Zoom presets offered as buttons (null = the whole window). */
export const PRESETS = [
  { label: '1 min', spanMs: 60000 },
  { label: '10 min', spanMs: 600000 },
  { label: '1 h', spanMs: 3600000 },
  { label: 'All', spanMs: null },
];

/** Tick steps, in ms, from 1 s to 12 h. */
export const TICK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200]
  .map((s) => s * 1000);

/** Smallest span allowed for a track `widthPx` wide: a minute, and never more than 1 s per px
 * (so a phone-width track still reaches second precision). */
export function minSpan(widthPx) {
  return Math.min(MIN_SPAN_MS, Math.max(1, widthPx) * 1000);
}

/** `[a, b]` view clamped into window `win` with span limits for `widthPx`. */
export function clampView(view, win, widthPx) {
  const [a, b] = win;
  const full = b - a;
  if (!(full > 0)) return [a, b];
  let span = Math.min(full, Math.max(minSpan(widthPx), view[1] - view[0]));
  let start = Math.min(Math.max(view[0], a), b - span);
  if (!Number.isFinite(start)) start = a;
  if (!Number.isFinite(span)) span = full;
  return [start, start + span];
}

/** Zooms by `factor` (< 1 in, > 1 out) keeping wall-clock `anchorMs` at the same pixel. */
export function zoomAt(view, factor, anchorMs, win, widthPx) {
  const span = view[1] - view[0];
  const f = span > 0 ? (anchorMs - view[0]) / span : 0.5;
  const next = span * factor;
  return clampView([anchorMs - f * next, anchorMs - f * next + next], win, widthPx);
}

/** A view of `spanMs` (null = whole window) centred on `centerMs`. */
export function viewOfSpan(spanMs, centerMs, win, widthPx) {
  if (spanMs == null) return [win[0], win[1]];
  return clampView([centerMs - spanMs / 2, centerMs + spanMs / 2], win, widthPx);
}

/** Moves the view by `dMs`. */
export function pan(view, dMs, win, widthPx) {
  return clampView([view[0] + dMs, view[1] + dMs], win, widthPx);
}

/** Keeps the live edge in view: when the view was showing the edge `b0` of the previous window,
 * it slides to end at the new edge `win[1]` (same span). Otherwise unchanged (clamped). */
export function follow(view, b0, win, widthPx) {
  if (Math.abs(view[1] - b0) < 1) return clampView([win[1] - (view[1] - view[0]), win[1]], win, widthPx);
  return clampView(view, win, widthPx);
}

/** Fraction (0..1, clamped) of wall clock `ms` across `view`. */
export function frac(ms, view) {
  const span = view[1] - view[0];
  if (!(span > 0)) return 0;
  return Math.min(1, Math.max(0, (ms - view[0]) / span));
}

/** Wall clock at pixel `x` of a track `widthPx` wide showing `view`. */
export function timeAtPx(x, widthPx, view) {
  const f = Math.min(1, Math.max(0, x / Math.max(1, widthPx)));
  return view[0] + f * (view[1] - view[0]);
}

/** Pixel of wall clock `ms` (clamped to the track). */
export function pxAtTime(ms, widthPx, view) {
  return frac(ms, view) * widthPx;
}

/** The tick step for `spanMs` over `widthPx`: the smallest step leaving >= ~95 px per label. */
export function tickStep(spanMs, widthPx) {
  const want = Math.max(2, Math.floor(widthPx / 95));
  return TICK_STEPS.find((s) => spanMs / s <= want) || TICK_STEPS[TICK_STEPS.length - 1];
}

/** Tick times (multiples of `step` in local time) inside `view`. */
export function ticks(view, step, tzOffsetMin = new Date(view[0]).getTimezoneOffset()) {
  const off = -tzOffsetMin * 60000; // local = utc + off; align ticks to local clock multiples
  const out = [];
  const first = Math.ceil((view[0] + off) / step) * step - off;
  for (let t = first; t <= view[1] && out.length < 1000; t += step) out.push(t);
  return out;
}

/** A tick's label: HH:MM for steps of a minute or more, else HH:MM:SS (local time). */
export function tickLabel(ms, step) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  const hm = `${p(d.getHours())}:${p(d.getMinutes())}`;
  return step >= 60000 ? hm : `${hm}:${p(d.getSeconds())}`;
}

/** Gaps (time jumps > `toleranceMs` between consecutive segments) and discontinuities (period
 * changes) of a list of `{wall, wallEnd, period}` segments. */
export function breaks(segs, toleranceMs = 1500) {
  const gaps = [];
  const discontinuities = [];
  for (let i = 1; i < segs.length; i++) {
    const p = segs[i - 1];
    const s = segs[i];
    if (s.wall - p.wallEnd > toleranceMs) gaps.push([p.wallEnd, s.wall]);
    if (s.period !== p.period) discontinuities.push(s.wall);
  }
  return { gaps, discontinuities };
}
