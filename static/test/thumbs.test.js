// Unit tests for static/thumbs.js (a fake Image). Run: node --test static/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ThumbLoader } from '../thumbs.js';

function setup(opts = {}) {
  const made = [];
  let t = 0;
  const l = new ThumbLoader((s) => `thumbs/${s}.jpg`, {
    max: 3, retryMs: 1000, now: () => t, makeImage: () => { const i = {}; made.push(i); return i; }, ...opts,
  });
  return { l, made, tick: (ms) => { t += ms; } };
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
  // The queue holds the newest wish first: where the pointer stopped.
  assert.equal(l.queue[0], 995);
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
