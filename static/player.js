/* dvrgate web player: Media Source Extensions over index.json + fMP4 segments, native HLS
 * fallback. No framework, no build step. The <video> element is the source of truth: its media
 * timeline maps to wall clock through each segment's start_ms <-> time. */
(() => {
  'use strict';

  const BEHIND_S = 30; // media kept behind the playhead
  const AHEAD_S = 20; // media fetched ahead of the playhead
  const MAX_EVENTS = 100;

  // A plain `chromium --headless --screenshot --virtual-time-budget=N` run (no automation):
  // virtual time stands still while any fetch is pending, so a held-open SSE connection or a
  // long-poll would keep the page from ever being "ready". There we poll briefly instead.
  const SNAPSHOT = /HeadlessChrome/.test(navigator.userAgent) && navigator.webdriver === false &&
    new URLSearchParams(location.search).get('snapshot') !== '0';

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  // A play token in the page URL (`?token=`) goes on every request the player makes: the
  // EventSource cannot send headers, so it is always a query parameter. URLs a tokenized
  // index.json lists already carry it. Share links leave it out.
  const TOKEN = new URLSearchParams(location.search).get('token');
  function withToken(url) {
    if (!TOKEN || /[?&]token=/.test(url)) return url;
    return `${url}${url.includes('?') ? '&' : '?'}token=${enc(TOKEN)}`;
  }

  // ---------------------------------------------------------------- utilities

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function fmtClock(ms) {
    if (!Number.isFinite(ms)) return '--:--:--';
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtDay(ms) {
    const d = new Date(ms);
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return '';
    return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  }

  function fmtDuration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (h) return `${h} h ${pad(m)} min`;
    if (m) return `${m} min ${pad(s % 60)} s`;
    return `${s} s`;
  }

  function fmtBytes(n) {
    if (!Number.isFinite(n)) return '';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
  }

  /** "-1h5m", "-30s", "-1.5s", "-500ms" -> signed milliseconds, or NaN. */
  function parseDuration(str) {
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
  function resolveTime(t, liveEdgeMs) {
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

  class HttpError extends Error {
    constructor(status, body, url) {
      super((body && body.description) || `HTTP ${status}`);
      this.status = status;
      this.code = body && body.code;
      this.url = url;
    }
  }

  async function getJSON(url, signal) {
    const r = await fetch(withToken(url), { signal, cache: 'no-cache' });
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) throw new HttpError(r.status, body, url);
    return body;
  }

  function sleep(ms, signal, kick) {
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

  const isAbort = (e) => e && (e.name === 'AbortError' || e.name === 'TimeoutError');

  const backoffMs = (n) => Math.min(15000, 500 * 2 ** Math.min(n, 5)) * (0.8 + Math.random() * 0.4);

  // ---------------------------------------------------------------- the time index

  /** Segments of one stream: media time (s) <-> wall clock (ms). */
  class TimeIndex {
    constructor() {
      this.segs = [];
      this.periods = new Map();
      this.live = false;
      this.targetMs = 2000;
      this.bytes = 0; // media bytes listed
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
        const wall = Date.parse(s.time);
        this.segs.push({
          seq: s.seq,
          period: s.period,
          startS: s.start_ms / 1000,
          endS: (s.start_ms + s.duration_ms) / 1000,
          wall,
          wallEnd: wall + s.duration_ms,
          url: s.url,
          offset: s.offset || 0,
          length: s.length || 0,
        });
        this.bytes += s.length || 0;
        added++;
      }
      return added;
    }

    /** Drops segments older than `seq` (retention). */
    trimBefore(seq) {
      let i = 0;
      while (i < this.segs.length - 1 && this.segs[i].seq < seq) i++;
      for (const s of this.segs.slice(0, i)) this.bytes -= s.length;
      if (i) this.segs.splice(0, i);
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

  // ---------------------------------------------------------------- the player

  const MSE = window.ManagedMediaSource || window.MediaSource;

  class Player extends EventTarget {
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

  function mime(codecs) {
    return `video/mp4; codecs="${codecs}"`;
  }

  function upstreamDown(e) {
    return e instanceof HttpError && (e.status === 502 || e.status === 503 || e.status === 504);
  }

  async function fetchBytes(url, offset, length, signal) {
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

  function sbOp(sb, fn) {
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

  // ---------------------------------------------------------------- the UI

  class UI {
    constructor(player) {
      this.p = player;
      this.v = player.video;
      this.el = {};
      for (const id of ['stream-select', 'badge', 'share', 'screen', 'overlay', 'spinner', 'overlay-title',
        'overlay-detail', 'banner', 'unmute', 'timeline', 'track', 'coverage', 'buffered', 'played', 'edge',
        'head', 'gaps', 'hover', 'hover-time', 'ticks', 'play', 'back', 'fwd', 'live', 'now-time', 'behind', 'mute',
        'fullscreen', 'meta', 'events', 'events-state', 'toast']) this.el[id] = $(id);
      this.streams = [];
      this.drag = null; // wall ms while dragging the timeline
      this.loading = null;
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
          case 'f': case 'F': this.fullscreen(); break;
          case 'm': case 'M': v.muted = !v.muted; break;
          default: return;
        }
        e.preventDefault();
      });

      // Timeline: click or drag anywhere to seek.
      const tl = el.timeline;
      tl.addEventListener('pointerdown', (e) => {
        if (e.button !== 0 || !this.domain()) return;
        tl.setPointerCapture(e.pointerId);
        this.drag = this.wallFromX(e.clientX);
        tl.classList.add('dragging');
        this.showHover(e.clientX);
        e.preventDefault();
      });
      tl.addEventListener('pointermove', (e) => {
        if (!this.domain()) return;
        if (this.drag != null) this.drag = this.wallFromX(e.clientX);
        this.showHover(e.clientX);
      });
      const end = (e, commit) => {
        if (this.drag == null) return;
        const w = this.wallFromX(e.clientX);
        this.drag = null;
        tl.classList.remove('dragging');
        if (commit) p.seekWall(w);
        if (e.pointerType !== 'mouse') el.hover.hidden = true;
      };
      tl.addEventListener('pointerup', (e) => end(e, true));
      tl.addEventListener('pointercancel', (e) => end(e, false));
      tl.addEventListener('pointerleave', () => { if (this.drag == null) el.hover.hidden = true; });

      p.addEventListener('open', (e) => {
        this.clearEvents();
        this.loading = { message: 'Loading stream…' };
        this.setOverlay();
        this.syncPicker(e.detail.name);
        const q = new URLSearchParams(location.search);
        if (q.get('stream') !== e.detail.name || q.has('t')) {
          q.set('stream', e.detail.name);
          q.delete('t');
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
      if (want) this.openStream(want, t);
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
      this.p.open(name, t);
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

    domain() {
      const s = this.p.s;
      if (!s || !s.index.segs.length) return null;
      const a = s.index.wallStart;
      const b = s.index.wallEnd;
      return b > a ? [a, b] : null;
    }

    wallFromX(x) {
      const d = this.domain();
      const r = this.el.track.getBoundingClientRect();
      const f = Math.min(1, Math.max(0, (x - r.left) / r.width));
      return d[0] + f * (d[1] - d[0]);
    }

    frac(w) {
      const d = this.domain();
      return Math.min(1, Math.max(0, (w - d[0]) / (d[1] - d[0])));
    }

    showHover(x) {
      const { el } = this;
      const w = this.wallFromX(x);
      const r = this.el.track.getBoundingClientRect();
      el.hover.hidden = false;
      el.hover.style.left = `${this.frac(w) * 100}%`;
      const st = this.p.s;
      const behind = st && st.index.live ? ` · -${((st.index.wallEnd - w) / 1000).toFixed(1)} s` : '';
      el['hover-time'].textContent = fmtClock(w) + behind;
      const half = el.hover.offsetWidth / 2;
      const px = this.frac(w) * r.width;
      el.hover.style.transform = `translateX(${-Math.min(Math.max(half, px), r.width - half) + px - half}px)`;
    }

    renderCoverage() {
      const d = this.domain();
      const runs = d ? this.p.s.index.coverage() : [];
      this.placeRuns(this.el.coverage, runs, d);
      const gaps = [];
      for (let i = 1; i < runs.length; i++) gaps.push([runs[i - 1][1], runs[i][0]]);
      this.placeRuns(this.el.gaps, gaps, d);
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
      const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200].map((x) => x * 1000);
      const want = Math.max(2, Math.floor(w / 95));
      const step = steps.find((s) => span / s <= want) || steps[steps.length - 1];
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
      const first = Math.ceil(d[0] / step) * step;
      for (let t = first; t <= d[1]; t += step) {
        const x = ((t - d[0]) / span) * w;
        if (x < ends[0] + 40 || x > w - ends[1] - 40) continue;
        const s = document.createElement('span');
        s.style.left = `${(x / w) * 100}%`;
        const dt = new Date(t);
        s.textContent = step >= 60000 ? `${pad(dt.getHours())}:${pad(dt.getMinutes())}` : fmtClock(t);
        box.append(s);
      }
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
      const wall = this.drag != null ? this.drag : st.wallClockMs;
      const f = Number.isFinite(wall) ? this.frac(wall) : 0;
      el.head.style.left = `${f * 100}%`;
      el.played.style.width = `${f * 100}%`;
      el.edge.hidden = !st.live;
      this.renderCoverage();
      this.renderTicks(d);

      // Buffered media, in wall-clock terms.
      const runs = [];
      if (s.mode === 'mse' && s.sb) {
        const b = s.sb.buffered;
        for (let i = 0; i < b.length; i++) runs.push([s.index.wallAt(b.start(i)), s.index.wallAt(b.end(i))]);
      }
      this.placeRuns(el.buffered, runs, d);

      const day = Number.isFinite(wall) ? fmtDay(wall) : '';
      el['now-time'].textContent = (day ? `${day} ` : '') + fmtClock(wall);
      const behind = Number.isFinite(wall) ? Math.max(0, st.liveEdgeMs - wall) : NaN;
      if (st.live) {
        el.behind.textContent = Number.isFinite(behind) ? `-${(behind / 1000).toFixed(1)} s behind live` : '';
      } else {
        let where = '';
        if (Number.isFinite(behind)) where = behind < 50 ? ' · at the end' : ` · -${(behind / 1000).toFixed(1)} s from end`;
        el.behind.textContent = `ended ${fmtClock(st.liveEdgeMs)}${where}`;
      }
      const atLive = st.live && behind < 2.5 * st.targetDurationMs + 1500;
      el.live.classList.toggle('at-live', !!atLive);
      el.timeline.setAttribute('aria-valuemin', String(Math.round(d[0])));
      el.timeline.setAttribute('aria-valuemax', String(Math.round(d[1])));
      if (Number.isFinite(wall)) {
        el.timeline.setAttribute('aria-valuenow', String(Math.round(wall)));
        el.timeline.setAttribute('aria-valuetext', fmtClock(wall));
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

  // ---------------------------------------------------------------- boot

  const video = $('video');
  const player = new Player(video);
  player.forceHls = new URLSearchParams(location.search).get('hls') === '1';
  const ui = new UI(player);
  window.dvrgate = { player, ui, resolveTime, parseDuration };
  ui.start();
})();
