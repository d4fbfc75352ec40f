// Section 1: the trace replayed through the simulated lightningd five ways (no plugin, the bare
// append+fsync baseline, lnbackup with a local vault, lnbackup with a local vault and a server on
// loopback, lnbackup with the server only and the local vault as a cache), each mode several times
// in alternating order, and the medians compared. The server is an `lnbackup server` child process
// started for the run, with its data folder in the run's folder. Also the disk floor: a bare 1 KiB
// write + fdatasync in a loop.
import fs from 'node:fs';
import path from 'node:path';
import type { HookStatsSummary } from '../src/simulator/hookStats.js';
import { runSimulatorUntilDone } from '../src/simulator/runner.js';
import { startServerProcess, type ServerProcess } from './serverHook.js';
import {
  BASELINE_PLUGIN,
  PYTHON_PLUGIN,
  LNBACKUP_PLUGIN,
  machineLoadSince,
  makeNodeDir,
  makeRemoteVaultNode,
  makeVaultNode,
  progress,
  sampleMachine,
  setCompaction,
  simulatorWait,
  type CompactionMode,
  type MachineLoad,
  type NodeDir,
  type TraceInfo,
  type VaultNode,
} from './setup.js';
import { dist, median, msSince, now, round2, round3, type Dist } from './stats.js';

/**
 * none: no plugin. baseline: bench/baselinePlugin.js. python: bench/appendFsyncPlugin.py, the
 * python append+fsync plugin measured on a real lightningd. lnbackup: local vault only.
 * localServer: local vault + a server on loopback (policy all: both hold each record before
 * continue). serverOnly: the server only (localVault 'cache').
 */
export type Mode = 'none' | 'baseline' | 'python' | 'lnbackup' | 'localServer' | 'serverOnly';
export const MODES: readonly Mode[] = ['none', 'baseline', 'python', 'lnbackup', 'localServer', 'serverOnly'];
export const SERVER_MODES: readonly Mode[] = ['localServer', 'serverOnly'];

export interface RunResult {
  readonly mode: Mode;
  readonly round: number;
  readonly stats: HookStatsSummary;
  /** The simulator process from spawn to exit (plugin start-up and shutdown included). */
  readonly processMs: number;
  /** Time per call the simulated node spends outside the hook (its own sqlite work, scheduling). */
  readonly nodeMsPerCall: number;
  /** Server modes: the server process's CPU time during the replay (ms), null otherwise. */
  readonly serverCpuMs: number | null;
  /** The plugin's own CPU time per call (ms) and its threads at the end (null: no plugin, or no /proc). */
  readonly pluginCpuMsPerCall: number | null;
  readonly pluginThreads: number | null;
  /** The whole machine during the replay (every process, the benchmark's included). */
  readonly machine: MachineLoad;
}

export interface ModeMedian {
  readonly txPerSec: number;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly meanMs: number | null;
  readonly wallMs: number;
  readonly nodeMsPerCall: number;
  /** Server modes: the server process's CPU time per replay (ms), null otherwise. */
  readonly serverCpuMs: number | null;
  readonly pluginCpuMsPerCall: number | null;
  readonly pluginThreads: number | null;
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
    /** lnbackup / python: the plugin's CPU per call, and tx/s. */
    readonly cpuPerCallVsPython: number;
    readonly lnbackupTxVsPython: number;
    /** tx/s relative to no plugin. */
    readonly lnbackupTxVsNone: number;
    readonly baselineTxVsNone: number;
    readonly lnbackupTxVsBaseline: number;
  };
  /** Hook latency added by a server over lnbackup with the local vault only (ms, from the medians; per round paired). */
  readonly added: Record<
    'localServer' | 'serverOnly',
    { readonly p50Ms: number; readonly p99Ms: number; readonly meanMs: number; readonly perRoundP50Ms: number[]; readonly perRoundP99Ms: number[] }
  >;
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

interface ModeRun {
  readonly result: RunResult;
  readonly node: NodeDir | VaultNode;
  readonly dataVersion: number;
  /** What to delete once the run's files are not needed. */
  readonly dir: string;
}

async function runMode(mode: Mode, round: number, trace: TraceInfo, workDir: string, compaction: CompactionMode = 'default'): Promise<ModeRun> {
  let node: NodeDir | VaultNode;
  let plugin: string | null = null;
  let env: NodeJS.ProcessEnv | undefined;
  let server: ServerProcess | null = null;
  let dir: string;
  if (mode === 'lnbackup') {
    node = makeVaultNode(workDir, `hook-${mode}-${round}`);
    setCompaction(node.networkDir, compaction);
    plugin = LNBACKUP_PLUGIN;
    dir = node.dir;
  } else if (mode === 'localServer' || mode === 'serverOnly') {
    dir = fs.mkdtempSync(path.join(workDir, `hook-${mode}-${round}-`));
    server = await startServerProcess({ dataDir: path.join(dir, 'server') });
    try {
      node = await makeRemoteVaultNode(dir, 'node', server.url, mode === 'serverOnly' ? 'cache' : 'durable');
    } catch (err) {
      await server.stop();
      throw err;
    }
    plugin = LNBACKUP_PLUGIN;
  } else {
    node = makeNodeDir(workDir, `hook-${mode}-${round}`);
    dir = node.dir;
    if (mode === 'baseline') {
      plugin = BASELINE_PLUGIN;
      env = { ...process.env, BASELINE_PLUGIN_FILE: path.join(node.dir, 'baseline.log') };
    } else if (mode === 'python') {
      plugin = PYTHON_PLUGIN;
      env = { ...process.env, DBAPPEND_FILE: path.join(node.dir, 'dbappend.jsonl') };
    }
  }
  const started = now();
  const machine0 = sampleMachine();
  const cpu0 = server?.cpuMs() ?? null;
  let run: Awaited<ReturnType<typeof runSimulatorUntilDone>>;
  let serverCpuMs: number | null = null;
  let machine: MachineLoad = { busyCores: 0, cpuPressurePct: null, ioPressurePct: null };
  try {
    run = await runSimulatorUntilDone({
      lightningDir: node.lightningDir,
      traces: [trace.path],
      plugin,
      env,
      progressEvery: 1_000_000,
      wait: simulatorWait.mode,
      maxLifetimes: trace.superseded + 1,
    });
    const cpu1 = server?.cpuMs() ?? null;
    if (cpu0 !== null && cpu1 !== null) serverCpuMs = Math.round(cpu1 - cpu0);
    machine = machineLoadSince(machine0);
  } finally {
    if (server) {
      const exit = await server.stop();
      if (exit.code !== 0) progress(`  the server exited with ${exit.signal ?? exit.code}; its log: ${server.logFile}`);
    }
  }
  const processMs = msSince(started);
  const s = run.stats;
  if (run.lifetimes.length !== 1 || s.committed !== trace.transactions) {
    throw new Error(
      `${mode} run ${round}: expected one lifetime committing ${trace.transactions} transactions, got ${run.lifetimes.length} lifetimes, ${s.committed} committed` +
        destinationErrors(node) +
        (server ? `; the server's log: ${server.logFile} (--keep to keep it)` : ''),
    );
  }
  const nodeMsPerCall = round3((s.wallMs - s.totalHookMs) / s.calls);
  const pluginCpuMsPerCall = run.plugin === null ? null : round3(run.plugin.cpuMs / s.calls);
  const pluginThreads = run.plugin?.threads ?? null;
  return {
    result: { mode, round, stats: s, processMs: Math.round(processMs), nodeMsPerCall, serverCpuMs, pluginCpuMsPerCall, pluginThreads, machine },
    node,
    dataVersion: run.dataVersion,
    dir,
  };
}

/** What the plugin's status file says went wrong with its destinations, if anything. */
function destinationErrors(node: NodeDir): string {
  try {
    const status = JSON.parse(fs.readFileSync(path.join(node.networkDir, 'lnbackup-status.json'), 'utf8')) as {
      destinations?: { name: string; lastError: string | null }[];
      lastError?: string | null;
    };
    const errors = [status.lastError ?? null, ...(status.destinations ?? []).map((d) => (d.lastError ? `${d.name}: ${d.lastError}` : null))].filter(Boolean);
    return errors.length > 0 ? `; the plugin reported: ${errors.join('; ')}` : '';
  } catch {
    return '';
  }
}

/** One lnbackup (local vault) replay, for the restore section: with compaction off, a full-history vault. */
export async function runOneLnbackup(trace: TraceInfo, workDir: string, compaction: CompactionMode): Promise<{ node: VaultNode; dataVersion: number }> {
  const r = await runMode('lnbackup', compaction === 'off' ? 1000 : 0, trace, workDir, compaction);
  return { node: r.node as VaultNode, dataVersion: r.dataVersion };
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
    serverCpuMs: SERVER_MODES.includes(mode) ? Math.round(m((r) => r.serverCpuMs ?? NaN)) : null,
    pluginCpuMsPerCall: hooked && mine.every((r) => r.pluginCpuMsPerCall !== null) ? round3(m((r) => r.pluginCpuMsPerCall!)) : null,
    pluginThreads: hooked && mine.every((r) => r.pluginThreads !== null) ? m((r) => r.pluginThreads!) : null,
  };
}

/** Runs every mode `rounds` times; round r starts at a different mode, so each takes many slots. */
export async function runHookSection(trace: TraceInfo, workDir: string, rounds: number): Promise<HookSection> {
  const runs: RunResult[] = [];
  let kept: { node: VaultNode; dataVersion: number } | null = null;
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < MODES.length; k++) {
      const mode = MODES[(round + k) % MODES.length];
      progress(`hook cost: round ${round + 1}/${rounds}, ${mode}...`);
      const { result, node, dataVersion, dir } = await runMode(mode, round, trace, workDir);
      runs.push(result);
      const s = result.stats;
      const ml = result.machine;
      progress(
        `  ${mode}: ${s.txPerSec} tx/s, hook p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, wall ${(s.wallMs / 1000).toFixed(1)} s` +
          ` (machine: ${ml.busyCores} cores busy, CPU pressure ${ml.cpuPressurePct ?? '?'}%, IO pressure ${ml.ioPressurePct ?? '?'}%)`,
      );
      if (mode === 'lnbackup') {
        if (kept) fs.rmSync(kept.node.dir, { recursive: true, force: true });
        kept = { node: node as VaultNode, dataVersion };
      } else {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  if (!kept) throw new Error('no lnbackup run');
  const med = Object.fromEntries(MODES.map((mode) => [mode, modeMedian(runs, mode)])) as Record<Mode, ModeMedian>;
  const of = (round: number, mode: Mode): HookStatsSummary => runs.find((r) => r.round === round && r.mode === mode)!.stats;
  const perRound = (f: (s: HookStatsSummary) => number): number[] =>
    Array.from({ length: rounds }, (_, round) => round2(f(of(round, 'lnbackup')) / f(of(round, 'baseline'))));
  const ratio = (a: number | null, b: number | null): number => (a !== null && b !== null && b > 0 ? round2(a / b) : NaN);
  const diff = (a: number | null, b: number | null): number => (a !== null && b !== null ? round3(a - b) : NaN);
  const addedBy = (mode: 'localServer' | 'serverOnly'): HookSection['added']['localServer'] => ({
    p50Ms: diff(med[mode].p50Ms, med.lnbackup.p50Ms),
    p99Ms: diff(med[mode].p99Ms, med.lnbackup.p99Ms),
    meanMs: diff(med[mode].meanMs, med.lnbackup.meanMs),
    perRoundP50Ms: Array.from({ length: rounds }, (_, round) => round3(of(round, mode).p50Ms - of(round, 'lnbackup').p50Ms)),
    perRoundP99Ms: Array.from({ length: rounds }, (_, round) => round3(of(round, mode).p99Ms - of(round, 'lnbackup').p99Ms)),
  });
  return {
    runs,
    median: med,
    ratios: {
      p50: ratio(med.lnbackup.p50Ms, med.baseline.p50Ms),
      p99: ratio(med.lnbackup.p99Ms, med.baseline.p99Ms),
      mean: ratio(med.lnbackup.meanMs, med.baseline.meanMs),
      perRoundP50: perRound((s) => s.p50Ms),
      perRoundP99: perRound((s) => s.p99Ms),
      cpuPerCallVsPython: ratio(med.lnbackup.pluginCpuMsPerCall, med.python.pluginCpuMsPerCall),
      lnbackupTxVsPython: ratio(med.lnbackup.txPerSec, med.python.txPerSec),
      lnbackupTxVsNone: ratio(med.lnbackup.txPerSec, med.none.txPerSec),
      baselineTxVsNone: ratio(med.baseline.txPerSec, med.none.txPerSec),
      lnbackupTxVsBaseline: ratio(med.lnbackup.txPerSec, med.baseline.txPerSec),
    },
    added: { localServer: addedBy('localServer'), serverOnly: addedBy('serverOnly') },
    keptVaultNode: kept.node,
    keptDataVersion: kept.dataVersion,
  };
}
