// A full disk under the vault (a real 4 MiB tmpfs): the plugin must not acknowledge what it could
// not make durable; it retries for the configured time, then stops lightningd before it commits.
// Nothing acknowledged is lost, and once space is freed the node goes on. Needs root (mount).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { initNode, PLUGIN_PATH } from '../src/cli/initNode.js';
import { loadKeys } from '../src/cli/keyOptions.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { verifyVault } from '../src/restore/verify.js';
import { runSimulatorUntilDone, SimulatorAbortedError } from '../src/simulator/runner.js';
import { tracePath } from './helpers/paths.js';
import { dataVersionOf, dumpFile } from './helpers/reference.js';
import { pluginLogs } from './helpers/simEvents.js';
import { makeTestNode } from './helpers/testNode.js';

test('disk full under the vault: no acknowledged record is lost, lightningd stops before committing, and resumes after space is freed', async (t) => {
  const node = makeTestNode('diskfull');
  const mountPoint = path.join(node.dir, 'small-disk');
  fs.mkdirSync(mountPoint);
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint], { encoding: 'utf8' });
  if (mounted.status !== 0) {
    t.skip(`cannot mount a small tmpfs here (${mounted.stderr.trim()}); run as root`);
    return;
  }
  try {
    const vault = path.join(mountPoint, 'vault');
    const filler = path.join(mountPoint, 'filler');
    fs.writeFileSync(filler, Buffer.alloc(2 * 1024 * 1024));
    initNode({ lightningDir: node.lightningDir, network: 'regtest', vault, failureRetrySeconds: 1 });
    const trace = [tracePath('cln-v26.06-node1.jsonl.gz')];

    let lastCommitted = -1;
    await assert.rejects(runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: trace, plugin: PLUGIN_PATH, progressEvery: 500 }), (err: unknown) => {
      assert.ok(err instanceof SimulatorAbortedError, String(err));
      lastCommitted = err.event.lastCommitted;
      const logs = pluginLogs(err.lifetimes);
      assert.ok(
        logs.some((m) => /ENOSPC|no space/i.test(m)),
        logs.slice(-5).join('\n'),
      );
      assert.ok(logs.some((m) => /Stopping lightningd before it commits anything unrecorded/.test(m)));
      return true;
    });
    assert.ok(lastCommitted > 100, `the vault should hold a few hundred versions before filling up (got ${lastCommitted})`);
    assert.equal(dataVersionOf(node.dbPath), lastCommitted);

    const { keys } = loadKeys({ hsmSecret: node.hsmSecretPath });
    const restored = restoreDatabase({ vaultDir: vault, keys, to: path.join(node.dir, 'r1.sqlite3') });
    assert.equal(restored.version, lastCommitted, 'the restore holds exactly what the node committed');
    assert.equal(dumpFile(path.join(node.dir, 'r1.sqlite3')), dumpFile(node.dbPath));

    // The operator frees space; the node starts again and goes on.
    fs.rmSync(filler);
    const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: trace, plugin: PLUGIN_PATH, untilVersion: lastCommitted + 200 });
    assert.equal(run.dataVersion, lastCommitted + 200);
    assert.equal(verifyVault(vault, keys).ok, true);
    const again = restoreDatabase({ vaultDir: vault, keys, to: path.join(node.dir, 'r2.sqlite3') });
    assert.equal(again.version, lastCommitted + 200);
    assert.equal(dumpFile(path.join(node.dir, 'r2.sqlite3')), dumpFile(node.dbPath));
  } finally {
    spawnSync('umount', ['-l', mountPoint]);
  }
});
