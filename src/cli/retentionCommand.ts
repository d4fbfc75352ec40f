// Retention and compaction settings on the command line: the options `init` and `retention` share,
// and `lnbackup retention`, which shows a node's settings and changes them in lnbackup.json
// (lightningd stopped: the plugin reads the file at start).
import path from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_RETENTION, readConfig, retentionSettings, writeConfig } from '../cln/config.js';
import type { RetentionSettings } from '../journal/retention.js';
import { refuseIfLightningdRuns } from './initNode.js';
import { emit, UsageError } from './output.js';
import { formatBytes } from './progress.js';
import { jsonOption, run } from './runner.js';

export interface RetentionFlags {
  keepGenerations?: number;
  keep?: number;
  compactRatio?: number;
  compactMinBytes?: number;
}

function parseCount(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`expected a whole number of 1 or more, not '${v}'`);
  return n;
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

function parseDuration(v: string): number {
  if (v === 'none') return 0;
  const m = /^(\d+)([smhd])$/.exec(v);
  if (!m) throw new UsageError(`expected a duration like 90m, 12h or 7d (or 'none'), not '${v}'`);
  return Number(m[1]) * DURATION_UNITS[m[2]];
}

function parseRatio(v: string): number {
  const n = Number(v);
  if (!/^\d*\.?\d+$/.test(v) || !(n > 0)) throw new UsageError(`expected a number above 0, not '${v}'`);
  return n;
}

function parseBytes(v: string): number {
  const m = /^(\d+)([KMG]i?B?)?$/i.exec(v);
  if (!m) throw new UsageError(`expected a size like 65536, 64KiB or 1MiB, not '${v}'`);
  const unit = (m[2] ?? '').toUpperCase().charAt(0);
  return Number(m[1]) * (unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : 1);
}

/** Adds the retention and compaction options to a command. */
export function retentionOptions(cmd: Command): Command {
  const d = DEFAULT_RETENTION;
  return cmd
    .option(
      '--keep-generations <n>',
      `keep this many generations for point-in-time restore (default ${d.keepGenerations}: since the last compaction)`,
      parseCount,
    )
    .option('--keep <duration>', "also keep whatever restores any moment of this last span (e.g. 7d, 12h, 90m; default 'none')", parseDuration)
    .option(
      '--compact-ratio <r>',
      `compact once the calls since the last snapshot exceed this share of the database size (default ${d.compactRatio})`,
      parseRatio,
    )
    .option(
      '--compact-min-bytes <size>',
      `but not before those calls reach this size (default ${formatBytes(d.compactMinBytes)}; e.g. 64KiB, 1MiB)`,
      parseBytes,
    );
}

/** The settings the flags give (only those given). */
export function retentionFromFlags(o: RetentionFlags): Partial<RetentionSettings> {
  const r: Partial<RetentionSettings> = {
    keepGenerations: o.keepGenerations,
    keepSeconds: o.keep,
    compactRatio: o.compactRatio,
    compactMinBytes: o.compactMinBytes,
  };
  return Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined));
}

function describeLines(r: RetentionSettings): string[] {
  return [
    `keep:        the newest ${r.keepGenerations} generation(s)${r.keepSeconds > 0 ? `, and every moment of the last ${r.keepSeconds} s` : ''}`,
    `compact:     once the calls since the last snapshot exceed ${r.compactRatio} × the database size, and at least ${formatBytes(r.compactMinBytes)}`,
    "cost:        'lnbackup generations --vault <vault> --hsm-secret <file>' shows what the kept generations take",
  ];
}

export function registerRetentionCommand(program: Command): void {
  retentionOptions(
    program
      .command('retention')
      .description("show a node's retention and compaction settings, or change them (lightningd stopped; the plugin reads them at start)")
      .requiredOption('--lightning-dir <dir>', "lightningd's base directory (e.g. ~/.lightning)")
      .requiredOption('--network <net>', 'bitcoin, testnet, signet or regtest'),
  )
    .addOption(jsonOption())
    .action((o: RetentionFlags & { lightningDir: string; network: string; json?: boolean }) =>
      run(o, () => {
        const networkDir = path.resolve(o.lightningDir, o.network);
        const config = readConfig(networkDir);
        const change = retentionFromFlags(o);
        if (Object.keys(change).length > 0) {
          refuseIfLightningdRuns(o.lightningDir, o.network);
          writeConfig(networkDir, { ...config, retention: { ...(config.retention ?? {}), ...change } });
        }
        const now = retentionSettings(readConfig(networkDir));
        emit(o, { ok: true, changed: Object.keys(change), ...now }, () => describeLines(now));
      }),
    );
}
