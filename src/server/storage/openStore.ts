// Chooses the server's store from its options: a postgres:// (or postgresql://) URL in --storage
// opens the PostgreSQL store, otherwise the embedded file store under --data.
import { FileStore } from './fileStore.js';
import type { GroupCommitStats } from './groupCommit.js';
import { PostgresStore } from './postgresStore.js';
import type { ServerStore } from './store.js';

export interface StoreSpec {
  /** --data: the server's folder (the file store keeps its vaults here). */
  readonly dataDir: string;
  /** --storage: a postgres:// URL, or 'files' / absent for the file store. */
  readonly storage?: string;
}

/** A store, with its group-commit counters for status output. */
export type OpenedStore = ServerStore & { readonly stats: GroupCommitStats; observeRounds?(fn: (records: number, ms: number, ok: boolean) => void): void };

export function isPostgresUrl(storage: string): boolean {
  return /^postgres(ql)?:\/\//i.test(storage);
}

export async function openStore(spec: StoreSpec, onNotice?: (message: string) => void): Promise<OpenedStore> {
  const storage = spec.storage?.trim();
  if (storage && isPostgresUrl(storage)) return PostgresStore.open(storage, onNotice);
  if (storage && storage !== 'files') {
    throw new Error(`--storage '${storage}' is not understood: give a postgres://user@host:port/db URL, or leave it out to keep the vaults under --data`);
  }
  return FileStore.open(spec.dataDir, onNotice);
}
