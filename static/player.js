/** The playback session: one stream opened on the <video> element. `Player` owns everything
 * that does not depend on how media reaches the element: opening and closing, the first index
 * with its retries, the index follow loop (long-poll while live), the status loop, the SSE
 * events, the error state, the public API (`state()`, seekWall, goLive, skip, wallAt) and the
 * first-frame timing of every seek. How media reaches the element is an engine's business:
 * `MseEngine` (engine-mse.js: Media Source Extensions over index.json + fMP4 segments) or
 * `HlsEngine` (engine-hls.js: the element's native HLS over index.m3u8).
 *
 * Invariants: one Session per opened stream (`player.s`, replaced on every open; a loop or a
 * callback whose session is no longer `player.s` stops); the session chooses the engine once,
 * when the index first lists media: MSE unless `forceHls` or its codecs are unsupported, else
 * native HLS if the element plays it, else the 'unsupported' error. The session alone fetches
 * the index and tells the engine with `onIndex()`; the engine alone touches the element's
 * source. The <video> element is the source of truth for the position: `wallAt(currentTime)`.
 *
 * The Engine interface (MseEngine and HlsEngine; `s` is the Session, `p` the Player):
 *
 * @typedef {object} Engine
 * @property {'mse'|'hls'} mode            what `state().mode` reports
 * @property {(startWall: number) => (Promise<void>|void)} start
 *   Attaches to the element and positions it at wall clock `startWall` (NaN: live when the
 *   stream is live, else the start of the recording). Called once, when the index has media.
 * @property {(ms: number) => void} seekWall  seek to wall clock ms (finite, index has media)
 * @property {() => void} goLive             seek to about 1.5 target durations behind the edge
 * @property {(seconds: number) => void} skip  relative seek, clamped to the window (past live on
 *   a live stream: `p.goLive()`)
 * @property {(t: number) => number} wallAt  wall clock ms of media time t, or NaN
 * @property {() => (number[]|null)} window  the DVR window in media time `[start, end]`, or null
 * @property {() => number[][]} bufferedWall  buffered media as wall-clock runs `[[from, to]]`
 * @property {() => (number|null)} fetching  seq of the segment being fetched, or null
 * @property {() => void} onIndex            the index changed (merge, trim, live flag)
 * @property {() => void} onSeeking          the element's `seeking` (after the session timed it)
 * @property {() => void} onLoadedMetadata   the element's `loadedmetadata`
 * @property {() => void} onTimeUpdate       the element's `timeupdate`
 * @property {() => void} onEnded            the element's `ended`
 * @property {(err: MediaError) => void} onError  the element's `error` (recover or report)
 * @property {() => void} tick               every 250 ms
 * @property {() => void} close              the session is closing (its AbortController is
 *   aborted right before): drop in-flight work
 *
 * An engine may call back `p.play()`, `p.pause()`, `p.open()`, `p.goLive()`, `p.seekWall()`,
 * `p.emit()`, `p.setError()`, `p.netFailure()`, `p.netOk()` and `p.onIndex(s, false)` (after
 * trimming the index itself), and reads `p.s`, `p.error`, `p.video`. */

import { enc, withToken, HttpError, getJSON, sleep, backoffMs, upstreamDown } from './net.js';
import { resolveTime, fmtClock } from './time.js';
import { TimeIndex } from './timeindex.js';
import { MseEngine } from './engine-mse.js';
import { HlsEngine } from './engine-hls.js';
import { periodOf, startMedia } from './mseplan.js';

/** `?snapshot=1`: for a plain `chromium --headless --screenshot --virtual-time-budget=N` run
 * (virtual time stands still while a fetch is pending, so held-open SSE and long-polls are
 * replaced by short polls). Opt-in only; never sniffed from the user agent. */
const SNAPSHOT = new URLSearchParams(location.search).get('snapshot') === '1';
/** `?ll=1`: play LL-HLS parts at the live edge (experimental: see the README). */
const LOW_LATENCY = new URLSearchParams(location.search).get('ll') === '1';
/** Segments fetched first when opening without a deep link (a minute of 2 s segments: enough
 * to start at the live edge; the rest of the window follows). */
const TAIL = 30;

/** One opened stream: its index, loops' AbortController, events and timing records. */
class Session {
  constructor(name, t) {
    this.name = name;
    this.base = `streams/${enc(name)}/`;
    this.ac = new AbortController();
    this.index = new TimeIndex({ parts: LOW_LATENCY });
    this.engine = null; // chosen once the index lists media
    this.kick = new Set(); // wakes the loops early
    this.status = null; // the last status object
    this.es = null; // the EventSource
    this.recoveries = 0; // media recoveries (carried over when a recovery reopens)
    this.lastRecovery = 0;
    this.startT = t;
    this.openedAt = performance.now();
    this.seekMark = null; // the seek (or start-up) waiting for its first frame
    this.startup = null; // { ms, wantWallMs, landedWallMs } of the first frame
    this.lastSeek = null; // the same for the latest completed seek
  }

  /** 'mse', 'hls' or null before an engine is chosen. */
  get mode() { return this.engine ? this.engine.mode : null; }

  /** The MSE SourceBuffer, or null (read-only; `engine.bufferedWall()` is the way to ask). */
  get sb() { return (this.engine && this.engine.sb) || null; }
}

export class Player extends EventTarget {
  constructor(video) {
    super();
    this.video = video;
    this.s = null; // the session of the current stream
    this.error = null;
    this.canMSE = MseEngine.available();
    this.bindVideo();
  }

  /** The current session's engine, or null. */
  get engine() { return this.s ? this.s.engine : null; }

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
    if (s && s.engine) window = s.engine.window();
    else if (ix && ix.segs.length) window = [ix.mediaStart, ix.mediaEnd];
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
      fetching: s && s.engine ? s.engine.fetching() : null,
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
    if (!s || !s.engine || !s.index.segs.length || !Number.isFinite(ms)) return;
    s.engine.seekWall(ms);
  }

  /** Jumps to about 1.5 target durations behind the live edge. */
  goLive() {
    const s = this.s;
    if (!s || !s.engine || !s.index.segs.length) return;
    s.engine.goLive();
    this.play();
  }

  skip(seconds) {
    const s = this.s;
    if (!s || !s.engine || !s.index.segs.length) return;
    s.engine.skip(seconds);
  }

  /** Wall clock of media time t. Before an engine is chosen, the index's own media timeline. */
  wallAt(t) {
    const s = this.s;
    if (!s) return NaN;
    return s.engine ? s.engine.wallAt(t) : s.index.wallAt(t);
  }

  // ---- opening a stream

  async open(name, t) {
    this.close();
    const s = new Session(name, t);
    this.s = s;
    this.error = null;
    this.netError = null;
    this.emit('open', { name });
    this.openEvents(s);
    this.statusLoop(s);

    // The first index, with retries: "not found" is reported but still re-checked (a
    // publisher may be about to start, or a relay may find the stream upstream). Without a
    // deep link only the newest TAIL segments come first (a 24 h index is megabytes); the
    // rest of the window follows in the background (`backfill`).
    const tail = t == null || t === '' || String(t).trim().toLowerCase() === 'live';
    let attempt = 0;
    while (!s.ac.signal.aborted) {
      try {
        this.emit('loading', { message: 'Loading stream…' });
        const doc = await getJSON(`${s.base}index.json${tail ? `?limit=${TAIL}` : ''}`, s.ac.signal);
        s.index.merge(doc);
        if (tail && (doc.segments || []).length >= TAIL) {
          const rest = this.backfill(s);
          if (!doc.live) await rest; // an ended stream starts at its beginning
        }
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

    // Start-up is timed like a seek: from opening the stream to its first frame.
    s.seekMark = {
      kind: 'open',
      at: s.openedAt,
      wantWallMs: Number.isFinite(startWall) ? startWall : ix.wallAt(startMedia(ix, startWall)),
      edgeMs: ix.wallEnd,
    };
    if (this.canMSE && !this.forceHls && MseEngine.supports(ix)) s.engine = new MseEngine(this, s);
    else if (HlsEngine.available(this.video)) s.engine = new HlsEngine(this, s);
    else {
      this.setError('unsupported', 'This browser cannot play the stream',
        this.canMSE ? `Codecs ${periodOf(ix, ix.first).codecs} are not supported.` : 'Neither Media Source Extensions nor HLS is available.');
      return;
    }
    const started = s.engine.start(startWall); // MSE: once the MediaSource is open
    if (started) await started;
    this.play();
  }

  /** Loads the window older than the first segment held and adds it to the index. Retries a
   * few times; the timeline grows when it arrives. */
  async backfill(s) {
    for (let n = 0; n < 5 && !s.ac.signal.aborted; n++) {
      const first = s.index.first;
      if (!first) return;
      try {
        const doc = await getJSON(`${s.base}index.json?to=${encodeURIComponent(new Date(first.wall).toISOString())}`, s.ac.signal);
        if (s.index.prepend(doc) && s === this.s) this.onIndex(s, false);
        return;
      } catch (e) {
        if (s.ac.signal.aborted) return;
        await sleep(backoffMs(n), s.ac.signal);
      }
    }
  }

  close() {
    const s = this.s;
    if (!s) return;
    s.ac.abort();
    if (s.es) s.es.close();
    if (s.engine) s.engine.close();
    this.s = null;
    const v = this.video;
    v.pause();
    v.removeAttribute('src');
    try { v.load(); } catch (_) { /* ignore */ }
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
        else if (ix.live) url = `${s.base}index.json?after=${last.seq}${ix.partTargetMs ? `&part=${ix.knownParts}` : ''}&wait=10s`;
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
        else if (ix.openChanged && s === this.s && s.engine) s.engine.onIndex(); // a new part: media only
        if (!ix.last) await sleep(ix.live ? 1000 : 2000, s.ac.signal, s.kick);
        else if (!ix.live) await sleep(10000, s.ac.signal, s.kick);
        else if (SNAPSHOT) await sleep(1000, s.ac.signal);
        else if (!added && !ix.openChanged) await sleep(200, s.ac.signal); // wait passed with nothing new
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

  /** The index changed (merge, trim, live flag): tell the page, then the engine. */
  onIndex(s, liveChanged) {
    if (s !== this.s) return;
    if (liveChanged) {
      this.emit('live-change', { live: s.index.live });
    }
    this.emit('index', {});
    if (s.engine) s.engine.onIndex();
  }

  // ---- video element wiring: timing here, the rest to the engine

  bindVideo() {
    const v = this.video;
    v.addEventListener('seeking', () => {
      this.markSeek();
      if (this.engine) this.engine.onSeeking();
    });
    v.addEventListener('loadedmetadata', () => { if (this.engine) this.engine.onLoadedMetadata(); });
    for (const ev of ['seeked', 'loadeddata', 'canplay', 'playing']) v.addEventListener(ev, () => this.checkFrame());
    v.addEventListener('timeupdate', () => { if (this.engine) this.engine.onTimeUpdate(); });
    v.addEventListener('ended', () => { if (this.engine) this.engine.onEnded(); });
    v.addEventListener('error', () => {
      const s = this.s;
      if (!s || !v.error) return;
      if (s.engine) s.engine.onError(v.error);
      else this.setError('media', 'Playback failed', v.error.message || `Media error ${v.error.code}`);
    });
    setInterval(() => { if (this.engine) this.engine.tick(); }, 250);
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
}
