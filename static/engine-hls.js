/** The native HLS engine (see the Engine interface in player.js), for browsers without MSE
 * (Safari on iOS): the <video> element plays `index.m3u8` itself, this engine only maps its
 * media time to wall clock and positions it.
 *
 * Invariants: media time 0 is the wall clock `wall0()`, from `getStartDate()` when the browser
 * has it, else from the playlist's first EXT-X-PROGRAM-DATE-TIME (fetched once per load); a seek
 * inside the element's seekable range sets `currentTime`, one outside it reloads the playlist
 * with `?start=` (the server's EXT-X-START); where the browser ignores EXT-X-START, the first
 * `loadedmetadata` after a load seeks there once. No buffer of its own: `bufferedWall()` is
 * empty and there is no periodic work. It never polls the index (the session's `onIndex()`). */

import { enc, withToken } from './net.js';

/** Wall clock (ms) of the first EXT-X-PROGRAM-DATE-TIME of a playlist, or NaN. */
export function playlistWall0(text) {
  const m = /#EXT-X-PROGRAM-DATE-TIME:(\S+)/.exec(text);
  return m ? Date.parse(m[1]) : NaN;
}

/** Where "live" plays, in wall clock: 1.5 target durations behind the live edge. */
export function liveWall(ix) {
  return ix.wallEnd - 1.5 * ix.targetMs;
}

export class HlsEngine {
  /** Whether the element plays HLS itself. */
  static available(video) { return !!video.canPlayType('application/vnd.apple.mpegurl'); }

  /** `player`: the session's Player (video, events, errors); `s`: its Session. */
  constructor(player, s) {
    this.p = player;
    this.s = s;
    this.video = player.video;
    this.mode = 'hls';
    this.startWall = NaN; // the start of the last load, until loadedmetadata checked it
    this.wall0FromPlaylist = NaN; // media time 0 per the playlist, when there is no getStartDate()
  }

  // ---- the Engine interface

  start(startWall) {
    const ix = this.s.index;
    this.load(Number.isFinite(startWall) ? startWall : ix.live ? liveWall(ix) : NaN);
  }

  seekWall(ms) {
    const ix = this.s.index;
    const v = this.video;
    ms = Math.min(Math.max(ms, ix.wallStart), ix.wallEnd - 100);
    const d = this.wall0();
    const r = v.seekable;
    if (Number.isFinite(d)) {
      const t = (ms - d) / 1000;
      const lo = r.length ? r.start(0) : 0;
      const hi = r.length ? r.end(r.length - 1) : Infinity;
      if (t >= lo && t <= hi) { v.currentTime = t; return; }
    }
    // Outside the playlist window: reload the playlist starting there.
    this.load(ms);
    this.p.play();
  }

  goLive() { this.seekWall(liveWall(this.s.index)); }

  skip(seconds) {
    const w = this.wallAt(this.video.currentTime);
    if (Number.isFinite(w)) this.seekWall(Math.min(w + seconds * 1000, liveWall(this.s.index)));
  }

  wallAt(t) {
    const w0 = this.wall0();
    if (Number.isFinite(w0)) return w0 + t * 1000;
    const ix = this.s.index;
    const r = this.video.seekable;
    if (r.length && ix.segs.length) return ix.wallEnd - (r.end(r.length - 1) - t) * 1000;
    return NaN;
  }

  window() {
    const ix = this.s.index;
    const w0 = this.wall0();
    if (!ix.segs.length || !Number.isFinite(w0)) return null;
    return [(ix.wallStart - w0) / 1000, (ix.wallEnd - w0) / 1000];
  }

  /** The element's own buffer is not drawn (as before the split). */
  bufferedWall() { return []; }

  fetching() { return null; }

  onIndex() {}

  onSeeking() {}

  onLoadedMetadata() {
    if (!Number.isFinite(this.startWall)) return;
    // Browsers that ignore EXT-X-START: seek there ourselves.
    const want = this.startWall;
    this.startWall = NaN;
    setTimeout(() => {
      if (this.p.s !== this.s) return;
      const w = this.wallAt(this.video.currentTime);
      if (Number.isFinite(w) && Math.abs(w - want) > 3000) this.p.seekWall(want);
    }, 500);
  }

  onTimeUpdate() {}

  onEnded() {}

  onError(err) { this.p.setError('media', 'Playback failed', err.message || `Media error ${err.code}`); }

  tick() {}

  close() {}

  // ---- the element

  /** Points the element at the playlist, starting at wall clock `startWall` (NaN: the server's
   * default), and learns media time 0 from the playlist in case getStartDate() is missing. */
  load(startWall) {
    const s = this.s;
    let url = `${s.base}index.m3u8`;
    if (Number.isFinite(startWall)) url += `?start=${enc(new Date(startWall).toISOString())}`;
    url = withToken(url);
    this.video.src = url;
    this.startWall = startWall;
    this.wall0FromPlaylist = NaN;
    fetch(url, { signal: s.ac.signal }).then((r) => r.text()).then((text) => {
      const w0 = playlistWall0(text);
      if (!Number.isNaN(w0)) this.wall0FromPlaylist = w0;
    }).catch(() => {});
  }

  /** Wall clock of media time 0, or NaN while unknown. */
  wall0() {
    const d = this.video.getStartDate ? this.video.getStartDate() : null;
    const ms = d && d.getTime();
    if (Number.isFinite(ms) && ms > 0) return ms;
    return this.wall0FromPlaylist;
  }
}
