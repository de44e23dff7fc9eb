/** Pure time parsing and formatting for the player (no DOM; unit-tested with `node --test`).
 *
 * Invariants: every function takes and returns wall-clock milliseconds (numbers); an input that
 * cannot be understood gives NaN, never a throw. Formatting uses the viewer's local time zone. */

export const pad = (n, w = 2) => String(n).padStart(w, '0');

export function fmtClock(ms) {
  if (!Number.isFinite(ms)) return '--:--:--';
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDay(ms) {
  const d = new Date(ms);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return '';
  return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
}

export function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h) return `${h} h ${pad(m)} min`;
  if (m) return `${m} min ${pad(s % 60)} s`;
  return `${s} s`;
}

/** How far behind: "-12.3 s" under a minute, else "-1 h 05 min" / "-3 min 20 s". */
export function fmtBehind(ms) {
  if (!Number.isFinite(ms)) return '';
  return ms < 60000 ? `-${(Math.max(0, ms) / 1000).toFixed(1)} s` : `-${fmtDuration(ms)}`;
}

export function fmtBytes(n) {
  if (!Number.isFinite(n)) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

/** "-1h5m", "-30s", "-1.5s", "-500ms" -> signed milliseconds, or NaN. */
export function parseDuration(str) {
  const m = /^([+-]?)((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)$/.exec(String(str).trim());
  if (!m) return NaN;
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let p;
  while ((p = re.exec(m[2]))) {
    const v = parseFloat(p[1]);
    total += v * { ms: 1, s: 1000, m: 60000, h: 3600000 }[p[2]];
  }
  return m[1] === '-' ? -total : total;
}

/** Resolves a SPEC time T to wall-clock ms ("live" -> the live edge). */
export function resolveTime(t, liveEdgeMs) {
  if (t == null || t === '') return NaN;
  const s = String(t).trim();
  if (s.toLowerCase() === 'live' || s.toLowerCase() === 'now') return liveEdgeMs;
  if (/^\d+$/.test(s)) return Number(s);
  if (/^[+-]/.test(s)) {
    const d = parseDuration(s);
    return Number.isFinite(d) ? liveEdgeMs + d : NaN;
  }
  const ms = Date.parse(s);
  return Number.isFinite(ms) ? ms : NaN;
}

const DAY_MS = 86400000;

/** The viewer's time zone, for labels ("Europe/Berlin", else "UTC+01:00"). */
export function zoneName(ms = Date.now()) {
  try {
    const z = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (z) return z;
  } catch (_) { /* old engine */ }
  const off = -new Date(ms).getTimezoneOffset();
  return `UTC${off < 0 ? '-' : '+'}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
}

/** What a viewer types into "go to": the SPEC forms (RFC 3339, `-30s`, `live`, unix ms) or local
 * time: `14:05`, `14:05:30`, `yesterday 14:05`, `today 9:00`, `2026-12-02 14:05`.
 * Returns `{ms}` or `{error}` with a sentence. `nowMs` is "now" for today/yesterday and a bare
 * time that would lie in the future (then it means the same time yesterday). */
export function parseUserTime(input, liveEdgeMs, nowMs = Date.now()) {
  const s = String(input == null ? '' : input).trim();
  if (!s) return { error: 'Type a time, for example 14:05 or yesterday 14:05.' };
  const local = /^(?:(today|yesterday)\s+|(\d{4})-(\d{2})-(\d{2})[ T]+)?(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/i.exec(s);
  if (local) {
    const [, word, y, mo, d, h, mi, sec, frac] = local;
    if (+h > 23 || +mi > 59 || (sec && +sec > 59)) return { error: `“${s}” is not a time of day.` };
    const base = y ? new Date(+y, +mo - 1, +d) : new Date(nowMs);
    if (y && (base.getMonth() !== +mo - 1 || base.getDate() !== +d)) return { error: `“${s}” is not a date.` };
    const at = new Date(base.getFullYear(), base.getMonth(), base.getDate(), +h, +mi, +(sec || 0), +((frac || '0').padEnd(3, '0')));
    let ms = at.getTime();
    if (word && word.toLowerCase() === 'yesterday') ms = shiftDays(ms, -1);
    else if (!word && !y && ms > nowMs) ms = shiftDays(ms, -1);
    return { ms };
  }
  const ms = resolveTime(s, liveEdgeMs);
  if (Number.isFinite(ms)) return { ms };
  return { error: `“${s}” is not a time I understand. Try 14:05, yesterday 14:05, 2026-12-02 14:05 or -30s.` };
}

/** The same local wall-clock time `n` days away (DST-safe). */
function shiftDays(ms, n) {
  const d = new Date(ms);
  d.setDate(d.getDate() + n);
  return d.getTime();
}

export { DAY_MS };
