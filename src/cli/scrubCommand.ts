// `lnbackup scrub --vault <dir> | --data <server data dir> [--repair] [--json]`: reads every file of
// a vault (or of every vault a server keeps in files), checks it against its parity, mirror or
// copy, and with --repair fixes what it can in place (atomically). Keyless. Exit code 0 when
// everything is intact or was repaired, 1 when damage is left (or was found without --repair),
// 2 for a usage error.
import path from 'node:path';
import type { Command } from 'commander';
import { describeRanges } from '../vault/redundancy/keeper.js';
import { scrubDataDir, scrubVault, type ScrubFile, type ScrubVaultResult } from '../vault/redundancy/scrub.js';
import { EXIT_FAILURE, emit, UsageError } from './output.js';
import { formatBytes, progressBar } from './progress.js';
import { jsonOption, run } from './runner.js';

interface ScrubFlags {
  vault?: string;
  data?: string;
  repair?: boolean;
  json?: boolean;
}

function fileLines(f: ScrubFile): string[] {
  const lines = [`  ${f.status.toUpperCase().padEnd(11)} ${f.file} (${f.kind}${f.bytes ? `, ${formatBytes(f.bytes)}` : ''})`];
  for (const x of f.found) lines.push(`      found: ${x}`);
  for (const x of f.fixed) lines.push(`      fixed: ${x}`);
  if (f.lost.length > 0) lines.push(`      LOST:  ${describeRanges(f.lost)}`);
  return lines;
}

function vaultLines(v: ScrubVaultResult): string[] {
  return [
    `${v.vault}: ${v.checkedFiles} files, ${formatBytes(v.bytes)} checked; ${v.repairedFiles} repaired, ${v.damagedFiles} damaged, ${v.unprotectedFiles} unprotected`,
    ...v.files.flatMap(fileLines),
  ];
}

export function registerScrubCommand(program: Command): void {
  program
    .command('scrub')
    .description(
      "check every file of a vault (or of a server's data folder) against its parity, mirror or copy, and with --repair fix the damage in place; no key needed",
    )
    .option('--vault <path>', "a vault directory (a node's, or one of a server's vaults/<id>)")
    .option('--data <dir>', "a server's data folder: every vault under <data>/vaults")
    .option(
      '--repair',
      'rewrite damaged files from their repaired contents (atomically), make missing or damaged parity files and mirrors again, restore VAULT.json from its copy',
    )
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
What is repaired: in every sealed segment and page pack, any damage that leaves at most 3 bad
4 KiB blocks in each stripe (see docs/FORMAT.md, "Redundancy"), for example one damaged region of
up to 1/8 of the file (2.0 MiB of a 16 MiB segment), or the whole parity file; the active segment
from its mirror; VAULT.json from VAULT.json.copy.
Exit code 0: everything intact, or repaired with --repair. 1: damage left (beyond repair, or found
without --repair). 2: usage error.`,
    )
    .action((o: ScrubFlags) =>
      run(o, async () => {
        if (!o.vault === !o.data) throw new UsageError('give one of --vault <path> or --data <server data dir>');
        const repair = o.repair === true;
        const bar = progressBar(repair ? 'scrub --repair' : 'scrub', !o.json);
        if (o.vault) {
          const r = await scrubVault(path.resolve(o.vault), { repair, onProgress: bar.update });
          bar.done();
          emit(o, { ...r, repair }, () => [
            ...vaultLines(r),
            r.ok
              ? r.repairedFiles > 0
                ? 'ok: everything found was repaired'
                : 'ok: no damage'
              : repair
                ? 'DAMAGE LEFT: see the files above'
                : 'damage found: run again with --repair',
          ]);
          return r.ok ? 0 : EXIT_FAILURE;
        }
        const r = await scrubDataDir(path.resolve(o.data as string), { repair, onProgress: bar.update });
        bar.done();
        emit(o, { ...r, repair }, () => [
          `${r.dataDir}: ${r.vaults.length} vault(s), ${r.checkedFiles} files, ${formatBytes(r.bytes)} checked; ${r.repairedFiles} repaired, ${r.damagedFiles} damaged, ${r.unprotectedFiles} unprotected`,
          ...r.vaults.filter((v) => v.files.length > 0).flatMap(vaultLines),
          r.ok ? 'ok' : repair ? 'DAMAGE LEFT: see the files above' : 'damage found: run again with --repair',
        ]);
        return r.ok ? 0 : EXIT_FAILURE;
      }),
    );
}
