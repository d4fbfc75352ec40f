// Connection faults between the plugin and an lnbackup server, end to end: the node's configured
// server URL points at a TCP proxy (tcpProxy.ts: the server's key, the proxy's port) in front of a
// real `lnbackup server` child process, and a simulated lightningd replays node3's whole history
// (its rewinds and restarts included) and node1's first versions through the real plugin (policy
// all: every commit waits for the server's ack). Meanwhile the proxy drops every connection (>= 10
// times), cuts one in the middle of a chunk it forwards (>= 5), delays everything by 50-200 ms for
// stretches, and black-holes the traffic (held, nothing closed) for ~3 s and for ~20 s, longer than
// the client's 15 s watchdog, which must cut the dead connection and reconnect. After each fault
// the node must commit again within a generous bound; every replay completes; the server's records
// equal the local vault's byte for byte (nothing lost, nothing applied twice); `lnbackup restore
// --from` gives the node's database.
//
// Reproduce the plan of faults with PROXY_CUTS_SEED=<seed> (printed first).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { readConfig } from '../src/cln/config.js';
import { formatRemoteUrl } from '../src/destinations/remoteUrl.js';
import { verifyVault } from '../src/restore/verify.js';
import { LiveReplay } from './helpers/liveReplay.js';
import { tempDir } from './helpers/paths.js';
import { Prng, envCount } from './helpers/prng.js';
import { dumpFile, IncrementalReplay, loadChain, NODE3_CHAIN } from './helpers/reference.js';
import { cli, makeRemoteNode, startServerAt } from './helpers/remoteNode.js';
import { assertServerHoldsPrefix, fixedPort, serverVaultDir, traceHead } from './helpers/serverCopy.js';
import type { ServerHandle } from './helpers/serverProcess.js';
import { TcpProxy } from './helpers/tcpProxy.js';
import { sleep, within } from './helpers/waiting.js';
import { logShape } from './helpers/logShape.js';

const SEED = envCount('PROXY_CUTS_SEED', crypto.randomInt(2 ** 31));
/** node1 is bounded to its first versions (migrations, funding, the first payments). */
const NODE1_VERSIONS = 3000;
/** Waiting longer than this for any commit is a hang (the bounds below then fail with the figure). */
const HANG_MS = 90_000;

function log(line: string): void {
  process.stderr.write(`[proxy-cuts] ${line}\n`);
}

type FaultKind = 'drop' | 'cut' | 'delay' | 'blackhole-3s' | 'blackhole-20s';

/** From a fault's start to the node's next commit after it, at most (generous: a loaded 2-core box). */
const RECOVERY_BOUND_MS: Record<FaultKind, number> = {
  drop: 10_000,
  cut: 10_000,
  delay: 10_000, // counted from the end of the stretch
  'blackhole-3s': 15_000,
  'blackhole-20s': 40_000,
};

interface Stats {
  done: Map<FaultKind, number>;
  /** Worst recovery per kind (ms). */
  worst: Map<FaultKind, number>;
  /** Connections the proxy accepted in all. */
  connections: number;
  /** Commits made during delay stretches. */
  slowCommits: number;
  watchdogLogged: number;
  /** Plugin log lines other than 'info', by their words. */
  pluginLogs: Map<string, number>;
  episodes: string[];
}

const show = (m: Map<string, number>): string => [...m.entries()].map(([k, v]) => `${k}: ${v}`).join(', ');

interface Pending {
  readonly kind: FaultKind;
  /** Recovery is measured from here. */
  readonly from: number;
}

/**
 * Runs faults from `queue` against a live replay until the queue is empty or the replay ends (the
 * faults left go to the next node). Each fault waits for a commit after the previous one (that is
 * its recovery, checked against its bound) and a random moment while the node is committing.
 */
async function runFaults(label: string, replay: LiveReplay, proxy: TcpProxy, queue: FaultKind[], max: number, rng: Prng, stats: Stats): Promise<void> {
  let pending: Pending | null = null;
  let lastEnd = Date.now();
  const settle = async (): Promise<boolean> => {
    const c = await within(
      Promise.race([replay.nextCommitAfter(lastEnd), replay.done.then(() => null)]),
      HANG_MS,
      `seed ${SEED}, ${label}: waiting for a commit after ${pending?.kind ?? 'the start'}`,
    );
    if (c === null) return false;
    if (pending !== null) {
      const took = c.at - pending.from;
      stats.worst.set(pending.kind, Math.max(stats.worst.get(pending.kind) ?? 0, took));
      assert.ok(
        took < RECOVERY_BOUND_MS[pending.kind],
        `seed ${SEED}, ${label}: the node committed again ${took} ms after a ${pending.kind} (bound ${RECOVERY_BOUND_MS[pending.kind]} ms)`,
      );
      pending = null;
    }
    return true;
  };
  for (let n = 0; n < max && queue.length > 0;) {
    if (!(await settle())) return;
    await sleep(rng.int(20, 400));
    if (replay.finished) return;
    const kind = queue[0];
    const start = Date.now();
    const before = proxy.accepted;
    let happened = true;
    switch (kind) {
      case 'drop':
        // Only a drop that closes a live connection counts (between connections, try again later).
        happened = proxy.connections > 0;
        proxy.dropAll();
        break;
      case 'cut': {
        proxy.cutMidFrame();
        // It lands on the next chunk either way; the client then reconnects.
        const deadline = Date.now() + 30_000;
        while (proxy.accepted === before && !replay.finished && Date.now() < deadline) await sleep(5);
        happened = proxy.accepted > before;
        break;
      }
      case 'delay': {
        proxy.delay(rng.int(50, 200));
        const commitsBefore = replay.commits;
        await sleep(rng.int(1000, 2500));
        proxy.delay(0);
        stats.slowCommits += replay.commits - commitsBefore;
        break;
      }
      case 'blackhole-3s':
      case 'blackhole-20s': {
        proxy.blackhole(true);
        // An ack already past the proxy may still let one call commit; after that, nothing can.
        await sleep(1500);
        const committed = replay.commits;
        await sleep(kind === 'blackhole-3s' ? 1500 : 18_500);
        const reconnected = proxy.accepted > before;
        proxy.blackhole(false);
        assert.equal(replay.commits, committed, `seed ${SEED}, ${label}: the node committed during a black hole, without the server's ack (policy all)`);
        if (kind === 'blackhole-20s' && !replay.finished) {
          assert.ok(
            reconnected,
            `seed ${SEED}, ${label}: 20 s of silence from the server, and the client never cut the connection and reconnected (watchdog 15 s)`,
          );
        }
        happened = !replay.finished;
        break;
      }
    }
    if (!happened) {
      if (kind === 'drop' && !replay.finished) {
        lastEnd = Date.now();
        continue;
      }
      if (kind === 'cut') assert.ok(replay.finished, `seed ${SEED}, ${label}: a mid-frame cut was armed for 30 s and no connection was cut`);
      return; // the replay ended first: this fault goes to the next node
    }
    queue.shift();
    n++;
    stats.done.set(kind, (stats.done.get(kind) ?? 0) + 1);
    pending = { kind, from: kind === 'delay' ? Date.now() : start };
    lastEnd = Date.now();
  }
  await settle();
}

async function episode(server: ServerHandle, name: string, traces: readonly string[], queue: FaultKind[], max: number, rng: Prng, stats: Stats): Promise<void> {
  const started = Date.now();
  const proxy = await TcpProxy.start(server.port);
  const url = formatRemoteUrl(Buffer.from(server.publicKey, 'hex'), '127.0.0.1', proxy.port);
  // Set up by the real `lnbackup init --remote <the proxy>` (policy all, no stall limit).
  const node = await makeRemoteNode(`proxy-cuts-${name}`, { remotes: [url] });
  const { vaultId } = readConfig(node.networkDir);
  const replay = new LiveReplay({ lightningDir: node.lightningDir, networkDir: node.networkDir, traces });
  const ref = new IncrementalReplay(loadChain(traces));
  const faultsBefore = queue.length;
  try {
    await runFaults(name, replay, proxy, queue, max, rng, stats);
    const final = await within(replay.done, 10 * HANG_MS, `seed ${SEED}, ${name}: the end of the replay`);
    const ctx = `seed ${SEED}, ${name}, end of the replay at ${final}`;
    assert.equal(replay.lingeringPlugins, 0, `${ctx}: ${replay.lingeringPlugins} plugins of dead lifetimes did not exit within 15 s`);
    const nodeDump = dumpFile(node.dbPath);
    ref.advanceTo(final);
    assert.ok(nodeDump === ref.dumpAt(final), `${ctx}: the node's own database differs from the plain replay`);
    const held = assertServerHoldsPrefix(node.vault, serverVaultDir(server.dataDir, vaultId), true, ctx);
    const to = path.join(node.dir, 'restored-from-server.sqlite3');
    const restored = await cli(['restore', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--to', to, '--force', '--json']);
    assert.equal(restored.code, 0, `${ctx}: lnbackup restore --from failed: ${restored.stderr}`);
    assert.equal(restored.json?.version, final, `${ctx}: lnbackup restore --from gave version ${String(restored.json?.version)}`);
    assert.ok(dumpFile(to) === nodeDump, `${ctx}: the database restored from the server differs from the node's`);
    const verify = verifyVault(node.vault, node.keys);
    assert.ok(verify.ok, `${ctx}: the local vault does not verify: ${JSON.stringify(verify.firstBadRecord)}`);
    const lost = replay.pluginLogs.filter((l) => /LOST RECORDS/.test(l.message));
    assert.deepEqual(lost, [], `${ctx}: the plugin saw the server without records it had acknowledged`);
    stats.watchdogLogged += replay.pluginLogs.filter((l) => /nothing arrived from/.test(l.message)).length;
    for (const l of replay.pluginLogs) {
      if (l.level !== 'info') stats.pluginLogs.set(`${l.level}: ${logShape(l.message)}`, (stats.pluginLogs.get(`${l.level}: ${logShape(l.message)}`) ?? 0) + 1);
    }
    stats.connections += proxy.accepted;
    const line =
      `${name}: ${faultsBefore - queue.length} faults, ${proxy.accepted} connections, done at version ${final} after ${replay.lifetimes.length} lifetimes, ` +
      `${held.records} records (${(held.bytes / 1e6).toFixed(1)} MB) identical on the server, ${((Date.now() - started) / 1000).toFixed(1)} s`;
    log(line);
    stats.episodes.push(line);
  } finally {
    await replay.abort();
    ref.close();
    await proxy.close();
  }
}

test(
  'proxy faults between the plugin and the server (drops, mid-frame cuts, delays, 3 s and 20 s black holes): every replay completes, exact copy, bounded recovery',
  { timeout: 15 * 60_000 },
  async (t) => {
    log(`seed ${SEED} (rerun with PROXY_CUTS_SEED=${SEED})`);
    t.diagnostic(`seed ${SEED}`);
    const rng = new Prng(SEED);
    const root = tempDir('proxy-cuts');
    const stats: Stats = { done: new Map(), worst: new Map(), connections: 0, slowCommits: 0, watchdogLogged: 0, pluginLogs: new Map(), episodes: [] };
    let serverProblems = '';
    const started = Date.now();
    const server = await startServerAt({ port: await fixedPort() });
    try {
      // node3's history first (five drops and cuts across its lifetimes), then node1 with the rest in
      // a random order; whatever a node's replay leaves undone goes to another node3.
      const early: FaultKind[] = ['drop', 'drop', 'drop', 'cut', 'cut'];
      const rest: FaultKind[] = [
        ...Array<FaultKind>(7).fill('drop'),
        ...Array<FaultKind>(3).fill('cut'),
        ...Array<FaultKind>(4).fill('delay'),
        'blackhole-3s',
        'blackhole-20s',
      ];
      for (let i = rest.length - 1; i > 0; i--) {
        const j = rng.int(0, i);
        [rest[i], rest[j]] = [rest[j], rest[i]];
      }
      const queue = [...early, ...rest];
      await episode(server, 'node3 #1', NODE3_CHAIN, queue, early.length, rng, stats);
      await episode(server, 'node1', [traceHead(root, 'cln-v26.06-node1.jsonl.gz', NODE1_VERSIONS)], queue, Infinity, rng, stats);
      for (let n = 2; queue.length > 0; n++) {
        assert.ok(n <= 8, `seed ${SEED}: faults still left after ${n - 1} node3 nodes: ${queue.join(', ')}`);
        await episode(server, `node3 #${n}`, NODE3_CHAIN, queue, Infinity, rng, stats);
      }
      assert.equal(await server.stop(), 0, `the server did not stop cleanly: ${server.stderr().slice(-2000)}`);
      const problems = new Map<string, number>();
      for (const line of server.stderr().split('\n')) {
        if (/error|fail|internal|refus|lost|corrupt/i.test(line)) problems.set(logShape(line), (problems.get(logShape(line)) ?? 0) + 1);
      }
      serverProblems = show(problems);
    } finally {
      server.kill9();
    }
    const count = (k: FaultKind): number => stats.done.get(k) ?? 0;
    const summary = [
      `seed ${SEED}: ${count('drop')} drops, ${count('cut')} mid-frame cuts, ${count('delay')} delay stretches (${stats.slowCommits} commits during them), ` +
        `${count('blackhole-3s')} + ${count('blackhole-20s')} black holes of 3 s and 20 s; ${stats.connections} connections; ${((Date.now() - started) / 1000).toFixed(1)} s`,
      `worst time from a fault to the next commit: ${[...stats.worst.entries()].map(([k, v]) => `${k} ${v} ms`).join(', ')}`,
      `watchdog cuts the plugin logged: ${stats.watchdogLogged}`,
      `plugin logs (not info): ${show(stats.pluginLogs) || 'none'}`,
      `server logs of problems: ${serverProblems || 'none'}`,
      ...stats.episodes,
    ];
    for (const line of summary) {
      log(line);
      t.diagnostic(line);
    }
    assert.ok(count('drop') >= 10 && count('cut') >= 5 && count('delay') >= 4 && count('blackhole-3s') === 1 && count('blackhole-20s') === 1);
  },
);
