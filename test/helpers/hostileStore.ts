// A server store that lies on command: a ServerStore wrapper around a real store (the file store)
// for the hostile-server tests. Honest by default; a test tells it, per vault, to serve a tampered
// list of records (dropped, swapped, replayed, altered, foreign), to say something else than the
// truth in VaultState (lastSeq, lastHash, identity), or to acknowledge appends without storing
// them. Everything it says goes through the real BackupServer session, the real transport and the
// real client, so what the node sees is exactly what a malicious server could send.
import type { GroupCommitStats } from '../../src/server/storage/groupCommit.js';
import { envelopeVaultId } from '../../src/server/storage/vaultScope.js';
import type { OpenedStore } from '../../src/server/storage/openStore.js';
import type { PackPiece, PrunedVault, ServerStore, StoredPack, StoreRecord, StoredVault, StoreUsage } from '../../src/server/storage/store.js';

/** What a vault's lies are. */
export interface VaultLies {
  /** Rewrites the vault's whole list of records as the server serves it (ReadRecords). */
  readonly records?: (all: StoreRecord[]) => StoreRecord[];
  /** Rewrites what the store says of the vault (VaultState, ListVaults, the Records `done` flag). */
  readonly state?: (v: StoredVault) => StoredVault;
}

export class HostileStore implements ServerStore {
  readonly kind: string;
  readonly location: string;
  private readonly lies = new Map<string, VaultLies>();
  /** Per vault: appends of records from this seq on are acknowledged and thrown away. */
  private readonly swallowing = new Map<string, bigint>();
  /** append() calls received (acknowledged or not), all vaults. */
  appendCalls = 0;
  /** Sequence numbers acknowledged without being stored. */
  readonly swallowed: bigint[] = [];
  /** ReadRecords answered with lies. */
  liedReads = 0;
  /** The node's vault id of each stored id seen (lies are told by the node's ids; the store keeps owner-scoped ones). */
  private readonly nodeIds = new Map<string, string>();

  constructor(readonly inner: OpenedStore) {
    this.kind = inner.kind;
    this.location = inner.location;
  }

  get stats(): GroupCommitStats {
    return this.inner.stats;
  }

  /** From now on, lies about `vaultId` (replaces its earlier lies). */
  lie(vaultId: string, lies: VaultLies): void {
    this.lies.set(vaultId, lies);
  }

  /** Acknowledges the vault's appends from `fromSeq` on without storing them (null: stores again). */
  swallowAppends(vaultId: string, fromSeq: bigint | null): void {
    if (fromSeq === null) this.swallowing.delete(vaultId);
    else this.swallowing.set(vaultId, fromSeq);
  }

  /** Honest again, for one vault or all. */
  honest(vaultId?: string): void {
    if (vaultId === undefined) {
      this.lies.clear();
      this.swallowing.clear();
    } else {
      this.lies.delete(vaultId);
      this.swallowing.delete(vaultId);
    }
  }

  /** The truth: the vault as the real store holds it (by the node's vault id). */
  async truth(vaultId: string): Promise<StoredVault | null> {
    return (await this.inner.listVaults()).find((x) => this.seen(x) === vaultId) ?? null;
  }

  /** The truth: every record the real store holds for the vault (by the node's vault id), in order. */
  async allRecords(vaultId: string): Promise<StoreRecord[]> {
    const v = await this.truth(vaultId);
    return v ? this.recordsOf(v.vaultId) : [];
  }

  /** Notes the node's id of a stored vault; returns it. */
  private seen(v: StoredVault): string {
    const id = envelopeVaultId(v.identity) ?? v.vaultId;
    this.nodeIds.set(v.vaultId, id);
    return id;
  }

  private nodeIdOf(stored: string): string {
    return this.nodeIds.get(stored) ?? stored;
  }

  private async recordsOf(vaultId: string): Promise<StoreRecord[]> {
    const out: StoreRecord[] = [];
    let from = 1n;
    for (;;) {
      const page = await this.inner.readRecords(vaultId, from, 1 << 24);
      if (page.length === 0) return out;
      out.push(...page);
      from = page[page.length - 1].seq + 1n;
    }
  }

  private told(v: StoredVault | null): StoredVault | null {
    if (v === null) return null;
    const state = this.lies.get(this.seen(v))?.state;
    return state ? state(v) : v;
  }

  async getVault(vaultId: string): Promise<StoredVault | null> {
    return this.told(await this.inner.getVault(vaultId));
  }

  async createVault(owner: string, vaultId: string, identity: Buffer): Promise<StoredVault> {
    const v = await this.inner.createVault(owner, vaultId, identity);
    this.seen(v);
    return v;
  }

  async listVaults(owner?: string): Promise<StoredVault[]> {
    return (await this.inner.listVaults(owner)).map((v) => this.told(v)!);
  }

  usage(owner: string): StoreUsage {
    return this.inner.usage(owner);
  }

  append(vaultId: string, records: readonly StoreRecord[]): Promise<void> {
    this.appendCalls++;
    const from = this.swallowing.get(this.nodeIdOf(vaultId));
    if (from !== undefined && records.length > 0 && records.every((r) => r.seq >= from)) {
      // "Durable", says the server; nothing was written.
      for (const r of records) this.swallowed.push(r.seq);
      return Promise.resolve();
    }
    return this.inner.append(vaultId, records);
  }

  async readRecords(vaultId: string, fromSeq: bigint, maxBytes: number): Promise<StoreRecord[]> {
    const rewrite = this.lies.get(this.nodeIdOf(vaultId))?.records;
    if (!rewrite) return this.inner.readRecords(vaultId, fromSeq, maxBytes);
    this.liedReads++;
    const served = rewrite(await this.recordsOf(vaultId));
    // As a store would: the first record it holds at or after fromSeq, then on in its own order.
    const start = served.findIndex((r) => r.seq >= fromSeq);
    if (start < 0) return [];
    const out: StoreRecord[] = [];
    let total = 0;
    for (let i = start; i < served.length; i++) {
      const size = served[i].bytes.length;
      if (out.length > 0 && total + size > maxBytes) break;
      out.push(served[i]);
      total += size;
    }
    return out;
  }

  putPack(vaultId: string, name: string, bytes: Buffer): Promise<boolean> {
    return this.inner.putPack(vaultId, name, bytes);
  }

  listPacks(vaultId: string): Promise<StoredPack[]> {
    return this.inner.listPacks(vaultId);
  }

  readPack(vaultId: string, name: string, offset: number, maxBytes: number): Promise<PackPiece | null> {
    return this.inner.readPack(vaultId, name, offset, maxBytes);
  }

  deletePacks(vaultId: string, names: readonly string[]): Promise<number> {
    return this.inner.deletePacks(vaultId, names);
  }

  prune(vaultId: string, keepFromGeneration: number): Promise<PrunedVault> {
    return this.inner.prune(vaultId, keepFromGeneration);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

// -- lies on a list of records (pure functions, for VaultLies.records) ----------------------------

/** Index of record `seq` in `all` (throws when absent: a test bug). */
function indexOf(all: readonly StoreRecord[], seq: bigint): number {
  const i = all.findIndex((r) => r.seq === seq);
  if (i < 0) throw new Error(`the store holds no record ${seq} to tamper with`);
  return i;
}

/** Record `seq` is lost. */
export function dropRecord(seq: bigint): (all: StoreRecord[]) => StoreRecord[] {
  return (all) => all.filter((r) => r.seq !== seq);
}

/** The newest `n` records are lost. */
export function dropNewest(n: number): (all: StoreRecord[]) => StoreRecord[] {
  return (all) => all.slice(0, all.length - n);
}

/**
 * Records `a` and `b` trade places. With `relabel`, each is served under the other's sequence
 * number (the bytes are swapped, the wire seq and generation stay where they were).
 */
export function swapRecords(a: bigint, b: bigint, relabel = false): (all: StoreRecord[]) => StoreRecord[] {
  return (all) => {
    const out = [...all];
    const i = indexOf(all, a);
    const j = indexOf(all, b);
    if (relabel) {
      out[i] = { ...all[i], bytes: all[j].bytes };
      out[j] = { ...all[j], bytes: all[i].bytes };
    } else {
      out[i] = all[j];
      out[j] = all[i];
    }
    return out;
  };
}

/** Record `seq`'s place is taken by `by` (served as `by` says, or under `seq` with `relabel`). */
export function replaceRecord(seq: bigint, by: StoreRecord, relabel = false): (all: StoreRecord[]) => StoreRecord[] {
  return (all) => {
    const out = [...all];
    const i = indexOf(all, seq);
    out[i] = relabel ? { seq, generation: all[i].generation, bytes: by.bytes } : by;
    return out;
  };
}

/** Record `seq`'s place is taken by an older record of the same vault, `old` (a replay). */
export function replayRecord(seq: bigint, old: bigint, relabel = false): (all: StoreRecord[]) => StoreRecord[] {
  return (all) => replaceRecord(seq, all[indexOf(all, old)], relabel)(all);
}

/** One bit of record `seq` is flipped, `fromEnd` bytes before its end (inside the sealed body). */
export function flipBit(seq: bigint, fromEnd = 20): (all: StoreRecord[]) => StoreRecord[] {
  return (all) =>
    all.map((r) => {
      if (r.seq !== seq) return r;
      const bytes = Buffer.from(r.bytes);
      bytes[bytes.length - fromEnd] ^= 0x04;
      return { ...r, bytes };
    });
}

/** Record `seq` is listed under another generation number. */
export function relabelGeneration(seq: bigint, generation: number): (all: StoreRecord[]) => StoreRecord[] {
  return (all) => all.map((r) => (r.seq === seq ? { ...r, generation } : r));
}
