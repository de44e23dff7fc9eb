// Unit tests for the MSE engine's plan (static/mseplan.js) and the native HLS engine's time
// mapping (static/engine-hls.js, with a fake <video>). Run: TZ=Europe/Berlin node --test static/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as plan from '../mseplan.js';
import { TimeIndex } from '../timeindex.js';

// engine-hls.js imports net.js, which reads the page URL's ?token= when loaded.
globalThis.location = new URL('http://localhost/?stream=cam');
const { HlsEngine, playlistWall0, liveWall } = await import('../engine-hls.js');

const A = Date.parse('2026-12-02T15:00:00Z');
const seg = (seq, startMs, wall, durMs = 2000) => ({
  seq, period: 0, start_ms: startMs, duration_ms: durMs, time: new Date(wall).toISOString(), url: `segments/${seq}.m4s`,
});

/** 30 segments of 2 s: media 0..60 s, wall A..A+60 s. */
function index(live = true, n = 30) {
  const ix = new TimeIndex();
  const segments = [];
  for (let i = 0; i < n; i++) segments.push(seg(i + 1, i * 2000, A + i * 2000));
  ix.merge({ live, target_duration_ms: 2000, periods: [{ id: 0, codecs: 'avc1.640028' }], segments });
  return ix;
}

const fresh = (over = {}) => ({ aheadS: plan.AHEAD_S, appended: new Set(), bad: new Set(), canEnd: true, ...over });

test('start, seek and skip land inside the window', () => {
  const ix = index();
  assert.equal(plan.liveMedia(ix), 57);
  assert.equal(plan.startMedia(ix, NaN), 57);
  assert.equal(plan.startMedia(index(false), NaN), 0);
  assert.equal(plan.startMedia(ix, A + 10500), 10.5);
  assert.equal(plan.startMedia(ix, A + 1e9), 59.9);
  assert.equal(plan.seekMedia(ix, A - 5000), 0);
  assert.equal(plan.seekMedia(ix, A + 1e9), 59.9);
  assert.equal(plan.skipMedia(ix, 30, -40), 0);
  assert.equal(plan.skipMedia(ix, 30, 10), 40);
  assert.equal(plan.skipMedia(ix, 50, 10), null, 'past live on a live stream: go live');
  assert.equal(plan.skipMedia(index(false), 50, 30), 59.9);
  // One segment: live is its start, never before the window.
  assert.equal(plan.liveMedia(index(true, 1)), 0);
});

test('periodOf: listed, else the default init and codecs', () => {
  const ix = index();
  assert.equal(plan.periodOf(ix, ix.first).codecs, 'avc1.640028');
  assert.deepEqual(plan.periodOf(ix, { period: 7 }), { id: 7, init: 'init/7.mp4', codecs: 'avc1.42e01e,mp4a.40.2' });
});

test('runs, bufferedAt, overlaps, toWall', () => {
  const tr = { length: 2, start: (i) => [0, 10][i], end: (i) => [4, 12][i] };
  const buf = plan.runs(tr);
  assert.deepEqual(buf, [[0, 4], [10, 12]]);
  assert.deepEqual(plan.runs(null), []);
  assert.deepEqual(plan.bufferedAt(buf, 9.8), [10, 12], '0.3 s slack before a run');
  assert.equal(plan.bufferedAt(buf, 5), null);
  assert.ok(plan.overlaps(buf, { startS: 2, endS: 4 }));
  assert.ok(!plan.overlaps(buf, { startS: 4, endS: 6 }), 'touching is not overlapping');
  assert.deepEqual(plan.toWall(index(), buf), [[A, A + 4000], [A + 10000, A + 12000]]);
});

test('nextJob: a seek fetches the playhead first, then evicts, then fills the look-ahead', () => {
  const ix = index();
  // Nothing buffered at 40 s: fetch the segment there even though 0..4 is stale.
  assert.deepEqual(plan.nextJob(ix, [[0, 4]], 40, fresh()), { type: 'segment', seg: ix.segs[20] });
  // Playing at 40 s from a buffer reaching back to 0: evict what is over 30 s behind.
  assert.deepEqual(plan.nextJob(ix, [[0, 42]], 40, fresh()), { type: 'remove', start: 0, end: 10 });
  // Buffered far ahead of the look-ahead (+15 s): evict the tail.
  const back = index(false, 60);
  assert.deepEqual(plan.nextJob(back, [[0, 90]], 20, fresh()), { type: 'remove', start: 55, end: 91 });
  // Within bounds: the next segment from the end of the run at the playhead.
  assert.equal(plan.nextJob(ix, [[30, 44]], 40, fresh()).seg.seq, 23);
  // Look-ahead full: nothing.
  assert.equal(plan.nextJob(ix, [[30, 60]], 40, fresh({ aheadS: 10 })), null);
});

test('nextSegment skips bad and already-appended segments', () => {
  const ix = index();
  const st = fresh({ bad: new Set([21]), appended: new Set([22]) });
  // 22 is appended and still buffered (40..44 covers 42..44): skipped; 21 is bad.
  assert.equal(plan.nextSegment(ix, [[42, 44]], 40, st).seq, 23);
  // An appended segment that was evicted is fetched again.
  assert.equal(plan.nextSegment(ix, [], 42, fresh({ appended: new Set([22]) })).seq, 22);
  // Past the end of the index: nothing.
  assert.equal(plan.nextSegment(ix, [], 60, fresh()), null);
});

test('nextJob: end of stream only when an ended stream is all in', () => {
  const ix = index(false);
  const all = new Set(ix.segs.map((s) => s.seq));
  assert.deepEqual(plan.nextJob(ix, [[40, 60]], 50, fresh({ appended: all })), { type: 'eos' });
  assert.equal(plan.nextJob(ix, [[40, 60]], 50, fresh({ appended: all, canEnd: false })), null);
  assert.equal(plan.nextJob(index(true), [[40, 60]], 50, fresh({ appended: all })), null, 'live: no end');
  assert.equal(plan.nextJob(ix, [[20, 60]], 30, fresh({ appended: all })), null, 'end still far ahead');
});

test('nextJob: an appended last segment that added nothing to the buffer is not fetched again', () => {
  // The ended stream's last segment (58..60) was appended, but the element's buffered range
  // stops at 58.04 (one frame of video and a tail of audio): without `inert` it would be
  // planned again forever and end of stream never reached.
  const ix = index(false);
  const all = new Set(ix.segs.map((s) => s.seq));
  const buf = [[40, 58.04]];
  assert.equal(plan.nextJob(ix, buf, 58.02, fresh({ appended: all })).seg.seq, 30, 'without inert: refetched');
  const st = fresh({ appended: all, inert: new Set([30]) });
  assert.equal(plan.nextSegment(ix, buf, 58.02, st), null);
  assert.deepEqual(plan.nextJob(ix, buf, 58.02, st), { type: 'eos' });
  // Evicted (no longer appended): fetched again even though it was once inert.
  assert.equal(plan.nextSegment(ix, buf, 58.02, fresh({ inert: new Set([30]) })).seq, 30);
});

test('gapAhead: step to a run starting within 2.5 s once the buffer at the playhead runs out', () => {
  assert.equal(plan.gapAhead([[0, 10], [11, 20]], 9.9), 11);
  assert.equal(plan.gapAhead([[0, 10], [11, 20]], 5), null, 'still 5 s buffered');
  assert.equal(plan.gapAhead([[0, 10], [13, 20]], 10), null, 'too far');
  assert.equal(plan.gapAhead([[12, 20]], 10), 12, 'nothing buffered at all');
});

/** A fake <video> for the HLS engine: media time 0 at `w0` (getStartDate), seekable [lo, hi]. */
function hls({ w0 = NaN, seekable = null, ix = index() } = {}) {
  const video = {
    currentTime: 0,
    getStartDate: () => new Date(w0),
    seekable: seekable ? { length: 1, start: () => seekable[0], end: () => seekable[1] } : { length: 0 },
    canPlayType: () => 'maybe',
  };
  const played = [];
  const player = { video, s: null, play: () => played.push(video.currentTime) };
  const s = { index: ix, base: 'streams/cam/', ac: new AbortController() };
  player.s = s;
  return { e: new HlsEngine(player, s), video, played };
}

test('HLS: media time 0 from getStartDate, else the playlist, else the seekable end', () => {
  assert.equal(playlistWall0('#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:2026-12-02T15:00:00.000Z\n#EXTINF:2,\n1.m4s\n'), A);
  assert.ok(Number.isNaN(playlistWall0('#EXTM3U\n')));
  assert.equal(liveWall(index()), A + 57000);

  const { e } = hls({ w0: A - 10000 });
  assert.equal(e.wallAt(12), A + 2000);
  assert.deepEqual(e.window(), [10, 70]);
  assert.deepEqual(e.bufferedWall(), []);
  assert.equal(e.fetching(), null);

  // No start date and no playlist date yet: the seekable end is the live edge.
  const late = hls({ seekable: [0, 60] });
  assert.equal(late.e.wallAt(50), A + 50000);
  assert.equal(late.e.window(), null);
  late.e.wall0FromPlaylist = A + 1000;
  assert.equal(late.e.wallAt(0), A + 1000);
});

test('HLS: a seek inside the seekable range sets currentTime; skip stops short of live', () => {
  const { e, video, played } = hls({ w0: A, seekable: [0, 60] });
  e.seekWall(A + 20000);
  assert.equal(video.currentTime, 20);
  e.seekWall(A - 5000);
  assert.equal(video.currentTime, 0, 'clamped to the window');
  video.currentTime = 50;
  e.skip(30);
  assert.equal(video.currentTime, 57, 'to live, not past it');
  e.goLive();
  assert.equal(video.currentTime, 57);
  assert.deepEqual(played, [], 'inside the playlist: no reload, no play()');
});

/** `index()` with LL-HLS: 500 ms parts, the last sealed segment's parts listed, and segment 31
 * open with `open` parts. */
function llIndex(open = 2) {
  const ix = new TimeIndex();
  const segments = [];
  const parts = (seq, n) => Array.from({ length: n }, (_, i) => ({
    duration_ms: 500, url: `parts/${seq}.${i}.m4s`, offset: i * 100, length: 100, independent: i === 0,
  }));
  for (let i = 0; i < 30; i++) segments.push({ ...seg(i + 1, i * 2000, A + i * 2000), parts: i === 29 ? parts(30, 4) : [] });
  ix.merge({
    live: true, target_duration_ms: 2000, part_target_ms: 500, periods: [{ id: 0, codecs: 'avc1.640028' }], segments,
    open: { seq: 31, period: 0, start_ms: 60000, time: new Date(A + 60000).toISOString(), parts: parts(31, open) },
  });
  return ix;
}

test('LL-HLS: live is PART-HOLD-BACK (3 parts) behind the newest part; catch-up near live only', () => {
  const ix = llIndex(2);
  assert.equal(ix.edgeS, 61);
  assert.equal(plan.holdBackS(ix), 1.5);
  assert.equal(plan.liveMedia(ix), 59.5);
  assert.equal(ix.knownParts, 2);
  assert.equal(plan.catchUpRate(ix, 59.5), 1);
  assert.equal(plan.catchUpRate(ix, 58), 1.1, '1.5 s late: catch up');
  assert.equal(plan.catchUpRate(ix, 59.3), 1, '0.2 s late: close enough');
  assert.equal(plan.catchUpRate(ix, 40), 1, 'far behind is DVR viewing');
  // Without parts: 1.5 target durations behind the last segment, as before.
  assert.equal(plan.liveMedia(index()), 57);
});

test('LL-HLS: past the sealed segments the plan takes the open segment\'s parts in order', () => {
  const ix = llIndex(3);
  const partsIn = new Map();
  const st = fresh({ partsIn });
  // Playing at live (59.5) with segment 30 in: part 0 of the open segment 31 next.
  const appended = new Set([30]);
  let next = plan.nextSegment(ix, [[58, 60]], 59.5, { ...st, appended });
  assert.equal(next.key, '31.0');
  assert.equal(next.url, 'parts/31.0.m4s');
  assert.deepEqual([next.startS, next.endS, next.offset], [60, 60.5, 0]);
  partsIn.set(31, 1);
  next = plan.nextSegment(ix, [[58, 60.5]], 59.5, { ...st, appended });
  assert.equal(next.key, '31.1');
  partsIn.set(31, 3);
  assert.equal(plan.nextSegment(ix, [[58, 61.5]], 59.5, { ...st, appended }), null, 'all listed parts are in');
  // A part that answered 404 is not asked again; the segment comes whole once sealed.
  partsIn.set(31, 1);
  st.bad.add('31.1');
  assert.equal(plan.nextSegment(ix, [[58, 60.5]], 59.5, { ...st, appended }), null);
});

test('LL-HLS: a segment begun by parts is finished by parts once sealed, never fetched whole', () => {
  const ix = llIndex(2);
  const partsIn = new Map([[30, 2]]); // joined the stream during segment 30
  const st = fresh({ partsIn });
  assert.equal(plan.nextSegment(ix, [[58, 59]], 58.8, st).key, '30.2');
  partsIn.set(30, 4);
  assert.equal(plan.nextSegment(ix, [[58, 60]], 59, st).key, '31.0', 'then the open segment');
  // A sealed segment with no listed parts (renamed upstream) is fetched whole.
  ix.segs[29].parts = [];
  partsIn.set(30, 2);
  const whole = plan.nextSegment(ix, [[58, 59]], 58.8, st);
  assert.equal(whole.seq, 30);
  assert.equal(whole.key, undefined);
});

test('TimeIndex keeps the open segment only while it is newer than the last sealed one', () => {
  const ix = llIndex(2);
  assert.equal(ix.open.key, '31.2');
  ix.merge({ live: true, part_target_ms: 500, segments: [], open: { seq: 31, period: 0, start_ms: 60000, time: new Date(A + 60000).toISOString(), parts: [] } });
  assert.ok(ix.openChanged);
  ix.merge({ live: true, part_target_ms: 500, segments: [{ ...seg(31, 60000, A + 60000), parts: [] }] });
  assert.equal(ix.open, null);
  assert.equal(ix.knownParts, 0);
  ix.merge({ live: false, segments: [] });
  assert.equal(ix.partTargetMs, null, 'an ended stream has no parts');
});

test('TimeIndex without parts (the player without ?ll=1) ignores them', () => {
  const ix = new TimeIndex({ parts: false });
  ix.merge({ live: true, target_duration_ms: 2000, part_target_ms: 500, segments: [seg(1, 0, A)], open: { seq: 2, period: 0, start_ms: 2000, time: new Date(A + 2000).toISOString(), parts: [{ duration_ms: 500, url: 'parts/2.0.m4s', offset: 0, length: 9 }] } });
  assert.equal(ix.open, null);
  assert.equal(ix.partTargetMs, null);
  assert.equal(plan.liveMedia(ix), 0);
  assert.equal(plan.catchUpRate(ix, 0), 1);
});
