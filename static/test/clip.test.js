// Unit tests for static/clip.js and the pure parts of static/home.js.
// Run: TZ=Europe/Berlin node --test static/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkClip, clipErrorSentence, clipUrl, clipFileName, clipLink, marksFromQuery } from '../clip.js';
import { cardSummary, cardSource } from '../home.js';

process.env.TZ = 'Europe/Berlin';
const A = Date.parse('2026-12-02T15:00:00Z');
const REC = { wallStart: A, wallEnd: A + 3600000, discontinuities: [A + 1800000] };

test('a clip needs both marks, in order, inside the recording', () => {
  assert.match(checkClip(null, null, REC).error, /starts \(I\) and where it ends \(O\)/);
  assert.match(checkClip(A + 1000, null, REC).error, /ends \(O\)/);
  assert.match(checkClip(null, A + 1000, REC).error, /starts \(I\)/);
  assert.match(checkClip(A + 1000, A + 1200, REC).error, /empty/);
  // Marks set the wrong way round are swapped, not refused.
  assert.deepEqual(checkClip(A + 60000, A + 10000, REC), { from: A + 10000, to: A + 60000, ms: 50000 });
  // An end past the live edge is cut to it.
  assert.deepEqual(checkClip(A + 3500000, A + 3700000, REC), { from: A + 3500000, to: A + 3600000, ms: 100000 });
  assert.match(checkClip(A - 60000, A + 10000, REC).error, /no longer in the recording.*16:00:00/);
  assert.match(checkClip(A - 90000, A - 60000, REC).error, /no longer in the recording/);
  assert.match(checkClip(A + 4000000, A + 4100000, REC).error, /after the end/);
});

test('a clip across a republish is refused with the time of the restart', () => {
  const r = checkClip(A + 1700000, A + 1900000, REC);
  assert.equal(r.cut, A + 1800000);
  assert.match(r.error, /restart of the broadcast at Dec 2 16:30:00/);
  // Ending exactly at the restart or starting there is fine.
  assert.ok(!checkClip(A + 1700000, A + 1800000, REC).error);
  assert.ok(!checkClip(A + 1800000, A + 1900000, REC).error);
});

test('server refusals become sentences, never codes', () => {
  const long = clipErrorSentence(400, { code: 'NetStream.Failed', description: 'clips are at most 600 s long (http.max_clip); ask for a shorter section' }, 900000);
  assert.equal(long, 'This clip is 15 min 00 s long; this server makes clips of at most 10 min 00 s. Move the marks closer together.');
  const disc = clipErrorSentence(400, { description: 'the section crosses a discontinuity at 2026-12-02T15:30:00.000Z (a republish or format change); ask for a clip that ends before it or starts there' });
  assert.match(disc, /restart of the broadcast at Dec 2 16:30:00/);
  assert.match(clipErrorSentence(404, { code: 'NetStream.Seek.InvalidTime', description: 'x' }), /no longer in the recording/);
  assert.match(clipErrorSentence(403, null), /access token/);
  assert.match(clipErrorSentence(502, null), /could not reach/);
  assert.equal(clipErrorSentence(400, { description: 'bad time' }), 'The clip was refused: bad time.');
  for (const s of [400, 401, 404, 409, 500, 502]) assert.doesNotMatch(clipErrorSentence(s, { code: 'NetStream.X', description: '' }), /NetStream/);
});

test('clip URL, file name and link', () => {
  assert.equal(clipUrl('streams/cam/', A, A + 5000), 'streams/cam/clip.mp4?from=2026-12-02T15%3A00%3A00.000Z&to=2026-12-02T15%3A00%3A05.000Z');
  assert.equal(clipUrl('streams/cam/', A, A + 5000, (u) => `${u}&token=t`).endsWith('&token=t'), true);
  assert.equal(clipFileName('cam', A + 250), 'cam-2026-12-02T150000.250Z.mp4');
  const link = clipLink('https://x/', 'cam', A, A + 5000, 'tok');
  const q = new URL(link).searchParams;
  assert.equal(q.get('stream'), 'cam');
  assert.equal(q.get('token'), 'tok');
  assert.deepEqual(marksFromQuery(q), { in: A, out: A + 5000 });
  assert.equal(marksFromQuery(new URLSearchParams('stream=cam')), null);
  assert.deepEqual(marksFromQuery(new URLSearchParams('in=garbage&out=2026-12-02T15:00:00Z')), { in: null, out: A });
});

test('overview cards say state, DVR length and source', () => {
  const live = { name: 'cam', live: true, width: 1280, height: 720, dvr: { duration_ms: 3720000, bytes: 1048576 }, source: { kind: 'ingest' } };
  assert.equal(cardSummary(live), 'Live · DVR 1 h 02 min · 1.0 MiB');
  assert.equal(cardSource(live), '1280×720 · recorded here');
  const ended = { name: 'b', live: false, dvr: { end: new Date(Date.now()).toISOString(), duration_ms: 180000 }, source: { kind: 'proxy', upstream: 'http://o:8080' } };
  assert.match(cardSummary(ended), /^Ended \d\d:\d\d:\d\d · DVR 3 min 00 s$/);
  assert.equal(cardSource(ended), 'relayed from http://o:8080');
  assert.equal(cardSummary({ live: false, dvr: {} }), 'Ended');
});
