// `npm run bench`: what lnbackup costs a Core Lightning node, how fast it restores, and how many
// nodes one lnbackup server takes, on this machine, in one run of a few minutes. See
// bench/README.md for what each line means.
//
//   node dist/bench/main.js [--json] [--runs N] [--trace FILE.jsonl.gz] [--dir PARENT] [--keep]
//     [--sections hook,restore,profile,capacity,parity,compaction] [--capacity-seconds S] [--capacity-warmup S]
//     [--parity-mb MB] [--snapshot-mb MB]
//     [--capacity-nodes 10,100,500] [--capacity-seal] [--server-cpu-prof DIR] [--wait spin|idle]
//   --wait: how the simulated lightningd waits for each answer (default spin: a busy poll, as lightningd)
//
// Progress goes to stderr; stdout carries the table, or with --json one JSON object.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CAPACITY_RATE, CAPACITY_TARGET, DEFAULT_CAPACITY_NODES, runCapacitySection, type CapacitySection } from './capacity.js';
import { measureFloor, MODES, runHookSection, runOneLnbackup, type FloorResult, type HookSection, type Mode } from './hookRuns.js';
import { meanBreakdown, runProfileSection, type ProfileSection, type Step } from './profile.js';
import { runRestoreSection, type RestoreResults } from './restoreBench.js';
import { runParitySection, type ParitySection } from './parityBench.js';
import { runCompactionSection, type CompactionSection } from './compactionBench.js';
import { snapshotLines } from './snapshotBench.js';
import { DEFAULT_TRACE, loadTrace, progress, simulatorWait, type TraceInfo, type VaultNode } from './setup.js';
import { fmtInt, fmtMB, fmtMs, fmtS, fmtX, median, round2, table, type Dist } from './stats.js';

const HOOK_TARGET = 1.3;
/** Issue 14: the hook's p50 within this much of the disk's append+fdatasync floor (ms). */
const HOOK_FLOOR_SLACK_MS = 0.1;
const RESTORE_TARGET = 1.5;
/** A remote on loopback adds no more than one fsync (the disk floor's p50) plus this (ms). */
const REMOTE_ADDED_TARGET_MS = 0.5;
const SECTIONS = ['hook', 'restore', 'profile', 'capacity', 'parity', 'compaction'] as const;
type Section = (typeof SECTIONS)[number];

interface Machine {
  cpus: number;
  cpuModel: string;
  node: string;
  platform: string;
  kernel: string;
  memoryGB: number;
  workDir: string;
}

function machine(workDir: string): Machine {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    kernel: os.release(),
    memoryGB: Math.round(os.totalmem() / 1e8) / 10,
    workDir,
  };
}

interface Options {
  json: boolean;
  runs: number;
  trace: string;
  dir: string;
  keep: boolean;
  sections: Set<Section>;
  capacityNodes: number[];
  capacitySeconds: number;
  capacityWarmupSeconds: number;
  capacitySeal: boolean;
  serverCpuProf: string | null;
  parityMB: number;
  snapshotMB: number;
}

function megabytes(v: string | undefined, fallback: number, option: string, min: number): number {
  const n = v === undefined ? fallback : Number(v);
  if (!Number.isInteger(n) || n < min || n > 65536) throw new Error(`${option} takes a whole number of MB from ${min} to 65536`);
  return n;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      json: { type: 'boolean' },
      runs: { type: 'string' },
      trace: { type: 'string' },
      dir: { type: 'string' },
      keep: { type: 'boolean' },
      sections: { type: 'string' },
      'capacity-seconds': { type: 'string' },
      'capacity-warmup': { type: 'string' },
      'capacity-nodes': { type: 'string' },
      'capacity-seal': { type: 'boolean' },
      'server-cpu-prof': { type: 'string' },
      'parity-mb': { type: 'string' },
      'snapshot-mb': { type: 'string' },
      wait: { type: 'string' },
    },
  });
  if (values.wait !== undefined && values.wait !== 'spin' && values.wait !== 'idle')
    throw new Error("--wait takes 'spin' (as lightningd, the default) or 'idle'");
  if (values.wait !== undefined) simulatorWait.mode = values.wait;
  const runs = values.runs === undefined ? 3 : Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 9) throw new Error('--runs needs an integer from 1 to 9');
  const sections = new Set<Section>();
  for (const name of (values.sections ?? SECTIONS.join(','))
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    if (!(SECTIONS as readonly string[]).includes(name)) throw new Error(`--sections takes a list of ${SECTIONS.join(', ')}; '${name}' is not one`);
    sections.add(name as Section);
  }
  if (sections.size === 0) throw new Error(`--sections needs at least one of ${SECTIONS.join(', ')}`);
  const seconds = (v: string | undefined, fallback: number, option: string, min: number): number => {
    const n = v === undefined ? fallback : Number(v);
    if (!Number.isFinite(n) || n < min || n > 3600) throw new Error(`${option} needs a number of seconds from ${min} to 3600`);
    return n;
  };
  const capacityNodes = (values['capacity-nodes'] ?? DEFAULT_CAPACITY_NODES.join(',')).split(',').map((x) => Number(x.trim()));
  if (capacityNodes.some((n) => !Number.isInteger(n) || n < 1 || n > 1000))
    throw new Error('--capacity-nodes takes a list of node counts from 1 to 1000, e.g. 10,100,500');
  return {
    json: values.json === true,
    runs,
    trace: path.resolve(values.trace ?? DEFAULT_TRACE),
    dir: path.resolve(values.dir ?? os.tmpdir()),
    keep: values.keep === true,
    sections,
    capacityNodes,
    capacitySeconds: seconds(values['capacity-seconds'], 10, '--capacity-seconds', 1),
    capacityWarmupSeconds: seconds(values['capacity-warmup'], 3, '--capacity-warmup', 0),
    capacitySeal: values['capacity-seal'] === true,
    serverCpuProf: values['server-cpu-prof'] === undefined ? null : path.resolve(values['server-cpu-prof']),
    parityMB: megabytes(values['parity-mb'], 256, '--parity-mb', 32),
    snapshotMB: megabytes(values['snapshot-mb'], 100, '--snapshot-mb', 4),
  };
}

const verdict = (ratio: number, target: number): string => (ratio <= target ? `meets ≤ ${target}x` : `MISSES ≤ ${target}x`);

function spread(h: HookSection, mode: Mode): number {
  const tx = h.runs.filter((r) => r.mode === mode).map((r) => r.stats.txPerSec);
  return Math.max(...tx) / Math.min(...tx);
}

const MODE_LABEL: Record<Mode, string> = {
  none: 'no plugin',
  baseline: 'baseline (append+fsync)',
  python: 'python append+fsync plugin',
  lnbackup: 'lnbackup (local vault)',
  localServer: 'lnbackup (local vault + server)',
  serverOnly: 'lnbackup (server only, local cache)',
};

const met = (ok: boolean): string => (ok ? 'met' : 'MISSED');
const plusMs = (ms: number): string => (Number.isNaN(ms) ? 'n/a' : `${ms >= 0 ? '+' : '−'}${fmtMs(Math.abs(ms))}`);

/** The hot path's targets (issue 14), each against a baseline measured in the same run. */
function floorTargets(h: HookSection, floor: FloorResult): string[] {
  const l = h.median.lnbackup;
  const py = h.median.python;
  const p50Limit = floor.p50Ms + HOOK_FLOOR_SLACK_MS;
  const cpuOk = l.pluginCpuMsPerCall !== null && py.pluginCpuMsPerCall !== null && l.pluginCpuMsPerCall <= py.pluginCpuMsPerCall;
  return [
    `  targets: plugin CPU per call ≤ the python plugin's: ${met(cpuOk)} (lnbackup ${fmtMs(l.pluginCpuMsPerCall)}, python ${fmtMs(py.pluginCpuMsPerCall)}, ${fmtX(h.ratios.cpuPerCallVsPython)});` +
      ` tx/s ≥ python's: ${met(l.txPerSec >= py.txPerSec)} (${fmtX(h.ratios.lnbackupTxVsPython)});`,
    `           hook p50 ≤ disk floor p50 + ${HOOK_FLOOR_SLACK_MS} ms = ${fmtMs(p50Limit)}: ${met((l.p50Ms ?? Infinity) <= p50Limit)} (${fmtMs(l.p50Ms)});` +
      ` p99 ≤ 3x p50: ${met((l.p99Ms ?? Infinity) <= 3 * (l.p50Ms ?? 0))} (${fmtX((l.p99Ms ?? NaN) / (l.p50Ms ?? NaN))})`,
  ];
}

function hookLines(h: HookSection, runs: number, floor: FloorResult): string[] {
  const none = h.median.none;
  const rows = MODES.map((mode) => {
    const m = h.median[mode];
    return [
      MODE_LABEL[mode],
      m.txPerSec.toFixed(1),
      fmtX(m.txPerSec / none.txPerSec),
      fmtMs(m.p50Ms),
      fmtMs(m.p99Ms),
      fmtMs(m.meanMs),
      fmtS(m.wallMs),
      fmtMs(m.nodeMsPerCall),
      m.pluginCpuMsPerCall === null ? 'n/a' : fmtMs(m.pluginCpuMsPerCall),
      m.pluginThreads === null ? 'n/a' : String(m.pluginThreads),
    ];
  });
  const r = h.ratios;
  const limit = floor.p50Ms + REMOTE_ADDED_TARGET_MS;
  const a = h.added;
  const addedVerdict = (label: string, x: HookSection['added']['localServer']): string =>
    `${label} p50 ${met(x.p50Ms <= limit)} (${plusMs(x.p50Ms)}), p99 ${met(x.p99Ms <= limit)} (${plusMs(x.p99Ms)})`;
  const cpu = (mode: 'localServer' | 'serverOnly'): string => {
    const ms = h.median[mode].serverCpuMs;
    return ms === null || Number.isNaN(ms) ? 'n/a' : `${fmtInt(ms)} ms (${fmtMs(ms / h.runs[0].stats.calls)} per call)`;
  };
  const spreads = MODES.map((mode) => spread(h, mode));
  return [
    `1. Hook cost: the trace through the simulated lightningd (median of ${runs} runs per mode, alternating)`,
    ...table(['mode', 'tx/s', 'vs none', 'hook p50', 'hook p99', 'hook mean', 'replay wall', 'node/call', 'plugin CPU/call', 'threads'], rows),
    ...floorTargets(h, floor),
    `  lnbackup / baseline hook latency: p50 ${fmtX(r.p50)}, p99 ${fmtX(r.p99)} (target ≤ ${HOOK_TARGET}x: p50 ${verdict(r.p50, HOOK_TARGET)}, p99 ${verdict(r.p99, HOOK_TARGET)}); mean ${fmtX(r.mean)}`,
    `  same ratio within each round (paired runs): p50 ${r.perRoundP50.map(fmtX).join(' ')}; p99 ${r.perRoundP99.map(fmtX).join(' ')}`,
    `  tx/s vs no plugin: lnbackup ${fmtX(r.lnbackupTxVsNone)}, baseline ${fmtX(r.baselineTxVsNone)}; lnbackup vs baseline ${fmtX(r.lnbackupTxVsBaseline)}`,
    `  spread of tx/s across runs (max/min): ${MODES.map((mode, i) => `${mode} ${fmtX(spreads[i])}`).join(', ')}` +
      (Math.max(...spreads) > 1.25 ? ' — the disk or the CPU was busy; rerun or add --runs' : ''),
    `  disk floor (1 KiB write + fdatasync, ${floor.n}x): p50 ${fmtMs(floor.p50Ms)}, p99 ${fmtMs(floor.p99Ms)}, ${fmtInt(floor.opsPerSec)} ops/s`,
    `  added by a server on loopback, over lnbackup (local vault): local vault + server p50 ${plusMs(a.localServer.p50Ms)}, p99 ${plusMs(a.localServer.p99Ms)}, mean ${plusMs(a.localServer.meanMs)};` +
      ` server only p50 ${plusMs(a.serverOnly.p50Ms)}, p99 ${plusMs(a.serverOnly.p99Ms)}, mean ${plusMs(a.serverOnly.meanMs)}`,
    `  same within each round (paired runs): local vault + server p50 ${a.localServer.perRoundP50Ms.map(plusMs).join(' ')}, p99 ${a.localServer.perRoundP99Ms.map(plusMs).join(' ')};` +
      ` server only p50 ${a.serverOnly.perRoundP50Ms.map(plusMs).join(' ')}, p99 ${a.serverOnly.perRoundP99Ms.map(plusMs).join(' ')}`,
    `  target: a remote on loopback adds ≤ one fsync (disk floor p50 ${fmtMs(floor.p50Ms)}) + ${REMOTE_ADDED_TARGET_MS} ms = ${fmtMs(limit)}: ` +
      `${addedVerdict('local vault + server', a.localServer)}; ${addedVerdict('server only', a.serverOnly)}`,
    `  server process CPU per replay: local vault + server ${cpu('localServer')}, server only ${cpu('serverOnly')}`,
    `  the machine during the replays (every process on it, median per mode): ` +
      MODES.map((mode) => {
        const mine = h.runs.filter((x) => x.mode === mode).map((x) => x.machine);
        const med = (f: (l: (typeof mine)[number]) => number | null): string => {
          const v = mine.map(f).filter((x): x is number => x !== null);
          return v.length === 0 ? '?' : String(round2(median(v)));
        };
        return `${mode} ${med((l) => l.busyCores)} cores busy, CPU pressure ${med((l) => l.cpuPressurePct)}%, IO pressure ${med((l) => l.ioPressurePct)}%`;
      }).join('; '),
  ];
}

function restoreLines(r: RestoreResults, trace: TraceInfo, runs: number): string[] {
  const perS = (count: number, ms: number): string => fmtInt((count * 1000) / ms);
  const mbS = (bytes: number, ms: number): string => `${(((bytes / 1e6) * 1000) / ms).toFixed(1)} MB/s`;
  return [
    `2. Restore. A full-history vault (compaction off): ${r.statements.toLocaleString('en-US')} statements, ${r.transactions.toLocaleString('en-US')} transactions; vault ${fmtMB(r.vaultBytes)} in ${fmtInt(r.records)} records, trace ${fmtMB(trace.jsonBytes)} JSON (${fmtMB(trace.gzBytes)} gz); database ${fmtMB(r.dbBytes)}`,
    ...table(
      ['replay', 'time', 'statements/s', 'MB/s'],
      [
        [`lnbackup restoreDatabase (median of ${runs})`, fmtS(r.restoreMs), perS(r.statements, r.restoreMs), `${mbS(r.vaultBytes, r.restoreMs)} of vault`],
        [
          `plain replay, sqliteSink's pragmas + grouping (median of ${runs})`,
          fmtS(r.plainMs),
          perS(r.statements, r.plainMs),
          `${mbS(trace.jsonBytes, r.plainMs)} of JSON`,
        ],
        [
          'plain replay, naive (one tx per call, default pragmas)',
          fmtS(r.naiveMs),
          perS(r.statements, r.naiveMs),
          `${mbS(trace.jsonBytes, r.naiveMs)} of JSON`,
        ],
      ],
    ),
    `  restore / plain replay: ${fmtX(r.ratio)} (target ≤ ${RESTORE_TARGET}x: ${verdict(r.ratio, RESTORE_TARGET)}); runs: restore ${r.restoreRuns.map(fmtS).join(' ')}, plain ${r.plainRuns.map(fmtS).join(' ')}`,
    `  parts: the sqlite work alone (parsed calls, same pragmas + grouping) ${fmtS(r.sqliteOnlyMs)}; so plain replay = sqlite + ${fmtS(r.plainMs - r.sqliteOnlyMs)} gunzip + JSON.parse,` +
      ` restore = sqlite + ${fmtS(r.restoreMs - r.sqliteOnlyMs)} of its own, of which reading + authenticating + decoding the vault ${fmtS(r.readOnlyMs)} and the final checks (integrity_check, foreign_key_check, fsync) ${fmtS(r.checksMs)}`,
    `  restored database identical to the node's (logical dump, version ${r.restoredVersion}): ${r.identical ? 'yes' : 'NO'}`,
    `  compacted vault (default retention: newest snapshot + the records after it, ${fmtMB(r.compacted.vaultBytes)}) restored in ${fmtMs(r.compacted.restoreMs)},` +
      ` copying the ${fmtMB(r.compacted.dbBytes)} database file (copy + fsync) ${fmtMs(r.compacted.copyMs)}: ${fmtX(r.compacted.ratio)} (median of ${runs}); identical to the node's: ${r.compacted.identical ? 'yes' : 'NO'}`,
  ];
}

function profileLines(p: ProfileSection, h: HookSection | null): string[] {
  const label: Record<Step, string> = {
    parse: '  JSON.parse of the request',
    logic: '  plugin logic (handle minus Journal.record)',
    seal: '  seal (nonce, XChaCha20-Poly1305, SHA-256 chain)',
    write: '  segment write',
    fdatasync: '  fdatasync',
    other: '  other journal work (decide, encodeWrites, tail)',
    record: 'Journal.record (encode+seal+write+fdatasync)',
    total: 'lnbackup per call, in-process (parse + handle)',
    bare: 'bare write + fdatasync of the same sealed bytes',
    baseline: 'baseline logic (parse + stringify + write + fsync)',
  };
  const row = (name: string, d: Dist): string[] => [name, fmtMs(d.p50Ms), fmtMs(d.p99Ms), fmtMs(d.meanMs)];
  const order: Step[] = ['total', 'parse', 'logic', 'seal', 'write', 'fdatasync', 'other', 'record', 'bare', 'baseline'];
  const s = p.steps;
  const b = meanBreakdown(p);
  const pct = (v: number): string => `${Math.round((v / b.total) * 100)}%`;
  const part = (name: string, v: number): string => `${name} ${fmtMs(v)} (${pct(v)})`;
  const probe = p.lnbackupProbe;
  const transport = probe.hook.meanMs - probe.inPlugin.meanMs;
  const missed = h === null ? null : !(h.ratios.p50 <= HOOK_TARGET && h.ratios.p99 <= HOOK_TARGET);
  return [
    `3. Where lnbackup's hook time goes (${p.calls} calls${missed === null ? '' : `; section 1 ${missed ? 'MISSED' : 'met'} the ${HOOK_TARGET}x target`})`,
    ...table(
      ['in-process, interleaved per call', 'p50', 'p99', 'mean'],
      [
        ...order.map((step) => row(label[step], s[step])),
        ['through the simulator:', '', '', ''],
        row('hook, a plugin that answers at once (stdio floor)', p.nullPlugin.hook),
        row('hook, lnbackup (bench/probePlugin.js)', probe.hook),
        row('  of which inside the plugin process', probe.inPlugin),
      ],
    ),
    `  mean per call in-process ${fmtMs(b.total)} = ` +
      [
        part('parse', b.parse),
        part('plugin logic', b.logic),
        part('seal', b.seal),
        part('other journal', b.other),
        part('write', b.write),
        part('fdatasync', b.fdatasync),
      ].join(' + '),
    `  Journal.record vs bare write+fdatasync of the same bytes: p50 ${fmtX(s.record.p50Ms / s.bare.p50Ms)} (+${fmtMs(s.record.p50Ms - s.bare.p50Ms)}), mean +${fmtMs(s.record.meanMs - s.bare.meanMs)}` +
      `; lnbackup vs baseline logic in-process: p50 ${fmtX(s.total.p50Ms / s.baseline.p50Ms)} (+${fmtMs(s.total.p50Ms - s.baseline.p50Ms)})`,
    `  through stdio: hook mean ${fmtMs(probe.hook.meanMs)} = inside the plugin ${fmtMs(probe.inPlugin.meanMs)} + transport ${fmtMs(transport)}` +
      ` (the floor plugin's hook: p50 ${fmtMs(p.nullPlugin.hook.p50Ms)}, mean ${fmtMs(p.nullPlugin.hook.meanMs)}; it is the same for any plugin)`,
  ];
}

function capacityLines(c: CapacitySection, cpus: number): string[] {
  const rows = c.runs.map((r) => [
    String(r.nodes),
    fmtInt(r.offeredPerSec),
    fmtInt(r.ackedPerSec),
    r.ackedMBPerSec.toFixed(1),
    fmtMs(r.ack.p50Ms),
    fmtMs(r.ack.p99Ms),
    fmtMs(r.ack.maxMs),
    r.serverCpuMsPer1000 === null ? 'n/a' : `${r.serverCpuMsPer1000.toFixed(0)} ms`,
    r.serverCpuPercent === null ? 'n/a' : `${r.serverCpuPercent.toFixed(0)}%`,
    r.recordsPerRound === null ? 'n/a' : r.recordsPerRound.toFixed(1),
    `${r.clientCpuPercent.toFixed(0)}%`,
  ]);
  const t = c.target;
  const lines = [
    `4. Server capacity: ONE lnbackup server process (file storage); N nodes × ${c.rate} records/s, each over its own BOLT #8 connection with its own key and vault,` +
      ` from 2 load-generator processes; ${c.sealed ? 'sealed records' : 'framed records (valid header, random body)'} of the sizes of the trace's calls (mean ${fmtInt(c.meanRecordBytes)} bytes);` +
      ` ${c.warmupMs / 1000} s warm-up, ${c.windowMs / 1000} s window; ${cpus} cpus shared by all`,
    ...table(
      ['nodes', 'offered/s', 'acked/s', 'MB/s', 'ack p50', 'ack p99', 'ack max', 'server CPU/1k rec', 'server CPU', 'records/round', 'load gen CPU'],
      rows,
    ),
  ];
  for (const r of c.runs) {
    const errors = Object.entries(r.errors)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    const trouble = [
      r.unacked > 0 ? `${fmtInt(r.unacked)} records sent in the window not acknowledged` : '',
      r.heldBack > 0 ? `${fmtInt(r.heldBack)} sends held back (maxPendingAppends reached)` : '',
      errors ? `errors: ${errors} (first: ${r.firstError})` : '',
      r.lostConnections > 0 ? `${r.lostConnections} connections lost` : '',
    ].filter(Boolean);
    lines.push(
      `  ${r.nodes} nodes: connected in ${fmtS(r.setupMs)} (connect → VaultState p50 ${fmtMs(r.connect.p50Ms)}, max ${fmtMs(r.connect.maxMs)}); ` +
        `group commit ${r.storeRounds ?? 'n/a'} rounds (longest ${r.maxRoundMs === null ? 'n/a' : fmtMs(r.maxRoundMs)}); server RSS ${r.serverRssMB ?? 'n/a'} MB; ` +
        `load generators: event-loop delay p99 ${fmtMs(r.clientLoopDelayP99Ms)}, send lateness p99 ${fmtMs(r.clientSendLagP99Ms)}; ` +
        `machine in the window: ${r.machine.busyCores} cores busy (${r.machine.otherCores ?? '?'} by other processes), CPU pressure ${r.machine.cpuPressurePct ?? '?'}%, IO pressure ${r.machine.ioPressurePct ?? '?'}%` +
        (trouble.length > 0 ? `; ${trouble.join('; ')}` : ''),
    );
  }
  lines.push(`  target: ${t.nodes} nodes × ${t.rate} tx/s with ack p99 < ${t.p99Ms} ms: ${t.met === null ? 'not measured' : met(t.met)} (${t.why})`);
  if (c.runs.some((r) => r.cpuProfile))
    lines.push(
      `  server CPU profiles: ${c.runs
        .map((r) => r.cpuProfile)
        .filter(Boolean)
        .join(', ')}`,
    );
  return lines;
}

const signed = (v: number): string => `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(1)}`;

function parityLines(p: ParitySection): string[] {
  const us = (ms: number): string => `${(ms * 1000).toFixed(1)} µs`;
  const m = p.mirror;
  const row = (name: string, d: ParitySection['mirror']['appendWith']): string[] => [name, us(d.p50Ms), us(d.p99Ms), us(d.meanMs)];
  return [
    `5. Redundancy (docs/FORMAT.md, "Redundancy"): Reed-Solomon 24+3 in 4 KiB stripes on the thread pool, CRC-32 per block, SHA-256 per file`,
    ...table(
      ['work on a 16 MiB segment', 'MB/s', 'vs Buffer copy'],
      [
        ['Buffer copy of the same bytes (same run)', p.copyMBps.toFixed(0), '1.00x'],
        ['encode: the whole parity file', p.encodeMBps.toFixed(0), `${fmtX(p.encodeVsCopy)} slower`],
        ['repair: every stripe with 3 blocks rebuilt', p.repairMBps.toFixed(0), `${fmtX(p.repairVsCopy)} slower`],
      ],
    ),
    `  scrub (read, every block's CRC, SHA-256, no damage): ${p.scrub.files} files, ${fmtMB(p.scrub.bytes)} in ${fmtS(p.scrub.ms)} = ${p.scrub.MBps.toFixed(0)} MB/s`,
    `  the active segment's mirror, per append of a ${m.recordBytes}-byte record (${m.appends} appends × rounds per mode, interleaved):`,
    ...table(
      ['VaultWriter.append', 'p50', 'p99', 'mean'],
      [
        row('without mirror', m.appendWithout),
        row('with mirror (one extra write())', m.appendWith),
        row('append + fdatasync, without mirror', m.syncedWithout),
        row('append + fdatasync, with mirror', m.syncedWith),
      ],
    ),
    `  mirror cost: ${signed(m.extraP50Us)} µs p50, ${signed(m.extraMeanUs)} µs mean per append; with the hook's fdatasync ${signed(m.extraSyncedP50Us)} µs p50 (no fsync of its own: within the disk's noise)`,
  ];
}

function compactionLines(c: CompactionSection, runs: number): string[] {
  const row = (name: string, m: CompactionSection['median']['off']): string[] => [name, m.txPerSec.toFixed(1), fmtMs(m.p50Ms), fmtMs(m.p99Ms), fmtMs(m.maxMs)];
  const pick = c.samples.filter((_, i) => i % Math.max(1, Math.ceil(c.samples.length / 8)) === 0 || i === c.samples.length - 1);
  return [
    `6. Compaction: the trace through the real plugin with the default retention and with compaction off (median of ${runs} runs each, alternating)`,
    ...table(
      ['retention', 'tx/s', 'hook p50', 'hook p99', 'longest hook'],
      [row(`default (${fmtInt(c.compactions)} compactions)`, c.median.default), row('compaction off', c.median.off)],
    ),
    `  default / off: p50 ${fmtX(c.ratios.p50)}, p99 ${fmtX(c.ratios.p99)}, longest hook ${fmtX(c.ratios.max)}`,
    `  inside the plugin, the longest Journal.record that carried a compaction step (staging the database, switching generations) ${fmtMs(c.longestRecordMs.withCompactionStep)}` +
      ` vs the longest without one ${fmtMs(c.longestRecordMs.others)} (the build runs between hooks, in 4 ms slices)`,
    `  vault (segments + page packs) against the database along the default replay; parity and mirror files apart:`,
    ...table(
      ['data_version', 'database', 'vault', 'vault / database', 'parity + mirror'],
      pick.map((s) => [fmtInt(s.dataVersion), fmtMB(s.dbBytes), fmtMB(s.vaultBytes), fmtX(s.vaultBytes / s.dbBytes), fmtMB(s.sidecarBytes)]),
    ),
    `  vault / database at the end: ${fmtX(c.finalRatio)} with the default retention (largest along the replay ${fmtX(c.maxRatio)}), ${fmtX(c.offFinalRatio)} with compaction off`,
    ...snapshotLines(c.snapshot),
  ];
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (!fs.existsSync(o.trace)) throw new Error(`trace ${o.trace} not found; pass --trace FILE.jsonl.gz`);
  fs.mkdirSync(o.dir, { recursive: true });
  const workDir = fs.mkdtempSync(path.join(o.dir, 'lnbackup-bench-'));
  const started = Date.now();
  const want = (s: Section): boolean => o.sections.has(s);
  try {
    const m = machine(workDir);
    progress(`${m.cpus} cpus, node ${m.node}, work dir ${workDir}; sections ${[...o.sections].join(', ')}`);
    const trace = loadTrace(o.trace);
    if (trace.superseded > 0) throw new Error(`${o.trace} has superseded calls (lightningd crashes); the benchmark needs a trace without them`);

    let floor: FloorResult | null = null;
    let hook: HookSection | null = null;
    let restore: RestoreResults | null = null;
    let profile: ProfileSection | null = null;
    let capacity: CapacitySection | null = null;
    let parity: ParitySection | null = null;
    let compaction: CompactionSection | null = null;
    if (want('hook')) {
      progress('disk floor...');
      floor = measureFloor(workDir);
      hook = await runHookSection(trace, workDir, o.runs);
    }
    if (want('restore')) {
      let compacted: { node: VaultNode; dataVersion: number };
      if (hook) compacted = { node: hook.keptVaultNode, dataVersion: hook.keptDataVersion };
      else {
        progress('restore: one lnbackup replay (default retention) to make a compacted vault...');
        compacted = await runOneLnbackup(trace, workDir, 'default');
      }
      progress('restore: one lnbackup replay with compaction off, for a full-history vault...');
      const fullHistory = await runOneLnbackup(trace, workDir, 'off');
      try {
        restore = runRestoreSection(trace, { fullHistory, compacted }, workDir, o.runs);
      } finally {
        fs.rmSync(fullHistory.node.dir, { recursive: true, force: true });
      }
    }
    if (hook) fs.rmSync(hook.keptVaultNode.dir, { recursive: true, force: true });
    if (want('profile')) profile = await runProfileSection(trace, workDir);
    if (want('capacity')) {
      capacity = await runCapacitySection(trace, workDir, {
        nodes: o.capacityNodes,
        windowMs: Math.round(o.capacitySeconds * 1000),
        warmupMs: Math.round(o.capacityWarmupSeconds * 1000),
        rate: CAPACITY_RATE,
        serverCpuProfDir: o.serverCpuProf,
        seal: o.capacitySeal,
      });
    }
    if (want('parity')) parity = await runParitySection(workDir, o.runs, o.parityMB);
    if (want('compaction')) compaction = await runCompactionSection(trace, workDir, o.runs, o.snapshotMB);
    const seconds = round2((Date.now() - started) / 1000);

    if (o.json) {
      const hookOut = hook && { runs: hook.runs, median: hook.median, ratios: hook.ratios, added: hook.added, dataVersion: hook.keptDataVersion };
      process.stdout.write(
        JSON.stringify(
          {
            machine: m,
            trace: {
              path: trace.path,
              calls: trace.calls.length,
              transactions: trace.transactions,
              statements: trace.statements,
              jsonBytes: trace.jsonBytes,
              gzBytes: trace.gzBytes,
            },
            runs: o.runs,
            simulatorWait: simulatorWait.mode,
            sections: [...o.sections],
            floor,
            hook: hookOut,
            restore,
            profile: profile && { ...profile, meanBreakdownMs: meanBreakdown(profile) },
            capacity,
            parity,
            compaction,
            targets: {
              hookLatencyRatio: HOOK_TARGET,
              restoreRatio: RESTORE_TARGET,
              remoteAddedMs: floor && {
                limitMs: round2(floor.p50Ms + REMOTE_ADDED_TARGET_MS),
                rule: `disk floor p50 + ${REMOTE_ADDED_TARGET_MS} ms`,
                localServer: hook && {
                  p50: hook.added.localServer.p50Ms <= floor.p50Ms + REMOTE_ADDED_TARGET_MS,
                  p99: hook.added.localServer.p99Ms <= floor.p50Ms + REMOTE_ADDED_TARGET_MS,
                },
                serverOnly: hook && {
                  p50: hook.added.serverOnly.p50Ms <= floor.p50Ms + REMOTE_ADDED_TARGET_MS,
                  p99: hook.added.serverOnly.p99Ms <= floor.p50Ms + REMOTE_ADDED_TARGET_MS,
                },
              },
              capacity: { nodes: CAPACITY_TARGET.nodes, rate: CAPACITY_RATE, p99Ms: CAPACITY_TARGET.p99Ms, met: capacity?.target.met ?? null },
            },
            seconds,
          },
          null,
          2,
        ) + '\n',
      );
      return;
    }
    const lines = [
      `lnbackup benchmark — ${m.cpus} cpus (${m.cpuModel}), ${m.memoryGB} GB, node ${m.node}, ${m.platform} ${m.kernel}`,
      `trace ${path.basename(trace.path)}: ${fmtInt(trace.calls.length)} db_write calls, ${fmtInt(trace.transactions)} transactions, ${fmtInt(trace.statements)} statements; work dir ${o.dir}`,
      `the simulated lightningd waits for each answer: ${simulatorWait.mode === 'spin' ? 'spinning (a busy poll, as lightningd does: one core is taken while the plugin works)' : 'idle (on its event loop; --wait spin is what lightningd does)'}`,
      ...(hook && floor ? ['', ...hookLines(hook, o.runs, floor)] : []),
      ...(restore ? ['', ...restoreLines(restore, trace, o.runs)] : []),
      ...(profile ? ['', ...profileLines(profile, hook)] : []),
      ...(capacity ? ['', ...capacityLines(capacity, m.cpus)] : []),
      ...(parity ? ['', ...parityLines(parity)] : []),
      ...(compaction ? ['', ...compactionLines(compaction, o.runs)] : []),
      '',
      `total ${seconds.toFixed(0)} s`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    if (o.keep) progress(`kept ${workDir}`);
    else fs.rmSync(workDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
