/** The Media Source Extensions engine (see the Engine interface in player.js): one MediaSource
 * on the <video> element, one SourceBuffer fed with fMP4 init + media segments fetched by byte
 * range, one job at a time (fetch+append, evict, end of stream) as mseplan.js decides.
 *
 * Invariants: the media timeline is the index's own (segment `start_ms`), so media time <-> wall
 * clock is `TimeIndex.wallAt`/`mediaAt`; at most one segment fetch is in flight (`job`), and a
 * seek that moves away from it aborts it; an init segment is appended only when the period
 * changes (`changeType` on a codec change); only this engine touches its MediaSource and
 * SourceBuffer. It never polls the index: the session calls `onIndex()` when it changed.
 * LL-HLS: at the live edge the plan hands out the open segment's parts, fetched and appended
 * like segments (one at a time, in order); `partsIn` counts the parts of each segment that are
 * in, so a segment begun by parts is never fetched whole as well. Near live, playback runs at
 * `catchUpRate` to get back to the hold-back after a stall.
 * Failures: a 404/410 drops the segment (retention), a network error backs off and retries
 * while playback goes on from the buffer, anything else reopens the session (`recover`) at
 * most three times a minute before it reports 'media'. */

import { HttpError, sleep, isAbort, backoffMs, mime, upstreamDown, fetchBytes, sbOp } from './net.js';
import * as plan from './mseplan.js';

const MSE = window.ManagedMediaSource || window.MediaSource;

export class MseEngine {
  /** Whether this browser has MSE at all. */
  static available() { return !!MSE; }

  /** Whether MSE can play the codecs of the first period of `ix`. */
  static supports(ix) { return MSE.isTypeSupported(mime(plan.periodOf(ix, ix.first).codecs)); }

  /** `player`: the session's Player (video, events, errors); `s`: its Session. */
  constructor(player, s) {
    this.p = player;
    this.s = s;
    this.video = player.video;
    this.mode = 'mse';
    this.ms = null; // the MediaSource
    this.sb = null; // its one SourceBuffer, made with the first init segment
    this.sbPeriod = null; // the period whose init segment the SourceBuffer has
    this.sbCodecs = null;
    this.appended = new Set(); // seqs appended (and, until evicted, buffered)
    this.inert = new Set(); // appended seqs that added nothing to `buffered` (see mseplan.js)
    this.bad = new Set(); // seqs (and part keys) that answered 404/410
    this.partsIn = new Map(); // seq -> how many of its LL-HLS parts are appended
    this.initCache = new Map(); // period id -> init segment bytes
    this.aheadS = plan.AHEAD_S;
    this.failures = 0; // consecutive network failures loading media
    this.pendingStart = null; // media time to position at once metadata is in
    this.job = null; // { seg, ac } of the segment being fetched
    this.pumping = false;
    this.resumeOnLive = false;
    this.stallSince = 0;
  }

  get current() { return this.p.s === this.s; }

  // ---- the Engine interface

  async start(startWall) {
    const s = this.s;
    const startMedia = plan.startMedia(s.index, startWall);
    const ms = new MSE();
    this.ms = ms;
    const v = this.video;
    if (window.ManagedMediaSource && MSE === window.ManagedMediaSource) v.disableRemotePlayback = true;
    const url = URL.createObjectURL(ms);
    const opened = new Promise((r) => ms.addEventListener('sourceopen', r, { once: true }));
    v.src = url;
    await opened;
    URL.revokeObjectURL(url);
    if (s.ac.signal.aborted) return;
    this.pendingStart = startMedia;
    this.syncDuration();
    try { v.currentTime = startMedia; } catch (_) { /* before metadata */ }
    this.p.emit('loading', { message: 'Buffering…', soft: true });
    this.pump();
  }

  seekWall(ms) { this.seekMedia(plan.seekMedia(this.s.index, ms)); }

  goLive() { this.seekMedia(plan.liveMedia(this.s.index)); }

  skip(seconds) {
    const t = plan.skipMedia(this.s.index, this.video.currentTime, seconds);
    if (t == null) this.p.goLive(); else this.seekMedia(t);
  }

  wallAt(t) {
    const ix = this.s.index;
    if (this.video.readyState === 0 && this.pendingStart != null) return ix.wallAt(this.pendingStart);
    return ix.wallAt(t);
  }

  window() {
    const ix = this.s.index;
    return ix.segs.length ? [ix.mediaStart, ix.mediaEnd] : null;
  }

  bufferedWall() {
    return this.sb ? plan.toWall(this.s.index, plan.runs(this.sb.buffered)) : [];
  }

  fetching() { return this.job ? this.job.seg.seq : null; }

  onIndex() { this.pump(); }

  onSeeking() {
    const v = this.video;
    const ix = this.s.index;
    const t = v.currentTime;
    if (v.readyState > 0) this.pendingStart = null;
    this.resumeOnLive = false;
    if (ix.segs.length && t < ix.mediaStart - 0.05) { v.currentTime = ix.mediaStart; return; }
    if (this.job) {
      const seg = this.job.seg;
      if (seg.endS < t - 0.5 || seg.startS > t + this.aheadS) this.job.ac.abort();
    }
    this.pump();
  }

  onLoadedMetadata() {
    if (this.pendingStart == null) return;
    const v = this.video;
    const t = this.pendingStart;
    this.pendingStart = null;
    if (Math.abs(v.currentTime - t) > 0.01) v.currentTime = t;
  }

  onTimeUpdate() { this.pump(); }

  onEnded() { this.resumeOnLive = true; }

  onError(err) { this.recover(new Error(err.message || `media error ${err.code}`)); }

  /** Periodic: keep the buffer topped up and step over small gaps in the media. */
  tick() {
    if (!this.sb) return;
    this.pump();
    const v = this.video;
    const rate = v.paused || v.seeking ? 1 : plan.catchUpRate(this.s.index, v.currentTime);
    if (v.playbackRate !== rate && (v.playbackRate === 1 || v.playbackRate === 1.1)) v.playbackRate = rate;
    const stalled = v.seeking || (!v.paused && v.readyState < 3);
    if (!stalled) { this.stallSince = 0; return; }
    const now = performance.now();
    if (!this.stallSince) { this.stallSince = now; return; }
    if (now - this.stallSince < 600) return;
    const t = v.currentTime;
    const start = plan.gapAhead(plan.runs(this.sb.buffered), t);
    if (start == null) return;
    // Step only over a gap in the media itself, not over a segment still to come.
    const ix = this.s.index;
    const k = ix.indexAtMedia(t);
    const seg = k >= 0 ? ix.segs[k] : null;
    if (!seg || this.appended.has(seg.seq) || this.bad.has(seg.seq)) {
      v.currentTime = start + 0.01;
      this.stallSince = 0;
    }
  }

  close() {
    if (this.job) this.job.ac.abort();
  }

  // ---- the pipeline

  /** Seeks the media element; the `seeking` handler fetches what is needed. */
  seekMedia(t) {
    if (!Number.isFinite(t)) return;
    if (this.video.readyState === 0) this.pendingStart = t;
    this.video.currentTime = t;
  }

  /** Live: duration Infinity + live seekable range over the DVR window. Ended: a duration. */
  syncDuration() {
    const { ms, sb } = this;
    if (!ms || ms.readyState !== 'open' || (sb && sb.updating)) return;
    const ix = this.s.index;
    if (!ix.segs.length) return;
    try {
      if (ix.live && ms.setLiveSeekableRange) {
        if (ms.duration !== Infinity) ms.duration = Infinity;
        ms.setLiveSeekableRange(ix.mediaStart, ix.mediaEnd);
      } else {
        if (ms.clearLiveSeekableRange) ms.clearLiveSeekableRange();
        let d = ix.mediaEnd;
        if (sb && sb.buffered.length) d = Math.max(d, sb.buffered.end(sb.buffered.length - 1));
        if (Math.abs(ms.duration - d) > 0.001 || !Number.isFinite(ms.duration)) ms.duration = d;
      }
    } catch (e) {
      console.warn('dvrgate: duration', e);
    }
  }

  /** The fetch/append/evict scheduler: one job at a time, re-evaluated after each. */
  async pump() {
    if (this.pumping) return;
    const s = this.s;
    this.pumping = true;
    try {
      while (!s.ac.signal.aborted && this.current) {
        this.syncDuration();
        // Playback had run into the end of the recording and the stream is live again:
        // carry on into the new period (once the element is no longer "ended").
        if (this.resumeOnLive && s.index.live && this.ms.duration === Infinity && !this.video.ended) {
          this.resumeOnLive = false;
          if (this.video.paused) this.p.play();
        }
        const job = this.nextJob();
        if (!job) break;
        await this.runJob(job);
      }
    } finally {
      this.pumping = false;
    }
  }

  /** The playhead the buffer is built around. */
  target() {
    return this.video.readyState === 0 && this.pendingStart != null ? this.pendingStart : this.video.currentTime;
  }

  nextJob() {
    const { ms, sb } = this;
    if (!ms || ms.readyState === 'closed') return null;
    return plan.nextJob(this.s.index, plan.runs(sb && sb.buffered), this.target(), {
      aheadS: this.aheadS,
      appended: this.appended,
      inert: this.inert,
      bad: this.bad,
      partsIn: this.partsIn,
      canEnd: ms.readyState === 'open' && !!sb && !sb.updating,
    });
  }

  async runJob(job) {
    const s = this.s;
    const p = this.p;
    try {
      if (job.type === 'remove') {
        await sbOp(this.sb, () => this.sb.remove(job.start, job.end));
        const buf = plan.runs(this.sb.buffered);
        for (const seq of [...this.appended]) {
          const i = s.index.segs.findIndex((x) => x.seq === seq);
          if (i < 0 || !plan.overlaps(buf, s.index.segs[i])) {
            this.appended.delete(seq);
            this.inert.delete(seq);
          }
        }
        for (const seq of [...this.partsIn.keys()]) {
          const seg = s.index.segs.find((x) => x.seq === seq) || (s.index.open && s.index.open.seq === seq ? s.index.open : null);
          if (!seg || !plan.overlaps(buf, seg)) this.partsIn.delete(seq);
        }
      } else if (job.type === 'eos') {
        this.ms.endOfStream();
      } else {
        await this.loadSegment(job.seg);
        if (this.failures) p.netOk();
        this.failures = 0;
        if (p.error && p.error.code === 'network') p.setError(null);
      }
    } catch (e) {
      if (s.ac.signal.aborted) return;
      if (isAbort(e)) return; // a seek moved away from this segment
      if (e instanceof HttpError && (e.status === 404 || e.status === 410)) {
        // Expired by retention (or not there yet): drop it from the plan and move on.
        if (job.seg.key) {
          this.bad.add(job.seg.key); // a part: the segment comes whole once sealed
          await sleep(250, s.ac.signal);
          return;
        }
        this.bad.add(job.seg.seq);
        const first = s.index.first;
        if (first && job.seg.seq <= first.seq + 2 && s.index.trimBefore(job.seg.seq + 1)) p.onIndex(s, false);
        await sleep(250, s.ac.signal);
        return;
      }
      if (e instanceof HttpError || e instanceof TypeError) {
        const wait = backoffMs(this.failures++);
        p.netFailure(`${upstreamDown(e) ? 'Upstream unavailable' : 'Network error'} loading media — retrying in ${Math.ceil(wait / 1000)} s`, wait);
        await sleep(wait, s.ac.signal, s.kick);
        return;
      }
      console.warn('dvrgate: media pipeline', e);
      this.recover(e);
      await sleep(1000, s.ac.signal);
    }
  }

  async loadSegment(seg) {
    const s = this.s;
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    s.ac.signal.addEventListener('abort', onAbort, { once: true });
    this.job = { seg, ac };
    try {
      const period = plan.periodOf(s.index, seg);
      const [init, data] = await Promise.all([
        this.sbPeriod === seg.period ? null : this.fetchInit(period, ac.signal),
        fetchBytes(s.base + seg.url, seg.offset, seg.length, ac.signal),
      ]);
      if (s.ac.signal.aborted) return;
      if (init) {
        this.ensureSourceBuffer(period);
        await this.append(init);
        this.sbPeriod = seg.period;
      }
      await this.append(data);
      if (seg.key) {
        this.partsIn.set(seg.seq, seg.part + 1);
        return;
      }
      this.appended.add(seg.seq);
      if (plan.overlaps(plan.runs(this.sb.buffered), seg)) this.inert.delete(seg.seq);
      else this.inert.add(seg.seq);
      this.bad.delete(seg.seq);
    } finally {
      s.ac.signal.removeEventListener('abort', onAbort);
      if (this.job && this.job.ac === ac) this.job = null;
    }
  }

  async fetchInit(period, signal) {
    let buf = this.initCache.get(period.id);
    if (!buf) {
      buf = await fetchBytes(this.s.base + (period.init || `init/${period.id}.mp4`), 0, 0, signal);
      this.initCache.set(period.id, buf);
    }
    return buf;
  }

  ensureSourceBuffer(period) {
    const type = mime(period.codecs);
    if (!this.sb) {
      this.sb = this.ms.addSourceBuffer(type);
      this.sbCodecs = period.codecs;
      this.sb.addEventListener('error', () => console.warn('dvrgate: SourceBuffer error'));
      return;
    }
    if (this.sbCodecs !== period.codecs) {
      if (this.sb.changeType) this.sb.changeType(type);
      this.sbCodecs = period.codecs;
    }
  }

  async append(data) {
    const sb = this.sb;
    for (let attempt = 0; ; attempt++) {
      try {
        await sbOp(sb, () => sb.appendBuffer(data));
        return;
      } catch (e) {
        if (!e || e.name !== 'QuotaExceededError' || attempt >= 4 || this.s.ac.signal.aborted) throw e;
        // Full: evict hard around the playhead, shrink the look-ahead, and retry.
        this.aheadS = Math.max(6, this.aheadS / 2);
        const t = this.video.currentTime;
        const b = sb.buffered;
        if (b.length && b.start(0) < t - 3) await sbOp(sb, () => sb.remove(0, t - 3));
        if (b.length && b.end(b.length - 1) > t + this.aheadS + 2) {
          await sbOp(sb, () => sb.remove(t + this.aheadS, b.end(b.length - 1) + 1));
        }
        if (attempt) await sleep(1000, this.s.ac.signal);
      }
    }
  }

  /** A fatal media error: reopen the session at the same wall-clock time, a few times. The
   * count lives on the Session and is carried over to the reopened one. */
  recover(e) {
    const { p, s } = this;
    if (!this.current) return;
    const now = Date.now();
    s.recoveries = (s.lastRecovery && now - s.lastRecovery < 60000 ? s.recoveries : 0) + 1;
    s.lastRecovery = now;
    const wall = p.wallAt(this.video.currentTime);
    if (s.recoveries > 3) {
      p.setError('media', 'Playback failed', (e && e.message) || 'The browser could not decode the stream.');
      return;
    }
    p.emit('toast', { message: 'Media error — restarting playback' });
    const wasPaused = this.video.paused;
    const rec = s.recoveries;
    p.open(s.name, Number.isFinite(wall) ? String(Math.round(wall)) : undefined).then(() => {
      if (p.s) { p.s.recoveries = rec; p.s.lastRecovery = now; }
      if (wasPaused) p.pause();
    });
  }
}
