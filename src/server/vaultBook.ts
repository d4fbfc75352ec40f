// The book of open vaults, shared by all sessions of a server: for each vault open on some
// connection, its accepted sequence (durable or still pending), generation, pending appends and
// whether an append failed, so that two connections of one client cannot interleave records and a
// failed append stops every later one until the vault is reopened (docs/PROTOCOL.md, "Ordering and
// acknowledgement"). Entries are keyed by where the store keeps the vault, and forgotten once no
// session has the vault open and nothing is pending.
import { KeyedLock } from './storage/groupCommit.js';
import type { StoredVault } from './storage/store.js';

export interface BookEntry {
  readonly vaultId: string;
  readonly owner: string;
  /** Seq of the last record accepted for the vault (durable or still pending). */
  lastSeq: bigint;
  /** Generation of that record (a vault's generations never go back). */
  lastGeneration: number;
  /** Appends handed to the store and not settled. */
  pending: number;
  /** Bumped when an append fails: every append handed over before that point is not acknowledged. */
  epoch: number;
  /** An append failed; the vault takes no appends until it is reopened with nothing pending. */
  failed: boolean;
  /** Sessions that have it open. */
  users: number;
  idleWaiters: (() => void)[];
}

export class VaultBook {
  private readonly entries = new Map<string, BookEntry>();
  private readonly locks = new KeyedLock();

  /** Runs `fn` with no other open of the same vault running (vault creation and reload). */
  exclusive<T>(vaultId: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(vaultId, fn);
  }

  get(vaultId: string): BookEntry | undefined {
    return this.entries.get(vaultId);
  }

  /** Resolves true once nothing is pending for the vault, false after `timeoutMs`. */
  idle(entry: BookEntry, timeoutMs: number): Promise<boolean> {
    if (entry.pending === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      entry.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** Records a session's open of a vault just read from the store. */
  attach(v: StoredVault): BookEntry {
    let entry = this.entries.get(v.vaultId);
    if (!entry) {
      entry = {
        vaultId: v.vaultId,
        owner: v.owner,
        lastSeq: v.lastSeq,
        lastGeneration: v.lastGeneration,
        pending: 0,
        epoch: 0,
        failed: false,
        users: 0,
        idleWaiters: [],
      };
      this.entries.set(v.vaultId, entry);
    } else if (entry.failed && entry.pending === 0) {
      // After a failed append, the store says where the vault really ends. Otherwise the entry,
      // through which every append to the vault passes, is the authority.
      entry.lastSeq = v.lastSeq;
      entry.lastGeneration = v.lastGeneration;
      entry.failed = false;
    }
    entry.users++;
    return entry;
  }

  detach(entry: BookEntry): void {
    entry.users--;
    this.forgetIfUnused(entry);
  }

  settled(entry: BookEntry): void {
    entry.pending--;
    if (entry.pending === 0) {
      for (const wake of entry.idleWaiters.splice(0)) wake();
      this.forgetIfUnused(entry);
    }
  }

  private forgetIfUnused(entry: BookEntry): void {
    if (entry.users <= 0 && entry.pending === 0 && this.entries.get(entry.vaultId) === entry) this.entries.delete(entry.vaultId);
  }

  /** Appends not yet durable, over all vaults. */
  get pendingAppends(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.pending;
    return n;
  }
}
