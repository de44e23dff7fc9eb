// Unit tests for static/thumbs.js (a fake Image). Run: node --test static/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ThumbLoader } from '../thumbs.js';

function setup(opts = {}) {
  const made = [];
  const timers = [];
  let t = 0;
  const l = new ThumbLoader((s) => `thumbs/${s}.jpg`, {
    max: 3, retryMs: 1000, gapMs: 0, now: () => t, makeImage: () => { const i = {}; made.push(i); return i; },
    setTimer: (fn, ms) => timers.push([t + ms, fn]), ...opts,
  });
  // Advances the clock, firing due timers.
  const tick = (ms) => {
    t += ms;
    for (;;) {
      const i = timers.findIndex(([at]) => at <= t);
      if (i < 0) break;
      timers.splice(i, 1)[0][1]();
    }
  };
  return { l, made, tick, timers };
}

test('one request per seq, bounded LRU', () => {
  const { l, made } = setup();
  l.get(1); l.get(1); l.preload([1, 2, 3]);
  assert.equal(made.length, 3);
  made[0].onload(); made[1].onload(); made[2].onload();
  assert.equal(l.get(1), made[0]); // used last now
  l.get(4);
  made[3].onload(); // a fourth loaded: the least recently used (2) goes
  assert.deepEqual([...l.cache.keys()], [3, 1, 4]);
});

test('a fast drag asks for a few thumbnails, not one per move', () => {
  const { l, made } = setup({ concurrency: 3, queue: 4, max: 40 });
  // 200 mouse moves, each over another segment, each with 4 neighbours preloaded.
  for (let seq = 0; seq < 1000; seq += 5) { l.get(seq); l.preload([seq + 1, seq - 1, seq + 2, seq - 2]); }
  assert.equal(made.length, 3, 'only the concurrency limit is in flight');
  // The queue holds the newest wish first: where the pointer stopped, and its neighbours.
  assert.equal(l.queue[0], 995);
  assert.ok(l.queue.every((q) => Math.abs(q - 995) <= 2), 'only the last position and its neighbours wait');
  assert.ok(l.queue.length <= 4);
  // As the loads finish, the pointer's segment comes next, then its neighbours.
  made[0].onload();
  assert.match(made[3].src, /thumbs\/995\.jpg$/);
  made[1].onload(); made[2].onload(); made[3].onload();
  assert.ok(made.length <= 3 + 4);
  assert.equal(l.requests, made.length);
});

test('onload reports the seq and the image', () => {
  const { l, made } = setup();
  const seen = [];
  l.onload = (seq, img) => seen.push([seq, img]);
  l.get(9);
  made[0].onload();
  assert.deepEqual(seen, [[9, made[0]]]);
  assert.equal(l.get(9), made[0]);
});

test('a failed seq is not retried for a while', () => {
  const { l, made, tick } = setup();
  l.get(7);
  made[0].onerror();
  assert.equal(l.get(7), null);
  assert.equal(made.length, 1);
  tick(1001);
  l.get(7);
  assert.equal(made.length, 2);
});

test('a drag of 60 moves a second starts about ten loads, the last one where it stopped', () => {
  const { l, made, tick, timers } = setup({ gapMs: 90, concurrency: 3, queue: 4, max: 40 });
  for (let k = 0; k < 60; k++) {
    l.get(k * 40); // every move over another segment
    for (const m of made) if (m.src && !m.done) { m.done = true; m.onload(); } // fast server
    tick(16);
  }
  tick(200);
  for (const m of made) if (!m.done) { m.done = true; m.onload(); }
  assert.ok(made.length >= 9 && made.length <= 13, `${made.length} loads for 60 moves`);
  assert.match(made[made.length - 1].src, /thumbs\/2360\.jpg$/, 'the last load is where the pointer stopped');
  assert.ok(timers.length <= 1, 'at most one timer pending');
});
