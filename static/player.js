/** The playback session: one stream opened on the <video> element, fed by Media Source
 * Extensions over index.json + fMP4 segments, or by native HLS where MSE is missing. The
 * <video> element is the source of truth: its media timeline maps to wall clock through each
 * segment's start_ms <-> time. `Player.state()` is the public read-out (also the tests' hook). */

import { enc, withToken, HttpError, getJSON, sleep, isAbort, backoffMs, mime, upstreamDown, fetchBytes, sbOp } from './net.js';
import { resolveTime, fmtClock } from './time.js';
import { TimeIndex } from './timeindex.js';

/** `?snapshot=1`: for a plain `chromium --headless --screenshot --virtual-time-budget=N` run
 * (virtual time stands still while a fetch is pending, so held-open SSE and long-polls are
 * replaced by short polls). Opt-in only; never sniffed from the user agent. */
const SNAPSHOT = new URLSearchParams(location.search).get('snapshot') === '1';

const BEHIND_S = 30; // media kept behind the playhead
const AHEAD_S = 20; // media fetched ahead of the playhead
// ---------------------------------------------------------------- the player

const MSE = window.ManagedMediaSource || window.MediaSource;

export class Player extends EventTarget {
  constructor(video) {
    super();
    this.video = video;
    this.s = null; // the session of the current stream
    this.error = null;
    this.canMSE = !!MSE;
    this.bindVideo();
  }

  // ---- public API (also the test hook)

  state() {
    const s = this.s;
    const v = this.video;
    const ix = s && s.index;
    const live = !!(ix && ix.live);
    const wall = this.wallAt(v.currentTime);
    const edge = ix ? ix.wallEnd : NaN;
    // What the element itself says is seekable (MSE: the live seekable range over the DVR
    // window), and the window per the index, in media time.
    const r = v.seekable;
    const seekable = r.length ? [r.start(0), r.end(r.length - 1)] : null;
    let window = null;
    if (s && s.mode === 'hls') {
      if (ix.segs.length && Number.isFinite(this.hlsWall0())) {
        window = [(ix.wallStart - this.hlsWall0()) / 1000, (ix.wallEnd - this.hlsWall0()) / 1000];
      }
    } else if (ix && ix.segs.length) window = [ix.mediaStart, ix.mediaEnd];
    return {
      stream: s ? s.name : null,
      live,
      ended: !!(ix && ix.segs.length && !ix.live),
      mode: s ? s.mode : null,
      currentTime: v.currentTime,
      wallClockMs: Number.isFinite(wall) ? Math.round(wall) : null,
      liveEdgeMs: Number.isFinite(edge) ? edge : null,
      behindLiveMs: Number.isFinite(wall) && Number.isFinite(edge) ? Math.max(0, Math.round(edge - wall)) : null,
      dvrStartMs: ix && ix.segs.length ? ix.wallStart : null,
      paused: v.paused,
      seeking: v.seeking,
      readyState: v.readyState,
      seekable,
      window,
      targetDurationMs: ix ? ix.targetMs : null,
      fetching: s && s.job ? s.job.seg.seq : null,
      startup: s && s.startup ? { ...s.startup } : null,
      lastSeek: s && s.lastSeek ? { ...s.lastSeek } : null,
      error: this.error ? this.error.message : this.netError ? this.netError.message : null,
      errorCode: this.error ? this.error.code : this.netError ? 'network' : null,
    };
  }

  play() {
    const p = this.video.play();
    if (p && p.catch) {
      return p.catch((e) => {
        if (e && e.name === 'NotAllowedError' && !this.video.muted) {
          this.video.muted = true;
          this.emit('autoplay-muted');
          return this.video.play().catch(() => this.emit('needs-gesture'));
        }
        if (e && e.name === 'NotAllowedError') this.emit('needs-gesture');
        return undefined;
      });
    }
    return Promise.resolve();
  }

  pause() { this.video.pause(); }

  togglePlay() {
    if (this.video.paused) this.play(); else this.pause();
  }

  /** Seeks to wall-clock ms. */
  seekWall(ms) {
    const s = this.s;
    if (!s || !s.index.segs.length || !Number.isFinite(ms)) return;
    if (s.mode === 'hls') return this.seekWallHls(ms);
    const ix = s.index;
    let t = ix.mediaAt(ms);
    t = Math.min(Math.max(t, ix.mediaStart), Math.max(ix.mediaStart, ix.mediaEnd - 0.1));
    this.seekMedia(t);
  }

  /** Jumps to about 1.5 target durations behind the live edge. */
  goLive() {
    const s = this.s;
    if (!s || !s.index.segs.length) return;
    if (s.mode === 'hls') {
      this.seekWall(s.index.wallEnd - 1.5 * s.index.targetMs);
    } else {
      this.seekMedia(this.liveTarget());
    }
    this.play();
  }

  skip(seconds) {
    const s = this.s;
    if (!s || !s.index.segs.length) return;
    const v = this.video;
    if (s.mode === 'hls') {
      const w = this.wallAt(v.currentTime);
      if (Number.isFinite(w)) this.seekWall(Math.min(w + seconds * 1000, s.index.wallEnd - 1.5 * s.index.targetMs));
      return;
    }
    const ix = s.index;
    let t = v.currentTime + seconds;
    if (seconds > 0 && t > this.liveTarget()) {
      if (ix.live) { this.goLive(); return; }
      t = Math.min(t, ix.mediaEnd - 0.1);
    }
    this.seekMedia(Math.max(t, ix.mediaStart));
  }

  /** Seeks the media element; the `seeking` handler fetches what is needed. */
  seekMedia(t) {
    const s = this.s;
    if (!s || !Number.isFinite(t)) return;
    if (this.video.readyState === 0) s.pendingStart = t;
    this.video.currentTime = t;
  }

  liveTarget() {
    const ix = this.s.index;
    return Math.max(ix.mediaStart, ix.mediaEnd - (1.5 * ix.targetMs) / 1000);
  }

  wallAt(t) {
    const s = this.s;
    if (!s) return NaN;
    if (s.mode === 'hls') {
      const w0 = this.hlsWall0();
      if (Number.isFinite(w0)) return w0 + t * 1000;
      const r = this.video.seekable;
      if (r.length && s.index.segs.length) return s.index.wallEnd - (r.end(r.length - 1) - t) * 1000;
      return NaN;
    }
    if (this.video.readyState === 0 && s.pendingStart != null) return s.index.wallAt(s.pendingStart);
    return s.index.wallAt(t);
  }

  // ---- opening a stream

  async open(name, t) {
    this.close();
    const s = {
      name,
      base: `streams/${enc(name)}/`,
      ac: new AbortController(),
      index: new TimeIndex(),
      mode: null,
      kick: new Set(), // wakes the follow loop early
      appended: new Set(),
      bad: new Set(),
      initCache: new Map(),
      sbPeriod: null,
      sbCodecs: null,
      aheadS: AHEAD_S,
      failures: 0,
      recoveries: 0,
      startT: t,
      openedAt: performance.now(),
      seekMark: null, // the seek (or start-up) waiting for its first frame
      startup: null, // { ms, wantWallMs, landedWallMs } of the first frame
      lastSeek: null, // the same for the latest completed seek
    };
    this.s = s;
    this.error = null;
    this.netError = null;
    this.emit('open', { name });
    this.openEvents(s);
    this.statusLoop(s);

    // The first index, with retries: "not found" is reported but still re-checked (a
    // publisher may be about to start, or a relay may find the stream upstream).
    let attempt = 0;
    while (!s.ac.signal.aborted) {
      try {
        this.emit('loading', { message: 'Loading stream…' });
        const doc = await getJSON(`${s.base}index.json`, s.ac.signal);
        s.index.merge(doc);
        this.setError(null);
        break;
      } catch (e) {
        if (s.ac.signal.aborted) return;
        if (e instanceof HttpError && e.status === 404) {
          this.setError('not-found', `Stream “${name}” not found`, 'It may not have been published yet. Checking again…');
          await sleep(5000, s.ac.signal, s.kick);
        } else if (e instanceof HttpError && e.status === 400) {
          this.setError('bad-name', `“${name}” is not a valid stream name`, e.message);
          return;
        } else {
          const wait = backoffMs(attempt++);
          this.setError('network', upstreamDown(e) ? 'Upstream unavailable' : 'Cannot reach the server',
            `${e.message}. Retrying in ${Math.ceil(wait / 1000)} s…`);
          await sleep(wait, s.ac.signal, s.kick);
        }
      }
    }
    if (s.ac.signal.aborted) return;
    this.followLoop(s);
    await this.waitForSegments(s);
    if (s.ac.signal.aborted) return;
    this.emit('index', {});

    // Where to start: the deep link, else near live, else the start of the recording.
    const ix = s.index;
    let startWall = NaN;
    if (t != null && t !== '') {
      const tl = String(t).trim().toLowerCase();
      startWall = tl === 'live' ? NaN : resolveTime(t, ix.wallEnd);
      if (tl !== 'live' && !Number.isFinite(startWall)) this.emit('toast', { message: `Ignoring invalid time “${t}”` });
      if (Number.isFinite(startWall) && (startWall < ix.wallStart - 1000 || startWall > ix.wallEnd + 1000)) {
        this.emit('toast', { message: `${fmtClock(startWall)} is outside the recording; starting ${ix.live ? 'live' : 'at the start'}` });
        startWall = NaN;
      }
    }
    let startMedia;
    if (Number.isFinite(startWall)) startMedia = Math.min(ix.mediaAt(startWall), Math.max(ix.mediaStart, ix.mediaEnd - 0.1));
    else if (ix.live) startMedia = this.liveTarget();
    else startMedia = ix.mediaStart;

    // Start-up is timed like a seek: from opening the stream to its first frame.
    s.seekMark = {
      kind: 'open',
      at: s.openedAt,
      wantWallMs: Number.isFinite(startWall) ? startWall : ix.wallAt(startMedia),
      edgeMs: ix.wallEnd,
    };
    if (this.canMSE && !this.forceHls && this.supported(s)) await this.startMSE(s, startMedia);
    else if (this.video.canPlayType('application/vnd.apple.mpegurl')) {
      this.startHLS(s, Number.isFinite(startWall) ? startWall : ix.live ? ix.wallEnd - 1.5 * ix.targetMs : NaN);
    }
    else {
      this.setError('unsupported', 'This browser cannot play the stream',
        this.canMSE ? `Codecs ${this.periodOf(s, ix.first).codecs} are not supported.` : 'Neither Media Source Extensions nor HLS is available.');
      return;
    }
    this.play();
  }

  close() {
    const s = this.s;
    if (!s) return;
    s.ac.abort();
    if (s.es) s.es.close();
    if (s.job) s.job.ac.abort();
    this.s = null;
    const v = this.video;
    v.pause();
    v.removeAttribute('src');
    try { v.load(); } catch (_) { /* ignore */ }
  }

  supported(s) {
    const p = this.periodOf(s, s.index.first);
    return MSE.isTypeSupported(mime(p.codecs));
  }

  periodOf(s, seg) {
    return s.index.periods.get(seg.period) || { id: seg.period, init: `init/${seg.period}.mp4`, codecs: 'avc1.42e01e,mp4a.40.2' };
  }

  async waitForSegments(s) {
    while (!s.ac.signal.aborted && !s.index.segs.length) {
      this.emit('loading', { message: 'Waiting for the stream to start…', detail: 'No media recorded yet.' });
      await sleep(2000, s.ac.signal, s.kick);
    }
  }

  setError(code, message, detail) {
    const prev = this.error;
    this.error = code ? { code, message, detail } : null;
    if (code || prev) this.emit('error-state', { error: this.error });
  }

  /** A transient network failure: playback goes on from the buffer while we retry. */
  netFailure(message, wait) {
    this.netError = { message, at: Date.now() };
    this.emit('banner', { message, ttl: wait + 1500 });
  }

  netOk() {
    if (!this.netError) return;
    this.netError = null;
    this.emit('banner', { message: '', ttl: 0 });
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  // ---- loops: live index, status, events

  /** Long-polls index.json?after=LAST&wait=10s while live; checks slowly for a republish otherwise. */
  async followLoop(s) {
    let n = 0;
    while (!s.ac.signal.aborted) {
      const ix = s.index;
      const last = ix.last;
      try {
        let url;
        if (!last) url = `${s.base}index.json`;
        else if (ix.live && SNAPSHOT) url = `${s.base}index.json?after=${last.seq}`;
        else if (ix.live) url = `${s.base}index.json?after=${last.seq}&wait=10s`;
        else url = `${s.base}index.json?after=${last.seq}`;
        const wasLive = ix.live;
        const doc = await getJSON(url, s.ac.signal);
        if (s.ac.signal.aborted) return;
        const added = ix.merge(doc);
        // The first media (a relay may list none yet when it has just learnt the stream):
        // wake whoever waits for it rather than letting them sleep out their poll.
        if (added && ix.segs.length === added) for (const k of [...s.kick]) k();
        if (n || (this.error && this.error.code === 'network')) this.setError(null);
        if (n) this.netOk();
        n = 0;
        if (added || wasLive !== ix.live) this.onIndex(s, wasLive !== ix.live);
        if (!ix.last) await sleep(ix.live ? 1000 : 2000, s.ac.signal, s.kick);
        else if (!ix.live) await sleep(10000, s.ac.signal, s.kick);
        else if (SNAPSHOT) await sleep(1000, s.ac.signal);
        else if (!added) await sleep(200, s.ac.signal); // wait passed with nothing new
      } catch (e) {
        if (s.ac.signal.aborted) return;
        if (e instanceof HttpError && e.status === 404) {
          // The stream went away (a relay dropped it); keep what we have playable.
          if (ix.live) { ix.live = false; this.onIndex(s, true); }
          await sleep(10000, s.ac.signal, s.kick);
          continue;
        }
        const wait = backoffMs(n++);
        this.netFailure(`${upstreamDown(e) ? 'Upstream unavailable' : 'Connection lost'} — retrying in ${Math.ceil(wait / 1000)} s`, wait);
        await sleep(wait, s.ac.signal, s.kick);
      }
    }
  }

  /** Refreshes the status object (meta line, retention). */
  async statusLoop(s) {
    while (!s.ac.signal.aborted) {
      try {
        const st = await getJSON(`streams/${enc(s.name)}`, s.ac.signal);
        s.status = st;
        const first = st && st.dvr && st.dvr.first_seq;
        if (Number.isInteger(first) && s.index.segs.length && s.index.trimBefore(first)) this.onIndex(s, false);
        this.emit('status', { status: st });
      } catch (_) { /* the index loops report errors */ }
      await sleep(s.status ? 30000 : 5000, s.ac.signal, s.kick);
    }
  }

  openEvents(s) {
    if (!window.EventSource || SNAPSHOT) return;
    const es = new EventSource(withToken(`${s.base}events`));
    s.es = es;
    es.onopen = () => this.emit('events-state', { state: 'open' });
    es.onerror = () => this.emit('events-state', { state: es.readyState === 2 ? 'closed' : 'connecting' });
    es.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (_) { return; }
      if (!ev || typeof ev !== 'object') return;
      this.emit('status-event', { event: ev });
      switch (ev.code) {
        case 'NetStream.Publish.Start':
        case 'NetStream.Unpublish.Success':
        case 'NetStream.Record.Start':
        case 'NetStream.Record.Stop':
        case 'ProxyStream.Proxy.Failover':
        case 'ProxyStream.Proxy.Start':
          for (const k of [...s.kick]) k();
          break;
        default:
      }
    };
  }

  onIndex(s, liveChanged) {
    if (s !== this.s) return;
    if (liveChanged) {
      this.emit('live-change', { live: s.index.live });
    }
    this.emit('index', {});
    if (s.mode === 'mse') this.pump(s);
  }

  // ---- MSE

  async startMSE(s, startMedia) {
    s.mode = 'mse';
    const ms = new MSE();
    s.ms = ms;
    const v = this.video;
    if (window.ManagedMediaSource && MSE === window.ManagedMediaSource) v.disableRemotePlayback = true;
    const url = URL.createObjectURL(ms);
    const opened = new Promise((r) => ms.addEventListener('sourceopen', r, { once: true }));
    v.src = url;
    await opened;
    URL.revokeObjectURL(url);
    if (s.ac.signal.aborted) return;
    s.pendingStart = startMedia;
    this.syncDuration(s);
    try { v.currentTime = startMedia; } catch (_) { /* before metadata */ }
    this.emit('loading', { message: 'Buffering…', soft: true });
    this.pump(s);
  }

  /** Live: duration Infinity + live seekable range over the DVR window. Ended: a duration. */
  syncDuration(s) {
    const ms = s.ms;
    if (!ms || ms.readyState !== 'open' || (s.sb && s.sb.updating)) return;
    const ix = s.index;
    if (!ix.segs.length) return;
    try {
      if (ix.live && ms.setLiveSeekableRange) {
        if (ms.duration !== Infinity) ms.duration = Infinity;
        ms.setLiveSeekableRange(ix.mediaStart, ix.mediaEnd);
      } else {
        if (ms.clearLiveSeekableRange) ms.clearLiveSeekableRange();
        let d = ix.mediaEnd;
        if (s.sb && s.sb.buffered.length) d = Math.max(d, s.sb.buffered.end(s.sb.buffered.length - 1));
        if (Math.abs(ms.duration - d) > 0.001 || !Number.isFinite(ms.duration)) ms.duration = d;
      }
    } catch (e) {
      console.warn('dvrgate: duration', e);
    }
  }

  /** The fetch/append/evict scheduler: one job at a time, re-evaluated after each. */
  async pump(s) {
    if (!s || s.pumping || s.mode !== 'mse') return;
    s.pumping = true;
    try {
      while (!s.ac.signal.aborted && s === this.s) {
        this.syncDuration(s);
        // Playback had run into the end of the recording and the stream is live again:
        // carry on into the new period (once the element is no longer "ended").
        if (s.resumeOnLive && s.index.live && s.ms.duration === Infinity && !this.video.ended) {
          s.resumeOnLive = false;
          if (this.video.paused) this.play();
        }
        const job = this.nextJob(s);
        if (!job) break;
        await this.runJob(s, job);
      }
    } finally {
      s.pumping = false;
    }
  }

  /** The playhead the buffer is built around. */
  target(s) {
    return this.video.readyState === 0 && s.pendingStart != null ? s.pendingStart : this.video.currentTime;
  }

  nextJob(s) {
    const ms = s.ms;
    if (!ms || ms.readyState === 'closed') return null;
    const t = this.target(s);
    const ix = s.index;
    // Nothing to play at the playhead (a seek): fetch that first, evict afterwards.
    if (!this.bufferedRange(s, t)) {
      const seg = this.nextSegment(s, t);
      if (seg) return { type: 'segment', seg };
    }
    if (s.sb) {
      const b = s.sb.buffered;
      if (b.length) {
        const keepFrom = t - BEHIND_S;
        if (b.start(0) < keepFrom - 2) return { type: 'remove', start: 0, end: keepFrom };
        const keepTo = t + s.aheadS + 15;
        const end = b.end(b.length - 1);
        if (end > keepTo + 2) return { type: 'remove', start: keepTo, end: end + 1 };
      }
    }
    const seg = this.nextSegment(s, t);
    if (seg) return { type: 'segment', seg };
    // Everything up to the end of an ended stream is in: let playback end.
    if (!ix.live && ms.readyState === 'open' && s.sb && !s.sb.updating && ix.last &&
        s.appended.has(ix.last.seq) && t > ix.mediaEnd - s.aheadS) {
      return { type: 'eos' };
    }
    return null;
  }

  bufferedRange(s, t) {
    if (!s.sb) return null;
    const b = s.sb.buffered;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) - 0.3 <= t && t <= b.end(i) + 0.05) return [b.start(i), b.end(i)];
    }
    return null;
  }

  overlapsBuffered(s, seg) {
    if (!s.sb) return false;
    const b = s.sb.buffered;
    const eps = Math.min(0.05, (seg.endS - seg.startS) / 4);
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) < seg.endS - eps && b.end(i) > seg.startS + eps) return true;
    }
    return false;
  }

  nextSegment(s, t) {
    const ix = s.index;
    if (!ix.segs.length) return null;
    const r = this.bufferedRange(s, t);
    const from = r ? Math.max(t, r[1]) : t;
    if (from >= t + s.aheadS) return null;
    let i = ix.indexAtMedia(Math.max(from, ix.mediaStart));
    if (i < 0) return null;
    for (; i < ix.segs.length; i++) {
      const seg = ix.segs[i];
      if (seg.startS > t + s.aheadS) return null;
      if (s.bad.has(seg.seq)) continue;
      if (s.appended.has(seg.seq) && this.overlapsBuffered(s, seg)) continue;
      return seg;
    }
    return null;
  }

  async runJob(s, job) {
    try {
      if (job.type === 'remove') {
        await sbOp(s.sb, () => s.sb.remove(job.start, job.end));
        for (const seq of [...s.appended]) {
          const i = s.index.segs.findIndex((x) => x.seq === seq);
          if (i < 0 || !this.overlapsBuffered(s, s.index.segs[i])) s.appended.delete(seq);
        }
      } else if (job.type === 'eos') {
        s.ms.endOfStream();
      } else {
        await this.loadSegment(s, job.seg);
        if (s.failures) this.netOk();
        s.failures = 0;
        if (this.error && this.error.code === 'network') this.setError(null);
      }
    } catch (e) {
      if (s.ac.signal.aborted) return;
      if (isAbort(e)) return; // a seek moved away from this segment
      if (e instanceof HttpError && (e.status === 404 || e.status === 410)) {
        // Expired by retention (or not there yet): drop it from the plan and move on.
        s.bad.add(job.seg.seq);
        const first = s.index.first;
        if (first && job.seg.seq <= first.seq + 2 && s.index.trimBefore(job.seg.seq + 1)) this.onIndex(s, false);
        await sleep(250, s.ac.signal);
        return;
      }
      if (e instanceof HttpError || e instanceof TypeError) {
        const wait = backoffMs(s.failures++);
        this.netFailure(`${upstreamDown(e) ? 'Upstream unavailable' : 'Network error'} loading media — retrying in ${Math.ceil(wait / 1000)} s`, wait);
        await sleep(wait, s.ac.signal, s.kick);
        return;
      }
      console.warn('dvrgate: media pipeline', e);
      this.recover(s, e);
      await sleep(1000, s.ac.signal);
    }
  }

  async loadSegment(s, seg) {
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    s.ac.signal.addEventListener('abort', onAbort, { once: true });
    s.job = { seg, ac };
    try {
      const period = this.periodOf(s, seg);
      const [init, data] = await Promise.all([
        s.sbPeriod === seg.period ? null : this.fetchInit(s, period, ac.signal),
        fetchBytes(s.base + seg.url, seg.offset, seg.length, ac.signal),
      ]);
      if (s.ac.signal.aborted) return;
      if (init) {
        this.ensureSourceBuffer(s, period);
        await this.append(s, init);
        s.sbPeriod = seg.period;
      }
      await this.append(s, data);
      s.appended.add(seg.seq);
      s.bad.delete(seg.seq);
    } finally {
      s.ac.signal.removeEventListener('abort', onAbort);
      if (s.job && s.job.ac === ac) s.job = null;
    }
  }

  async fetchInit(s, period, signal) {
    let buf = s.initCache.get(period.id);
    if (!buf) {
      buf = await fetchBytes(s.base + (period.init || `init/${period.id}.mp4`), 0, 0, signal);
      s.initCache.set(period.id, buf);
    }
    return buf;
  }

  ensureSourceBuffer(s, period) {
    const type = mime(period.codecs);
    if (!s.sb) {
      s.sb = s.ms.addSourceBuffer(type);
      s.sbCodecs = period.codecs;
      s.sb.addEventListener('error', () => console.warn('dvrgate: SourceBuffer error'));
      return;
    }
    if (s.sbCodecs !== period.codecs) {
      if (s.sb.changeType) s.sb.changeType(type);
      s.sbCodecs = period.codecs;
    }
  }

  async append(s, data) {
    for (let attempt = 0; ; attempt++) {
      try {
        await sbOp(s.sb, () => s.sb.appendBuffer(data));
        return;
      } catch (e) {
        if (!e || e.name !== 'QuotaExceededError' || attempt >= 4 || s.ac.signal.aborted) throw e;
        // Full: evict hard around the playhead, shrink the look-ahead, and retry.
        s.aheadS = Math.max(6, s.aheadS / 2);
        const t = this.video.currentTime;
        const b = s.sb.buffered;
        if (b.length && b.start(0) < t - 3) await sbOp(s.sb, () => s.sb.remove(0, t - 3));
        if (b.length && b.end(b.length - 1) > t + s.aheadS + 2) {
          await sbOp(s.sb, () => s.sb.remove(t + s.aheadS, b.end(b.length - 1) + 1));
        }
        if (attempt) await sleep(1000, s.ac.signal);
      }
    }
  }

  /** A fatal media error: reopen at the same wall-clock time, a few times. */
  recover(s, e) {
    if (s !== this.s) return;
    const now = Date.now();
    s.recoveries = (s.lastRecovery && now - s.lastRecovery < 60000 ? s.recoveries : 0) + 1;
    s.lastRecovery = now;
    const wall = this.wallAt(this.video.currentTime);
    if (s.recoveries > 3) {
      this.setError('media', 'Playback failed', (e && e.message) || 'The browser could not decode the stream.');
      return;
    }
    this.emit('toast', { message: 'Media error — restarting playback' });
    const wasPaused = this.video.paused;
    const rec = s.recoveries;
    this.open(s.name, Number.isFinite(wall) ? String(Math.round(wall)) : undefined).then(() => {
      if (this.s) { this.s.recoveries = rec; this.s.lastRecovery = now; }
      if (wasPaused) this.pause();
    });
  }

  // ---- native HLS (Safari iOS without MSE)

  startHLS(s, startWall) {
    s.mode = 'hls';
    let url = `${s.base}index.m3u8`;
    if (Number.isFinite(startWall)) url += `?start=${enc(new Date(startWall).toISOString())}`;
    url = withToken(url);
    this.video.src = url;
    s.hlsStart = startWall;
    // The wall clock of media time 0 when the browser has no getStartDate(): the playlist's
    // first EXT-X-PROGRAM-DATE-TIME.
    s.hlsWall0 = NaN;
    fetch(url, { signal: s.ac.signal }).then((r) => r.text()).then((text) => {
      const m = /#EXT-X-PROGRAM-DATE-TIME:(\S+)/.exec(text);
      if (m) s.hlsWall0 = Date.parse(m[1]);
    }).catch(() => {});
  }

  hlsWall0() {
    const s = this.s;
    const d = this.video.getStartDate ? this.video.getStartDate() : null;
    const ms = d && d.getTime();
    if (Number.isFinite(ms) && ms > 0) return ms;
    return s ? s.hlsWall0 : NaN;
  }

  seekWallHls(ms) {
    const s = this.s;
    const v = this.video;
    ms = Math.min(Math.max(ms, s.index.wallStart), s.index.wallEnd - 100);
    const d = this.hlsWall0();
    const r = v.seekable;
    if (Number.isFinite(d)) {
      const t = (ms - d) / 1000;
      const lo = r.length ? r.start(0) : 0;
      const hi = r.length ? r.end(r.length - 1) : Infinity;
      if (t >= lo && t <= hi) { v.currentTime = t; return; }
    }
    // Outside the playlist window: reload the playlist starting there.
    this.startHLS(s, ms);
    this.play();
  }

  // ---- video element wiring

  bindVideo() {
    const v = this.video;
    v.addEventListener('seeking', () => {
      const s = this.s;
      this.markSeek();
      if (!s || s.mode !== 'mse') return;
      const ix = s.index;
      const t = v.currentTime;
      if (v.readyState > 0) s.pendingStart = null;
      s.resumeOnLive = false;
      if (ix.segs.length && t < ix.mediaStart - 0.05) { v.currentTime = ix.mediaStart; return; }
      if (s.job) {
        const seg = s.job.seg;
        if (seg.endS < t - 0.5 || seg.startS > t + s.aheadS) s.job.ac.abort();
      }
      this.pump(s);
    });
    v.addEventListener('loadedmetadata', () => {
      const s = this.s;
      if (s && s.mode === 'hls' && Number.isFinite(s.hlsStart)) {
        // Browsers that ignore EXT-X-START: seek there ourselves.
        const want = s.hlsStart;
        s.hlsStart = NaN;
        setTimeout(() => {
          const w = this.wallAt(v.currentTime);
          if (this.s === s && Number.isFinite(w) && Math.abs(w - want) > 3000) this.seekWall(want);
        }, 500);
      }
      if (s && s.mode === 'mse' && s.pendingStart != null) {
        const t = s.pendingStart;
        s.pendingStart = null;
        if (Math.abs(v.currentTime - t) > 0.01) v.currentTime = t;
      }
    });
    for (const ev of ['seeked', 'loadeddata', 'canplay', 'playing']) v.addEventListener(ev, () => this.checkFrame());
    v.addEventListener('timeupdate', () => this.s && this.pump(this.s));
    v.addEventListener('ended', () => { if (this.s) this.s.resumeOnLive = true; });
    v.addEventListener('error', () => {
      const s = this.s;
      if (!s || !v.error) return;
      if (s.mode === 'mse') this.recover(s, new Error(v.error.message || `media error ${v.error.code}`));
      else this.setError('media', 'Playback failed', v.error.message || `Media error ${v.error.code}`);
    });
    setInterval(() => this.tick(), 250);
  }

  /** A seek started (the element's `seeking`, whoever set currentTime): time it to its first frame. */
  markSeek() {
    const s = this.s;
    if (!s) return;
    const m = s.seekMark;
    // Positioning the element during start-up belongs to the start-up.
    if (m && !m.done && m.kind === 'open') return;
    s.seekMark = {
      kind: 'seek',
      at: performance.now(),
      wantWallMs: this.wallAt(this.video.currentTime),
      edgeMs: s.index.wallEnd,
    };
  }

  /** Once a seek has completed, the next frame presented is its first. */
  checkFrame() {
    const s = this.s;
    const v = this.video;
    const m = s && s.seekMark;
    if (!m || m.done || m.waiting || v.seeking || v.readyState < 2) return;
    m.waiting = true;
    m.seekedAt = performance.now();
    const finish = (mediaTime, at) => {
      if (m.done || s !== this.s || s.seekMark !== m) return;
      m.done = true;
      const landed = this.wallAt(mediaTime);
      const rec = {
        kind: m.kind,
        ms: Math.round(at - m.at),
        seekedMs: Math.round(m.seekedAt - m.at), // media in place; the rest is decode + paint
        wantWallMs: Number.isFinite(m.wantWallMs) ? Math.round(m.wantWallMs) : null,
        landedWallMs: Number.isFinite(landed) ? Math.round(landed) : null,
        // The live edge when the seek started (LIVE lands relative to it).
        edgeAtSeekMs: Number.isFinite(m.edgeMs) ? m.edgeMs : null,
      };
      if (m.kind === 'open') s.startup = rec;
      s.lastSeek = rec;
      this.emit('first-frame', rec);
    };
    if (v.requestVideoFrameCallback) {
      v.requestVideoFrameCallback((now, meta) => finish(meta.mediaTime, meta.presentationTime || now));
    } else finish(v.currentTime, performance.now());
  }

  /** Periodic: keep the buffer topped up and step over small gaps in the media. */
  tick() {
    const s = this.s;
    if (!s || s.mode !== 'mse' || !s.sb) return;
    this.pump(s);
    const v = this.video;
    const stalled = v.seeking || (!v.paused && v.readyState < 3);
    if (!stalled) { s.stallSince = 0; return; }
    const now = performance.now();
    if (!s.stallSince) { s.stallSince = now; return; }
    if (now - s.stallSince < 600) return;
    const t = v.currentTime;
    const b = s.sb.buffered;
    let end = t;
    for (let i = 0; i < b.length; i++) if (b.start(i) <= t + 0.01 && b.end(i) >= t) end = b.end(i);
    if (end - t > 0.3) return;
    for (let i = 0; i < b.length; i++) {
      const start = b.start(i);
      if (start > t && start - t < 2.5) {
        const k = s.index.indexAtMedia(t);
        const seg = k >= 0 ? s.index.segs[k] : null;
        if (!seg || s.appended.has(seg.seq) || s.bad.has(seg.seq)) {
          v.currentTime = start + 0.01;
          s.stallSince = 0;
        }
        return;
      }
    }
  }
}
