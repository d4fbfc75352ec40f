// `lnbackup status`: what a vault holds (node id, generations, size; the versions with a key).
import type { Command } from 'commander';
import { vaultStatus } from '../restore/status.js';
import { keyOrigin, loadKeys, type KeyFlags } from './keyOptions.js';
import { emit } from './output.js';
import { formatBytes } from './progress.js';
import { run } from './runner.js';
import { vaultCommand, withVaultDir, type SourceFlags } from './vaultSource.js';

export function registerStatusCommand(program: Command): void {
  vaultCommand(program, 'status', 'what a vault holds: node id, generations, versions (with a key), size').action((o: KeyFlags & SourceFlags) =>
    run(o, async () => {
      const origin = keyOrigin(o);
      const keys = origin ? loadKeys(origin).keys : null;
      const s = await withVaultDir(o, keys, (vaultDir) => ({ ...vaultStatus(vaultDir, keys), ...(o.from ? { from: o.from } : {}) }));
      emit(o, s, () => [
        `vault:       ${s.vault} (id ${s.vaultId}, format ${s.formatVersion})`,
        `node id:     ${s.nodeId ?? 'unknown'}`,
        `size:        ${formatBytes(s.totalBytes)} in ${s.segmentFiles} segment file(s); last write ${s.lastWriteAt ?? 'never'}`,
        ...s.generations.map(
          (g) =>
            `generation ${g.generation}: ${formatBytes(g.bytes)}, ${g.segments} segment(s)${g.baseVersion !== null ? `, snapshot at version ${g.baseVersion} (${g.snapshotTakenAt})` : ''}`,
        ),
        s.latest
          ? `latest:      version ${s.latest.version}${s.latest.inFlight ? ` (in flight; committed ${s.latest.committedVersion})` : ''}, record ${s.latest.lastSeq}`
          : 'versions:    pass --hsm-secret or --key-file to read them',
      ]);
    }),
  );
}
