// Compaction and retention end to end: the real lnbackup-cln plugin under the simulated lightningd
// (real child processes, real files) on node1's trace, with compaction forced every few calls. The
// vault must restore exactly the node's database, verify, and hold only the generations retention
// keeps; SIGKILLs of the plugin (alone, or with lightningd) at random moments, most of them in the
// middle of a compaction (staged, building, packs written but not switched to), must never leave a
// vault that cannot be restored to what the node committed, nor one the next start cannot open; and
// the hooks must stay short while compaction runs.
//
// Reproduce a run with COMPACTION_SEED=<seed> (printed first); COMPACTION_KILLS changes the number
// of kills. Timer kills depend on timing, so a seed replays the same plan, not the same instants.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PLUGIN_PATH } from '../src/cli/initNode.js';
import type { RetentionSettings } from '../src/journal/retention.js';
import { scanGenerations } from '../src/journal/retention.js';
import { STAGING_DIR } from '../src/journal/pagedSnapshot.js';
import { listGenerations } from '../src/restore/generations.js';
import { restoreDatabase, type RestoreResult } from '../src/restore/rebuild.js';
import { verifyVault } from '../src/restore/verify.js';
import type { SimulatorEvent } from '../src/simulator/events.js';
import { resumeIndex } from '../src/simulator/resume.js';
import { runSimulatorUntilDone, spawnSimulator, type SimulatorExit, type SimulatorRunResult } from '../src/simulator/runner.js';
import type { CallEntry } from '../src/simulator/trace.js';
import { openIdentity } from '../src/vault/identity.js';
import { listPacks, pagesDir } from '../src/vault/packFiles.js';
import { tempDir, tracePath } from './helpers/paths.js';
import { envCount, Prng } from './helpers/prng.js';
import { callsOf, dataVersionOf, dumpFile, IncrementalReplay, isTransaction, loadChain } from './helpers/reference.js';
import { compactionStatus, setRetention } from './helpers/retention.js';
import { ofKind } from './helpers/simEvents.js';
import { makeNode, type VaultNode } from './helpers/testNode.js';
import { traceHead } from './helpers/traceHead.js';
import { aliveIn, findProcesses, reapLeftovers } from './helpers/torture.js';

const NODE1 = tracePath('cln-v26.06-node1.jsonl.gz');
const NODE1_LAST = 8176;
/** Compaction every few dozen calls (node1's database is about 1 MB). */
const FORCED: Partial<RetentionSettings> = { compactMinBytes: 16384, compactRatio: 0.01 };
/** Compaction practically all the time: a new one starts as soon as the last one is switched to. */
const VERY_OFTEN: Partial<RetentionSettings> = { compactMinBytes: 4096, compactRatio: 0.001 };

const SEED = envCount('COMPACTION_SEED', crypto.randomInt(2 ** 31));
const KILLS = envCount('COMPACTION_KILLS', 12);
/** The kill test runs on node1's first versions (funding, the channel, the first payments). */
const KILL_VERSIONS = envCount('COMPACTION_KILL_VERSIONS', 3000);
/** A generous bound for the longest hook (the point is no hook waits for a whole compaction). */
const MAX_HOOK_MS = 2000;

interface Replay {
  readonly node: VaultNode;
  readonly run: SimulatorRunResult;
  readonly logs: string[];
  readonly ms: number;
}

async function replayNode1(name: string, retention: Partial<RetentionSettings>): Promise<Replay> {
  const node = makeNode(name);
  setRetention(node, retention);
  const logs: string[] = [];
  const started = Date.now();
  const run = await runSimulatorUntilDone({
    lightningDir: node.lightningDir,
    traces: [NODE1],
    plugin: PLUGIN_PATH,
    progressEvery: 100_000,
    onEvent: (e) => {
      if (e.event === 'plugin-log') logs.push(`${e.level}: ${e.message}`);
    },
  });
  return { node, run, logs, ms: Date.now() - started };
}

// The forced run serves two tests (its hook latencies are the third's).
let forcedRun: Promise<Replay> | null = null;
const forced = (): Promise<Replay> => (forcedRun ??= replayNode1('compact-forced', FORCED));

/** Temp files in the vault's pages/ folder (a pack or its parity being written when the plugin died). */
function tempPacks(vaultDir: string): string[] {
  const dir = pagesDir(vaultDir);
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.includes('.tmp-')) : [];
}

/** What staging/ holds (a compaction between staging and switch when its plugin died). */
function stagingFiles(vaultDir: string): string[] {
  const dir = path.join(vaultDir, STAGING_DIR);
  return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
}

/**
 * Packs no generation of the vault names (PackList), and whether each is newer than the newest
 * snapshot (the packs of a compaction built but not switched to yet).
 */
function unreferencedPacks(node: VaultNode): { name: string; newer: boolean }[] {
  const { gens, damaged } = scanGenerations(openIdentity(node.vault, node.keys), node.keys, node.vault);
  assert.equal(damaged, null, `the vault is damaged: ${damaged}`);
  const named = new Set<string>();
  for (const g of gens) for (const p of g.packs) named.add(p);
  const newest = Math.max(...gens.map((g) => g.takenAt));
  return listPacks(node.vault)
    .filter((p) => !named.has(p.name))
    .map((p) => ({ name: p.name, newer: fs.statSync(p.path).mtimeMs >= newest }));
}

test('node1 with compaction forced often: many generations, exact restore, only the kept generation stays', { timeout: 10 * 60_000 }, async (t) => {
  const { node, run, logs, ms } = await forced();
  assert.equal(run.dataVersion, NODE1_LAST);
  assert.equal(run.lifetimes.length, 1);

  const gens = listGenerations(node.vault);
  const newest = gens[gens.length - 1].generation;
  const status = compactionStatus(node);
  const pruned = logs.filter((m) => /retention: removed generations below \d+/.test(m)).length;
  const line = `node1 with ${JSON.stringify(FORCED)}: ${(ms / 1000).toFixed(1)} s, last generation ${newest}, ${status?.compactions} compactions, ${pruned} retention passes logged; status: ${JSON.stringify(status)}`;
  t.diagnostic(line);
  console.log(line);

  assert.ok(newest > 50, `only ${newest} generations were made`);
  assert.deepEqual(
    gens.map((g) => g.generation),
    [newest],
    'with keepGenerations 1 the vault holds the newest generation only',
  );
  assert.ok(status !== null, 'lnbackup-status.json has a compaction field');
  assert.ok(status.compactions > 50, `the status file counts ${status.compactions} compactions`);
  assert.equal(status.generationsKept, 1);
  assert.equal(status.lastCompaction?.generation, newest, 'the last compaction made the newest generation');
  assert.ok(pruned > 50, `the plugin logged ${pruned} retention passes`);

  const to = path.join(node.dir, 'restored.sqlite3');
  const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to });
  assert.equal(r.version, NODE1_LAST);
  assert.equal(r.generation, newest);
  assert.ok(r.baseVersion > NODE1_LAST - 500, `the newest generation starts at version ${r.baseVersion}, far from the end`);
  assert.equal(r.integrityCheck, 'ok');
  assert.equal(dumpFile(to), dumpFile(node.dbPath), 'the restored database differs from the node database');

  const v = verifyVault(node.vault, node.keys);
  assert.equal(v.ok, true, JSON.stringify(v.firstBadRecord));
  assert.equal(v.generations.length, 1);
  assert.equal(v.generations[0].complete, true);

  // Every pack is used by the kept generation, except those of a compaction still unfinished at the end.
  const stale = unreferencedPacks(node).filter((p) => !p.newer);
  assert.deepEqual(stale, [], 'packs that no kept generation uses were left behind');
  assert.deepEqual(tempPacks(node.vault), []);
});

type KillKind = 'plugin-timer' | 'both-timer' | 'plugin-at';

interface Plan {
  readonly kind: KillKind | 'none';
  /** Timer kills: ms after the lifetime's first commit. */
  readonly delayMs?: number;
  /** Timer kills: then wait (up to 2 s) for a staged database, i.e. a compaction between staging and switch. */
  readonly whenStaged?: boolean;
  /** plugin-at: the trace entry whose hook the simulator kills the plugin in. */
  readonly entry?: number;
}

const describePlan = (p: Plan): string =>
  p.kind === 'none'
    ? 'no kill'
    : p.kind === 'plugin-at'
      ? `plugin killed mid-hook at entry ${p.entry}`
      : `${p.kind} ${p.delayMs} ms after the first commit${p.whenStaged ? ', once a database is staged' : ''}`;

interface Lifetime {
  readonly exit: SimulatorExit;
  readonly outcome: 'done' | 'killed';
  readonly logs: string[];
}

/** One lifetime of the simulated lightningd with the plugin, killed as planned; waits until both are gone. */
async function runLifetime(node: VaultNode, trace: string, plan: Plan, ctx: string): Promise<Lifetime> {
  const logs: string[] = [];
  let firstCommit = false;
  let timer: NodeJS.Timeout | undefined;
  let killedSim = false;
  let killedPlugin = false;
  const sim = spawnSimulator({
    lightningDir: node.lightningDir,
    traces: [trace],
    plugin: PLUGIN_PATH,
    hookTimeoutMs: 60_000,
    killPluginAt: plan.kind === 'plugin-at' ? plan.entry : undefined,
    onEvent: (e: SimulatorEvent) => {
      if (e.event === 'plugin-log') logs.push(`${e.level}: ${e.message}`);
      if (e.event === 'committed' && !firstCommit) {
        firstCommit = true;
        if (plan.kind === 'plugin-timer' || plan.kind === 'both-timer') timer = setTimeout(plan.whenStaged ? fireWhenStaged : fire, plan.delayMs);
      }
    },
  });
  const child = sim.child;
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  let deadline: number | null = null;
  function fireWhenStaged(): void {
    deadline ??= Date.now() + 2000;
    if (stagingFiles(node.vault).length > 0 || Date.now() > deadline) fire();
    else if (running()) timer = setTimeout(fireWhenStaged, 1);
  }
  function fire(): void {
    if (!running()) return;
    // The plugin's pid as the simulator reported it, and any other plugin process of this node.
    const reported = ofKind(sim.events, 'plugin-started')
      .map((e) => e.pid)
      .filter((pid) => aliveIn(pid, node.networkDir));
    const pids = new Set([...reported, ...findProcesses(PLUGIN_PATH, node.networkDir)]);
    if (plan.kind === 'both-timer') killedSim = child.kill('SIGKILL');
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        killedPlugin = true;
      } catch {
        // It exited just now.
      }
    }
  }
  const hang = setTimeout(() => child.kill('SIGKILL'), 5 * 60_000);
  await new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
  clearTimeout(timer);
  clearTimeout(hang);
  const lingering = await reapLeftovers(PLUGIN_PATH, node.networkDir, 10_000);
  const exit = await sim.exit;
  assert.deepEqual(lingering, [], `${ctx}: the plugin was still running 10 s after lightningd died`);
  if (exit.code === 0 && ofKind(exit.events, 'done').length > 0) return { exit, outcome: 'done', logs };
  const aborted = ofKind(exit.events, 'aborted')[0];
  const pluginDied = exit.code === 2 && aborted !== undefined && /SIGKILL/.test(aborted.reason);
  if ((plan.kind === 'plugin-at' && pluginDied && aborted.entry === plan.entry) || (plan.kind === 'plugin-timer' && killedPlugin && pluginDied)) {
    return { exit, outcome: 'killed', logs };
  }
  if (plan.kind === 'both-timer' && killedSim && exit.signal === 'SIGKILL') return { exit, outcome: 'killed', logs };
  return assert.fail(
    `${ctx}: the lifetime ended unexpectedly (code ${exit.code}, signal ${exit.signal}${aborted ? `, aborted: ${aborted.reason}` : ''}); ` +
      `plugin log:\n${logs.slice(-20).join('\n')}\nstderr:\n${exit.stderr.slice(-4000)}`,
  );
}

test('kill -9 during compaction at random points: the vault always restores what the node committed', { timeout: 15 * 60_000 }, async (t) => {
  const rng = new Prng(SEED);
  const log = (line: string): void => {
    console.log(`[compaction-kill] ${line}`);
    t.diagnostic(line);
  };
  log(`seed ${SEED} (rerun with COMPACTION_SEED=${SEED}), ${KILLS} kills on node1's first ${KILL_VERSIONS} versions, retention ${JSON.stringify(VERY_OFTEN)}`);
  const root = tempDir('compaction-kill');
  const trace = traceHead(NODE1, KILL_VERSIONS, root);
  const entries = loadChain([trace]);
  const calls = callsOf(entries);
  const node = makeNode('compaction-kill');
  setRetention(node, VERY_OFTEN);
  const scratch = path.join(node.dir, 'scratch');
  fs.mkdirSync(scratch);
  const ref = new IncrementalReplay(entries);
  const tally = new Map<string, number>();
  const count = (k: string): void => void tally.set(k, (tally.get(k) ?? 0) + 1);
  const started = Date.now();
  let lastC = 0;
  let kills = 0;
  let midCompaction = 0;
  // The replay's speed, from the timer kills so far: a timer's delay is capped so that the kills
  // still to come fit in the versions left (on a fast machine 1200 ms can cover a tenth of the trace).
  let versionsPerMs: number | null = null;
  const maxDelayMs = (): number => {
    if (versionsPerMs === null || versionsPerMs <= 0) return 1200;
    const share = (KILL_VERSIONS - lastC) / (KILLS - kills + 1);
    return Math.max(50, Math.min(1200, Math.floor(share / versionsPerMs)));
  };
  try {
    for (let lifetime = 1; ; lifetime++) {
      assert.ok(lifetime <= KILLS + 10, `seed ${SEED}: still not done after ${lifetime} lifetimes`);
      let plan: Plan = { kind: 'none' };
      if (kills < KILLS) {
        const kind = rng.weighted<KillKind>({ 'plugin-timer': 5, 'both-timer': 3, 'plugin-at': 2 });
        if (kind === 'plugin-at') {
          const from = resumeIndex(entries, lastC);
          const upcoming = entries
            .map((e, i) => ({ e, i }))
            .filter(({ e, i }) => i >= from && e.kind === 'call')
            .slice(0, 200);
          plan =
            upcoming.length > 1 ? { kind, entry: upcoming[rng.int(1, upcoming.length - 1)].i } : { kind: 'plugin-timer', delayMs: rng.int(0, maxDelayMs()) };
        } else {
          plan = { kind, delayMs: rng.int(0, maxDelayMs()), whenStaged: rng.next() < 0.5 };
        }
      }
      const ctx = `seed ${SEED}, lifetime ${lifetime} (from version ${lastC}), ${describePlan(plan)}`;
      const lt = await runLifetime(node, trace, plan, ctx);

      if (lt.outcome === 'done') {
        const done = ofKind(lt.exit.events, 'done')[0];
        assert.equal(done.dataVersion, KILL_VERSIONS, `${ctx}: done at the end of the trace`);
        ref.advanceTo(done.dataVersion);
        const nodeDump = dumpFile(node.dbPath);
        assert.equal(nodeDump, ref.dumpAt(done.dataVersion), `${ctx}: the node's database differs from the plain replay`);
        const to = path.join(scratch, 'final.sqlite3');
        const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, force: true });
        assert.equal(r.version, done.dataVersion, `${ctx}: the final restore`);
        assert.equal(dumpFile(to), nodeDump, `${ctx}: the final restore differs from the node's database`);
        const v = verifyVault(node.vault, node.keys);
        assert.equal(v.ok, true, `${ctx}: verify: ${JSON.stringify(v.firstBadRecord)}`);
        const gens = listGenerations(node.vault).map((g) => g.generation);
        assert.deepEqual(gens, [r.generation], `${ctx}: with keepGenerations 1 only the newest generation stays`);
        assert.deepEqual(
          unreferencedPacks(node).filter((p) => !p.newer),
          [],
          `${ctx}: packs no kept generation uses were left behind`,
        );
        log(
          `done at version ${done.dataVersion} after ${lifetime} lifetimes, ${kills} kills, ${((Date.now() - started) / 1000).toFixed(1)} s; last generation ${r.generation} (base ${r.baseVersion}), compaction status ${JSON.stringify(compactionStatus(node))}`,
        );
        break;
      }

      // Killed: what the dead plugin left, then the checks a restore after this crash must pass.
      kills++;
      count(plan.kind);
      const staging = stagingFiles(node.vault);
      const temps = tempPacks(node.vault);
      const unswitched = unreferencedPacks(node).filter((p) => p.newer);
      const during = staging.length > 0 || unswitched.length > 0 || temps.length > 0;
      if (during) midCompaction++;
      if (staging.length > 0) count('left a staged database');
      if (unswitched.length > 0) count('left packs built but not switched to');
      if (temps.length > 0) count('left temp files in pages/');

      const c = dataVersionOf(node.dbPath); // the next lightningd rolls its hot journal back the same way
      assert.ok(c >= lastC, `${ctx}: the node's committed version went back from ${lastC} to ${c}`);
      ref.advanceTo(c);
      assert.equal(dumpFile(node.dbPath), ref.dumpAt(c), `${ctx}: C=${c}: the node's own database differs from the plain replay`);
      assert.ok(listGenerations(node.vault).length >= 1, `${ctx}: the vault lists no generation`);
      const to = path.join(scratch, 'restored.sqlite3');
      let r: RestoreResult;
      const notices: string[] = [];
      try {
        r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, force: true, onNotice: (m) => notices.push(m) });
      } catch (err) {
        return assert.fail(`${ctx}: C=${c}: restore failed: ${(err as Error).stack}`);
      }
      const gave =
        `${ctx}: C=${c}: restore gave ${r.version}${r.inFlight ? ' (in flight)' : ''} from generation ${r.generation}` +
        ` (generations ${listGenerations(node.vault)
          .map((g) => g.generation)
          .join(',')}${notices.length > 0 ? `; restore said: ${notices.join('; ')}` : ''})`;
      assert.equal(r.integrityCheck, 'ok', gave);
      const restored = dumpFile(to);
      if (r.version === c) {
        assert.equal(restored, ref.dumpAt(c), `${gave}: differs from the plain replay at ${c}`);
        count('restore gave C');
      } else {
        assert.ok(r.version === c + 1 && r.inFlight, `${gave}: expected ${c}, or ${c + 1} in flight`);
        const next = calls.find((e: CallEntry) => e.dataVersion === c + 1 && isTransaction(e.writes));
        assert.ok(next, `${gave}: the trace has no transaction to ${c + 1}`);
        assert.equal(restored, ref.dumpInFlight(c, next.writes), `${gave}: is not state ${c} plus the transaction to ${c + 1}`);
        count('restore gave C+1 in flight');
      }
      const v = verifyVault(node.vault, node.keys);
      assert.equal(v.ok, true, `${gave}: verify: ${JSON.stringify(v.firstBadRecord)}`);
      assert.ok(
        v.generations.some((g) => g.complete),
        `${gave}: no complete generation`,
      );
      log(
        `kill ${kills}: ${describePlan(plan)}, C=${c}, restore ${r.version}${r.inFlight ? ' in flight' : ''} (generation ${r.generation}, base ${r.baseVersion})` +
          `${during ? `; mid-compaction: staging [${staging.join(',')}], ${unswitched.length} unswitched pack(s), ${temps.length} temp file(s) in pages/` : ''}`,
      );
      if (plan.kind !== 'none' && plan.delayMs !== undefined && plan.delayMs > 0 && !plan.whenStaged) versionsPerMs = (c - lastC) / plan.delayMs;
      lastC = c;
    }
  } finally {
    ref.close();
  }
  const summary = `${kills} kills in ${((Date.now() - started) / 1000).toFixed(1)} s, ${midCompaction} of them with a compaction under way: ${[...tally].map(([k, n]) => `${k}: ${n}`).join(', ')}`;
  log(summary);
  assert.equal(kills, KILLS, `seed ${SEED}: only ${kills} kills happened before the trace ended`);
  assert.ok(KILLS === 0 || midCompaction > 0, `seed ${SEED}: no kill landed while a compaction was under way`);
});

test(
  'the hooks stay short with compaction forced (printed; a generous bound is asserted; `npm run bench` compares with compaction off)',
  { timeout: 10 * 60_000 },
  async (t) => {
    const on = await forced();
    const status = compactionStatus(on.node);
    assert.ok((status?.compactions ?? 0) > 50, 'compaction forced: many happened');
    const s = on.run.stats;
    const line =
      `compaction forced ${JSON.stringify(FORCED)} (${status?.compactions} compactions, last build ${status?.lastCompaction?.buildMs} ms): ` +
      `${s.hooks} hooks, p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, max ${s.maxMs} ms, mean ${s.meanMs} ms, ${s.txPerSec} tx/s; ` +
      `inside the plugin, the longest Journal.record with a compaction step ${status?.longestRecordMs.withCompactionStep} ms, without ${status?.longestRecordMs.others} ms`;
    console.log(`[hook latency] ${line}`);
    t.diagnostic(line);
    assert.ok(s.maxMs < MAX_HOOK_MS, `the longest hook with compaction forced took ${s.maxMs} ms`);
    assert.ok((status?.longestRecordMs.withCompactionStep ?? Infinity) < MAX_HOOK_MS, 'a compaction step held a call too long');
  },
);
