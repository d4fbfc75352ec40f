// What a vault costs on disk with the default retention: after node1's trace through the real
// plugin, and after ten times node1's write volume (the trace's steady-state calls played again on
// the node's database with data_version continuing, through the plugin's own Journal and Compactor
// in-process: test/helpers/continuation.ts). The records (segments) and the page packs together
// must stay within twice the database's size; the redundancy sidecars (parity, mirror) are reported
// on their own. Each step is also restored and compared with the node's database.
//
// VAULT_SIZE_VOLUME changes the multiple of node1's write volume (default 10).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PLUGIN_PATH } from '../src/cli/initNode.js';
import { DEFAULT_RETENTION } from '../src/cln/config.js';
import { listGenerations } from '../src/restore/generations.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { verifyVault } from '../src/restore/verify.js';
import { runSimulatorUntilDone } from '../src/simulator/runner.js';
import { vaultDiskUsage, type VaultDiskUsage } from '../src/vault/diskUsage.js';
import { continueNode } from './helpers/continuation.js';
import { tracePath } from './helpers/paths.js';
import { envCount } from './helpers/prng.js';
import { callsOf, dumpFile, loadChain } from './helpers/reference.js';
import { compactionStatus } from './helpers/retention.js';
import { makeNode, type VaultNode } from './helpers/testNode.js';

const NODE1 = tracePath('cln-v26.06-node1.jsonl.gz');
const NODE1_LAST = 8176;
/** node1's steady state (after the migrations, the funding and the channel's opening). */
const STEADY_FROM = 2000;
const VOLUME = envCount('VAULT_SIZE_VOLUME', 10);
/** Records and packs together stay within this multiple of the database's size. */
const BOUND = 2;

interface Measured {
  readonly size: VaultDiskUsage;
  readonly dbBytes: number;
  readonly ratio: number;
}

function measure(node: VaultNode, what: string, log: (line: string) => void): Measured {
  const size = vaultDiskUsage(node.vault);
  const dbBytes = fs.statSync(node.dbPath).size;
  const ratio = (size.segmentBytes + size.packBytes) / dbBytes;
  const kib = (n: number): string => `${(n / 1024).toFixed(1)} KiB`;
  log(
    `${what}: database ${kib(dbBytes)}; records ${kib(size.segmentBytes)} in ${size.segments} segment(s) + packs ${kib(size.packBytes)} in ${size.packs} pack(s) ` +
      `= ${kib(size.segmentBytes + size.packBytes)}, ${ratio.toFixed(2)}x the database (bound ${BOUND}x); ` +
      `redundancy sidecars ${kib(size.sidecarBytes)} (${(size.sidecarBytes / dbBytes).toFixed(2)}x); other files ${kib(size.otherBytes)}`,
  );
  return { size, dbBytes, ratio };
}

function restoreEqualsNode(node: VaultNode, version: number): void {
  const to = path.join(node.dir, `restored-${version}.sqlite3`);
  const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, force: true });
  assert.equal(r.version, version);
  assert.equal(r.integrityCheck, 'ok');
  assert.equal(dumpFile(to), dumpFile(node.dbPath), 'the restored database differs from the node database');
  const v = verifyVault(node.vault, node.keys);
  assert.equal(v.ok, true, JSON.stringify(v.firstBadRecord));
}

test(
  `vault size with the default retention: node1, then ${VOLUME}x its write volume; records + packs stay within ${BOUND}x the database`,
  { timeout: 15 * 60_000 },
  async (t) => {
    const log = (line: string): void => {
      console.log(`[vault size] ${line}`);
      t.diagnostic(line);
    };
    const node = makeNode('vault-size');
    const started = Date.now();
    const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: [NODE1], plugin: PLUGIN_PATH, progressEvery: 100_000 });
    assert.equal(run.dataVersion, NODE1_LAST);
    const status = compactionStatus(node);
    log(
      `node1 through the plugin in ${((Date.now() - started) / 1000).toFixed(1)} s: ${status?.compactions} compactions, generations kept ${listGenerations(
        node.vault,
      )
        .map((g) => g.generation)
        .join(',')}`,
    );
    assert.ok((status?.compactions ?? 0) > 0, 'the default retention compacted node1');
    restoreEqualsNode(node, NODE1_LAST);
    const after1 = measure(node, 'after node1', log);
    assert.ok(after1.ratio <= BOUND, `after node1 the vault's records and packs are ${after1.ratio.toFixed(2)}x the database`);

    // node1's volume: the SQL of every call of the trace.
    const calls = callsOf(loadChain([NODE1]));
    const node1Bytes = calls.reduce((n, c) => n + c.writes.reduce((m, sql) => m + Buffer.byteLength(sql), 0), 0);
    const steady = calls.filter((c) => c.dataVersion > STEADY_FROM).map((c) => c.writes);
    const target = Math.max(0, VOLUME - 1) * node1Bytes;
    const more = await continueNode({
      vaultDir: node.vault,
      keys: node.keys,
      dbPath: node.dbPath,
      retention: DEFAULT_RETENTION,
      calls: steady,
      targetBytes: target,
      log: (level, m) => {
        if (level !== 'debug') log(`journal ${level}: ${m}`);
      },
    });
    log(
      `continued: ${more.calls} calls (${more.skipped} skipped: no longer applicable), ${(more.sqlBytes / 1e6).toFixed(1)} MB of SQL in ${more.passes} passes, ` +
        `versions ${more.fromVersion}..${more.toVersion}, ${more.compactions} compactions, ${(more.ms / 1000).toFixed(1)} s; ` +
        `total volume ${((node1Bytes + more.sqlBytes) / node1Bytes).toFixed(1)}x node1's ${(node1Bytes / 1e6).toFixed(1)} MB`,
    );
    assert.ok(node1Bytes + more.sqlBytes >= VOLUME * node1Bytes, 'the whole volume was written');
    assert.ok(more.compactions > 0, 'the continuation compacted');
    restoreEqualsNode(node, more.toVersion);
    assert.equal(listGenerations(node.vault).length, 1, 'the default retention keeps one generation');
    const after = measure(node, `after ${VOLUME}x node1's volume`, log);
    assert.ok(after.ratio <= BOUND, `after ${VOLUME}x node1's volume the vault's records and packs are ${after.ratio.toFixed(2)}x the database`);
  },
);
