// Section 1: the trace replayed through the simulated lightningd three ways (no plugin, lnbackup with
// a local vault, the bare append+fsync baseline), each mode several times in alternating order, and
// the medians compared. Also the disk floor: a bare 1 KiB write + fdatasync in a loop.
import fs from 'node:fs';
import path from 'node:path';
import type { HookStatsSummary } from '../src/simulator/hookStats.js';
import { runSimulatorUntilDone } from '../src/simulator/runner.js';
import { BASELINE_PLUGIN, LNBACKUP_PLUGIN, makeNodeDir, makeVaultNode, progress, type NodeDir, type TraceInfo, type VaultNode } from './setup.js';
import { dist, median, msSince, now, round2, round3, type Dist } from './stats.js';

export type Mode = 'none' | 'baseline' | 'lnbackup';
export const MODES: readonly Mode[] = ['none', 'baseline', 'lnbackup'];

export interface RunResult {
  readonly mode: Mode;
  readonly round: number;
  readonly stats: HookStatsSummary;
  /** The simulator process from spawn to exit (plugin start-up and shutdown included). */
  readonly processMs: number;
  /** Time per call the simulated node spends outside the hook (its own sqlite work, scheduling). */
  readonly nodeMsPerCall: number;
}

export interface ModeMedian {
  readonly txPerSec: number;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly meanMs: number | null;
  readonly wallMs: number;
  readonly nodeMsPerCall: number;
}

export interface HookSection {
  readonly runs: RunResult[];
  readonly median: Record<Mode, ModeMedian>;
  readonly ratios: {
    /** lnbackup / baseline hook latency, from the medians. */
    readonly p50: number;
    readonly p99: number;
    readonly mean: number;
    /** The same ratios within each round (paired runs, close in time). */
    readonly perRoundP50: number[];
    readonly perRoundP99: number[];
    /** tx/s relative to no plugin. */
    readonly lnbackupTxVsNone: number;
    readonly baselineTxVsNone: number;
    readonly lnbackupTxVsBaseline: number;
  };
  /** The lnbackup run kept for the restore section (its vault and its node database). */
  readonly keptVaultNode: VaultNode;
  readonly keptDataVersion: number;
}

export interface FloorResult extends Dist {
  readonly bytes: number;
  readonly opsPerSec: number;
}

/** The disk floor: write 1 KiB and fdatasync, `count` times, to a file opened for append. */
export function measureFloor(workDir: string, count = 2000): FloorResult {
  const file = path.join(workDir, 'floor.bin');
  const fd = fs.openSync(file, 'a');
  const buf = Buffer.alloc(1024, 0x5a);
  const samples = new Float64Array(count);
  const started = now();
  try {
    for (let i = 0; i < count; i++) {
      const t = performance.now();
      fs.writeSync(fd, buf);
      fs.fdatasyncSync(fd);
      samples[i] = performance.now() - t;
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
  const total = msSince(started);
  return { ...dist(samples), bytes: 1024, opsPerSec: Math.round((count * 1000) / total) };
}

async function runMode(mode: Mode, round: number, trace: TraceInfo, workDir: string): Promise<{ result: RunResult; node: NodeDir | VaultNode; dataVersion: number }> {
  let node: NodeDir | VaultNode;
  let plugin: string | null = null;
  let env: NodeJS.ProcessEnv | undefined;
  if (mode === 'lnbackup') {
    node = makeVaultNode(workDir, `hook-${mode}-${round}`);
    plugin = LNBACKUP_PLUGIN;
  } else {
    node = makeNodeDir(workDir, `hook-${mode}-${round}`);
    if (mode === 'baseline') {
      plugin = BASELINE_PLUGIN;
      env = { ...process.env, BASELINE_PLUGIN_FILE: path.join(node.dir, 'baseline.log') };
    }
  }
  const started = now();
  const run = await runSimulatorUntilDone({
    lightningDir: node.lightningDir,
    traces: [trace.path],
    plugin,
    env,
    progressEvery: 1_000_000,
    maxLifetimes: trace.superseded + 1,
  });
  const processMs = msSince(started);
  const s = run.stats;
  if (run.lifetimes.length !== 1 || s.committed !== trace.transactions) {
    throw new Error(`${mode} run ${round}: expected one lifetime committing ${trace.transactions} transactions, got ${run.lifetimes.length} lifetimes, ${s.committed} committed`);
  }
  const nodeMsPerCall = round3((s.wallMs - s.totalHookMs) / s.calls);
  return { result: { mode, round, stats: s, processMs: Math.round(processMs), nodeMsPerCall }, node, dataVersion: run.dataVersion };
}

function modeMedian(runs: readonly RunResult[], mode: Mode): ModeMedian {
  const mine = runs.filter((r) => r.mode === mode);
  const m = (f: (r: RunResult) => number): number => median(mine.map(f));
  const hooked = mode !== 'none';
  return {
    txPerSec: round2(m((r) => r.stats.txPerSec)),
    p50Ms: hooked ? round3(m((r) => r.stats.p50Ms)) : null,
    p99Ms: hooked ? round3(m((r) => r.stats.p99Ms)) : null,
    meanMs: hooked ? round3(m((r) => r.stats.meanMs)) : null,
    wallMs: Math.round(m((r) => r.stats.wallMs)),
    nodeMsPerCall: round3(m((r) => r.nodeMsPerCall)),
  };
}

/** Runs every mode `rounds` times; round r starts at a different mode, so each takes every slot. */
export async function runHookSection(trace: TraceInfo, workDir: string, rounds: number): Promise<HookSection> {
  const runs: RunResult[] = [];
  let kept: { node: VaultNode; dataVersion: number } | null = null;
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < MODES.length; k++) {
      const mode = MODES[(round + k) % MODES.length];
      progress(`hook cost: round ${round + 1}/${rounds}, ${mode}...`);
      const { result, node, dataVersion } = await runMode(mode, round, trace, workDir);
      runs.push(result);
      const s = result.stats;
      progress(`  ${mode}: ${s.txPerSec} tx/s, hook p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, wall ${(s.wallMs / 1000).toFixed(1)} s`);
      if (mode === 'lnbackup') {
        if (kept) fs.rmSync(kept.node.dir, { recursive: true, force: true });
        kept = { node: node as VaultNode, dataVersion };
      } else {
        fs.rmSync(node.dir, { recursive: true, force: true });
      }
    }
  }
  if (!kept) throw new Error('no lnbackup run');
  const med = { none: modeMedian(runs, 'none'), baseline: modeMedian(runs, 'baseline'), lnbackup: modeMedian(runs, 'lnbackup') };
  const perRound = (f: (s: HookStatsSummary) => number): number[] =>
    Array.from({ length: rounds }, (_, round) => {
      const of = (mode: Mode): HookStatsSummary => runs.find((r) => r.round === round && r.mode === mode)!.stats;
      return round2(f(of('lnbackup')) / f(of('baseline')));
    });
  const ratio = (a: number | null, b: number | null): number => (a !== null && b !== null && b > 0 ? round2(a / b) : NaN);
  return {
    runs,
    median: med,
    ratios: {
      p50: ratio(med.lnbackup.p50Ms, med.baseline.p50Ms),
      p99: ratio(med.lnbackup.p99Ms, med.baseline.p99Ms),
      mean: ratio(med.lnbackup.meanMs, med.baseline.meanMs),
      perRoundP50: perRound((s) => s.p50Ms),
      perRoundP99: perRound((s) => s.p99Ms),
      lnbackupTxVsNone: ratio(med.lnbackup.txPerSec, med.none.txPerSec),
      baselineTxVsNone: ratio(med.baseline.txPerSec, med.none.txPerSec),
      lnbackupTxVsBaseline: ratio(med.lnbackup.txPerSec, med.baseline.txPerSec),
    },
    keptVaultNode: kept.node,
    keptDataVersion: kept.dataVersion,
  };
}
