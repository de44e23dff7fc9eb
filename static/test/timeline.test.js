// Unit tests for static/timeline.js and static/timeindex.js. Run: TZ=Europe/Berlin node --test static/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tl from '../timeline.js';
import { TimeIndex } from '../timeindex.js';

process.env.TZ = 'Europe/Berlin';
const A = Date.parse('2026-12-02T15:00:00Z');
const WIN = [A, A + 24 * 3600000]; // a 24 h DVR window
const W = 1000; // track width, px

test('px <-> time round-trips and clamps', () => {
  const view = [A, A + 100000];
  assert.equal(tl.timeAtPx(0, W, view), A);
  assert.equal(tl.timeAtPx(W, W, view), A + 100000);
  assert.equal(tl.timeAtPx(500, W, view), A + 50000);
  assert.equal(tl.timeAtPx(-20, W, view), A);
  assert.equal(tl.pxAtTime(A + 25000, W, view), 250);
  assert.equal(tl.frac(A + 1e9, view), 1);
});

test('zoom limits: whole window down to a minute, a pixel <= 1 s at the finest zoom', () => {
  let v = [WIN[0], WIN[1]];
  for (let i = 0; i < 100; i++) v = tl.zoomAt(v, 0.5, A + 3600000, WIN, W);
  assert.equal(v[1] - v[0], 60000);
  assert.ok((v[1] - v[0]) / W <= 1000);
  // On a narrow (phone) track the finest span shrinks so that a pixel stays <= 1 s.
  let p = [WIN[0], WIN[1]];
  for (let i = 0; i < 100; i++) p = tl.zoomAt(p, 0.5, A, WIN, 40);
  assert.ok((p[1] - p[0]) / 40 <= 1000);
  for (let i = 0; i < 100; i++) v = tl.zoomAt(v, 2, A, WIN, W);
  assert.deepEqual(v, WIN);
});

test('zoom keeps the anchor under the pointer', () => {
  const v = tl.zoomAt(WIN, 0.1, A + 6 * 3600000, WIN, W);
  assert.ok(Math.abs(tl.frac(A + 6 * 3600000, v) - 0.25) < 1e-9);
});

test('pan stays inside the window; presets; follow live', () => {
  const v = tl.viewOfSpan(600000, WIN[1], WIN, W);
  assert.deepEqual(v, [WIN[1] - 600000, WIN[1]]);
  assert.deepEqual(tl.pan(v, 5000, WIN, W), v);
  assert.deepEqual(tl.pan(v, -5000, WIN, W), [WIN[1] - 605000, WIN[1] - 5000]);
  assert.deepEqual(tl.viewOfSpan(null, 0, WIN, W), WIN);
  const grown = [WIN[0] + 2000, WIN[1] + 2000];
  assert.deepEqual(tl.follow(v, WIN[1], grown, W), [grown[1] - 600000, grown[1]]);
  const back = [WIN[0] + 1000, WIN[0] + 601000];
  assert.deepEqual(tl.follow(back, WIN[1], grown, W), [grown[0], grown[0] + 600000]);
});

test('tick steps and labels', () => {
  assert.equal(tl.tickStep(24 * 3600000, W), 3 * 3600000);
  assert.equal(tl.tickStep(60000, W), 10000);
  assert.equal(tl.tickStep(600000, W), 60000);
  const t = tl.ticks([A + 1, A + 3600000], 900000);
  assert.equal(t.length, 4);
  assert.equal(tl.tickLabel(t[0], 900000), '16:15');
  assert.equal(tl.tickLabel(A + 5000, 5000), '16:00:05');
});

test('breaks: gaps and discontinuities', () => {
  const segs = [
    { wall: A, wallEnd: A + 2000, period: 0 },
    { wall: A + 2000, wallEnd: A + 4000, period: 0 },
    { wall: A + 60000, wallEnd: A + 62000, period: 1 },
  ];
  const b = tl.breaks(segs);
  assert.deepEqual(b.gaps, [[A + 4000, A + 60000]]);
  assert.deepEqual(b.discontinuities, [A + 60000]);
});

test('TimeIndex: media <-> wall and coverage with a gap', () => {
  const ix = new TimeIndex();
  const seg = (seq, period, startMs, wall) => ({ seq, period, start_ms: startMs, duration_ms: 2000, time: new Date(wall).toISOString(), url: `segments/${seq}.m4s`, length: 10 });
  ix.merge({ live: true, target_duration_ms: 2000, periods: [{ id: 0 }, { id: 1 }], segments: [seg(1, 0, 0, A), seg(2, 0, 2000, A + 2000), seg(3, 1, 4000, A + 60000)] });
  assert.equal(ix.wallAt(1), A + 1000);
  assert.equal(ix.mediaAt(A + 3000), 3);
  assert.equal(ix.mediaAt(A + 30000), 4); // in the gap: the next segment
  assert.deepEqual(ix.coverage(), [[A, A + 4000], [A + 60000, A + 62000]]);
  assert.equal(ix.merge({ segments: [seg(2, 0, 2000, A + 2000)] }), 0);
});

test('prepend adds the older part of the window under a tail, once', () => {
  const doc = (from, to, live = true) => ({
    live,
    target_duration_ms: 2000,
    periods: [{ id: 0, codecs: 'avc1', init: 'init/0.mp4' }],
    segments: Array.from({ length: to - from }, (_, i) => ({
      seq: from + i, period: 0, start_ms: (from + i) * 2000, duration_ms: 2000,
      time: new Date(A + (from + i) * 2000).toISOString(), url: `segments/${from + i}.m4s`, length: 10,
    })),
  });
  const ix = new TimeIndex();
  ix.merge(doc(100, 250));
  const v = ix.version;
  assert.equal(ix.prepend(doc(0, 101, false)), 100); // the overlap (100) is not added twice
  assert.equal(ix.live, true, 'prepend leaves live alone');
  assert.equal(ix.segs.length, 250);
  assert.deepEqual([ix.first.seq, ix.last.seq], [0, 249]);
  assert.ok(ix.segs.every((s, i) => s.seq === i));
  assert.equal(ix.bytes, 2500);
  assert.ok(ix.version > v);
  assert.equal(ix.mediaAt(A + 10000), 10);
  assert.equal(ix.prepend(doc(0, 50)), 0);
});
