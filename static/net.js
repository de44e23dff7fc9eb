/** Network helpers shared by the session and the views: the page's play token, JSON fetches
 * with SPEC error bodies, abortable sleeps, backoff.
 *
 * Invariant: every URL the player requests goes through `withToken`, so a `?token=` in the page
 * URL is carried on every request (EventSource cannot send headers). Share links leave it out. */

export const enc = encodeURIComponent;

/** The play token of the page URL, or null. */
export const TOKEN = typeof location === 'undefined' ? null : new URLSearchParams(location.search).get('token');

/** `url` with the page's token appended, unless it already carries one. */
export function withToken(url) {
  if (!TOKEN || /[?&]token=/.test(url)) return url;
  return `${url}${url.includes('?') ? '&' : '?'}token=${enc(TOKEN)}`;
}

export class HttpError extends Error {
  constructor(status, body, url) {
    super((body && body.description) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.url = url;
  }
}

export async function getJSON(url, signal) {
  const r = await fetch(withToken(url), { signal, cache: 'no-cache' });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new HttpError(r.status, body, url);
  return body;
}

export function sleep(ms, signal, kick) {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      if (signal) signal.removeEventListener('abort', done);
      if (kick) kick.delete(done);
      resolve();
    }
    if (signal) signal.addEventListener('abort', done, { once: true });
    if (kick) kick.add(done);
  });
}

export const isAbort = (e) => e && (e.name === 'AbortError' || e.name === 'TimeoutError');

export const backoffMs = (n) => Math.min(15000, 500 * 2 ** Math.min(n, 5)) * (0.8 + Math.random() * 0.4);
export function mime(codecs) {
  return `video/mp4; codecs="${codecs}"`;
}

export function upstreamDown(e) {
  return e instanceof HttpError && (e.status === 502 || e.status === 503 || e.status === 504);
}

export async function fetchBytes(url, offset, length, signal) {
  const headers = {};
  if (offset > 0 && length > 0) headers.Range = `bytes=${offset}-${offset + length - 1}`;
  const r = await fetch(withToken(url), { signal, headers });
  if (!r.ok) {
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    throw new HttpError(r.status, body, url);
  }
  let buf = await r.arrayBuffer();
  if (r.status === 200 && length > 0 && buf.byteLength > length && offset + length <= buf.byteLength) {
    buf = buf.slice(offset, offset + length);
  }
  return buf;
}

export function sbOp(sb, fn) {
  return new Promise((resolve, reject) => {
    const done = () => { off(); resolve(); };
    const fail = () => { off(); reject(new Error('SourceBuffer operation failed')); };
    const off = () => {
      sb.removeEventListener('updateend', done);
      sb.removeEventListener('error', fail);
    };
    sb.addEventListener('updateend', done);
    sb.addEventListener('error', fail);
    try { fn(); } catch (e) { off(); reject(e); }
  });
}
