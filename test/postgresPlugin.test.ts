// lnbackup-cln on a PostgreSQL node, under the simulator (a real child process; its RPC socket
// answers listconfigs with the wallet DSN of a real test primary, and its db_write calls carry no
// statements, as on such a node), against a real primary and streaming standby: the plugin finds
// the wallet after init, lnbackup-status.json says zero-loss; the standby stopped -> broken with
// commits waiting, logged, within the re-check interval; back -> zero-loss; and with
// pgUnprotectedLimitSeconds the lapse stops lightningd cleanly (its `stop`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PLUGIN_PATH } from '../src/cli/initNode.js';
import { spawnSimulator, type SpawnedSimulator } from '../src/simulator/runner.js';
import { NODE_PASSWORD, pairForFile } from './helpers/postgresPair.js';
import { tempDir } from './helpers/paths.js';
import { cli, nodeArgs } from './helpers/remoteNode.js';
import { makeTestNode, type TestNode } from './helpers/testNode.js';
import { until } from './helpers/waiting.js';

process.setMaxListeners(50);

const shared = pairForFile();

interface WatchJson {
  state: string;
  reasons: { code: string }[];
  effect: string | null;
  standbys: { name: string | null; syncState: string | null }[];
}

function watchOf(node: TestNode): WatchJson | null {
  try {
    const s = JSON.parse(fs.readFileSync(path.join(node.networkDir, 'lnbackup-status.json'), 'utf8')) as {
      postgres?: { wallet: string; watch: WatchJson | null };
    };
    return s.postgres?.watch ?? null;
  } catch {
    return null;
  }
}

/** A PostgreSQL node's db_write calls: a data_version and no statements. */
function emptyTrace(dir: string, calls: number): string {
  const file = path.join(dir, 'postgres-node.jsonl');
  fs.writeFileSync(file, Array.from({ length: calls }, (_, i) => JSON.stringify({ data_version: i + 1, writes: [] })).join('\n') + '\n');
  return file;
}

function logs(sim: SpawnedSimulator): string[] {
  return sim.events.flatMap((e) => (e.event === 'plugin-log' ? [e.message] : []));
}

test('a PostgreSQL node: zero-loss in lnbackup-status, broken (commits waiting) when the standby stops, zero-loss when it is back', async (t) => {
  const p = shared.pair();
  if (!p) return t.skip(shared.skipReason());
  const node = makeTestNode('pg-plugin');
  // A vault too (so lnbackup.json exists to carry the PostgreSQL settings): 1 s between checks.
  const init = await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--json']);
  assert.equal(init.code, 0, init.stderr);
  const configFile = path.join(node.networkDir, 'lnbackup.json');
  fs.writeFileSync(configFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(configFile, 'utf8')), pgCheckIntervalSeconds: 1 }));
  const sim = spawnSimulator({
    lightningDir: node.lightningDir,
    traces: [emptyTrace(node.dir, 5)],
    plugin: PLUGIN_PATH,
    walletDsn: p.nodeDsn,
    lingerMs: 120_000,
  });
  try {
    const first = await until('zero-loss in the status file', () => (watchOf(node)?.state === 'zero-loss' ? watchOf(node) : null), 30_000, 50);
    assert.deepEqual(
      first.standbys.map((s) => [s.name, s.syncState]),
      [['lightningd', 'sync']],
    );
    assert.ok(
      logs(sim).some((l) => /PostgreSQL wallet postgres:\/\/node:\*\*\*@/.test(l)),
      logs(sim).join('\n'),
    );

    await p.standby.stop();
    const stoppedAt = Date.now();
    const broken = await until('broken in the status file', () => (watchOf(node)?.state === 'broken' ? watchOf(node) : null), 20_000, 50);
    assert.ok(Date.now() - stoppedAt < 1000 + 5000, `broken only after ${Date.now() - stoppedAt} ms`);
    assert.equal(broken.effect, 'commits-wait');
    assert.deepEqual(
      broken.reasons.map((r) => r.code),
      ['standby-disconnected'],
    );
    assert.ok(
      logs(sim).some((l) => /PostgreSQL replication broken: no standby is connected.*every commit of the node waits/.test(l)),
      logs(sim).join('\n'),
    );

    await p.standby.restart();
    await until('zero-loss again', () => watchOf(node)?.state === 'zero-loss', 30_000, 50);
    assert.ok(logs(sim).some((l) => /zero-loss again/.test(l)));
    const all = JSON.stringify(logs(sim)) + fs.readFileSync(path.join(node.networkDir, 'lnbackup-status.json'), 'utf8');
    assert.ok(!all.includes(NODE_PASSWORD), 'the password is in the log or the status file');
  } finally {
    sim.child.kill('SIGKILL');
    await sim.exit.catch(() => undefined);
    await p.waitSync();
  }
});

test('a PostgreSQL node with pgUnprotectedLimitSeconds: a lapse that lasts stops lightningd cleanly', async (t) => {
  const p = shared.pair();
  if (!p) return t.skip(shared.skipReason());
  const node = makeTestNode('pg-plugin-limit');
  const init = await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--json']);
  assert.equal(init.code, 0, init.stderr);
  const configFile = path.join(node.networkDir, 'lnbackup.json');
  fs.writeFileSync(configFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(configFile, 'utf8')), pgCheckIntervalSeconds: 1, pgUnprotectedLimitSeconds: 2 }));
  const sim = spawnSimulator({
    lightningDir: node.lightningDir,
    traces: [emptyTrace(tempDir('pg-trace'), 5)],
    plugin: PLUGIN_PATH,
    walletDsn: p.nodeDsn,
    lingerMs: 120_000,
  });
  try {
    await until('zero-loss', () => watchOf(node)?.state === 'zero-loss', 30_000, 50);
    await p.standby.stop();
    const stoppedAt = Date.now();
    const exit = await sim.exit;
    assert.equal(exit.code, 0, exit.stderr);
    assert.ok(
      exit.events.some((e) => e.event === 'rpc-stop'),
      'the plugin did not call stop',
    );
    assert.ok(Date.now() - stoppedAt >= 2000, 'stopped before the limit');
    assert.ok(
      logs(sim).some((l) => /past pgUnprotectedLimitSeconds: stopping lightningd/.test(l)),
      logs(sim).join('\n'),
    );
  } finally {
    sim.child.kill('SIGKILL');
    await p.standby.restart();
    await p.waitSync();
  }
});
