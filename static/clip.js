/** Clips from the timeline: in/out marks, their checks and the sentences shown for problems,
 * the `clip.mp4` URL and the player link of a clip.
 *
 * The functions here are pure (no DOM, no fetch), so node's test runner covers them; the panel
 * in ui.js only wires them to buttons. Invariants: a clip that passes [`checkClip`] lies inside
 * the recording and within one period (the server refuses sections across a discontinuity);
 * every problem, ours or the server's, is one sentence a viewer can act on, never a code. */

import { fmtClock, fmtDay, fmtDuration } from './time.js';

/** The marks in order, or a sentence saying what is missing or wrong.
 * `rec`: `{ wallStart, wallEnd, discontinuities: [ms...] }` of the recording now. */
export function checkClip(inMs, outMs, rec) {
  const has = (x) => Number.isFinite(x);
  if (!has(inMs) && !has(outMs)) return { error: 'Mark where the clip starts (I) and where it ends (O).' };
  if (!has(inMs)) return { error: 'Mark where the clip starts (I).' };
  if (!has(outMs)) return { error: 'Mark where the clip ends (O).' };
  let from = Math.min(inMs, outMs);
  let to = Math.max(inMs, outMs);
  if (to - from < 500) return { error: 'The clip is empty: put the end mark after the start mark.' };
  if (to <= rec.wallStart) return { error: `This section is no longer in the recording (it now begins at ${when(rec.wallStart)}).` };
  if (from < rec.wallStart - 1000) {
    return { error: `The start mark (${when(from)}) is no longer in the recording, which now begins at ${when(rec.wallStart)}. Move it later.` };
  }
  if (from >= rec.wallEnd) return { error: 'The start mark is after the end of the recording.' };
  from = Math.max(from, rec.wallStart);
  to = Math.min(to, rec.wallEnd);
  const cut = (rec.discontinuities || []).find((d) => d > from + 1 && d < to - 1);
  if (cut !== undefined) {
    return {
      error: `The clip spans a restart of the broadcast at ${when(cut)}; a clip must stay within one broadcast. Move the start mark after it or the end mark before it.`,
      cut,
    };
  }
  return { from, to, ms: to - from };
}

/** The sentence for a refused clip request: HTTP `status` and the JSON error `body` (or null). */
export function clipErrorSentence(status, body, lengthMs) {
  const desc = (body && typeof body.description === 'string' && body.description) || '';
  const max = /at most (\d+) s\b/.exec(desc);
  if (status === 400 && max) {
    const long = Number.isFinite(lengthMs) ? `This clip is ${fmtDuration(lengthMs)} long; ` : '';
    return `${long}this server makes clips of at most ${fmtDuration(Number(max[1]) * 1000)}. Move the marks closer together.`;
  }
  if (status === 400 && /discontinuity/.test(desc)) {
    const at = /discontinuity at (\S+)/.exec(desc);
    const ms = at ? Date.parse(at[1]) : NaN;
    return `The clip spans a restart of the broadcast${Number.isFinite(ms) ? ` at ${when(ms)}` : ''}; a clip must stay within one broadcast.`;
  }
  if (status === 404 && body && body.code === 'NetStream.Seek.InvalidTime') {
    return 'This section is no longer in the recording (it was deleted by retention). Mark a later one.';
  }
  if (status === 404) return 'The stream is not available here any more.';
  if (status === 401 || status === 403) return 'You may not download this stream: the link’s access token is missing or has expired.';
  if (status === 502 || status === 503 || status === 504) return 'The server could not reach the recording to make the clip. Try again in a moment.';
  if (status >= 500) return 'The server could not make the clip. Try again in a moment.';
  return desc ? `The clip was refused: ${desc.replace(/\.?$/, '.')}` : `The clip was refused (HTTP ${status}).`;
}

/** `clip.mp4` of `base` (`streams/NAME/`) from..to, with the page's token via `withToken`. */
export function clipUrl(base, from, to, withToken = (u) => u) {
  const q = new URLSearchParams({ from: new Date(from).toISOString(), to: new Date(to).toISOString() });
  return withToken(`${base}clip.mp4?${q}`);
}

/** The file name the server suggests (`NAME-2026-12-03T150405.250Z.mp4`), for `<a download>`. */
export function clipFileName(name, from) {
  return `${name}-${new Date(from).toISOString().replace(/:/g, '')}.mp4`;
}

/** The player link that opens the stream at the clip with both marks set. */
export function clipLink(pageUrl, stream, from, to, token) {
  const q = new URLSearchParams({ stream, t: new Date(from).toISOString(), in: new Date(from).toISOString(), out: new Date(to).toISOString() });
  if (token) q.set('token', token);
  return `${pageUrl}?${q}`;
}

/** The marks of a player link (`?in=&out=`), or null. */
export function marksFromQuery(q) {
  const a = Date.parse(q.get('in') || '');
  const b = Date.parse(q.get('out') || '');
  return Number.isFinite(a) || Number.isFinite(b) ? { in: Number.isFinite(a) ? a : null, out: Number.isFinite(b) ? b : null } : null;
}

function when(ms) {
  const day = fmtDay(ms);
  return day ? `${day} ${fmtClock(ms)}` : fmtClock(ms);
}
