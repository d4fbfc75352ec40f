// `lnbackup generations`: the generations a vault keeps (what point-in-time restore can reach) and
// what each costs.
import type { Command } from 'commander';
import { listGenerationSummaries } from '../restore/generationList.js';
import { requireKeys, type KeyFlags } from './keyOptions.js';
import { emit, EXIT_CHECK_FAILED } from './output.js';
import { formatBytes } from './progress.js';
import { run } from './runner.js';
import { vaultCommand, withVaultDir, type SourceFlags } from './vaultSource.js';

export function registerGenerationsCommand(program: Command): void {
  vaultCommand(program, 'generations', 'the generations a vault keeps (what point-in-time restore can reach) and what each costs').action(
    (o: KeyFlags & SourceFlags) =>
      run(o, async () => {
        const { keys } = requireKeys(o);
        const r = await withVaultDir(o, keys, (vaultDir) => listGenerationSummaries(vaultDir, keys));
        emit(o, { ok: r.damage === null, ...r }, () => [
          ...r.generations.map(
            (g) =>
              `generation ${g.generation}: versions ${g.baseVersion}..${g.lastVersion}, ${g.snapshotTakenAt} .. ${g.lastCallAt ?? g.snapshotTakenAt}, ${g.calls} calls, ${g.pages} pages; ` +
              `${formatBytes(g.recordBytes)} of records, packs ${formatBytes(g.packBytes)} (shared)${g.complete ? '' : ', snapshot INCOMPLETE'}`,
          ),
          `total:       ${formatBytes(r.recordBytes)} of records + ${formatBytes(r.packBytes)} of page packs, + ${formatBytes(r.redundancyBytes)} of parity and mirrors`,
          ...(r.damage ? [`damage:      ${r.damage} (run 'lnbackup scrub --repair'; the list stops there)`] : []),
        ]);
        return r.damage === null ? 0 : EXIT_CHECK_FAILED;
      }),
  );
}
