/** The page around the player: stream picker, controls, timeline, status events, toasts. */

import { enc, withToken, getJSON, sleep, isAbort, backoffMs, HttpError } from './net.js';
import { pad, fmtClock, fmtDay, fmtDuration, fmtBytes, fmtBehind, parseDuration, resolveTime, zoneName } from './time.js';
import * as tm from './timeline.js';
import { ThumbLoader } from './thumbs.js';
import { parseUserTime } from './time.js';
import { ClipPanel } from './clippanel.js';
import { Home } from './home.js';
import { marksFromQuery } from './clip.js';

const MAX_EVENTS = 100;
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- the UI

export class UI {
  constructor(player) {
    this.p = player;
    this.v = player.video;
    this.el = {};
    for (const id of ['stream-select', 'badge', 'share', 'screen', 'overlay', 'spinner', 'overlay-title',
      'overlay-detail', 'banner', 'unmute', 'timeline', 'track', 'coverage', 'buffered', 'played', 'edge',
      'head', 'gaps', 'hover', 'hover-time', 'ticks', 'play', 'back', 'fwd', 'live', 'now-time', 'behind', 'mute',
      'fullscreen', 'meta', 'events', 'events-state', 'toast', 'zoom-in', 'zoom-out', 'overview', 'overview-view',
      'help', 'help-close', 'hover-img', 'goto', 'goto-input', 'goto-zone', 'goto-error', 'marks', 'oldest', 'home',
      'home-list', 'home-empty', 'layout']) this.el[id] = $(id);
    this.streams = [];
    this.drag = null; // wall ms while dragging the timeline
    /** The zoomed view `[startMs, endMs]` of the DVR window, or null for the whole window. */
    this.view = null;
    this.viewEdge = NaN; // window end when the view was last placed (to follow live)
    this.loading = null;
    this.shapeOf = null; // {version, runs, gaps, discontinuities} of the current index
    this.clip = new ClipPanel(this);
    this.home = new Home(this.el.home, this.el['home-list'], this.el['home-empty']);
    this.bind();
    requestAnimationFrame(() => this.frame());
  }

  bind() {
    const { el, p, v } = this;
    const btn = (b, fn) => b.addEventListener('click', (e) => { fn(e); if (e.detail) b.blur(); });
    btn(el.play, () => p.togglePlay());
    btn(el.back, () => p.skip(-10));
    btn(el.fwd, () => p.skip(10));
    btn(el.live, () => p.goLive());
    btn(el.mute, () => { v.muted = !v.muted; });
    btn(el.unmute, () => { v.muted = false; el.unmute.hidden = true; p.play(); });
    btn(el.fullscreen, () => this.fullscreen());
    btn(el.share, () => this.share());
    v.addEventListener('click', () => p.togglePlay());
    v.addEventListener('volumechange', () => {
      el.mute.classList.toggle('muted', v.muted);
      if (!v.muted) el.unmute.hidden = true;
    });
    for (const ev of ['play', 'pause', 'playing', 'waiting', 'seeking', 'seeked', 'canplay']) {
      v.addEventListener(ev, () => this.renderPlay());
    }

    el['stream-select'].addEventListener('change', (e) => {
      const name = e.target.value;
      if (name && (!p.s || p.s.name !== name)) this.openStream(name);
      e.target.blur();
    });

    document.addEventListener('keydown', (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const tag = e.target && e.target.tagName;
      if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') return;
      if (tag === 'BUTTON' && (e.key === ' ' || e.key === 'Enter')) return;
      switch (e.key) {
        case ' ': case 'k': case 'K': p.togglePlay(); break;
        case 'ArrowLeft': case 'j': case 'J': p.skip(-10); break;
        case 'ArrowRight': p.skip(10); break;
        case 'l': case 'L': p.goLive(); break;
        case 'Home': { const w = this.windowRange(); if (w) p.seekWall(w[0]); else return; break; }
        case 'End': p.goLive(); break;
        case 'f': case 'F': this.fullscreen(); break;
        case 'm': case 'M': v.muted = !v.muted; break;
        case '+': case '=': this.zoomBy(0.5); break;
        case '-': case '_': this.zoomBy(2); break;
        case '?': this.toggleHelp(); break;
        case 'i': case 'I': this.clip.mark('in'); break;
        case 'o': case 'O': this.clip.mark('out'); break;
        case 'p': case 'P': this.clip.preview(); break;
        case 'Escape':
          if (!el.help.hidden) this.toggleHelp(false);
          else if (!this.clip.stopPreview()) return;
          break;
        default: return;
      }
      e.preventDefault();
    });

    // Zoom: wheel (shift+wheel pans), +/- buttons and keys, presets, the overview strip.
    btn(el['zoom-in'], () => this.zoomBy(0.5));
    btn(el['zoom-out'], () => this.zoomBy(2));
    for (const b of document.querySelectorAll('[data-span]')) {
      btn(b, () => this.zoomTo(b.dataset.span === 'all' ? null : Number(b.dataset.span)));
    }
    btn(el['help-close'], () => this.toggleHelp(false));
    el.goto.addEventListener('submit', (e) => { e.preventDefault(); this.goTo(el['goto-input'].value); });
    el['goto-zone'].textContent = zoneName();
    btn($('help-open'), () => this.toggleHelp(true));
    el.timeline.addEventListener('wheel', (e) => {
      const win = this.windowRange();
      if (!win) return;
      e.preventDefault();
      const d = this.domain();
      const w = el.track.clientWidth;
      if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
        const dx = e.shiftKey ? e.deltaY : e.deltaX;
        this.setView(tm.pan(d, (dx / w) * (d[1] - d[0]), win, w));
      } else if (e.deltaY) {
        this.setView(tm.zoomAt(d, e.deltaY < 0 ? 0.8 : 1.25, this.wallFromX(e.clientX), win, w));
      }
    }, { passive: false });
    const ov = el.overview;
    const ovSeek = (e) => {
      const win = this.windowRange();
      if (!win) return;
      const r = ov.getBoundingClientRect();
      const c = tm.timeAtPx(e.clientX - r.left, r.width, win);
      const d = this.domain();
      this.setView(tm.viewOfSpan(d[1] - d[0], c, win, el.track.clientWidth));
    };
    ov.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      ov.setPointerCapture(e.pointerId);
      this.ovDrag = true;
      ovSeek(e);
      e.preventDefault();
    });
    ov.addEventListener('pointermove', (e) => { if (this.ovDrag) ovSeek(e); });
    ov.addEventListener('pointerup', () => { this.ovDrag = false; });
    ov.addEventListener('pointercancel', () => { this.ovDrag = false; });

    // The time ruler under the track: dragging it moves a zoomed view (the track itself seeks).
    const ruler = el.ticks;
    ruler.addEventListener('pointerdown', (e) => {
      if (e.button !== 0 || !this.view) return;
      ruler.setPointerCapture(e.pointerId);
      this.panDrag = { x: e.clientX, view: this.domain() };
      ruler.classList.add('panning');
      e.stopPropagation();
      e.preventDefault();
    });
    ruler.addEventListener('pointermove', (e) => {
      const g = this.panDrag;
      const win = this.windowRange();
      if (!g || !win) return;
      e.stopPropagation();
      const w = el.track.clientWidth || 1;
      this.setView(tm.pan(g.view, ((g.x - e.clientX) / w) * (g.view[1] - g.view[0]), win, w));
    });
    const unpan = (e) => { if (this.panDrag) { this.panDrag = null; ruler.classList.remove('panning'); e.stopPropagation(); } };
    ruler.addEventListener('pointerup', unpan);
    ruler.addEventListener('pointercancel', unpan);

    // Timeline: click or drag anywhere to seek; two-finger pinch zooms.
    const tl = el.timeline;
    const touches = new Map();
    let pinch = null;
    tl.addEventListener('pointerdown', (e) => {
      if (e.pointerType !== 'touch') return;
      touches.set(e.pointerId, e.clientX);
      if (touches.size === 2 && this.domain()) {
        const [x1, x2] = [...touches.values()];
        pinch = { dist: Math.abs(x1 - x2) || 1, view: this.domain(), mid: this.wallFromX((x1 + x2) / 2) };
        this.drag = null;
        tl.classList.remove('dragging');
      }
    }, true);
    tl.addEventListener('pointermove', (e) => {
      if (!touches.has(e.pointerId)) return;
      touches.set(e.pointerId, e.clientX);
      if (pinch && touches.size === 2) {
        const [x1, x2] = [...touches.values()];
        const win = this.windowRange();
        if (win) this.setView(tm.zoomAt(pinch.view, pinch.dist / (Math.abs(x1 - x2) || 1), pinch.mid, win, el.track.clientWidth));
      }
    }, true);
    const untouch = (e) => { touches.delete(e.pointerId); if (touches.size < 2) pinch = null; };
    tl.addEventListener('pointerup', untouch, true);
    tl.addEventListener('pointercancel', untouch, true);
    tl.addEventListener('pointerdown', (e) => {
      if (e.button !== 0 || !this.domain() || pinch || this.panDrag) return;
      tl.setPointerCapture(e.pointerId);
      this.drag = this.wallFromX(e.clientX);
      tl.classList.add('dragging');
      this.showHover(e.clientX);
      e.preventDefault();
    });
    tl.addEventListener('pointermove', (e) => {
      if (!this.domain()) return;
      if (pinch || this.panDrag) return;
      if (this.drag != null) this.drag = this.wallFromX(e.clientX);
      this.showHover(e.clientX);
    });
    const end = (e, commit) => {
      if (this.drag == null) return;
      const w = this.wallFromX(e.clientX);
      this.drag = null;
      tl.classList.remove('dragging');
      if (commit) p.seekWall(w);
      if (e.pointerType !== 'mouse') { el.hover.hidden = true; this.hoverSeq = null; }
    };
    tl.addEventListener('pointerup', (e) => end(e, true));
    tl.addEventListener('pointercancel', (e) => end(e, false));
    tl.addEventListener('pointerleave', () => { if (this.drag == null) { el.hover.hidden = true; this.hoverSeq = null; } });

    p.addEventListener('open', (e) => {
      this.clearEvents();
      this.loading = { message: 'Loading stream…' };
      this.setOverlay();
      this.syncPicker(e.detail.name);
      const q = new URLSearchParams(location.search);
      if (this.clip.stream !== e.detail.name) {
        if (this.clip.stream !== undefined) this.clip.clear();
        this.clip.stream = e.detail.name;
      }
      if (q.get('stream') !== e.detail.name || q.has('t') || q.has('in') || q.has('out')) {
        q.set('stream', e.detail.name);
        q.delete('t');
        q.delete('in');
        q.delete('out');
        history.replaceState(null, '', `${location.pathname}?${q}`);
      }
      el.meta.textContent = '';
    });
    p.addEventListener('loading', (e) => { this.loading = e.detail; this.setOverlay(); });
    p.addEventListener('index', () => {
      // A relay learns a stream on demand: list it in the picker as soon as it plays.
      if (p.s && !this.streams.some((x) => x.name === p.s.name) && Date.now() - (this.listedAt || 0) > 3000) {
        this.listedAt = Date.now();
        this.refreshStreams();
      }
      if (this.loading && !this.loading.soft) this.loading = null;
      this.setOverlay();
      this.renderBadge();
      this.renderCoverage();
      this.renderMeta();
      this.clip.render();
    });
    p.addEventListener('error-state', () => this.setOverlay());
    p.addEventListener('live-change', (e) => {
      this.renderBadge();
      this.toast(e.detail.live ? 'Stream is live again' : 'Stream ended — still playable as a recording');
      this.refreshStreams();
    });
    p.addEventListener('banner', (e) => this.banner(e.detail.message, e.detail.ttl));
    p.addEventListener('toast', (e) => this.toast(e.detail.message));
    p.addEventListener('status', () => this.renderMeta());
    p.addEventListener('status-event', (e) => this.addEvent(e.detail.event));
    p.addEventListener('events-state', (e) => {
      el['events-state'].className = `events-state ${e.detail.state}`;
      el['events-state'].title = { open: 'Connected', connecting: 'Reconnecting…', closed: 'Disconnected' }[e.detail.state];
    });
    p.addEventListener('autoplay-muted', () => { el.unmute.hidden = false; });
    p.addEventListener('needs-gesture', () => {
      this.loading = { message: 'Click to play', detail: 'Autoplay was blocked by the browser.', gesture: true };
      this.setOverlay();
    });
    el.overlay.addEventListener('click', () => {
      if (this.loading && this.loading.gesture) { this.loading = null; this.setOverlay(); p.play(); }
    });
    v.addEventListener('playing', () => {
      if (this.loading) { this.loading = null; this.setOverlay(); }
    });
    v.addEventListener('canplay', () => {
      if (this.loading && this.loading.soft) { this.loading = null; this.setOverlay(); }
    });
    // Played to the end of a stream that is no longer live.
    v.addEventListener('ended', () => {
      const st = p.state();
      if (st.live || !st.stream || this.loading) return;
      this.loading = {
        message: 'Stream ended',
        detail: `The recording ends at ${fmtClock(st.liveEdgeMs)}. Seek back on the timeline to watch it again; playback resumes if the stream goes live.`,
        idle: true,
        ended: true,
      };
      this.setOverlay();
    });
    v.addEventListener('seeking', () => {
      if (this.loading && this.loading.ended) { this.loading = null; this.setOverlay(); }
    });
    window.addEventListener('resize', () => { this.ticksKey = ''; });
  }

  // ---- boot and the stream list

  async start() {
    const q = new URLSearchParams(location.search);
    const want = q.get('stream');
    const t = q.get('t');
    if (!want) return this.showHome();
    const marks = marksFromQuery(q);
    if (marks) { this.clip.stream = want; this.clip.in = marks.in; this.clip.out = marks.out; }
    this.openStream(want, t);
    let n = 0;
    for (;;) {
      let ok = false;
      try {
        await this.refreshStreams(true);
        ok = true;
        n = 0;
      } catch (e) {
        if (!this.p.s) {
          const wait = backoffMs(n);
          this.loading = { message: 'Cannot reach the server', detail: `${e.message}. Retrying in ${Math.ceil(wait / 1000)} s…`, error: true };
          this.setOverlay();
        }
        n++;
      }
      if (ok && !this.p.s) {
        if (this.streams.length) this.openStream(this.streams[0].name, want ? null : t);
        else {
          this.loading = {
            message: 'No streams yet',
            detail: `Publish one with RTMP, e.g. ffmpeg -re -i input.mp4 -c copy -f flv rtmp://${location.hostname}:1935/live/NAME`,
            idle: true,
          };
          this.setOverlay();
        }
      }
      await sleep(ok ? (this.streams.length ? 10000 : 3000) : backoffMs(n));
    }
  }

  /** The overview at `/`: every stream with its newest thumbnail, state and DVR length. */
  async showHome() {
    const { el } = this;
    el.layout.hidden = true;
    this.home.show(true);
    el.share.hidden = true;
    let n = 0;
    for (;;) {
      try {
        await this.refreshStreams(true);
        this.home.render(this.streams);
        el['home-empty'].textContent = `No streams yet. Publish one with RTMP, e.g. ffmpeg -re -i input.mp4 -c copy -f flv rtmp://${location.hostname}:1935/live/NAME`;
        n = 0;
      } catch (e) {
        el['home-empty'].hidden = false;
        el['home-empty'].textContent = `Cannot reach the server: ${e.message}. Retrying…`;
        n++;
      }
      await sleep(n ? backoffMs(n) : 5000);
    }
  }

  async refreshStreams(throwing) {
    try {
      const list = await getJSON('streams');
      this.streams = Array.isArray(list) ? list : [];
      this.syncPicker(this.p.s ? this.p.s.name : null);
      if (this.p.error && this.p.error.code === 'not-found') this.setOverlay();
    } catch (e) {
      if (throwing) throw e;
    }
  }

  openStream(name, t) {
    if (!this.el.layout.hidden) { this.p.open(name, t); return; }
    // From the overview: a real navigation, so Back returns to it.
    const q = new URLSearchParams({ stream: name });
    const token = new URLSearchParams(location.search).get('token');
    if (token) q.set('token', token);
    location.href = `?${q}`;
  }

  syncPicker(current) {
    const sel = this.el['stream-select'];
    const names = this.streams.map((s) => s.name);
    if (current && !names.includes(current)) names.unshift(current);
    const key = JSON.stringify([names, this.streams.map((s) => s.live), current]);
    if (key === this.pickerKey) return;
    this.pickerKey = key;
    sel.textContent = '';
    if (!names.length) {
      sel.append(new Option('No streams', ''));
      sel.disabled = true;
      return;
    }
    sel.disabled = false;
    if (!current) sel.append(new Option('Choose a stream…', ''));
    for (const name of names) {
      const st = this.streams.find((s) => s.name === name);
      const label = st ? `${st.live ? '● ' : '○ '}${name}${st.live ? '' : ' (ended)'}` : name;
      const o = new Option(label, name);
      sel.append(o);
    }
    sel.value = current || '';
  }

  // ---- overlay, banner, toast

  setOverlay() {
    const { el } = this;
    const err = this.p.error;
    let info = err ? { message: err.message, detail: err.detail, error: true } : this.loading;
    if (err && err.code === 'not-found') {
      const others = this.streams.map((x) => x.name).filter((n) => !this.p.s || n !== this.p.s.name);
      if (others.length) {
        const list = others.slice(0, 5).join(', ') + (others.length > 5 ? '…' : '');
        info = { ...info, detail: `${err.detail} Pick another stream above: ${list}.` };
      }
    }
    if (!info) { el.overlay.hidden = true; return; }
    el.overlay.hidden = false;
    el.overlay.classList.toggle('error', !!info.error);
    el.overlay.classList.toggle('soft', !!info.soft);
    el.overlay.classList.toggle('gesture', !!info.gesture);
    el.spinner.hidden = !!(info.error || info.idle || info.gesture);
    el['overlay-title'].textContent = info.message || '';
    el['overlay-detail'].textContent = info.detail || '';
  }

  banner(message, ttl) {
    const b = this.el.banner;
    if (!message) { b.hidden = true; clearTimeout(this.bannerTimer); return; }
    b.textContent = message;
    b.hidden = false;
    clearTimeout(this.bannerTimer);
    this.bannerTimer = setTimeout(() => { b.hidden = true; }, ttl || 5000);
  }

  toast(message) {
    const t = this.el.toast;
    t.textContent = message;
    t.hidden = false;
    t.classList.add('show');
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { t.classList.remove('show'); t.hidden = true; }, 3500);
  }

  // ---- events panel

  clearEvents() {
    this.el.events.innerHTML = `<li class="empty">No events since ${fmtClock(Date.now())}</li>`;
  }

  addEvent(ev) {
    const list = this.el.events;
    const empty = list.querySelector('.empty');
    if (empty) empty.remove();
    const li = document.createElement('li');
    const level = String(ev.level || 'status').toLowerCase();
    li.className = `ev ${level === 'error' ? 'error' : level === 'warning' ? 'warning' : 'status'}`;
    const ms = Date.parse(ev.time);
    const time = document.createElement('time');
    time.textContent = fmtClock(Number.isFinite(ms) ? ms : Date.now());
    if (Number.isFinite(ms)) time.dateTime = new Date(ms).toISOString();
    const code = document.createElement('span');
    code.className = 'code';
    code.textContent = ev.code || 'event';
    const desc = document.createElement('div');
    desc.className = 'desc';
    let text = ev.description || '';
    if (ev.code === 'ProxyStream.Proxy.Failover' && (ev.from || ev.to)) text = text || `${ev.from} → ${ev.to}`;
    if (ev.upstream && !text.includes(ev.upstream)) text += `${text ? ' ' : ''}(${ev.upstream})`;
    desc.textContent = text;
    li.append(time, code, desc);
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
    if (ev.code === 'ProxyStream.Proxy.Failover') this.toast(`Upstream failover${ev.to ? ` to ${ev.to}` : ''}`);
  }

  // ---- status

  renderBadge() {
    const s = this.p.s;
    const b = this.el.badge;
    if (!s || !s.index.segs.length) { b.hidden = true; return; }
    b.hidden = false;
    b.textContent = s.index.live ? 'LIVE' : 'ENDED';
    b.className = `badge ${s.index.live ? 'on' : 'off'}`;
    this.el.live.disabled = !s.index.live;
  }

  /** The line under the player: picture and DVR window from the index (always current),
   * where the stream comes from from its status object. */
  renderMeta() {
    const s = this.p.s;
    if (!s) return;
    const st = s.status || {};
    const ix = s.index;
    const parts = [];
    const period = ix.last ? ix.periods.get(ix.last.period) : null;
    const width = (period && period.width) || st.width;
    const height = (period && period.height) || st.height;
    const codecs = (period && period.codecs) || st.codecs;
    if (width && height) parts.push(`${width}×${height}`);
    if (codecs) parts.push(codecs);
    if (ix.segs.length) {
      parts.push(`DVR ${fmtDuration(ix.wallEnd - ix.wallStart)}`);
      if (ix.bytes) parts.push(fmtBytes(ix.bytes));
    }
    const node = st.node ? ` on ${st.node}` : '';
    if (st.source && st.source.kind === 'proxy') {
      parts.push(`relayed${node} from ${st.source.upstream || 'upstream'}${st.source.remote && st.source.remote !== st.name ? ` (${st.source.remote})` : ''}`);
    } else if (st.source) parts.push(`recorded${node}`);
    else if (st.node) parts.push(`node ${st.node}`);
    const text = parts.join(' · ');
    if (this.el.meta.textContent !== text) this.el.meta.textContent = text;
  }

  // ---- timeline

  /** The whole DVR window `[oldest, live edge]` in wall-clock ms, or null. */
  windowRange() {
    const s = this.p.s;
    if (!s || !s.index.segs.length) return null;
    const a = s.index.wallStart;
    const b = s.index.wallEnd;
    return b > a ? [a, b] : null;
  }

  /** The visible part of the window (the zoomed view), or null. */
  domain() {
    const win = this.windowRange();
    if (!win) return null;
    if (!this.view) return win;
    return tm.clampView(this.view, win, this.el.track.clientWidth || 600);
  }

  /** Sets the zoomed view (null or the whole window = not zoomed). */
  setView(view) {
    const win = this.windowRange();
    this.view = !view || !win || (view[0] <= win[0] && view[1] >= win[1]) ? null : view;
    this.viewEdge = win ? win[1] : NaN;
    this.ticksKey = '';
    if (win) this.renderOverview(win, this.domain(), this.p.state().wallClockMs);
  }

  /** Zooms by `factor` around the playhead (or the view's centre). */
  zoomBy(factor) {
    const win = this.windowRange();
    if (!win) return;
    const d = this.domain();
    const st = this.p.state();
    const at = Number.isFinite(st.wallClockMs) && st.wallClockMs >= d[0] && st.wallClockMs <= d[1]
      ? st.wallClockMs : (d[0] + d[1]) / 2;
    this.setView(tm.zoomAt(d, factor, at, win, this.el.track.clientWidth));
  }

  /** A preset span (ms; null = all) around the playhead. */
  zoomTo(spanMs) {
    const win = this.windowRange();
    if (!win) return;
    const st = this.p.state();
    const at = Number.isFinite(st.wallClockMs) ? st.wallClockMs : win[1];
    this.setView(tm.viewOfSpan(spanMs, at, win, this.el.track.clientWidth));
  }

  /** Shows/hides the keyboard help (`?`). */
  toggleHelp(show) {
    const h = this.el.help;
    h.hidden = show === undefined ? !h.hidden : !show;
    if (!h.hidden) this.el['help-close'].focus();
  }

  wallFromX(x) {
    const r = this.el.track.getBoundingClientRect();
    return tm.timeAtPx(x - r.left, r.width, this.domain());
  }

  frac(w) {
    return tm.frac(w, this.domain());
  }

  showHover(x) {
    const { el } = this;
    const w = this.wallFromX(x);
    const r = this.el.track.getBoundingClientRect();
    el.hover.hidden = false;
    el.hover.style.left = `${this.frac(w) * 100}%`;
    this.showThumb(w);
    const st = this.p.s;
    const behind = st && st.index.live ? ` · ${fmtBehind(st.index.wallEnd - w)}` : '';
    el['hover-time'].textContent = fmtClock(w) + behind;
    const half = el.hover.offsetWidth / 2;
    const px = this.frac(w) * r.width;
    el.hover.style.transform = `translateX(${-Math.min(Math.max(half, px), r.width - half) + px - half}px)`;
  }

  /** The thumbnail of the segment under wall clock `w`, asked for only when the seq changes;
   * when the pointer moves slowly (under 6 px a move), the segments 8 and 24 px to each side
   * are queued behind it; a fast drag asks for nothing ahead (the loader bounds what is in
   * flight). Until the right one has loaded, the previous picture stays, dimmed; a missing
   * thumbnail (404) leaves only the time. `thumbTimes` records how long each took to show. */
  showThumb(w) {
    const s = this.p.s;
    const img = this.el['hover-img'];
    if (!s || !s.index.segs.length) { img.hidden = true; return; }
    const ix = s.index;
    const seqAt = (t) => { const g = ix.segs[ix.floorMedia(ix.mediaAt(t))]; return g ? g.seq : null; };
    const seq = seqAt(w);
    if (seq == null) { img.hidden = true; return; }
    if (!this.thumbs || this.thumbs.base !== s.base) {
      const base = s.base;
      this.thumbs = new ThumbLoader((q) => withToken(`${base}thumbs/${q}.jpg`));
      this.thumbs.base = base;
      this.thumbTimes = [];
      this.thumbs.onload = (q, loaded) => {
        if (q !== this.hoverSeq || this.el.hover.hidden) return;
        this.placeThumb(loaded);
        this.noteThumb(q, performance.now() - this.hoverAt, 'network');
      };
    }
    const d = this.domain();
    const msPerPx = (d[1] - d[0]) / (this.el.track.clientWidth || 600);
    const slow = Math.abs(w - this.hoverW) / msPerPx < 6;
    this.hoverW = w;
    if (seq === this.hoverSeq) return;
    this.hoverSeq = seq;
    this.hoverAt = performance.now();
    const got = this.thumbs.get(seq);
    const around = [];
    for (const px of slow ? [8, -8, 24, -24] : []) {
      const q = seqAt(Math.min(Math.max(w + px * msPerPx, ix.wallStart), ix.wallEnd - 1));
      if (q != null && q !== seq && !around.includes(q)) around.push(q);
    }
    this.thumbs.preload(around);
    if (got) {
      this.placeThumb(got);
      this.noteThumb(seq, 0, 'page');
    } else img.classList.add('stale');
  }

  placeThumb(loaded) {
    const img = this.el['hover-img'];
    if (img.src !== loaded.src) img.src = loaded.src;
    img.classList.remove('stale');
    img.hidden = false;
  }

  /** Bounded record of hover -> thumbnail on screen (read by bench/player_figures.py). */
  noteThumb(seq, ms, from) {
    this.thumbTimes.push({ seq, ms: Math.round(ms), from });
    if (this.thumbTimes.length > 500) this.thumbTimes.shift();
  }

  /** "Go to": a typed time (local, RFC 3339, -30s, live) -> a seek, or a sentence saying why not. */
  async goTo(text) {
    const { el, p } = this;
    const s = p.s;
    el['goto-error'].textContent = '';
    if (!s || !s.index.segs.length) return;
    const r = parseUserTime(text, s.index.wallEnd);
    if (r.error) { el['goto-error'].textContent = r.error; return; }
    try {
      await getJSON(`${s.base}seek?t=${r.ms}`);
    } catch (e) {
      const when = `${fmtDay(r.ms) || 'Today'} ${fmtClock(r.ms)}`;
      el['goto-error'].textContent = e.code === 'NetStream.Seek.InvalidTime'
        ? `${when} is outside the recording (${fmtClock(s.index.wallStart)} to ${fmtClock(s.index.wallEnd)}${fmtDay(s.index.wallStart) ? `, from ${fmtDay(s.index.wallStart)}` : ''}).`
        : `Could not go to ${when}: ${e.message}.`;
      return;
    }
    p.seekWall(r.ms);
    p.play();
  }

  /** Coverage runs, gaps and discontinuities of the index, computed once per index change
   * (a 24 h window has 43,200 segments: not a walk per frame). */
  shape() {
    const s = this.p.s;
    if (!s) return { runs: [], gaps: [], discontinuities: [] };
    const ix = s.index;
    const key = `${s.name}|${ix.version}`;
    if (!this.shapeOf || this.shapeOf.key !== key) {
      const runs = ix.coverage();
      const gaps = [];
      for (let i = 1; i < runs.length; i++) gaps.push([runs[i - 1][1], runs[i][0]]);
      this.shapeOf = { key, runs, gaps, discontinuities: tm.breaks(ix.segs).discontinuities };
    }
    return this.shapeOf;
  }

  renderCoverage() {
    const d = this.domain();
    const sh = d ? this.shape() : { runs: [], gaps: [], discontinuities: [] };
    this.placeRuns(this.el.coverage, sh.runs, d);
    this.placeRuns(this.el.gaps, sh.gaps, d);
    // Republishes (new periods): a mark each, where visible.
    const marks = d ? sh.discontinuities.filter((t) => t >= d[0] && t <= d[1]) : [];
    const box = this.el.marks;
    while (box.children.length > marks.length) box.lastChild.remove();
    while (box.children.length < marks.length) {
      const i = document.createElement('i');
      i.title = 'Stream restarted here (a new broadcast)';
      box.append(i);
    }
    marks.forEach((t, k) => {
      box.children[k].style.left = `${this.frac(t) * 100}%`;
      box.children[k].dataset.time = fmtClock(t);
    });
    // The oldest moment still recorded, when the view shows it.
    const win = this.windowRange();
    this.el.oldest.hidden = !d || !win || d[0] > win[0];
  }

  placeRuns(container, runs, d) {
    while (container.children.length > runs.length) container.lastChild.remove();
    while (container.children.length < runs.length) container.append(document.createElement('i'));
    runs.forEach((r, i) => {
      const el = container.children[i];
      const a = d ? this.frac(r[0]) : 0;
      const b = d ? this.frac(r[1]) : 0;
      el.style.left = `${a * 100}%`;
      el.style.width = `${Math.max(0, b - a) * 100}%`;
    });
  }

  renderTicks(d) {
    const w = this.el.track.clientWidth || 600;
    const span = d[1] - d[0];
    const key = `${Math.floor(d[0] / 1000)}|${Math.floor(d[1] / 1000)}|${w}`;
    if (key === this.ticksKey) return;
    this.ticksKey = key;
    const step = tm.tickStep(span, w);
    const box = this.el.ticks;
    box.textContent = '';
    const ends = [];
    for (const [t, cls] of [[d[0], 'start'], [d[1], 'end']]) {
      const s = document.createElement('span');
      s.className = cls;
      const day = fmtDay(t);
      s.textContent = (day ? `${day} ` : '') + fmtClock(t);
      box.append(s);
      ends.push(s.offsetWidth || 60);
    }
    for (const t of tm.ticks(d, step)) {
      const x = ((t - d[0]) / span) * w;
      if (x < ends[0] + 40 || x > w - ends[1] - 40) continue;
      const s = document.createElement('span');
      s.style.left = `${(x / w) * 100}%`;
      s.textContent = tm.tickLabel(t, step);
      box.append(s);
    }
  }

  /** The overview strip: the whole window, the zoomed view as a box, the playhead as a line. */
  renderOverview(win, d, wall) {
    const box = this.el['overview-view'];
    const a = tm.frac(d[0], win);
    const b = tm.frac(d[1], win);
    box.style.left = `${a * 100}%`;
    box.style.width = `${Math.max(0.5, (b - a) * 100)}%`;
    this.el.overview.style.setProperty('--head', `${(Number.isFinite(wall) ? tm.frac(wall, win) : 0) * 100}%`);
    this.el.overview.setAttribute('aria-label', `Overview: showing ${fmtDuration(d[1] - d[0])} of ${fmtDuration(win[1] - win[0])}`);
  }

  renderPlay() {
    const v = this.v;
    this.el.play.classList.toggle('playing', !v.paused);
    this.el.play.setAttribute('aria-label', v.paused ? 'Play' : 'Pause');
  }

  frame() {
    requestAnimationFrame(() => this.frame());
    if (document.hidden) return;
    const { el, p, v } = this;
    const s = p.s;
    const d = this.domain();
    this.el.timeline.classList.toggle('disabled', !d);
    const st = p.state();
    el.mute.classList.toggle('muted', v.muted);
    if (!d) {
      el['now-time'].textContent = '--:--:--';
      el.behind.textContent = '';
      el.head.style.left = '0%';
      el.played.style.width = '0%';
      el.edge.hidden = true;
      el.ticks.textContent = '';
      this.ticksKey = '';
      this.placeRuns(el.coverage, [], null);
      this.placeRuns(el.buffered, [], null);
      this.placeRuns(el.gaps, [], null);
      return;
    }
    // A zoomed view showing the live edge follows it while playing there.
    const win = this.windowRange();
    if (this.view && win[1] !== this.viewEdge) {
      if (!v.paused) this.view = tm.follow(this.view, this.viewEdge, win, el.track.clientWidth);
      this.viewEdge = win[1];
    }
    const wall = this.drag != null ? this.drag : st.wallClockMs;
    const f = Number.isFinite(wall) ? this.frac(wall) : 0;
    el.head.hidden = Number.isFinite(wall) && (wall < d[0] - 1 || wall > d[1] + 1);
    this.renderOverview(win, d, wall);
    el.head.style.left = `${f * 100}%`;
    el.played.style.width = `${f * 100}%`;
    el.edge.hidden = !st.live || d[1] < win[1];
    el.timeline.classList.toggle('zoomed', !!this.view);
    this.renderCoverage();
    this.renderTicks(d);

    // Buffered media, in wall-clock terms (the engine knows its buffer).
    this.placeRuns(el.buffered, s.engine ? s.engine.bufferedWall() : [], d);
    this.clip.draw((t) => this.frac(t));
    this.clip.tick(st.wallClockMs);

    const day = Number.isFinite(wall) ? fmtDay(wall) : '';
    el['now-time'].textContent = (day ? `${day} ` : '') + fmtClock(wall);
    const behind = Number.isFinite(wall) ? Math.max(0, st.liveEdgeMs - wall) : NaN;
    if (st.live) {
      el.behind.textContent = Number.isFinite(behind) ? `${fmtBehind(behind)} behind live` : '';
    } else {
      let where = '';
      if (Number.isFinite(behind)) where = behind < 50 ? ' · at the end' : ` · ${fmtBehind(behind)} from end`;
      el.behind.textContent = `ended ${fmtClock(st.liveEdgeMs)}${where}`;
    }
    const atLive = st.live && behind < 2.5 * st.targetDurationMs + 1500;
    el.live.classList.toggle('at-live', !!atLive);
    el.timeline.setAttribute('aria-valuemin', String(Math.round(d[0])));
    el.timeline.setAttribute('aria-valuemax', String(Math.round(d[1])));
    if (Number.isFinite(wall)) {
      el.timeline.setAttribute('aria-valuenow', String(Math.round(wall)));
      el.timeline.setAttribute('aria-valuetext', `${fmtDay(wall) || 'Today'} ${fmtClock(wall)} (${zoneName(wall)})`);
    }
    const waiting = !v.paused && (v.seeking || v.readyState < 3) && !p.error && !this.loading;
    el.screen.classList.toggle('waiting', waiting);
  }

  fullscreen() {
    const screen = this.el.screen;
    if (document.fullscreenElement) { document.exitFullscreen(); return; }
    if (screen.requestFullscreen) screen.requestFullscreen().catch(() => {});
    else if (this.v.webkitEnterFullscreen) this.v.webkitEnterFullscreen();
  }

  async share() {
    const st = this.p.state();
    if (!st.stream) return;
    const q = new URLSearchParams({ stream: st.stream });
    if (Number.isFinite(st.wallClockMs)) q.set('t', new Date(st.wallClockMs).toISOString());
    const url = `${location.origin}${location.pathname}?${q}`;
    try {
      await navigator.clipboard.writeText(url);
      this.toast('Link to this moment copied');
    } catch (_) {
      window.prompt('Link to this moment:', url);
    }
  }
}
