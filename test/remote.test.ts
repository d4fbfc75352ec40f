// A node backed up to an lnbackup server, end to end with real processes: the simulated lightningd
// (a child process replaying recorded traffic into a real sqlite file) drives the real lnbackup-cln
// plugin, which sends every record to a real `lnbackup server` child process on 127.0.0.1 (file
// storage, or PostgreSQL). Restores are made by the real `lnbackup restore --from` and compared
// with the node's database. The server is killed and restarted under the node; the policy decides
// whether the node waits (all), goes on (quorum) or stops (stall limit); a stale node is refused
// after the server's newer records were proven and adopted, and by name when the server's retention
// removed the records that would join them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PLUGIN_PATH } from '../src/cli/initNode.js';
import { vaultStatus } from '../src/restore/status.js';
import { vaultTail } from '../src/destinations/transfer.js';
import { vaultIdBytes, openIdentity } from '../src/vault/identity.js';
import type { ChildProcess } from 'node:child_process';
import { runSimulatorUntilDone, spawnSimulator, SimulatorAbortedError, type SpawnedSimulator, type SpawnSimulatorOptions } from '../src/simulator/runner.js';
import type { SimulatorEvent } from '../src/simulator/events.js';
import { processAlive } from '../src/util/processAlive.js';
import { tempDir, tracePath } from './helpers/paths.js';
import { dataVersionOf, dumpFile, NODE3_CHAIN } from './helpers/reference.js';
import { pluginLogs, ofKind } from './helpers/simEvents.js';
import { startServer, type ServerHandle } from './helpers/serverProcess.js';
import { SkipError, startPostgres } from './helpers/postgres.js';
import { setRetention } from './helpers/retention.js';
import { cli, makeRemoteNode, pluginStatus, serverStatus, serverVaultOf, startServerAt, until, type RemoteNode } from './helpers/remoteNode.js';

const NODE3_END = 431;

// Every temporary folder and server child registers an exit handler; this file makes many.
process.setMaxListeners(100);

/** `lnbackup restore --from <url>` into a new file; it must equal the node's database. Returns the restore's JSON. */
async function restoreFromEqualsNode(node: RemoteNode, url: string, name: string): Promise<Record<string, unknown>> {
  const to = path.join(node.dir, `${name}.sqlite3`);
  const r = await cli(['restore', '--from', url, '--hsm-secret', node.hsmSecretPath, '--to', to, '--json']);
  assert.equal(r.code, 0, `restore --from failed: ${r.stderr}`);
  assert.equal(r.json?.ok, true);
  assert.equal(r.json?.integrityCheck, 'ok');
  assert.equal(r.json?.version, dataVersionOf(node.dbPath), 'restore --from reached another version than the node');
  assert.ok(dumpFile(to) === dumpFile(node.dbPath), `the database restored from ${url} differs from the node's`);
  return r.json!;
}

/** The local vault's last record (what a server must hold once level). */
function localLastSeq(node: RemoteNode): bigint {
  return vaultTail(node.vault, vaultIdBytes(openIdentity(node.vault, node.keys))).lastSeq;
}

/** Replays node3 up to `version`, then keeps copies of the database and the local vault, to put back later (a stale node). */
async function runAndCopy(node: RemoteNode, version: number): Promise<{ lastSeq: bigint; putBack: () => void }> {
  await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: version });
  const oldDb = path.join(node.dir, `old-${version}.sqlite3`);
  const oldVault = path.join(node.dir, `old-vault-${version}`);
  fs.copyFileSync(node.dbPath, oldDb);
  fs.cpSync(node.vault, oldVault, { recursive: true });
  return {
    lastSeq: localLastSeq(node),
    putBack: () => {
      fs.copyFileSync(oldDb, node.dbPath);
      fs.rmSync(node.vault, { recursive: true });
      fs.cpSync(oldVault, node.vault, { recursive: true });
    },
  };
}

/** Polls the server's status until it shows this node's vault ending at `lastSeq`. */
async function serverHolds(server: ServerHandle, node: RemoteNode, lastSeq: bigint, timeoutMs = 60_000): Promise<void> {
  let seen: string | undefined;
  await until(
    `the server to hold this node's records up to ${lastSeq}`,
    async () => {
      seen = (await serverVaultOf(server, node.transportKey))?.lastSeq;
      return seen === lastSeq.toString();
    },
    timeoutMs,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; the server's status shows lastSeq ${seen ?? 'none'}`);
  });
}

/** The highest data_version a `committed` event reported. */
function lastCommitted(events: readonly SimulatorEvent[]): number {
  return ofKind(events, 'committed').reduce((m, e) => Math.max(m, e.dataVersion), 0);
}

/** Resolves when a `committed` event at or past `version` arrived (rejects when the simulator exits first). */
function committedAt(sim: SpawnedSimulator, version: number): Promise<SimulatorEvent> {
  return sim.waitFor((e) => e.event === 'committed' && e.dataVersion >= version);
}

/**
 * Spawns the simulator and stops it (SIGSTOP) right as it reports the first commit at or past each
 * of `pauses` (in order), from the event handler itself, so it cannot run far past that point; the
 * test resumes it with SIGCONT.
 */
function spawnPausing(opts: SpawnSimulatorOptions, pauses: number[]): SpawnedSimulator {
  const left = [...pauses];
  let child: ChildProcess | null = null;
  const sim = spawnSimulator({
    ...opts,
    onEvent: (e) => {
      if (e.event === 'committed' && left.length > 0 && e.dataVersion >= left[0]) {
        left.shift();
        child?.kill('SIGSTOP');
      }
    },
  });
  child = sim.child;
  return sim;
}

/**
 * After the server died under a policy-all node: waits until the node stopped committing (the call
 * in flight at the kill may still complete) and returns the version it holds at.
 */
async function stalledAt(sim: SpawnedSimulator): Promise<number> {
  let held = lastCommitted(sim.events);
  let quietSince = Date.now();
  await until(
    'the node to stop committing while the server is down',
    () => {
      const now = lastCommitted(sim.events);
      if (now !== held) {
        held = now;
        quietSince = Date.now();
      }
      return Date.now() - quietSince >= 1500;
    },
    30_000,
  );
  return held;
}

/** Replays node3 (five real rewinds) through the plugin and checks restore/verify/status --from and the server's status. */
async function node3ThroughServer(server: ServerHandle, prefix: string): Promise<RemoteNode> {
  const node = await makeRemoteNode(prefix, { remotes: [server.url] });
  // The five rewinds must all be in the one generation restored: no compaction in this test.
  setRetention(node, { compactMinBytes: Number.MAX_SAFE_INTEGER });
  assert.deepEqual(
    (node.init.pushed as { url: string }[]).map((p) => p.url),
    [server.url],
  );
  const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, progressEvery: 100 });
  assert.equal(run.dataVersion, NODE3_END);
  assert.equal(run.lifetimes.length, 6, 'five real rewinds, each a restart');
  const logs = pluginLogs(run.lifetimes);
  assert.equal(logs.filter((m) => /acknowledged but never committed, and is superseded/.test(m)).length, 5);

  const restored = await restoreFromEqualsNode(node, server.url, 'from-server');
  assert.equal(restored.superseded, 5, 'the five rewound transactions are superseded in the server copy too');

  const verify = await cli(['verify', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--json']);
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(verify.json?.ok, true);
  const local = vaultStatus(node.vault, node.keys);
  assert.equal(verify.json?.records, Number(local.latest!.lastSeq), 'the server copy holds every record of the local vault');

  const status = await cli(['status', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--json']);
  assert.equal(status.code, 0, status.stderr);
  assert.equal(status.json?.from, server.url);
  assert.equal(status.json?.vaultId, local.vaultId);
  assert.equal((status.json?.latest as { version: number; lastSeq: string }).version, NODE3_END);
  assert.equal((status.json?.latest as { version: number; lastSeq: string }).lastSeq, local.latest!.lastSeq);
  assert.equal(status.json?.totalBytes, local.totalBytes);

  // The server's own view: this node's key, its vault, ending where the local vault ends.
  await serverHolds(server, node, BigInt(local.latest!.lastSeq));
  const { code, status: s } = await serverStatus(server.dataDir);
  assert.equal(code, 0);
  assert.equal(s?.running, true);
  const client = s!.clients.find((c) => c.publicKey === node.transportKey);
  assert.ok(client, `the server status does not show the node's key ${node.transportKey}`);
  assert.equal(client.vaults.length, 1);
  assert.equal(client.vaults[0].vaultId, local.vaultId);
  assert.equal(client.vaults[0].bytes, local.totalBytes, 'the server stores the records byte for byte');
  return node;
}

test('node3 (real rewinds) with a server, policy all: restore/verify/status --from and server status agree with the node', async () => {
  const server = await startServer();
  try {
    await node3ThroughServer(server, 'remote-node3');
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('node3 with a server on PostgreSQL storage: restore --from equals the node', async (t) => {
  let pg;
  try {
    pg = await startPostgres();
  } catch (err) {
    if (err instanceof SkipError) return t.skip(err.message);
    throw err;
  }
  try {
    const url = await pg.createDatabase('lnbackup_remote');
    const server = await startServer({ args: ['--storage', url] });
    try {
      const { status } = await serverStatus(server.dataDir);
      assert.equal(status?.storage.kind, 'postgres');
      await node3ThroughServer(server, 'remote-pg');
    } finally {
      assert.equal(await server.stop(), 0);
    }
  } finally {
    await pg.stop();
  }
});

test('remote only (--local-vault cache), node1 up to version 1000: restore --from equals the node', async () => {
  const server = await startServer();
  try {
    const node = await makeRemoteNode('remote-cache', { remotes: [server.url], localVault: 'cache' });
    const run = await runSimulatorUntilDone({
      lightningDir: node.lightningDir,
      traces: [tracePath('cln-v26.06-node1.jsonl.gz')],
      plugin: PLUGIN_PATH,
      untilVersion: 1000,
      progressEvery: 500,
    });
    assert.equal(run.dataVersion, 1000);
    const st = pluginStatus(node);
    assert.equal(st?.localVault, 'cache');
    assert.deepEqual(st?.destinations?.map((d) => d.kind).sort(), ['server', 'vault']);
    await restoreFromEqualsNode(node, server.url, 'cache-from-server');
    await serverHolds(server, node, localLastSeq(node));
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('quorum=2 (vault, server, replica): the server is killed mid-replay, the node goes on; restarted, the server catches up', async () => {
  let server = await startServerAt();
  const replica = path.join(tempDir('remote-replica'), 'replica.sqlite3');
  const node = await makeRemoteNode('remote-quorum', { remotes: [server.url], replicas: [replica], policy: 'quorum=2' });
  try {
    // Through the five rewinds with everything up.
    const first = await runSimulatorUntilDone({
      lightningDir: node.lightningDir,
      traces: NODE3_CHAIN,
      plugin: PLUGIN_PATH,
      untilVersion: 150,
      progressEvery: 50,
    });
    assert.equal(first.dataVersion, 150);

    const sim = spawnPausing({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH }, [200, 260]);
    try {
      await committedAt(sim, 200);
      server.kill9();
      assert.equal(await server.exited, null);
    } finally {
      sim.child.kill('SIGCONT');
    }
    const atKill = lastCommitted(sim.events);
    // The node keeps committing without the server: the vault and the replica make the quorum.
    await committedAt(sim, 260);
    try {
      const pausedAt = lastCommitted(sim.events);
      assert.ok(pausedAt >= 260 && pausedAt < NODE3_END, `paused at ${pausedAt}`);
      // (A status written in the middle of a call may show the vault or the replica catching up; the
      // one written after the last call before the pause shows them durable.)
      let last: unknown = null;
      const lagging = await until(
        'lnbackup-status.json to show the server stalled with a lag, the vault and the replica ok',
        () => {
          const st = pluginStatus(node);
          last = st;
          const d = st?.destinations?.find((x) => x.kind === 'server');
          const others = st?.destinations?.filter((x) => x.kind !== 'server') ?? [];
          return d && d.state === 'stalled' && d.lagRecords > 0 && others.length === 2 && others.every((x) => x.state === 'ok') && st ? { st, d } : null;
        },
        30_000,
      ).catch((err: Error) => {
        throw new Error(`${err.message}; last status: ${JSON.stringify(last)}`);
      });
      assert.equal(lagging.st.policy, 'quorum=2');
      assert.ok(BigInt(lagging.d.durableSeq) < localLastSeq(node), 'the server is behind the vault');
      assert.ok(lagging.d.lastError, 'the status says why the server lags');
      process.stdout.write(`# quorum: server killed at ${atKill}, node went on to ${pausedAt}; status: ${lagging.d.state}, lag ${lagging.d.lagRecords}\n`);

      // Back on the same port and data: the plugin reconnects and sends what the server lacks, in the background.
      server = await server.restart();
      await serverHolds(server, node, localLastSeq(node));
    } finally {
      sim.child.kill('SIGCONT');
    }
    const exit = await sim.exit;
    assert.equal(exit.code, 0, exit.stderr);
    assert.equal(ofKind(exit.events, 'done')[0]?.dataVersion, NODE3_END);
    assert.ok(
      pluginLogs([exit]).some((m) => /reachable again/.test(m)),
      pluginLogs([exit]).join('\n'),
    );

    await serverHolds(server, node, localLastSeq(node));
    await restoreFromEqualsNode(node, server.url, 'quorum-from-server');
    assert.ok(dumpFile(replica) === dumpFile(node.dbPath), 'the replica differs from the node');
  } finally {
    await server.stop();
  }
});

test("a stale node (old database and old local vault) is refused after the server's newer records are adopted; the server copy is unchanged", async () => {
  const server = await startServer();
  try {
    const node = await makeRemoteNode('remote-stale', { remotes: [server.url] });
    // This test is about what the whole history holds: keep every generation.
    setRetention(node, { keepGenerations: 1_000_000 });
    const old = await runAndCopy(node, 300);
    const oldLastSeq = old.lastSeq;

    const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
    assert.equal(run.dataVersion, NODE3_END);
    const newest = dumpFile(node.dbPath);
    const newestSeq = localLastSeq(node);
    await serverHolds(server, node, newestSeq);
    const before = await cli(['status', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--json']);
    assert.equal(before.code, 0, before.stderr);

    // The operator puts back old copies of the database and of the local vault, and starts the node.
    old.putBack();
    assert.equal(localLastSeq(node), oldLastSeq);
    await assert.rejects(runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH }), (err: unknown) => {
      assert.ok(err instanceof SimulatorAbortedError, String(err));
      assert.equal(err.event.lastCommitted, 300, 'nothing was committed on the stale database');
      const logs = pluginLogs(err.lifetimes);
      assert.ok(
        logs.some((m) => /beyond the local vault/.test(m) && /adopted/.test(m)),
        `no adoption in the log:\n${logs.join('\n')}`,
      );
      assert.ok(
        logs.some((m) => /older than the backup/.test(m) && /lnbackup restore/.test(m)),
        `no refusal with the way out:\n${logs.join('\n')}`,
      );
      return true;
    });
    assert.equal(dataVersionOf(node.dbPath), 300);
    // The local vault now holds the server's records (adopted), the server got nothing new.
    assert.equal(localLastSeq(node), newestSeq);
    const after = await cli(['status', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--json']);
    assert.equal(after.code, 0, after.stderr);
    assert.deepEqual(
      [after.json?.totalBytes, (after.json?.latest as { lastSeq: string }).lastSeq, (after.json?.latest as { version: number }).version],
      [before.json?.totalBytes, (before.json?.latest as { lastSeq: string }).lastSeq, NODE3_END],
      'the server copy changed',
    );
    // What the refusal says to do gives back the newest state.
    const to = path.join(node.dir, 'after-stale.sqlite3');
    const r = await cli(['restore', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--to', to, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(dumpFile(to) === newest, 'restore --from does not give the newest state');
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('a stale vault the server has pruned past is refused by name (no proof possible), with the way out; the server copy is unchanged', async () => {
  const server = await startServer();
  try {
    const node = await makeRemoteNode('remote-pruned-past', { remotes: [server.url] });
    // Compaction every few dozen calls, keep one generation: the server soon drops the old records.
    setRetention(node, { compactMinBytes: 16384, compactRatio: 0.01, keepGenerations: 1 });
    const old = await runAndCopy(node, 150);
    const oldLastSeq = old.lastSeq;

    await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
    const newestSeq = localLastSeq(node);
    await serverHolds(server, node, newestSeq);
    const firstSeq = BigInt((await serverVaultOf(server, node.transportKey))?.firstSeq ?? '0');
    assert.ok(firstSeq > oldLastSeq + 1n, `the server kept records from ${firstSeq}; the old vault ends at ${oldLastSeq}: nothing was pruned past it`);
    const before = await cli(['status', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--json']);
    assert.equal(before.code, 0, before.stderr);

    old.putBack();
    await assert.rejects(runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH }), (err: unknown) => {
      assert.ok(err instanceof SimulatorAbortedError, String(err));
      assert.equal(err.event.lastCommitted, 150, 'nothing was committed on the stale database');
      const logs = pluginLogs(err.lifetimes);
      assert.ok(
        logs.some((m) => m.includes(`holds records ${firstSeq} to ${newestSeq}`) && /retention/.test(m) && /lnbackup restore --from/.test(m)),
        `no refusal naming the pruned records and the way out:\n${logs.join('\n')}`,
      );
      assert.ok(!logs.some((m) => /out of place/.test(m)), `the refusal blames the records instead of the pruning:\n${logs.join('\n')}`);
      return true;
    });
    assert.equal(dataVersionOf(node.dbPath), 150);
    assert.equal(localLastSeq(node), oldLastSeq, 'the local vault was changed');
    const after = await cli(['status', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--json']);
    assert.equal(after.code, 0, after.stderr);
    assert.deepEqual(after.json?.latest, before.json?.latest, 'the server copy changed');
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('policy all, server unreachable at start, --stall-limit 2: lightningd is stopped within a bounded time, with why and what to do', async () => {
  const server = await startServerAt();
  let restarted: ServerHandle | null = null;
  try {
    const node = await makeRemoteNode('remote-stall-limit', { remotes: [server.url], stallLimit: '2' });
    await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 150 });
    await serverHolds(server, node, localLastSeq(node));
    assert.equal(await server.stop(), 0);

    const started = Date.now();
    const exit = await spawnSimulator({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH }).exit;
    const seconds = (Date.now() - started) / 1000;
    assert.equal(exit.code, 2, `the simulator should abort: ${exit.stderr}`);
    const aborted = ofKind(exit.events, 'aborted')[0];
    assert.ok(aborted, 'lightningd aborted');
    assert.match(aborted.reason, /plugin returned failed db_write/);
    assert.equal(aborted.lastCommitted, 150, 'nothing was committed without the server');
    assert.equal(ofKind(exit.events, 'committed').length, 0);
    assert.ok(seconds < 60, `lightningd was stopped only after ${seconds} s`);
    assert.equal(dataVersionOf(node.dbPath), 150);
    const logs = pluginLogs([exit]);
    // Why (which destination, past which limit) and what to do.
    assert.ok(
      logs.some((m) => /past the stall limit of 2 s/.test(m) && m.includes(server.url) && /Bring the destinations back/.test(m)),
      logs.join('\n'),
    );
    const st = pluginStatus(node);
    assert.match(String(st?.lastError), /past the stall limit/);
    process.stdout.write(`# stall limit 2 s: lightningd stopped after ${seconds.toFixed(1)} s\n`);

    // Everything the node committed is on the server: a restore from it alone is the node.
    restarted = await server.restart();
    await restoreFromEqualsNode(node, restarted.url, 'after-stall-limit');

    // The guidance sends the operator to lnbackup-status.json: it must still show the destinations after the stop.
    assert.equal(
      st?.destinations?.find((d) => d.kind === 'server')?.state,
      'stalled',
      `lnbackup-status.json left after the stop does not show the stalled server: ${JSON.stringify(st)}`,
    );
  } finally {
    await (restarted ?? server).stop();
  }
});

test('policy all, server killed mid-replay, no stall limit: the node waits (no commit, stall reported) until the server is back, then finishes', async () => {
  let server = await startServerAt();
  try {
    const node = await makeRemoteNode('remote-wait', { remotes: [server.url] });
    await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 150 });
    const sim = spawnSimulator({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
    try {
      await committedAt(sim, 200);
      server.kill9();
      assert.equal(await server.exited, null);
      const held = await stalledAt(sim);
      await sleep(2000);
      assert.equal(lastCommitted(sim.events), held, 'the node committed while the server (policy all) was down');
      assert.ok(held < NODE3_END);
      assert.equal(sim.child.exitCode, null, 'lightningd waits, it is not stopped');
      assert.equal(dataVersionOf(node.dbPath), held);
      // The stall is reported (every 10 s) in the log and in lnbackup-status.json, while lightningd waits.
      const stalled = await until(
        'lnbackup-status.json to report the stall',
        () => {
          const st = pluginStatus(node);
          const d = st?.destinations?.find((x) => x.kind === 'server');
          return st && typeof st.stalledForMs === 'number' && d?.state === 'stalled' ? { st, d } : null;
        },
        45_000,
      );
      assert.ok(stalled.d.lagRecords > 0);
      await until(
        'a STALLED line in the log',
        () => pluginLogs([{ events: sim.events }]).some((m) => /STALLED for \d+ s/.test(m) && m.includes(server.url)),
        45_000,
      );
      assert.equal(lastCommitted(sim.events), held, 'the node committed while the server (policy all) was down');

      server = await server.restart();
      const exit = await sim.exit;
      assert.equal(exit.code, 0, exit.stderr);
      assert.equal(ofKind(exit.events, 'done')[0]?.dataVersion, NODE3_END);
      const logs = pluginLogs([exit]);
      assert.ok(
        logs.some((m) => /reachable again/.test(m)),
        logs.join('\n'),
      );
      assert.ok(
        logs.some((m) => /the stall is over/.test(m)),
        logs.join('\n'),
      );
      process.stdout.write(`# policy all: the node waited at ${held} while the server was down, then finished\n`);
    } finally {
      if (sim.child.exitCode === null) sim.child.kill('SIGKILL');
    }
    await serverHolds(server, node, localLastSeq(node));
    await restoreFromEqualsNode(node, server.url, 'after-wait');
  } finally {
    await server.stop();
  }
});

test('quorum=2: lightningd started while the server is down goes on with the vault and the replica; the server catches up once back', async () => {
  let server = await startServerAt();
  const replica = path.join(tempDir('remote-replica'), 'replica.sqlite3');
  const node = await makeRemoteNode('remote-quorum-start', { remotes: [server.url], replicas: [replica], policy: 'quorum=2' });
  try {
    await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 150 });
    assert.equal(await server.stop(), 0);
    const startedAt = Date.now();
    // The hook timeout only turns a hang into an abort here (lightningd itself waits forever).
    const sim = spawnPausing({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 250, hookTimeoutMs: 20_000 }, [200]);
    await committedAt(sim, 200).catch(async (err: Error) => {
      const exit = await sim.exit;
      const aborted = ofKind(exit.events, 'aborted')[0];
      throw new Error(
        `with quorum=2 and the vault and the replica up, lightningd could not get past its first write while the server was down: ` +
          `${aborted?.reason ?? err.message}; plugin log:\n${pluginLogs([exit]).join('\n')}`,
      );
    });
    try {
      const lagging = await until('lnbackup-status.json of this run to show the server stalled', () => {
        const st = pluginStatus(node);
        const d = st?.destinations?.find((x) => x.kind === 'server');
        return st && Date.parse(st.updatedAt) >= startedAt && d?.state === 'stalled' && d.lagRecords > 0 ? d : null;
      });
      assert.ok(lagging.lastError);
    } finally {
      sim.child.kill('SIGCONT');
    }
    const exit = await sim.exit;
    assert.equal(exit.code, 0, exit.stderr);
    assert.equal(ofKind(exit.events, 'done')[0]?.dataVersion, 250);

    server = await server.restart();
    const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
    assert.equal(run.dataVersion, NODE3_END);
    await serverHolds(server, node, localLastSeq(node));
    await restoreFromEqualsNode(node, server.url, 'quorum-start-from-server');
    assert.ok(dumpFile(replica) === dumpFile(node.dbPath), 'the replica differs from the node');
  } finally {
    await server.stop();
  }
});

test('policy all, server down when lightningd starts: the stall shows in lnbackup-status.json; lightningd killed meanwhile, the plugin exits and releases the vault', async () => {
  let server = await startServerAt();
  let pluginPid = 0;
  try {
    const node = await makeRemoteNode('remote-orphan', { remotes: [server.url] });
    await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 150 });
    assert.equal(await server.stop(), 0);
    const problems: string[] = [];
    const startedAt = Date.now();
    const sim = spawnSimulator({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
    const started = await sim.waitFor((e) => e.event === 'plugin-started');
    pluginPid = started.event === 'plugin-started' ? started.pid : 0;
    // The first write waits for the server (policy all): the plugin is trying to reach it.
    await sim.waitFor((e) => e.event === 'plugin-log' && e.message.includes(server.url) && /reconnecting/.test(e.message));
    // The README: while the node stalls, lnbackup-status.json is kept current (a stall is reported within 10 s).
    let shown: unknown = null;
    await until(
      'lnbackup-status.json of this run to show the stalled server',
      () => {
        const st = pluginStatus(node);
        shown = st;
        return st && Date.parse(st.updatedAt) >= startedAt && st.destinations?.find((d) => d.kind === 'server')?.state === 'stalled';
      },
      20_000,
    ).catch((err: Error) => problems.push(`${err.message}; it says: ${JSON.stringify(shown)}`));
    assert.equal(lastCommitted(sim.events), 0, 'nothing commits while the server is down');
    // lightningd dies (kill -9) while its transaction waits: the plugin sees its stdin close.
    const simGone = new Promise((resolve) => (sim.child.exitCode !== null || sim.child.signalCode !== null ? resolve(null) : sim.child.once('exit', resolve)));
    sim.child.kill('SIGKILL');
    await simGone;
    assert.equal(dataVersionOf(node.dbPath), 150);
    await until(`the plugin (pid ${pluginPid}) to exit after lightningd died`, () => !processAlive(pluginPid), 15_000).catch((err: Error) => {
      problems.push(`${err.message}: it still holds the vault's lock, so a restarted lightningd would find the vault in use`);
      process.kill(pluginPid, 'SIGKILL');
    });
    await until('the plugin to be gone', () => !processAlive(pluginPid), 10_000);
    server = await server.restart();
    const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
    assert.equal(run.dataVersion, NODE3_END);
    await serverHolds(server, node, localLastSeq(node));
    await restoreFromEqualsNode(node, server.url, 'after-orphan');
    assert.deepEqual(problems, []);
  } finally {
    if (pluginPid > 0 && processAlive(pluginPid)) process.kill(pluginPid, 'SIGKILL');
    await server.stop();
  }
});
