// The plugin end to end: the real lnbackup-cln executable under the simulated lightningd (real
// child processes, real sqlite files), driven by the recorded traces; restore must give back
// exactly the node's database, and a stale database must be refused before anything commits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { initNode, PLUGIN_PATH } from '../src/cli/initNode.js';
import { loadKeys } from '../src/cli/keyOptions.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { verifyVault } from '../src/restore/verify.js';
import { vaultStatus } from '../src/restore/status.js';
import { runSimulatorUntilDone, spawnSimulator, SimulatorAbortedError } from '../src/simulator/runner.js';
import { tracePath } from './helpers/paths.js';
import { dataVersionOf, dumpFile, NODE3_CHAIN } from './helpers/reference.js';
import { pluginLogs } from './helpers/simEvents.js';
import { setRetention } from './helpers/retention.js';
import { makeNode, makeTestNode, type TestNode } from './helpers/testNode.js';

function restoreAndCompare(node: TestNode, expectVersion: number): ReturnType<typeof restoreDatabase> {
  const { keys } = loadKeys({ hsmSecret: node.hsmSecretPath });
  const to = path.join(node.dir, `restored-${Date.now()}.sqlite3`);
  const r = restoreDatabase({ vaultDir: node.vault, keys, to });
  assert.equal(r.version, expectVersion);
  assert.equal(r.integrityCheck, 'ok');
  assert.equal(dumpFile(to), dumpFile(node.dbPath), 'the restored database differs from the node database');
  const v = verifyVault(node.vault, keys);
  assert.equal(v.ok, true, JSON.stringify(v.firstBadRecord));
  return r;
}

test('node1 trace through the plugin: restore equals the node database', async () => {
  const node = makeNode('node1');
  const run = await runSimulatorUntilDone({
    lightningDir: node.lightningDir,
    traces: [tracePath('cln-v26.06-node1.jsonl.gz')],
    plugin: PLUGIN_PATH,
    progressEvery: 2000,
  });
  assert.equal(run.dataVersion, 8176);
  const r = restoreAndCompare(node, 8176);
  assert.equal(r.inFlight, true, 'the last transaction is never confirmed by a later call');
  assert.equal(r.committedVersion, 8175);
  // Compaction (on by default) started new generations along the way; each restores the same.
  assert.ok(r.generation > 1, `generation ${r.generation}: compaction never ran`);
  assert.ok(r.baseVersion > 0);
});

test('fail trace: every acked-but-uncommitted transaction is superseded, restore equals the node', async () => {
  const node = makeNode('fail');
  // The five rewinds must all be in the one generation restored: no compaction in this test.
  setRetention(node, { compactMinBytes: Number.MAX_SAFE_INTEGER });
  const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
  assert.equal(run.dataVersion, 431);
  const crashes = run.lifetimes.length - 1;
  assert.equal(crashes, 5, 'five failures are marked in the fail trace');
  const r = restoreAndCompare(node, 431);
  assert.equal(r.superseded, 5);
  const logs = pluginLogs(run.lifetimes);
  assert.equal(logs.filter((m) => /acknowledged but never committed, and is superseded/.test(m)).length, 5);
});

test("pre-init trace: the aborted first migration is superseded, the migrations' PRAGMA repeats are kept", async () => {
  const node = makeNode('preinit');
  const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: [tracePath('cln-v26.06-node4-preinit.jsonl.gz')], plugin: PLUGIN_PATH });
  assert.equal(run.dataVersion, 42);
  const r = restoreAndCompare(node, 42);
  assert.equal(r.superseded, 1);
});

test('dynamic trace: a node set up at version 385 continues from its snapshot', async () => {
  const node = makeTestNode('dyn');
  await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: null, untilVersion: 385 });
  assert.equal(dataVersionOf(node.dbPath), 385);
  const init = initNode({ lightningDir: node.lightningDir, network: 'regtest', vault: node.vault });
  assert.equal(init.dataVersion, 385);
  assert.ok(init.dbBytes > 0);
  fs.rmSync(path.join(node.networkDir, 'simulator-state.json'), { force: true });
  const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: [tracePath('cln-v26.06-node3-dyn.jsonl.gz')], plugin: PLUGIN_PATH });
  assert.equal(run.dataVersion, 431);
  const r = restoreAndCompare(node, 431);
  assert.equal(r.baseVersion, 385);
});

test('a node that ran without the plugin: the vault is behind, the plugin snapshots inside the hook and starts a generation', async () => {
  const node = makeNode('behind');
  await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: null, untilVersion: 300 });
  const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
  assert.equal(run.dataVersion, 431);
  assert.ok(pluginLogs(run.lifetimes).some((m) => /started generation 2 from a snapshot of the database at version 300/.test(m)));
  const r = restoreAndCompare(node, 431);
  assert.equal(r.generation, 2);
  assert.equal(r.baseVersion, 300);
});

test('a stale database is refused before anything commits; the vault is untouched; after a restore the node goes on', async () => {
  const node = makeNode('stale');
  await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 300 });
  const oldCopy = path.join(node.dir, 'old.sqlite3');
  fs.copyFileSync(node.dbPath, oldCopy);
  await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 350 });
  const { keys } = node;
  const before = vaultStatus(node.vault, keys);
  assert.equal(before.latest?.version, 350);

  // The operator starts the node on the old copy.
  fs.copyFileSync(oldCopy, node.dbPath);
  await assert.rejects(runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH }), (err: unknown) => {
    assert.ok(err instanceof SimulatorAbortedError);
    assert.equal(err.event.lastCommitted, 300, 'nothing was committed on the stale database');
    const logs = pluginLogs(err.lifetimes);
    assert.ok(
      logs.some((m) => /older than the backup/.test(m) && /lnbackup restore/.test(m)),
      logs.join('\n'),
    );
    return true;
  });
  assert.equal(dataVersionOf(node.dbPath), 300);
  const after = vaultStatus(node.vault, keys);
  assert.equal(after.latest?.lastSeq, before.latest?.lastSeq, 'the vault gained no record');
  assert.equal(after.totalBytes, before.totalBytes);

  // Restore the newest state over the stale file; the node then continues to the end.
  const r = restoreDatabase({ vaultDir: node.vault, keys, to: node.dbPath, force: true });
  assert.equal(r.version, 350);
  const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
  assert.equal(run.dataVersion, 431);
  restoreAndCompare(node, 431);
});

test('a node without lnbackup configuration is stopped at its first write, with the way out in the log', async () => {
  const node = makeTestNode('noconfig');
  const sim = spawnSimulator({ lightningDir: node.lightningDir, traces: [tracePath('cln-v26.06-node6.jsonl.gz')], plugin: PLUGIN_PATH });
  const exit = await sim.exit;
  assert.equal(exit.code, 2);
  const aborted = exit.events.find((e) => e.event === 'aborted');
  assert.ok(aborted && aborted.event === 'aborted' && aborted.lastCommitted === 0);
  assert.ok(pluginLogs([exit]).some((m) => /lnbackup init/.test(m)));
});

test('restore --version gives the database at that version (point in time inside a generation)', async () => {
  const node = makeNode('pit');
  // This test is about what the whole history holds: keep every generation.
  setRetention(node, { keepGenerations: 1_000_000 });
  await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 200 });
  const at200 = dumpFile(node.dbPath);
  await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
  const { keys } = node;
  const to = path.join(node.dir, 'at200.sqlite3');
  const r = restoreDatabase({ vaultDir: node.vault, keys, to, version: 200 });
  assert.equal(r.version, 200);
  assert.equal(r.inFlight, false);
  assert.equal(dumpFile(to), at200);
  assert.throws(() => restoreDatabase({ vaultDir: node.vault, keys, to: path.join(node.dir, 'x.sqlite3'), version: 5000 }), /version 5000 is not in the vault/);
});

test('init after lightningd died mid-transaction: the hot journal is rolled back, the in-flight record is not mistaken for newer data', async () => {
  const node = makeNode('hotjournal');
  const sim = spawnSimulator({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, killSelfAt: { entry: 150, point: 'after-ack' } });
  const exit = await sim.exit;
  assert.equal(exit.signal, 'SIGKILL');
  assert.ok(fs.existsSync(`${node.dbPath}-journal`), 'a hot journal is left behind');
  const r = initNode({ lightningDir: node.lightningDir, network: 'regtest', vault: node.vault, force: true });
  assert.equal(r.generation, 2);
  assert.equal(r.dataVersion, dataVersionOf(node.dbPath));
  const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
  assert.equal(run.dataVersion, 431);
  restoreAndCompare(node, 431);
});
