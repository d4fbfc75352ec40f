// `npm run bench`: what lnbackup costs a Core Lightning node and how fast it restores, on this
// machine, in one run of a few minutes. See bench/README.md for what each line means.
//
//   node dist/bench/main.js [--json] [--runs N] [--trace FILE.jsonl.gz] [--dir PARENT] [--keep]
//
// Progress goes to stderr; stdout carries the table, or with --json one JSON object.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { measureFloor, runHookSection, type FloorResult, type HookSection, type Mode } from './hookRuns.js';
import { meanBreakdown, runProfileSection, type ProfileSection, type Step } from './profile.js';
import { runRestoreSection, type RestoreSection } from './restoreBench.js';
import { DEFAULT_TRACE, loadTrace, progress, type TraceInfo } from './setup.js';
import { fmtInt, fmtMB, fmtMs, fmtS, fmtX, round2, table, type Dist } from './stats.js';

const HOOK_TARGET = 1.3;
const RESTORE_TARGET = 1.5;

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

function parseOptions(argv: string[]): { json: boolean; runs: number; trace: string; dir: string; keep: boolean } {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      json: { type: 'boolean' },
      runs: { type: 'string' },
      trace: { type: 'string' },
      dir: { type: 'string' },
      keep: { type: 'boolean' },
    },
  });
  const runs = values.runs === undefined ? 3 : Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 9) throw new Error('--runs needs an integer from 1 to 9');
  return {
    json: values.json === true,
    runs,
    trace: path.resolve(values.trace ?? DEFAULT_TRACE),
    dir: path.resolve(values.dir ?? os.tmpdir()),
    keep: values.keep === true,
  };
}

const verdict = (ratio: number, target: number): string => (ratio <= target ? `meets ≤ ${target}x` : `MISSES ≤ ${target}x`);

function spread(h: HookSection, mode: Mode): number {
  const tx = h.runs.filter((r) => r.mode === mode).map((r) => r.stats.txPerSec);
  return Math.max(...tx) / Math.min(...tx);
}

function hookLines(h: HookSection, runs: number, floor: FloorResult): string[] {
  const modeLabel: Record<Mode, string> = { none: 'no plugin', baseline: 'baseline (append+fsync)', lnbackup: 'lnbackup (local vault)' };
  const none = h.median.none;
  const rows = (['none', 'baseline', 'lnbackup'] as const).map((mode) => {
    const m = h.median[mode];
    return [
      modeLabel[mode],
      m.txPerSec.toFixed(1),
      fmtX(m.txPerSec / none.txPerSec),
      fmtMs(m.p50Ms),
      fmtMs(m.p99Ms),
      fmtMs(m.meanMs),
      fmtS(m.wallMs),
      fmtMs(m.nodeMsPerCall),
    ];
  });
  const r = h.ratios;
  return [
    `1. Hook cost: the trace through the simulated lightningd (median of ${runs} runs per mode, alternating)`,
    ...table(['mode', 'tx/s', 'vs none', 'hook p50', 'hook p99', 'hook mean', 'replay wall', 'node/call'], rows),
    `  lnbackup / baseline hook latency: p50 ${fmtX(r.p50)}, p99 ${fmtX(r.p99)} (target ≤ ${HOOK_TARGET}x: p50 ${verdict(r.p50, HOOK_TARGET)}, p99 ${verdict(r.p99, HOOK_TARGET)}); mean ${fmtX(r.mean)}`,
    `  same ratio within each round (paired runs): p50 ${r.perRoundP50.map(fmtX).join(' ')}; p99 ${r.perRoundP99.map(fmtX).join(' ')}`,
    `  tx/s vs no plugin: lnbackup ${fmtX(r.lnbackupTxVsNone)}, baseline ${fmtX(r.baselineTxVsNone)}; lnbackup vs baseline ${fmtX(r.lnbackupTxVsBaseline)}`,
    `  spread of tx/s across runs (max/min): ${(['none', 'baseline', 'lnbackup'] as const).map((mode) => `${mode} ${fmtX(spread(h, mode))}`).join(', ')}` +
      (Math.max(...(['none', 'baseline', 'lnbackup'] as const).map((mode) => spread(h, mode))) > 1.25 ? ' — the disk or the CPU was busy; rerun or add --runs' : ''),
    `  disk floor (1 KiB write + fdatasync, ${floor.n}x): p50 ${fmtMs(floor.p50Ms)}, p99 ${fmtMs(floor.p99Ms)}, ${fmtInt(floor.opsPerSec)} ops/s`,
  ];
}

function restoreLines(r: RestoreSection, trace: TraceInfo, runs: number): string[] {
  const perS = (count: number, ms: number): string => fmtInt((count * 1000) / ms);
  const mbS = (bytes: number, ms: number): string => `${((bytes / 1e6) * 1000 / ms).toFixed(1)} MB/s`;
  return [
    `2. Restore: ${r.statements.toLocaleString('en-US')} statements, ${r.transactions.toLocaleString('en-US')} transactions; vault ${fmtMB(r.vaultBytes)} in ${fmtInt(r.records)} records, trace ${fmtMB(trace.jsonBytes)} JSON (${fmtMB(trace.gzBytes)} gz); database ${fmtMB(r.dbBytes)}`,
    ...table(
      ['replay', 'time', 'statements/s', 'MB/s'],
      [
        [`lnbackup restoreDatabase (median of ${runs})`, fmtS(r.restoreMs), perS(r.statements, r.restoreMs), `${mbS(r.vaultBytes, r.restoreMs)} of vault`],
        [`plain replay, sqliteSink's pragmas + grouping (median of ${runs})`, fmtS(r.plainMs), perS(r.statements, r.plainMs), `${mbS(trace.jsonBytes, r.plainMs)} of JSON`],
        ['plain replay, naive (one tx per call, default pragmas)', fmtS(r.naiveMs), perS(r.statements, r.naiveMs), `${mbS(trace.jsonBytes, r.naiveMs)} of JSON`],
      ],
    ),
    `  restore / plain replay: ${fmtX(r.ratio)} (target ≤ ${RESTORE_TARGET}x: ${verdict(r.ratio, RESTORE_TARGET)}); runs: restore ${r.restoreRuns.map(fmtS).join(' ')}, plain ${r.plainRuns.map(fmtS).join(' ')}`,
    `  parts: the sqlite work alone (parsed calls, same pragmas + grouping) ${fmtS(r.sqliteOnlyMs)}; so plain replay = sqlite + ${fmtS(r.plainMs - r.sqliteOnlyMs)} gunzip + JSON.parse,` +
      ` restore = sqlite + ${fmtS(r.restoreMs - r.sqliteOnlyMs)} of its own, of which reading + authenticating + decoding the vault ${fmtS(r.readOnlyMs)} and the final checks (integrity_check, foreign_key_check, fsync) ${fmtS(r.checksMs)}`,
    `  restored database identical to the node's (logical dump, version ${r.restoredVersion}): ${r.identical ? 'yes' : 'NO'}`,
  ];
}

function profileLines(p: ProfileSection, h: HookSection): string[] {
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
  const missed = !(h.ratios.p50 <= HOOK_TARGET && h.ratios.p99 <= HOOK_TARGET);
  return [
    `3. Where lnbackup's hook time goes (${p.calls} calls; section 1 ${missed ? 'MISSED' : 'met'} the ${HOOK_TARGET}x target)`,
    ...table(['in-process, interleaved per call', 'p50', 'p99', 'mean'], [
      ...order.map((step) => row(label[step], s[step])),
      ['through the simulator:', '', '', ''],
      row('hook, a plugin that answers at once (stdio floor)', p.nullPlugin.hook),
      row('hook, lnbackup (bench/probePlugin.js)', probe.hook),
      row('  of which inside the plugin process', probe.inPlugin),
    ]),
    `  mean per call in-process ${fmtMs(b.total)} = ` +
      [part('parse', b.parse), part('plugin logic', b.logic), part('seal', b.seal), part('other journal', b.other), part('write', b.write), part('fdatasync', b.fdatasync)].join(' + '),
    `  Journal.record vs bare write+fdatasync of the same bytes: p50 ${fmtX(s.record.p50Ms / s.bare.p50Ms)} (+${fmtMs(s.record.p50Ms - s.bare.p50Ms)}), mean +${fmtMs(s.record.meanMs - s.bare.meanMs)}` +
      `; lnbackup vs baseline logic in-process: p50 ${fmtX(s.total.p50Ms / s.baseline.p50Ms)} (+${fmtMs(s.total.p50Ms - s.baseline.p50Ms)})`,
    `  through stdio: hook mean ${fmtMs(probe.hook.meanMs)} = inside the plugin ${fmtMs(probe.inPlugin.meanMs)} + transport ${fmtMs(transport)}` +
      ` (the floor plugin's hook: p50 ${fmtMs(p.nullPlugin.hook.p50Ms)}, mean ${fmtMs(p.nullPlugin.hook.meanMs)}; it is the same for any plugin)`,
  ];
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (!fs.existsSync(o.trace)) throw new Error(`trace ${o.trace} not found; pass --trace FILE.jsonl.gz`);
  fs.mkdirSync(o.dir, { recursive: true });
  const workDir = fs.mkdtempSync(path.join(o.dir, 'lnbackup-bench-'));
  const started = Date.now();
  try {
    const m = machine(workDir);
    progress(`${m.cpus} cpus, node ${m.node}, work dir ${workDir}`);
    const trace = loadTrace(o.trace);
    if (trace.superseded > 0) throw new Error(`${o.trace} has superseded calls (lightningd crashes); the benchmark needs a trace without them`);

    progress('disk floor...');
    const floor = measureFloor(workDir);
    const hook = await runHookSection(trace, workDir, o.runs);
    const restore = runRestoreSection(trace, hook.keptVaultNode, hook.keptDataVersion, workDir, o.runs);
    fs.rmSync(hook.keptVaultNode.dir, { recursive: true, force: true });
    const profile = await runProfileSection(trace, workDir);
    const seconds = round2((Date.now() - started) / 1000);

    if (o.json) {
      const hookOut = { runs: hook.runs, median: hook.median, ratios: hook.ratios, dataVersion: hook.keptDataVersion };
      process.stdout.write(
        JSON.stringify(
          {
            machine: m,
            trace: { path: trace.path, calls: trace.calls.length, transactions: trace.transactions, statements: trace.statements, jsonBytes: trace.jsonBytes, gzBytes: trace.gzBytes },
            runs: o.runs,
            floor,
            hook: hookOut,
            restore,
            profile: { ...profile, meanBreakdownMs: meanBreakdown(profile) },
            targets: { hookLatencyRatio: HOOK_TARGET, restoreRatio: RESTORE_TARGET },
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
      '',
      ...hookLines(hook, o.runs, floor),
      '',
      ...restoreLines(restore, trace, o.runs),
      '',
      ...profileLines(profile, hook),
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
