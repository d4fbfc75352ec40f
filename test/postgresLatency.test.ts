// What zero-loss costs on this machine, on a real primary/standby pair: the commit latency of the
// node's role with synchronous_commit on, remote_write and local, interleaved in one run (medians
// printed); and what it buys: with the standby gone an `on` commit waits until it is back, while a
// `local` one returns at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { SkipError } from './helpers/postgres.js';
import { runSql, startPair } from './helpers/postgresPair.js';
import { sleep } from './helpers/waiting.js';

const MODES = ['on', 'remote_write', 'local'] as const;
const ROUNDS = 5;
const PER_ROUND = 60;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

async function nodeClient(dsn: string, mode: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: dsn });
  c.on('error', () => undefined);
  await c.connect();
  await c.query(`SET synchronous_commit = ${mode}`);
  return c;
}

test('commit latency on vs remote_write vs local (medians, same run); with the standby gone `on` waits and `local` does not', async (t) => {
  let pair;
  try {
    pair = await startPair();
  } catch (err) {
    if (err instanceof SkipError) return t.skip(err.message);
    throw err;
  }
  try {
    await runSql(pair.nodeDsn, 'CREATE TABLE t (id bigserial PRIMARY KEY, v int NOT NULL)');
    const samples: Record<string, number[]> = { on: [], remote_write: [], local: [] };
    const client = await nodeClient(pair.nodeDsn, 'on');
    try {
      for (let round = 0; round < ROUNDS; round++) {
        for (const mode of MODES) {
          await client.query(`SET synchronous_commit = ${mode}`);
          for (let i = 0; i < PER_ROUND; i++) {
            const start = performance.now();
            await client.query('INSERT INTO t (v) VALUES ($1)', [i]);
            samples[mode].push(performance.now() - start);
          }
        }
      }
    } finally {
      await client.end();
    }
    const medians = Object.fromEntries(MODES.map((m) => [m, Math.round(median(samples[m]) * 1000) / 1000]));
    t.diagnostic(`commit latency medians (ms, ${ROUNDS * PER_ROUND} commits each, interleaved): ${JSON.stringify(medians)}`);

    // Fail-safe: the synchronous standby stops, an `on` commit waits; `local` does not.
    await pair.standby.stop();
    const waiting = await nodeClient(pair.nodeDsn, 'on');
    const local = await nodeClient(pair.nodeDsn, 'local');
    try {
      let committed = false;
      const onCommit = waiting.query('INSERT INTO t (v) VALUES (-1)').then(() => (committed = true));
      const start = performance.now();
      await local.query('INSERT INTO t (v) VALUES (-2)');
      assert.ok(performance.now() - start < 1000, 'a local commit waited for the missing standby');
      await sleep(1500);
      assert.equal(committed, false, 'an `on` commit returned while the synchronous standby was down');
      await pair.standby.restart();
      await onCommit;
      assert.equal(committed, true);
    } finally {
      await waiting.end();
      await local.end();
    }
  } finally {
    await pair.stop();
  }
});
