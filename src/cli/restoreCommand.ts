// `lnbackup restore`: rebuild a Core Lightning database from a vault (newest version, a data_version
// or a moment), after repairing damaged files in memory, with progress and integrity checks.
import type { Command } from 'commander';
import { U32 } from '../journal/dataVersion.js';
import { restoreDatabase } from '../restore/rebuild.js';
import { repairVaultInMemory } from '../vault/redundancy/protectedRead.js';
import { requireKeys, type KeyFlags } from './keyOptions.js';
import { emit, UsageError } from './output.js';
import { formatBytes, progressBar } from './progress.js';
import { run } from './runner.js';
import { vaultCommand, withVaultDir, type SourceFlags } from './vaultSource.js';

function parseTime(v: string): number {
  const t = Date.parse(v);
  if (!/^\d{4}-\d{2}-\d{2}/.test(v) || Number.isNaN(t)) throw new UsageError(`--time takes an ISO 8601 moment (e.g. 2026-11-22T10:30:00Z), not '${v}'`);
  return t;
}

function parseVersion(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n >= U32) throw new UsageError(`--version takes a data_version (0..${U32 - 1}), not '${v}'`);
  return n;
}

export function registerRestoreCommand(program: Command): void {
  vaultCommand(program, 'restore', 'rebuild a Core Lightning database from a vault (newest version, or --version N), with integrity checks')
    .requiredOption('--to <file>', 'the database file to write (e.g. <lightning-dir>/<network>/lightningd.sqlite3)')
    .option('--version <n>', 'restore this data_version instead of the newest', parseVersion)
    .option(
      '--time <when>',
      "restore the database as it was at this moment (ISO 8601, e.g. 2026-11-22T10:30:00Z); see 'lnbackup generations' for what is kept",
      parseTime,
    )
    .option('--exclude-in-flight', 'leave out the last transaction if its commit is not confirmed')
    .option('--force', 'replace an existing file (stop lightningd first)')
    .action((o: KeyFlags & SourceFlags & { to: string; version?: number; time?: number; excludeInFlight?: boolean; force?: boolean }) =>
      run(o, async () => {
        const { keys } = requireKeys(o);
        const notices: string[] = [];
        const r = await withVaultDir(o, keys, async (vaultDir) => {
          // Damaged files are repaired in memory from their parity or mirror first (and said so).
          const repair = await repairVaultInMemory(vaultDir);
          const bar = progressBar('restore', !o.json);
          const restored = restoreDatabase({
            vaultDir,
            keys,
            to: o.to,
            version: o.version,
            time: o.time,
            excludeInFlight: o.excludeInFlight,
            force: o.force,
            onProgress: bar.update,
            onNotice: (m) => notices.push(m),
            repair,
          });
          bar.done();
          return restored;
        });
        emit(o, { ok: true, ...r, notices }, () => [
          ...notices.map((n) => `note: ${n}`),
          `restored:    ${r.to} (${formatBytes(r.dbBytes)})`,
          `version:     ${r.version}${r.inFlight ? ` (the last transaction is the in-flight one: acknowledged, commit unconfirmed; committed for sure: ${r.committedVersion})` : ' (committed)'}`,
          `from:        generation ${r.generation}, snapshot at version ${r.baseVersion}, ${r.transactions} transactions, ${r.statements} statements, ${r.superseded} superseded`,
          `checks:      integrity_check ${r.integrityCheck}, foreign_key_check ok`,
          ...(r.tornTail ? [`note: skipped a torn, never-acknowledged record at ${r.tornTail.segment}:${r.tornTail.offset}`] : []),
        ]);
      }),
    );
}
