// The single-writer lock of a vault: a lock file created exclusively, holding the writer's pid and
// host. A lock left by a dead process on this host (kill -9, power loss) is taken over; a live
// writer's lock is refused with its pid, so two writers never interleave records.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { processAlive } from '../util/processAlive.js';
import { VaultError } from './errors.js';

export const LOCK_FILE = 'writer.lock';

interface LockInfo {
  pid: number;
  host: string;
  since: string;
}

function readLock(file: string): LockInfo | null {
  try {
    const info = JSON.parse(fs.readFileSync(file, 'utf8').slice(0, 4096)) as LockInfo;
    return typeof info.pid === 'number' && typeof info.host === 'string' ? info : null;
  } catch {
    return null;
  }
}

/** Locks this process holds: a lock file naming our pid is ours only if it is in here. */
const heldHere = new Set<string>();

export class VaultLock {
  private constructor(private readonly file: string) {}

  static acquire(vaultDir: string): VaultLock {
    const file = path.join(vaultDir, LOCK_FILE);
    const me: LockInfo = { pid: process.pid, host: os.hostname(), since: new Date().toISOString() };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = fs.openSync(file, 'wx', 0o644);
        fs.writeSync(fd, JSON.stringify(me));
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        heldHere.add(file);
        return new VaultLock(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = readLock(file);
      if (holder && holder.host !== me.host) {
        throw new VaultError(
          `the vault at ${vaultDir} is locked by pid ${holder.pid} on host ${holder.host} since ${holder.since}. ` +
            `If no lnbackup runs there any more, delete ${file}.`,
        );
      }
      const ours = holder?.pid === process.pid && heldHere.has(file);
      if (holder && (ours || (holder.pid !== process.pid && processAlive(holder.pid)))) {
        throw new VaultError(
          `the vault at ${vaultDir} is in use by process ${holder.pid} (since ${holder.since}): ` +
            'only one writer may append to a vault. Stop the other lightningd or lnbackup first.',
        );
      }
      // The holder died, or a lock with our pid was left by an earlier process (pid reuse), or the
      // file is half-written: take the lock over.
      fs.rmSync(file, { force: true });
    }
    throw new VaultError(`could not take the lock ${file}; another writer keeps racing for it`);
  }

  release(): void {
    if (!heldHere.delete(this.file)) return;
    const holder = readLock(this.file);
    if (holder?.pid === process.pid) fs.rmSync(this.file, { force: true });
  }
}
