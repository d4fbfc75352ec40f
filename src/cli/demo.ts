// `lnbackup demo`: the main job end to end on embedded defaults. A simulated lightningd (a real
// child process applying a recorded trace to a real sqlite file) runs the real plugin; halfway it
// is killed with SIGKILL right after the plugin acknowledged a transaction and before COMMIT; it
// restarts and finishes; then the vault is verified and restored, and the restored database is
// compared with the node's.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { restoreDatabase } from '../restore/rebuild.js';
import { verifyVault } from '../restore/verify.js';
import { sameDatabaseFiles } from '../simulator/dump.js';
import { runSimulatorUntilDone } from '../simulator/runner.js';
import { readTraceFile } from '../simulator/trace.js';
import { prepareNode, PLUGIN_PATH } from './initNode.js';
import { BackupServer } from '../server/server.js';
import { downloadDir, pushVault } from '../destinations/transfer.js';
import { privateKeyFromSeed, publicKeyOf } from '../transport/keys.js';
import type { VaultKeys } from '../vault/keys.js';
import { loadKeys } from './keyOptions.js';
import { emit, EXIT_CHECK_FAILED, UsageError } from './output.js';
import { formatBytes } from './progress.js';
import { vaultDiskUsage } from '../vault/diskUsage.js';

/** node1's recorded trace, in the package's testdata/ (this file runs from dist/src/cli/). */
export const DEFAULT_TRACE = fileURLToPath(new URL('../../../testdata/traces/cln-v26.06-node1.jsonl.gz', import.meta.url));

export async function runDemo(o: { trace?: string; dir?: string; wait?: string; json?: boolean }): Promise<number> {
  const wait = o.wait ?? 'spin';
  if (wait !== 'spin' && wait !== 'idle') throw new UsageError(`--wait takes 'spin' (as lightningd) or 'idle', not '${wait}'`);
  const trace = path.resolve(o.trace ?? DEFAULT_TRACE);
  if (!fs.existsSync(trace)) throw new UsageError(`trace ${trace} not found; pass --trace <file.jsonl.gz>`);
  const dir = o.dir ? path.resolve(o.dir) : fs.mkdtempSync(path.join(os.tmpdir(), 'lnbackup-demo-'));
  const say = (line: string): void => {
    if (!o.json) process.stderr.write(`${line}\n`);
  };
  const started = Date.now();
  const lightningDir = path.join(dir, 'node');
  const networkDir = path.join(lightningDir, 'regtest');
  fs.mkdirSync(networkDir, { recursive: true });
  const hsmSecret = path.join(networkDir, 'hsm_secret');
  if (!fs.existsSync(hsmSecret)) fs.writeFileSync(hsmSecret, crypto.randomBytes(32), { mode: 0o400 });
  const vault = path.join(dir, 'vault');

  say(`demo in ${dir}`);
  const { keys } = loadKeys({ hsmSecret });
  const nodeKey = publicKeyOf(privateKeyFromSeed(keys.transport)).toString('hex');
  const server = await BackupServer.start({ dataDir: path.join(dir, 'server'), port: 0, allow: [nodeKey] });
  say(`0. an embedded lnbackup server listens at ${server.url} (file storage in ${path.join(dir, 'server')}; only this node's key is allowed)`);
  try {
    return await demoWithServer(o, { dir, lightningDir, networkDir, hsmSecret, vault, trace, wait, started, keys, serverUrl: server.url, say });
  } finally {
    await server.stop();
  }
}

interface DemoContext {
  readonly dir: string;
  readonly lightningDir: string;
  readonly networkDir: string;
  readonly hsmSecret: string;
  readonly vault: string;
  readonly trace: string;
  /** How the simulated lightningd waits for each answer. */
  readonly wait: 'spin' | 'idle';
  readonly started: number;
  readonly keys: VaultKeys;
  readonly serverUrl: string;
  readonly say: (line: string) => void;
}

async function demoWithServer(o: { json?: boolean }, c: DemoContext): Promise<number> {
  const { dir, lightningDir, networkDir, vault, trace, wait, started, keys, serverUrl, say } = c;
  const prepared = prepareNode({
    lightningDir,
    network: 'regtest',
    vault,
    force: true,
    destinations: { remotes: [serverUrl], replicas: [], policy: 'all', stallLimitSeconds: null },
  });
  await pushVault({ vaultDir: vault, url: serverUrl, keys });
  prepared.commit();
  const init = prepared.result;
  say(
    `1. init: node ${init.nodeId}, vault ${vault} and the server, generation ${init.generation} at version ${init.dataVersion}; policy all: every transaction durable in both before lightningd commits`,
  );

  const calls = readTraceFile(trace).filter((e) => e.kind === 'call').length;
  const crashEntry = Math.floor(calls / 2);
  say(`2. replaying ${calls} db_write calls through lnbackup-cln; lightningd is killed (SIGKILL) after the ack of call ${crashEntry}, before its COMMIT`);
  const run = await runSimulatorUntilDone({
    lightningDir,
    traces: [trace],
    plugin: PLUGIN_PATH,
    killSelfAt: { entry: crashEntry, point: 'after-ack' },
    progressEvery: 1000,
    wait,
  });
  say(`   node finished at data_version ${run.dataVersion} after ${run.lifetimes.length} lifetimes; hook p50 ${run.stats.p50Ms} ms, p99 ${run.stats.p99Ms} ms`);

  const verify = verifyVault(vault, keys);
  const usage = vaultDiskUsage(vault);
  const vaultBytes = usage.segmentBytes + usage.packBytes;
  say(
    `3. verify: ${verify.ok ? 'ok' : 'FAILED'}, ${verify.records} records (${formatBytes(usage.segmentBytes)}) and page packs (${formatBytes(usage.packBytes)});` +
      ` parity and mirror ${formatBytes(usage.sidecarBytes)}`,
  );

  const restored = path.join(dir, 'restored.sqlite3');
  const restore = restoreDatabase({ vaultDir: vault, keys, to: restored, force: true });
  const identical = sameDatabaseFiles(path.join(networkDir, 'lightningd.sqlite3'), restored);
  say(
    `4. restore: version ${restore.version}${restore.inFlight ? ' (in flight)' : ''}, ${formatBytes(restore.dbBytes)}; identical to the node's database: ${identical ? 'yes' : 'NO'}`,
  );

  // The machine is lost: restore from the server alone.
  const fromServer = path.join(dir, 'restored-from-server.sqlite3');
  const remote = await downloadDir({ url: serverUrl, keys }, (vaultDir) => restoreDatabase({ vaultDir, keys, to: fromServer, force: true }));
  const identicalFromServer = sameDatabaseFiles(path.join(networkDir, 'lightningd.sqlite3'), fromServer);
  say(`5. restore --from ${serverUrl.slice(0, 24)}…: version ${remote.version}; identical to the node's database: ${identicalFromServer ? 'yes' : 'NO'}`);

  const summary = {
    ok: verify.ok && identical && identicalFromServer && restore.version === run.dataVersion && remote.version === run.dataVersion,
    server: serverUrl,
    identicalFromServer,
    dir,
    nodeId: init.nodeId,
    calls,
    crashedAfterAckOfCall: crashEntry,
    lifetimes: run.lifetimes.length,
    nodeVersion: run.dataVersion,
    restoredVersion: restore.version,
    identical,
    verify: { ok: verify.ok, records: verify.records, bytes: verify.bytes },
    hookLatency: run.stats,
    vaultBytes,
    redundancyBytes: usage.sidecarBytes,
    databaseBytes: restore.dbBytes,
    seconds: (Date.now() - started) / 1000,
  };
  emit(o, summary, () => [
    summary.ok ? "demo ok: the restored database is exactly the node's" : 'demo FAILED',
    `  ${calls} calls, crash + restart, node at ${run.dataVersion}, restored ${restore.version}, vault ${formatBytes(vaultBytes)} (records and page packs) for a ${formatBytes(restore.dbBytes)} database, ${summary.seconds.toFixed(1)} s`,
    `  files are in ${dir}`,
  ]);
  return summary.ok ? 0 : EXIT_CHECK_FAILED;
}
