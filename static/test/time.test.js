// Unit tests for static/time.js. Run: TZ=Europe/Berlin node --test static/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDuration, resolveTime, fmtClock, fmtDuration, fmtBytes, parseUserTime, zoneName } from '../time.js';

process.env.TZ = 'Europe/Berlin';
const EDGE = Date.parse('2026-12-03T15:00:00Z');

test('parseDuration: SPEC negative durations', () => {
  assert.equal(parseDuration('-30s'), -30000);
  assert.equal(parseDuration('-1h5m'), -3900000);
  assert.equal(parseDuration('-1.5s'), -1500);
  assert.equal(parseDuration('-500ms'), -500);
  assert.ok(Number.isNaN(parseDuration('-5x')));
  assert.ok(Number.isNaN(parseDuration('')));
});

test('resolveTime: RFC 3339, -30s, live, unix ms', () => {
  assert.equal(resolveTime('2026-11-30T15:04:05.250Z', EDGE), Date.parse('2026-11-30T15:04:05.250Z'));
  assert.equal(resolveTime('2026-11-30T16:04:05+01:00', EDGE), Date.parse('2026-11-30T15:04:05Z'));
  assert.equal(resolveTime('-30s', EDGE), EDGE - 30000);
  assert.equal(resolveTime('live', EDGE), EDGE);
  assert.equal(resolveTime('LIVE', EDGE), EDGE);
  assert.equal(resolveTime('1764515045250', EDGE), 1764515045250);
  assert.ok(Number.isNaN(resolveTime('garbage', EDGE)));
  assert.ok(Number.isNaN(resolveTime('', EDGE)));
});

test('formatting: clock in local time, durations, bytes', () => {
  assert.equal(fmtClock(Date.parse('2026-12-03T13:05:09Z')), '14:05:09'); // Berlin = UTC+1
  assert.equal(fmtClock(NaN), '--:--:--');
  assert.equal(fmtDuration(59000), '59 s');
  assert.equal(fmtDuration(61000), '1 min 01 s');
  assert.equal(fmtDuration(86400000), '24 h 00 min');
  assert.equal(fmtBytes(1536), '1.5 KiB');
  assert.equal(zoneName(), 'Europe/Berlin');
});

test('parseUserTime: local times with today/yesterday/date', () => {
  const now = Date.parse('2026-12-03T15:00:00Z'); // 16:00 in Berlin
  assert.equal(parseUserTime('14:05', EDGE, now).ms, Date.parse('2026-12-03T13:05:00Z'));
  assert.equal(parseUserTime('14:05:30', EDGE, now).ms, Date.parse('2026-12-03T13:05:30Z'));
  assert.equal(parseUserTime('yesterday 14:05', EDGE, now).ms, Date.parse('2026-12-02T13:05:00Z'));
  assert.equal(parseUserTime('today 9:00', EDGE, now).ms, Date.parse('2026-12-03T08:00:00Z'));
  assert.equal(parseUserTime('2026-12-02 14:05', EDGE, now).ms, Date.parse('2026-12-02T13:05:00Z'));
  // A bare time later than now means yesterday's.
  assert.equal(parseUserTime('17:00', EDGE, now).ms, Date.parse('2026-12-02T16:00:00Z'));
  // Summer time: 2026-07-01 14:05 in Berlin is UTC+2.
  assert.equal(parseUserTime('2026-07-01 14:05', EDGE, now).ms, Date.parse('2026-07-01T12:05:00Z'));
});

test('parseUserTime: SPEC forms and errors as sentences', () => {
  assert.equal(parseUserTime('-30s', EDGE).ms, EDGE - 30000);
  assert.equal(parseUserTime('live', EDGE).ms, EDGE);
  assert.equal(parseUserTime('2026-11-30T15:04:05Z', EDGE).ms, Date.parse('2026-11-30T15:04:05Z'));
  for (const bad of ['', 'soon', '25:00', '2026-02-30 10:00', '12:61']) {
    const r = parseUserTime(bad, EDGE);
    assert.equal(r.ms, undefined, bad);
    assert.match(r.error, /\.$/, `a sentence for ${JSON.stringify(bad)}`);
  }
});

test('how far behind reads in seconds under a minute, as a duration above', async () => {
  const { fmtBehind } = await import('../time.js');
  assert.equal(fmtBehind(12345), '-12.3 s');
  assert.equal(fmtBehind(0), '-0.0 s');
  assert.equal(fmtBehind(200000), '-3 min 20 s');
  assert.equal(fmtBehind(83675900), '-23 h 14 min');
  assert.equal(fmtBehind(NaN), '');
});
