// PostgresWatch against a real primary/standby pair: zero-loss at start; the standby stopped ->
// broken (commits waiting) within the re-check interval, logged at once; the unprotected limit
// fires once; the standby back -> zero-loss again. With a hand-driven clock: the lapse is logged
// again every minute while it lasts, not more often, and the limit fires after exactly S seconds.
// Never zero-loss since start is not-zero-loss; a server that cannot be reached is unreachable;
// the password appears in no status and no log line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PostgresWatch, type PostgresWatchStatus, type WatchClock } from '../src/postgres/watch.js';
import { freePort } from './helpers/postgres.js';
import { NODE_PASSWORD, pairForFile, setSystem, STANDBY_NAME } from './helpers/postgresPair.js';
import { until } from './helpers/waiting.js';

process.setMaxListeners(50);

const shared = pairForFile();

interface Logged {
  level: string;
  line: string;
  at: number;
}

function recorder(now: () => number): { lines: Logged[]; log: (level: 'info' | 'warn', line: string) => void } {
  const lines: Logged[] = [];
  return { lines, log: (level, line) => lines.push({ level, line, at: now() }) };
}

function assertNoPassword(status: PostgresWatchStatus, lines: Logged[]): void {
  const all = JSON.stringify(status) + lines.map((l) => l.line).join('\n');
  assert.ok(!all.includes(NODE_PASSWORD), 'the password appears in the status or the log');
}

/** A clock that moves only when told to; timers never fire (the test calls checkNow). */
function handClock(): WatchClock & { advance(ms: number): void } {
  let t = Date.parse('2026-01-01T00:00:00Z');
  return { now: () => t, after: () => () => undefined, advance: (ms) => (t += ms) };
}

test('real clock: standby stopped -> broken (commits waiting) within the interval, the limit fires, standby back -> zero-loss', async (t) => {
  const p = shared.pair();
  if (!p) return t.skip(shared.skipReason());
  const { lines, log } = recorder(Date.now);
  let limitAt = 0;
  const intervalMs = 300;
  const watch = new PostgresWatch({ log, intervalMs, unprotectedLimitMs: 1500, onUnprotectedLimit: () => (limitAt = Date.now()) });
  try {
    const first = await watch.start(p.nodeDsn);
    assert.equal(first.state, 'zero-loss');
    assert.deepEqual(
      first.standbys.map((s) => [s.name, s.syncState]),
      [[STANDBY_NAME, 'sync']],
    );
    assert.match(lines[0].line, new RegExp(`^PostgreSQL replication: zero-loss \\(standby ${STANDBY_NAME} sync`));
    assert.ok(first.dsn?.includes('node:***@'));

    await p.standby.stop();
    const stoppedAt = Date.now();
    const broken = await until('broken', () => (watch.status().state === 'broken' ? watch.status() : null), 10_000, 10);
    // Within one interval plus one check's time (generous on a loaded machine).
    assert.ok(Date.now() - stoppedAt < intervalMs + 1500, `broken only after ${Date.now() - stoppedAt} ms`);
    assert.equal(broken.effect, 'commits-wait');
    assert.deepEqual(
      broken.reasons.map((r) => r.code),
      ['standby-disconnected'],
    );
    const lapse = lines.find((l) => l.level === 'warn');
    assert.ok(lapse, 'no warning logged');
    assert.match(lapse.line, /^PostgreSQL replication broken: no standby is connected.*Meanwhile every commit of the node waits on the primary/);

    await until('the limit', () => limitAt > 0, 10_000, 10);
    assert.ok(limitAt - stoppedAt >= 1500, 'the limit fired early');
    assert.ok(lines.some((l) => /past the unprotected limit of 1.5 s/.test(l.line)));

    await p.standby.restart();
    const back = await until('zero-loss again', () => (watch.status().state === 'zero-loss' ? watch.status() : null), 30_000, 10);
    assert.ok(Date.parse(back.lastChange ?? '') >= stoppedAt);
    assert.equal(back.unprotectedSince, null);
    assert.match(lines[lines.length - 1].line, /^PostgreSQL replication: zero-loss again after \d+ s/);
    assertNoPassword(back, lines);
  } finally {
    watch.stop();
    await p.waitSync();
  }
});

test('hand clock: a lapse is logged at once and every minute while it lasts; the limit fires once after S seconds', async (t) => {
  const p = shared.pair();
  if (!p) return t.skip(shared.skipReason());
  const clock = handClock();
  const { lines, log } = recorder(clock.now);
  let fired = 0;
  const watch = new PostgresWatch({ log, clock, unprotectedLimitMs: 120_000, onUnprotectedLimit: () => fired++ });
  try {
    assert.equal((await watch.start(p.nodeDsn)).state, 'zero-loss');
    await setSystem(p, 'synchronous_standby_names', '');
    clock.advance(10_000);
    const broken = await watch.checkNow();
    assert.equal(broken.state, 'broken');
    assert.equal(broken.effect, 'unprotected');
    const warns = (): Logged[] => lines.filter((l) => l.level === 'warn');
    assert.equal(warns().length, 1);
    assert.match(
      warns()[0].line,
      /^PostgreSQL replication broken: synchronous_standby_names is empty.*Meanwhile the node's commits go through without a standby/,
    );
    for (let i = 0; i < 5; i++) {
      clock.advance(10_000);
      await watch.checkNow();
    }
    assert.equal(warns().length, 1, 'logged again within the minute');
    clock.advance(10_000); // 60 s after the first log
    await watch.checkNow();
    assert.equal(warns().length, 2);
    assert.match(warns()[1].line, /^PostgreSQL replication broken for 60 s: synchronous_standby_names is empty/);
    assert.equal(fired, 0);
    clock.advance(60_000); // 120 s unprotected
    await watch.checkNow();
    assert.equal(fired, 1);
    clock.advance(10_000);
    await watch.checkNow();
    assert.equal(fired, 1, 'the limit fired twice in one lapse');
    await setSystem(p, 'synchronous_standby_names', STANDBY_NAME);
    await p.waitSync();
    clock.advance(10_000);
    const back = await watch.checkNow();
    assert.equal(back.state, 'zero-loss');
    assert.equal(back.lastChange, new Date(clock.now()).toISOString());
    assert.match(lines[lines.length - 1].line, /zero-loss again after 140 s/);
  } finally {
    watch.stop();
  }
});

test('never zero-loss since start is not-zero-loss; an unreachable server is unreachable; no password anywhere', async (t) => {
  const p = shared.pair();
  if (!p) return t.skip(shared.skipReason());
  await p.sql('ALTER ROLE node SET synchronous_commit = remote_write');
  const clock = handClock();
  const { lines, log } = recorder(clock.now);
  const watch = new PostgresWatch({ log, clock });
  try {
    const s = await watch.start(p.nodeDsn);
    assert.equal(s.state, 'not-zero-loss');
    assert.deepEqual(
      s.reasons.map((r) => r.code),
      ['role-override'],
    );
    assert.match(lines[0].line, /^PostgreSQL replication NOT zero-loss: synchronous_commit = remote_write/);
  } finally {
    watch.stop();
    await p.sql('ALTER ROLE node RESET synchronous_commit');
  }
  const port = await freePort();
  const gone = new PostgresWatch({ log, clock });
  const s = await gone.start(`postgres://node:${NODE_PASSWORD}@127.0.0.1:${port}/lightningdb`);
  gone.stop();
  assert.equal(s.state, 'unreachable');
  assert.match(s.error ?? '', /nothing accepts connections/);
  assert.match(lines[lines.length - 1].line, /^PostgreSQL replication unreachable: nothing accepts connections/);
  assertNoPassword(s, lines);
});
