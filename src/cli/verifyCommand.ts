// `lnbackup verify`: check every record of a vault (authentication, hash chain, sequence,
// snapshots) without writing a database; exit code 3 when a record is bad.
import type { Command } from 'commander';
import { verifyVault } from '../restore/verify.js';
import { repairVaultInMemory } from '../vault/redundancy/protectedRead.js';
import { requireKeys, type KeyFlags } from './keyOptions.js';
import { emit, EXIT_CHECK_FAILED } from './output.js';
import { formatBytes, progressBar } from './progress.js';
import { run } from './runner.js';
import { vaultCommand, withVaultDir, type SourceFlags } from './vaultSource.js';

export function registerVerifyCommand(program: Command): void {
  vaultCommand(program, 'verify', 'check every record of a vault (authentication, hash chain, sequence, snapshots) without writing a database').action(
    (o: KeyFlags & SourceFlags) =>
      run(o, async () => {
        const { keys } = requireKeys(o);
        const r = await withVaultDir(o, keys, async (vaultDir) => {
          const repair = await repairVaultInMemory(vaultDir);
          const bar = progressBar('verify', !o.json);
          const verified = verifyVault(vaultDir, keys, bar.update, repair);
          bar.done();
          return verified;
        });
        emit(o, r, () => [
          ...r.notices.map((n) => `note: ${n}`),
          r.ok ? `ok: ${r.records} records, ${formatBytes(r.bytes)}, ${r.generations.length} generation(s)` : `FAILED after ${r.records} good records`,
          ...r.generations.map(
            (g) =>
              `  generation ${g.generation}: snapshot at version ${g.baseVersion}, up to version ${g.version}${g.inFlight ? ' (last transaction in flight)' : ''}, ${g.transactions} transactions, ${g.superseded} superseded${g.complete ? '' : ', snapshot INCOMPLETE'}`,
          ),
          ...(r.tornTail
            ? [`  note: a torn, never-acknowledged record at ${r.tornTail.segment}:${r.tornTail.offset} (${r.tornTail.bytes} bytes) is ignored`]
            : []),
          ...(r.firstBadRecord
            ? [`first bad record: ${r.firstBadRecord.seq} in ${r.firstBadRecord.segment} at byte ${r.firstBadRecord.offset}: ${r.firstBadRecord.reason}`]
            : []),
        ]);
        return r.ok ? 0 : EXIT_CHECK_FAILED;
      }),
  );
}
