/** The clip panel: in/out marks at the playhead (I/O keys or buttons), drawn on the timeline;
 * preview plays the section and pauses at its end; download fetches `clip.mp4` after the
 * server has accepted the section (a HEAD first, so a refusal becomes a sentence in the panel
 * rather than a broken download); copy link gives a player URL that reopens the clip.
 *
 * Invariants: the marks are wall-clock ms (they survive zoom, relays and reloads); the download
 * and link controls are enabled only for a section that passes `checkClip`; the panel never
 * holds clip bytes (the browser downloads `clip.mp4` itself). */

import { withToken, TOKEN } from './net.js';
import { fmtClock, fmtDay, fmtDuration } from './time.js';
import { checkClip, clipErrorSentence, clipUrl, clipFileName, clipLink } from './clip.js';

const $ = (id) => document.getElementById(id);

export class ClipPanel {
  /** `ui`: the page (for the player, the recording's discontinuities and toasts). */
  constructor(ui) {
    this.ui = ui;
    this.p = ui.p;
    this.in = null;
    this.out = null;
    this.previewTo = null; // wall ms where a running preview pauses
    this.serverError = '';
    this.el = {};
    for (const id of ['clip-in', 'clip-out', 'clip-in-time', 'clip-out-time', 'clip-length', 'clip-preview',
      'clip-download', 'clip-link', 'clip-clear', 'clip-error', 'clip-band']) this.el[id] = $(id);
    const btn = (b, fn) => b.addEventListener('click', (e) => { fn(e); if (e.detail) b.blur(); });
    btn(this.el['clip-in'], () => this.mark('in'));
    btn(this.el['clip-out'], () => this.mark('out'));
    btn(this.el['clip-preview'], () => this.preview());
    btn(this.el['clip-link'], () => this.copyLink());
    btn(this.el['clip-clear'], () => this.clear());
    this.el['clip-download'].addEventListener('click', (e) => this.download(e));
  }

  /** Sets mark `which` ('in' | 'out') at the playhead (or at `ms`). */
  mark(which, ms) {
    const st = this.p.state();
    const at = Number.isFinite(ms) ? ms : st.wallClockMs;
    if (!Number.isFinite(at)) return;
    this[which] = Math.round(at);
    this.serverError = '';
    this.render();
  }

  clear() {
    this.in = null;
    this.out = null;
    this.previewTo = null;
    this.serverError = '';
    this.render();
  }

  /** The recording as `checkClip` needs it. */
  recording() {
    const s = this.p.s;
    if (!s || !s.index.segs.length) return null;
    return { wallStart: s.index.wallStart, wallEnd: s.index.wallEnd, discontinuities: this.ui.shape().discontinuities };
  }

  check() {
    const rec = this.recording();
    if (!rec) return { error: 'No recording to clip yet.' };
    return checkClip(this.in, this.out, rec);
  }

  render() {
    const { el } = this;
    const s = this.p.s;
    const show = (ms) => (Number.isFinite(ms) ? `${fmtDay(ms) ? `${fmtDay(ms)} ` : ''}${fmtClock(ms)}` : '--:--:--');
    el['clip-in-time'].textContent = show(this.in);
    el['clip-out-time'].textContent = show(this.out);
    const c = this.check();
    const ok = !c.error;
    const none = this.in == null && this.out == null;
    el['clip-length'].textContent = ok ? `${fmtDuration(c.ms)} marked` : none ? 'Mark a start and an end on the timeline.' : '';
    el['clip-error'].textContent = this.serverError || (ok || none ? '' : c.error);
    el['clip-preview'].disabled = !ok;
    el['clip-link'].disabled = !ok;
    const a = el['clip-download'];
    if (ok && s) {
      a.href = clipUrl(s.base, c.from, c.to, withToken);
      a.download = clipFileName(s.name, c.from);
      a.removeAttribute('aria-disabled');
      a.tabIndex = 0;
    } else {
      a.removeAttribute('href');
      a.setAttribute('aria-disabled', 'true');
      a.tabIndex = -1;
    }
  }

  /** Draws the marked section on the timeline (called every frame by the UI). */
  draw(frac) {
    const band = this.el['clip-band'];
    const a = this.in;
    const b = this.out;
    if (a == null && b == null) { band.hidden = true; return; }
    band.hidden = false;
    const x0 = frac(a != null ? a : b);
    const x1 = frac(b != null ? b : a);
    band.style.left = `${Math.min(x0, x1) * 100}%`;
    band.style.width = `${Math.abs(x1 - x0) * 100}%`;
    band.classList.toggle('single', a == null || b == null);
    band.classList.toggle('previewing', this.previewTo != null);
  }

  preview() {
    const c = this.check();
    if (c.error) { this.render(); return; }
    this.previewTo = c.to;
    this.p.seekWall(c.from);
    this.p.play();
    this.ui.toast(`Previewing the clip (${fmtDuration(c.ms)}) — Esc stops`);
  }

  /** Stops a running preview (Esc); true when there was one. */
  stopPreview() {
    if (this.previewTo == null) return false;
    this.previewTo = null;
    this.p.pause();
    return true;
  }

  /** Every frame: pause a preview at the end of the clip. */
  tick(wall) {
    if (this.previewTo == null || !Number.isFinite(wall)) return;
    if (wall >= this.previewTo - 40) {
      this.previewTo = null;
      this.p.pause();
      this.ui.toast('End of the clip');
    }
  }

  /** Download: ask the server first (HEAD), show its refusal as a sentence, else download. */
  async download(e) {
    e.preventDefault();
    const c = this.check();
    const s = this.p.s;
    if (c.error || !s) { this.render(); return; }
    const url = clipUrl(s.base, c.from, c.to, withToken);
    const a = this.el['clip-download'];
    a.classList.add('busy');
    try {
      const r = await fetch(url, { method: 'HEAD' });
      if (!r.ok) {
        let body = null;
        try { body = await (await fetch(url)).json(); } catch (_) { /* not JSON */ }
        this.serverError = clipErrorSentence(r.status, body, c.ms);
        this.render();
        return;
      }
      this.serverError = '';
      this.render();
      const go = document.createElement('a');
      go.href = url;
      go.download = clipFileName(s.name, c.from);
      document.body.append(go);
      go.click();
      go.remove();
      this.ui.toast(`Downloading ${go.download}`);
    } catch (err) {
      this.serverError = `Could not reach the server to make the clip (${err.message}). Try again in a moment.`;
      this.render();
    } finally {
      a.classList.remove('busy');
    }
  }

  async copyLink() {
    const c = this.check();
    const s = this.p.s;
    if (c.error || !s) return;
    const url = clipLink(`${location.origin}${location.pathname}`, s.name, c.from, c.to, TOKEN);
    try {
      await navigator.clipboard.writeText(url);
      this.ui.toast('Link to this clip copied');
    } catch (_) {
      window.prompt('Link to this clip:', url);
    }
  }
}
