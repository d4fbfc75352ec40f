// Group commit, shared by both server stores: appends are checked against each vault's in-memory
// tail (which includes appends not yet durable, so a client can pipeline), queued, and committed
// in rounds: every append that arrived while a round was in flight goes into the next round, which
// the store writes and makes durable in one step (fsync of every touched file in parallel, or one
// PostgreSQL transaction); then all of that round's promises settle together. A failed round
// rejects its appends and every later pending append of the same vaults with
// StorageUnavailableError, puts those vaults' tails back to what is durable, and asks the store
// to confirm the durable tail (recover) before it commits anything more for them. Operations that
// change a vault's records other than by appending (retention: prune) are queued with the appends
// and run alone between two rounds, so they never overlap a write of that vault.
import { performance } from 'node:perf_hooks';
import { isPackName, MAX_PACK_BYTES } from '../../vault/packFiles.js';
import { MAX_IDENTITY_BYTES } from '../../vault/format.js';
import { checkRawRecord, RawRecordError, rawRecordHash } from '../../vault/rawRecords.js';
import { StorageUnavailableError, type StoredVault, type StoreRecord, type StoreUsage } from './store.js';

/** A vault's position: what StoredVault reports besides identity and owner. */
export type VaultTail = Omit<StoredVault, 'vaultId' | 'owner' | 'identity' | 'packBytes'>;

export const EMPTY_TAIL: VaultTail = { firstSeq: 0n, lastSeq: 0n, lastHash: null, lastGeneration: 0, bytes: 0, lastWriteAt: null };

/**
 * An append was refused as given (malformed record, out of sequence, unknown vault): nothing was
 * stored and sending the same again fails the same way.
 */
export class AppendRefusedError extends Error {
  override name = 'AppendRefusedError';
}

/** Who owns a vault and its identity file, as the stores keep them. */
export interface VaultMeta {
  readonly vaultId: string;
  readonly owner: string;
  readonly identity: Buffer;
}

const VAULT_ID = /^[0-9a-f]{32}$/;
const OWNER = /^[0-9a-f]{66}$/;

/** Checks a new vault's fields before a store keeps them (the vault id also names a folder). */
export function checkNewVault(owner: string, vaultId: string, identity: Buffer): void {
  if (!VAULT_ID.test(vaultId)) throw new Error(`vault id '${vaultId}' is not 32 lowercase hex digits`);
  if (/^0+$/.test(vaultId)) throw new Error('the all-zero vault id means "no vault" and is never a vault');
  if (!OWNER.test(owner)) throw new Error(`owner '${owner}' is not 66 lowercase hex digits`);
  if (identity.length > MAX_IDENTITY_BYTES) throw new Error(`the vault identity is ${identity.length} bytes, more than the ${MAX_IDENTITY_BYTES} allowed`);
}

/** A pack's name and size, checked before anything is written (the name also names a file). */
export function checkPack(name: string, bytes: number): void {
  if (!isPackName(name)) throw new Error(`${JSON.stringify(name.slice(0, 80))} is not a pack name (p-<32 hex digits>.pack)`);
  if (bytes > MAX_PACK_BYTES) throw new Error(`pack ${name} is ${bytes} bytes, more than the ${MAX_PACK_BYTES} allowed`);
  if (bytes === 0) throw new Error(`pack ${name} is empty; a pack holds at least one page`);
}

export function isVaultId(s: string): boolean {
  return VAULT_ID.test(s);
}

export function isOwner(s: string): boolean {
  return OWNER.test(s);
}

/** What a store does for the batcher. */
export interface RoundBackend {
  /**
   * Writes the round's records (vault id -> records in order, each list continuing that vault's
   * durable tail) and makes them durable. Returns the vaults whose part failed (their part must
   * not be durable, or recover() must say so); throwing fails the whole round.
   */
  commitRound(round: ReadonlyMap<string, readonly StoreRecord[]>): Promise<ReadonlyMap<string, Error>>;
  /**
   * After a failure: the durable tail of each vault as the storage holds it now (a commit whose
   * answer was lost may have happened), or an Error for a vault it cannot tell yet.
   */
  recover(vaultIds: readonly string[]): Promise<ReadonlyMap<string, VaultTail | Error>>;
  /** The error appends get when the storage failed (says what and where). */
  unavailable(err: unknown): StorageUnavailableError;
}

export interface GroupCommitStats {
  /** Rounds committed (successful or not). */
  readonly rounds: number;
  /** Rounds that failed in whole or in part. */
  readonly failedRounds: number;
  /** append() calls made durable. */
  readonly appends: number;
  /** Records made durable. */
  readonly records: number;
  /** The longest round, from taking its appends to settling them (ms). */
  readonly maxRoundMs: number;
  readonly lastRoundMs: number;
}

export interface GroupCommitOptions {
  /** A round takes whole appends until it holds this many bytes (at least one append). */
  readonly maxRoundBytes?: number;
  /** ... and at most this many records (at least one append). */
  readonly maxRoundRecords?: number;
  /** The clock for lastWriteAt (ms since the epoch). */
  readonly now?: () => number;
}

interface Pending {
  readonly kind: 'append';
  readonly vaultId: string;
  readonly records: readonly StoreRecord[];
  readonly bytes: number;
  /** Adjusted when an operation (prune) runs before it. */
  tailAfter: VaultTail;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** A change of a vault's durable records other than an append, run alone between rounds. */
interface Operation {
  readonly kind: 'operation';
  readonly vaultId: string;
  /** Does the work on the durable tail given and returns the durable tail after it. */
  readonly run: (durable: VaultTail) => Promise<VaultTail>;
  readonly resolve: (tail: VaultTail) => void;
  readonly reject: (err: Error) => void;
}

type Queued = Pending | Operation;

/** Runs async functions one at a time per key (a store's pack operations on one vault, the opens of one vault id). */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/**
 * Checks that `records` continue `tail` and returns the tail after them. With `hash` false the
 * returned lastHash is null (the caller hashes the last record when it needs it).
 */
export function advanceTail(tail: VaultTail, records: readonly StoreRecord[], now: number, hash = true): VaultTail {
  if (records.length === 0) return tail;
  let lastSeq = tail.lastSeq;
  let generation = tail.lastGeneration;
  let bytes = tail.bytes;
  for (const r of records) {
    try {
      checkRawRecord(r);
    } catch (err) {
      if (err instanceof RawRecordError) throw new AppendRefusedError(err.message);
      throw err;
    }
    if (lastSeq !== 0n && r.seq !== lastSeq + 1n) {
      throw new AppendRefusedError(`record ${r.seq} does not follow record ${lastSeq}: the vault's next record is ${lastSeq + 1n}`);
    }
    if (r.generation < generation) {
      throw new AppendRefusedError(`record ${r.seq} is of generation ${r.generation}, older than the vault's generation ${generation}`);
    }
    lastSeq = r.seq;
    generation = r.generation;
    bytes += r.bytes.length;
  }
  return {
    firstSeq: tail.firstSeq === 0n ? records[0].seq : tail.firstSeq,
    lastSeq,
    lastHash: hash ? rawRecordHash(records[records.length - 1].bytes) : null,
    lastGeneration: generation,
    bytes,
    lastWriteAt: now,
  };
}

/**
 * The vaults a store holds (owner, identity, durable and accepted tails) and the batcher that
 * commits their appends in rounds.
 */
export class GroupCommit {
  private readonly meta = new Map<string, VaultMeta>();
  /** The vault ids of each owner. */
  private readonly byOwner = new Map<string, Set<string>>();
  /** What is durable (what getVault reports). */
  private readonly durable = new Map<string, VaultTail>();
  /** Durable plus accepted, not yet durable appends (what the next append must continue). */
  private readonly accepted = new Map<string, VaultTail>();
  /** Vaults whose last round failed: the store confirms their tail before the next commit. */
  private readonly unsure = new Set<string>();
  /** Bytes of page packs per vault (kept by the store; packs are not part of the rounds). */
  private readonly packBytes = new Map<string, number>();
  private queue: Queued[] = [];
  private running: Promise<void> | null = null;
  private closed = false;
  private readonly maxRoundBytes: number;
  private readonly maxRoundRecords: number;
  private readonly now: () => number;
  private counters = { rounds: 0, failedRounds: 0, appends: 0, records: 0, maxRoundMs: 0, lastRoundMs: 0 };

  constructor(
    private readonly backend: RoundBackend,
    options: GroupCommitOptions = {},
  ) {
    this.maxRoundBytes = options.maxRoundBytes ?? 64 * 1024 * 1024;
    this.maxRoundRecords = options.maxRoundRecords ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  get stats(): GroupCommitStats {
    return { ...this.counters };
  }

  /** Told every round as it ends: the records it made durable (or failed to), how long it took (ms), whether it succeeded. */
  onRound: ((records: number, ms: number, ok: boolean) => void) | null = null;

  /** Registers a vault with its durable tail (at open, or when created). */
  addVault(meta: VaultMeta, tail: VaultTail): void {
    this.meta.set(meta.vaultId, { vaultId: meta.vaultId, owner: meta.owner, identity: Buffer.from(meta.identity) });
    let owned = this.byOwner.get(meta.owner);
    if (!owned) this.byOwner.set(meta.owner, (owned = new Set()));
    owned.add(meta.vaultId);
    this.durable.set(meta.vaultId, tail);
    this.accepted.set(meta.vaultId, tail);
  }

  hasVault(vaultId: string): boolean {
    return this.meta.has(vaultId);
  }

  /** The vault as durably stored (appends not yet durable are not in it). */
  vault(vaultId: string): StoredVault | null {
    const m = this.meta.get(vaultId);
    const t = this.durable.get(vaultId);
    return m && t ? { ...m, ...t, packBytes: this.packBytes.get(vaultId) ?? 0 } : null;
  }

  /** Sets the bytes of packs the vault holds (at open). */
  setPackBytes(vaultId: string, bytes: number): void {
    this.packBytes.set(vaultId, bytes);
  }

  /** Pack bytes stored (positive) or removed (negative). */
  addPackBytes(vaultId: string, delta: number): void {
    this.packBytes.set(vaultId, Math.max(0, (this.packBytes.get(vaultId) ?? 0) + delta));
  }

  /**
   * Runs `run` on the vault's durable tail once every append queued before it is settled and
   * before any queued after it is written; `run` returns the durable tail after its change, which
   * may only remove records from the front (firstSeq and bytes change; lastSeq, lastHash and the
   * generation stay). Appends queued meanwhile keep their place. A vault whose last round failed is
   * confirmed (recover) first. If `run` throws, the vault is confirmed again before its next round.
   */
  exclusive(vaultId: string, run: (durable: VaultTail) => Promise<VaultTail>): Promise<VaultTail> {
    if (this.closed) return Promise.reject(new Error('the store is closed'));
    if (!this.meta.has(vaultId)) return Promise.reject(new AppendRefusedError(`no vault ${vaultId} on this server`));
    return new Promise<VaultTail>((resolve, reject) => {
      this.queue.push({ kind: 'operation', vaultId, run, resolve, reject });
      this.schedule();
    });
  }

  /** An owner's bytes (durable records and packs) and vaults. */
  usage(owner: string): StoreUsage {
    const owned = this.byOwner.get(owner);
    let bytes = 0;
    for (const id of owned ?? []) bytes += (this.durable.get(id)?.bytes ?? 0) + (this.packBytes.get(id) ?? 0);
    return { bytes, vaults: owned?.size ?? 0 };
  }

  /** Every vault, or one owner's, by vault id. */
  vaults(owner?: string): StoredVault[] {
    const out: StoredVault[] = [];
    const ids = owner === undefined ? this.meta.keys() : (this.byOwner.get(owner) ?? []);
    for (const id of ids) {
      const v = this.vault(id);
      if (v) out.push(v);
    }
    return out.sort((a, b) => (a.vaultId < b.vaultId ? -1 : a.vaultId > b.vaultId ? 1 : 0));
  }

  durableTail(vaultId: string): VaultTail | undefined {
    return this.durable.get(vaultId);
  }

  /** Checks the records against the vault's tail (pending appends included) and queues them. */
  append(vaultId: string, records: readonly StoreRecord[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the store is closed'));
    const base = this.accepted.get(vaultId);
    if (!base) return Promise.reject(new AppendRefusedError(`no vault ${vaultId} on this server`));
    let tailAfter: VaultTail;
    try {
      // The chain hash is computed once per vault per round, for the last record only (round()).
      tailAfter = advanceTail(base, records, this.now(), false);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    this.accepted.set(vaultId, tailAfter);
    const bytes = records.reduce((n, r) => n + r.bytes.length, 0);
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ kind: 'append', vaultId, records, bytes, tailAfter, resolve, reject });
      this.schedule();
    });
  }

  /** Settles everything queued, then refuses new appends. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.running) await this.running;
  }

  private schedule(): void {
    if (this.running) return;
    // Start on the next turn of the event loop, so appends made in the same turn share the round.
    this.running = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.loop())
      .finally(() => {
        this.running = null;
        if (this.queue.length > 0) this.schedule();
      });
  }

  private async loop(): Promise<void> {
    while (this.queue.length > 0) {
      const head = this.queue[0];
      if (head.kind === 'operation') {
        this.queue.shift();
        await this.operate(head);
      } else await this.round();
    }
  }

  private async operate(op: Operation): Promise<void> {
    const v = op.vaultId;
    if (this.unsure.has(v)) {
      const err = await this.confirm([v], []).then((r) => r.errors.get(v));
      if (err) {
        op.reject(err);
        return;
      }
    }
    const before = this.durable.get(v) ?? EMPTY_TAIL;
    let after: VaultTail;
    try {
      after = await op.run(before);
    } catch (err) {
      this.unsure.add(v);
      op.reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    const removed = before.bytes - after.bytes;
    const shift = (t: VaultTail): VaultTail => ({ ...t, firstSeq: after.lastSeq === 0n ? t.firstSeq : after.firstSeq, bytes: t.bytes - removed });
    this.durable.set(v, after);
    const accepted = this.accepted.get(v);
    if (accepted) this.accepted.set(v, shift(accepted));
    for (const q of this.queue) if (q.kind === 'append' && q.vaultId === v) q.tailAfter = shift(q.tailAfter);
    op.resolve(after);
  }

  /**
   * Learns what is really durable for vaults whose last round failed. A vault found further on
   * (a commit whose answer was lost) fails its appends in `batch` and the queue; a vault whose tail
   * cannot be told fails them as unavailable. Returns the rest of the batch and those errors.
   */
  private async confirm(unsure: readonly string[], batch: Pending[]): Promise<{ batch: Pending[]; errors: Map<string, Error> }> {
    const errors = new Map<string, Error>();
    let tails: ReadonlyMap<string, VaultTail | Error>;
    try {
      tails = await this.backend.recover(unsure);
    } catch (err) {
      tails = new Map(unsure.map((v) => [v, err as Error]));
    }
    for (const v of unsure) {
      const t = tails.get(v) ?? new Error(`no tail was found for vault ${v}`);
      if (t instanceof Error) {
        const e = this.backend.unavailable(t);
        batch = this.fail(batch, v, e);
        errors.set(v, e);
        continue;
      }
      this.unsure.delete(v);
      const believed = this.durable.get(v) ?? EMPTY_TAIL;
      if (sameTail(t, believed)) continue;
      // A commit whose answer was lost did happen: the vault is further than the appends assumed.
      this.durable.set(v, t);
      batch = this.fail(batch, v, new AppendRefusedError(`the vault ${v} now ends at record ${t.lastSeq} (an earlier append was stored after all)`));
    }
    return { batch, errors };
  }

  private takeRound(): Pending[] {
    let bytes = 0;
    let records = 0;
    let n = 0;
    while (n < this.queue.length) {
      const p = this.queue[n];
      if (p.kind === 'operation') break;
      if (n > 0 && (bytes + p.bytes > this.maxRoundBytes || records + p.records.length > this.maxRoundRecords)) break;
      bytes += p.bytes;
      records += p.records.length;
      n++;
    }
    return this.queue.splice(0, n) as Pending[];
  }

  private async round(): Promise<void> {
    const started = performance.now();
    let batch = this.takeRound();
    let failed = false;

    // Vaults whose previous round failed: learn what is really durable before going on.
    const unsure = [...new Set(batch.map((p) => p.vaultId))].filter((v) => this.unsure.has(v));
    if (unsure.length > 0) {
      const confirmed = await this.confirm(unsure, batch);
      batch = confirmed.batch;
      if (confirmed.errors.size > 0) failed = true;
    }

    const round = new Map<string, StoreRecord[]>();
    for (const p of batch) {
      let list = round.get(p.vaultId);
      if (!list) round.set(p.vaultId, (list = []));
      list.push(...p.records);
    }
    let failures: ReadonlyMap<string, Error>;
    if (round.size === 0) failures = new Map();
    else {
      try {
        failures = await this.backend.commitRound(round);
      } catch (err) {
        failures = new Map([...round.keys()].map((v) => [v, err as Error]));
      }
    }
    for (const [v, err] of failures) {
      this.unsure.add(v);
      batch = this.fail(batch, v, err instanceof StorageUnavailableError ? err : this.backend.unavailable(err));
      failed = true;
    }
    let records = 0;
    const settled = new Set<string>();
    for (let i = batch.length - 1; i >= 0; i--) {
      const p = batch[i];
      records += p.records.length;
      // An empty append leaves the tail as it was.
      if (p.records.length === 0 || settled.has(p.vaultId)) continue;
      settled.add(p.vaultId);
      this.durable.set(p.vaultId, { ...p.tailAfter, lastHash: rawRecordHash(p.records[p.records.length - 1].bytes) });
    }
    const ms = performance.now() - started;
    this.onRound?.(records, ms, !failed);
    this.counters = {
      rounds: this.counters.rounds + 1,
      failedRounds: this.counters.failedRounds + (failed ? 1 : 0),
      appends: this.counters.appends + batch.length,
      records: this.counters.records + records,
      maxRoundMs: Math.max(this.counters.maxRoundMs, ms),
      lastRoundMs: ms,
    };
    for (const p of batch) p.resolve();
  }

  /**
   * Rejects the vault's appends in `batch` and every later queued one (they continue records that
   * are not stored), puts its tail back to what is durable, and returns the rest of the batch.
   */
  private fail(batch: Pending[], vaultId: string, err: Error): Pending[] {
    const keep: Pending[] = [];
    for (const p of batch) {
      if (p.vaultId === vaultId) p.reject(err);
      else keep.push(p);
    }
    this.queue = this.queue.filter((p) => {
      if (p.vaultId !== vaultId || p.kind === 'operation') return true;
      p.reject(err);
      return false;
    });
    this.accepted.set(vaultId, this.durable.get(vaultId) ?? EMPTY_TAIL);
    return keep;
  }
}

function sameTail(a: VaultTail, b: VaultTail): boolean {
  const hashes = a.lastHash === null || b.lastHash === null ? a.lastHash === b.lastHash : a.lastHash.equals(b.lastHash);
  return a.lastSeq === b.lastSeq && hashes && a.firstSeq === b.firstSeq && a.bytes === b.bytes;
}

/** What both stores answer straight from their group-commit state: counters, vaults, lists. */
export abstract class GroupCommittedStore {
  protected abstract readonly commits: GroupCommit;

  /** Group-commit counters (rounds, records, longest round) for status output and tests. */
  get stats(): GroupCommitStats {
    return this.commits.stats;
  }

  /** `fn` is told every group-commit round as it ends (metrics). */
  observeRounds(fn: (records: number, ms: number, ok: boolean) => void): void {
    this.commits.onRound = fn;
  }

  async getVault(vaultId: string): Promise<StoredVault | null> {
    return this.commits.vault(vaultId);
  }

  async listVaults(owner?: string): Promise<StoredVault[]> {
    return this.commits.vaults(owner);
  }

  usage(owner: string): StoreUsage {
    return this.commits.usage(owner);
  }
}
