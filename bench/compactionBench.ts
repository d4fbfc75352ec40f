// Section 6: what compaction costs the node and what it saves. The trace is replayed through the
// real plugin with the default retention (compaction runs by itself) and with compaction off,
// alternating, `runs` times each: the hook latencies of both, the longest Journal.record with a
// compaction step in it (staging the database, switching generations) against the longest one
// without (the plugin's status file), and the vault's size against the database's, sampled along
// the replay. Then bench/snapshotBench.ts: an incremental paged snapshot against a full one.
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_RETENTION } from '../src/cln/config.js';
import type { CompactionStatus } from '../src/journal/compaction/compactor.js';
import { STATUS_FILE } from '../src/cln/statusFile.js';
import type { HookStatsSummary } from '../src/simulator/hookStats.js';
import { runSimulatorUntilDone } from '../src/simulator/runner.js';
import { vaultDiskUsage } from '../src/vault/diskUsage.js';
import { LNBACKUP_PLUGIN, makeVaultNode, progress, setCompaction, simulatorWait, type CompactionMode, type TraceInfo } from './setup.js';
import { runSnapshotSection, type SnapshotSection } from './snapshotBench.js';
import { median, round2, round3 } from './stats.js';

/** Vault-size samples along the replay (one per this many committed transactions). */
const SAMPLE_EVERY = 250;

export interface SizeSample {
  readonly dataVersion: number;
  readonly dbBytes: number;
  /** Segments and page packs. */
  readonly vaultBytes: number;
  /** Parity files and the active segment's mirror. */
  readonly sidecarBytes: number;
}

export interface CompactionRun {
  readonly mode: CompactionMode;
  readonly round: number;
  readonly stats: HookStatsSummary;
  readonly compaction: CompactionStatus | null;
  readonly samples: SizeSample[];
}

export interface CompactionSection {
  readonly runs: CompactionRun[];
  /** Medians per mode of the hook's p50, p99, max (ms). */
  readonly median: Record<CompactionMode, { readonly p50Ms: number; readonly p99Ms: number; readonly maxMs: number; readonly txPerSec: number }>;
  /** default / off, from the medians. */
  readonly ratios: { readonly p50: number; readonly p99: number; readonly max: number };
  /** From the default runs: compactions, and the longest Journal.record with and without a compaction step (medians). */
  readonly compactions: number;
  readonly longestRecordMs: { readonly withCompactionStep: number; readonly others: number };
  /** The last default run's samples; the largest and the final vault / database ratio of it, and of an off run. */
  readonly samples: SizeSample[];
  readonly maxRatio: number;
  readonly finalRatio: number;
  readonly offFinalRatio: number;
  readonly snapshot: SnapshotSection;
}

function readCompactionStatus(networkDir: string): CompactionStatus | null {
  try {
    return (JSON.parse(fs.readFileSync(path.join(networkDir, STATUS_FILE), 'utf8')) as { compaction?: CompactionStatus }).compaction ?? null;
  } catch {
    return null;
  }
}

async function runOne(mode: CompactionMode, round: number, trace: TraceInfo, workDir: string): Promise<CompactionRun> {
  const node = makeVaultNode(workDir, `compaction-${mode}-${round}`);
  setCompaction(node.networkDir, mode);
  const samples: SizeSample[] = [];
  const sample = (dataVersion: number): void => {
    const u = vaultDiskUsage(node.vault);
    samples.push({ dataVersion, dbBytes: fs.statSync(node.dbPath).size, vaultBytes: u.segmentBytes + u.packBytes, sidecarBytes: u.sidecarBytes });
  };
  const run = await runSimulatorUntilDone({
    lightningDir: node.lightningDir,
    traces: [trace.path],
    plugin: LNBACKUP_PLUGIN,
    progressEvery: SAMPLE_EVERY,
    wait: simulatorWait.mode,
    maxLifetimes: 1,
    onEvent: (e) => {
      if (e.event === 'committed') sample(e.dataVersion);
    },
  });
  if (run.lifetimes.length !== 1 || run.stats.committed !== trace.transactions) {
    throw new Error(
      `compaction ${mode} run ${round}: expected one lifetime committing ${trace.transactions} transactions, got ${run.lifetimes.length}, ${run.stats.committed} committed`,
    );
  }
  sample(run.dataVersion);
  const compaction = readCompactionStatus(node.networkDir);
  fs.rmSync(node.dir, { recursive: true, force: true });
  return { mode, round, stats: run.stats, compaction, samples };
}

const ratioOf = (s: SizeSample): number => s.vaultBytes / s.dbBytes;

export async function runCompactionSection(trace: TraceInfo, workDir: string, runs: number, snapshotMB: number): Promise<CompactionSection> {
  const all: CompactionRun[] = [];
  for (let round = 0; round < runs; round++) {
    const order: CompactionMode[] = round % 2 === 0 ? ['default', 'off'] : ['off', 'default'];
    for (const mode of order) {
      progress(
        `compaction: ${mode === 'default' ? `default retention ${JSON.stringify(DEFAULT_RETENTION)}` : 'compaction off'}, round ${round + 1} of ${runs}...`,
      );
      all.push(await runOne(mode, round, trace, workDir));
    }
  }
  const of = (mode: CompactionMode): CompactionRun[] => all.filter((r) => r.mode === mode);
  const med = (mode: CompactionMode): CompactionSection['median'][CompactionMode] => {
    const r = of(mode).map((x) => x.stats);
    return {
      p50Ms: round3(median(r.map((s) => s.p50Ms))),
      p99Ms: round3(median(r.map((s) => s.p99Ms))),
      maxMs: round3(median(r.map((s) => s.maxMs))),
      txPerSec: round2(median(r.map((s) => s.txPerSec))),
    };
  };
  const on = med('default');
  const off = med('off');
  const defaults = of('default');
  const last = defaults[defaults.length - 1];
  const lastOff = of('off')[of('off').length - 1];
  progress(`compaction: paged snapshot of a ${snapshotMB} MB database, full then incremental...`);
  const snapshot = runSnapshotSection(workDir, snapshotMB);
  return {
    runs: all,
    median: { default: on, off },
    ratios: { p50: round2(on.p50Ms / off.p50Ms), p99: round2(on.p99Ms / off.p99Ms), max: round2(on.maxMs / off.maxMs) },
    compactions: median(defaults.map((r) => r.compaction?.compactions ?? 0)),
    longestRecordMs: {
      withCompactionStep: round2(median(defaults.map((r) => r.compaction?.longestRecordMs.withCompactionStep ?? 0))),
      others: round2(median(defaults.map((r) => r.compaction?.longestRecordMs.others ?? 0))),
    },
    samples: last.samples,
    maxRatio: round2(Math.max(...last.samples.map(ratioOf))),
    finalRatio: round2(ratioOf(last.samples[last.samples.length - 1])),
    offFinalRatio: round2(ratioOf(lastOff.samples[lastOff.samples.length - 1])),
    snapshot,
  };
}
