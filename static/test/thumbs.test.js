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
  made[0].onload();
  assert.equal(l.get(1), made[0]);
  l.get(4); // evicts 2 (1 was used last)
  assert.deepEqual([...l.cache.keys()], [3, 1, 4]);
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
