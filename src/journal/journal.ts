// The hot path below the plugin: a db_write call goes through the supersede rules (JournalTail),
// is sealed into the next record of the chain, and is made durable in the vault before record()
// returns (or, with deferSync, once the caller has it flushed). It takes the paged snapshots that
// start generations: inside the call when the vault cannot follow the node otherwise (at init, or
// when the vault is behind), and for compaction in three steps that keep every hook short: stage
// (copy the database file while a hook is pending), build (elsewhere: compactor.ts), switch (at a
// later call: the new generation's snapshot records, then the calls made since staging again, so
// the generation holds everything after its snapshot). It refuses a node whose database is older
// than the vault.
import { vaultIdBytes, type VaultIdentity } from '../vault/identity.js';
import { RecordType } from '../vault/format.js';
import type { VaultKeys } from '../vault/keys.js';
import path from 'node:path';
import { deletePacks, pagesDir, protectPack, removeStalePackTemps } from '../vault/packFiles.js';
import { pruneGenerations, type PruneResult } from '../vault/prune.js';
import { RecordSealer, type SealedRecord } from '../vault/sealer.js';
import { listSegments } from '../vault/segments.js';
import { VaultWriter } from '../vault/writer.js';
import { bumpedFrom } from './dataVersion.js';
import { clearStaging, PagedSnapshotBuilder, snapshotRecords, stageDatabase, type PagedSnapshot, type StagedDatabase } from './pagedSnapshot.js';
import { PageStore, type NewPack } from './pageStore.js';
import { decodeSnapshotBegin, encodeTimedWrites, isCallRecord } from './payloads.js';
import { SnapshotBusyError } from './snapshotSource.js';
import { JournalTail } from './tail.js';
import { cutShort, generationEnd } from './retention.js';

export interface SnapshotTaken {
  readonly generation: number;
  readonly dataVersion: number;
  readonly dbBytes: number;
  readonly takenAt: number;
  readonly lastSeq: bigint;
  /** Pages it shares with what the vault held before. */
  readonly reusedPages: number;
  /** Content addresses of its pages, in page order. */
  readonly addresses: readonly Buffer[];
  /** Bytes of the packs written for it. */
  readonly packBytes: number;
  /** Every pack its pages are read from. */
  readonly packNames: readonly string[];
}

export type WriteOutcome =
  | {
      readonly kind: 'stored';
      readonly seq: bigint;
      readonly supersedes: bigint;
      /** The snapshot taken inside this call (the vault could not follow the node otherwise), or null. */
      readonly snapshot: SnapshotTaken | null;
      /** A compaction's new generation that this call switched to, or null. */
      readonly compacted: SnapshotTaken | null;
      /** The records this call added to the chain, in order (a snapshot's, then the Writes record). */
      readonly records: readonly SealedRecord[];
      /** Page packs those records refer to that the other destinations do not have yet. */
      readonly packs: readonly NewPack[];
    }
  | { readonly kind: 'unprotected'; readonly reason: string }
  | { readonly kind: 'refused'; readonly reason: string };

export interface JournalStatus {
  readonly vaultId: string;
  readonly nodeId: string | null;
  readonly generation: number;
  readonly version: number | null;
  readonly versionCommitted: boolean;
  readonly lastSeq: string;
  readonly vaultBytes: number;
  readonly lastSnapshotAt: string | null;
  readonly snapshotPending: string | null;
}

export interface RecordOptions {
  /**
   * Leave the fdatasync to the caller (syncAsync(), or another destination's durability): the
   * records are written but not yet durable when record() returns. Default: durable on return.
   */
  readonly deferSync?: boolean;
}

/** How much the current generation has grown since its snapshot (what compaction is decided on). */
export interface Growth {
  readonly callBytes: number;
  readonly dbBytes: number;
}

interface SavedCall {
  readonly dataVersion: number;
  readonly writes: readonly string[];
  readonly at: number;
}

/** A compaction in progress: the staged database and every call stored since. */
interface Staging {
  readonly staged: StagedDatabase;
  readonly calls: SavedCall[];
  bytes: number;
}

/** Most bytes of calls a compaction carries over from staging to its switch; beyond, it starts over. */
const MAX_CARRIED_BYTES = 32 * 1024 * 1024;

export class Journal {
  private snapshotPending: string | null = null;
  /** Records appended since the current call began. */
  private appended: SealedRecord[] = [];
  private stageWanted = false;
  private staging: Staging | null = null;
  private prepared: PagedSnapshot | null = null;
  private callBytes = 0;
  private snapshotDbBytes = 0;
  /** Told why a compaction was given up. */
  onCompactionNotice: (message: string) => void = () => undefined;

  private constructor(
    private readonly writer: VaultWriter,
    private readonly sealer: RecordSealer,
    private readonly tail: JournalTail,
    private readonly dbPath: string,
    readonly pages: PageStore,
    private readonly keys: VaultKeys,
    growth: Growth,
  ) {
    this.callBytes = growth.callBytes;
    this.snapshotDbBytes = growth.dbBytes;
  }

  /** Opens the vault for writing; `onNotice` hears about repairs of unacknowledged tails. */
  static open(vaultDir: string, keys: VaultKeys, dbPath: string, onNotice?: (message: string) => void): Journal {
    const tail = new JournalTail();
    let journal: Journal | null = null;
    let callBytes = 0;
    let dbBytes = 0;
    const writer = VaultWriter.open(vaultDir, keys, {
      onRecord: (r) => {
        tail.observe(r.seq, r.body);
        if (r.body.type === RecordType.SnapshotBegin) {
          dbBytes = decodeSnapshotBegin(r.body.payload).dbBytes;
          callBytes = 0;
        } else if (isCallRecord(r.body.type)) {
          callBytes += r.body.payload.length;
        }
      },
      onNotice,
      onAppend: (r) => journal?.appended.push(r),
    });
    const previous = listSegments(vaultDir).filter((seg) => seg.generation < tail.generation).at(-1)?.generation;
    const previousLast = tail.generationComplete && previous !== undefined ? generationEnd(writer.identity, keys, vaultDir, previous) : null;
    if (tail.generationComplete && tail.version !== null && cutShort(tail.version, previousLast)) {
      // A crash interrupted the switch to this generation: the calls after it are in the one
      // before. Nothing more is written to it; the next call starts a generation from a snapshot.
      tail.generationComplete = false;
      onNotice?.(`generation ${tail.generation} ends at version ${tail.version} but the one before it reaches ${previousLast}: a compaction switch was interrupted; the next call starts a new generation from a snapshot`);
    }
    clearStaging(vaultDir);
    removeStalePackTemps(vaultDir);
    const sealer = new RecordSealer(keys.record, vaultIdBytes(writer.identity), writer.tail);
    const pages = PageStore.open(vaultDir, keys, vaultIdBytes(writer.identity));
    for (const d of pages.damaged) onNotice?.(`page pack damaged: ${d}`);
    journal = new Journal(writer, sealer, tail, dbPath, pages, keys, { callBytes, dbBytes });
    return journal;
  }

  get vaultDir(): string {
    return this.writer.vaultDir;
  }

  /** Where the chain ends now. */
  get chainTail(): { readonly lastSeq: bigint; readonly lastHash: Buffer; readonly generation: number } {
    return this.writer.tail;
  }

  /** The key that makes page addresses. */
  get pageKey(): Buffer {
    return this.keys.page;
  }

  get identity(): VaultIdentity {
    return this.writer.identity;
  }

  get growth(): Growth {
    return { callBytes: this.callBytes, dbBytes: this.snapshotDbBytes };
  }

  /** Makes every record written so far durable in the vault, off the thread. */
  syncAsync(): Promise<void> {
    return this.writer.syncAsync();
  }

  /** Records one db_write call (durable on return unless deferSync), or says why it must not (refused) or could not (unprotected). */
  record(dataVersion: number, writes: readonly string[], options: RecordOptions = {}): WriteOutcome {
    this.appended = [];
    const compacted = this.prepared !== null ? this.switchGeneration() : null;
    if (this.stageWanted && this.staging === null && !this.snapshotPending) this.stage();
    const from = bumpedFrom(writes);
    let decision = this.tail.decide(dataVersion, writes, from);
    let snapshot: SnapshotTaken | null = null;
    let packs: NewPack[] = [];
    if (decision.kind === 'snapshot') {
      try {
        ({ taken: snapshot, packs } = this.snapshotNow());
      } catch (err) {
        if (!(err instanceof SnapshotBusyError)) throw err;
        this.snapshotPending = `${decision.reason}; ${err.message}`;
        return { kind: 'unprotected', reason: this.snapshotPending };
      }
      decision = this.tail.decide(dataVersion, writes, from);
      if (decision.kind === 'snapshot') {
        return { kind: 'refused', reason: `after a fresh snapshot at version ${snapshot.dataVersion} the call for version ${dataVersion} still does not follow: ${decision.reason}` };
      }
    }
    if (decision.kind === 'refuse') return { kind: 'refused', reason: decision.reason };
    const at = Date.now();
    const sealed = this.appendCall({ dataVersion, writes, at }, decision.supersedes);
    if (!options.deferSync) this.writer.sync();
    if (this.staging) this.carry({ dataVersion, writes, at });
    const records = this.appended;
    this.appended = [];
    return { kind: 'stored', seq: sealed.seq, supersedes: decision.supersedes, snapshot, compacted, records, packs };
  }

  /** Starts a new generation from a snapshot of the node's database, now (durable on return). */
  takeSnapshot(onProgress?: (done: number, total: number) => void): SnapshotTaken & { readonly packs: readonly NewPack[] } {
    const { taken, packs } = this.snapshotNow(onProgress);
    this.writer.sync();
    return { ...taken, packs };
  }

  // --- compaction (driven by compactor.ts) ---

  /** Writes the parity of packs this journal wrote (off the thread: Reed-Solomon runs in the pool). */
  protectPacks(packs: readonly NewPack[]): Promise<void> {
    return Promise.all(packs.map((p) => protectPack(path.join(pagesDir(this.vaultDir), p.name)))).then(() => undefined);
  }

  /** Asks for the database to be staged at the next call (a compaction begins). */
  requestCompaction(): void {
    this.stageWanted = true;
  }

  /** The staged database a compaction builds from, once the hook has staged it. */
  get staged(): StagedDatabase | null {
    return this.staging?.staged ?? null;
  }

  /** Hands over a built snapshot (its packs durable everywhere); the next call switches to it. */
  offer(snapshot: PagedSnapshot): void {
    if (this.staging?.staged !== snapshot.staged) throw new Error('the snapshot offered is not of the staged database');
    this.prepared = snapshot;
  }

  /** Gives up the compaction in progress (its packs, unused, go at the next retention). */
  abandonCompaction(why: string): void {
    if (this.staging === null && this.prepared === null && !this.stageWanted) return;
    this.staging = null;
    this.prepared = null;
    this.stageWanted = false;
    clearStaging(this.vaultDir);
    this.onCompactionNotice(`compaction given up: ${why}`);
  }

  /** Retention: removes the local vault's generations below `keepFrom` and the packs named. */
  prune(keepFrom: number, deadPacks: readonly string[]): PruneResult {
    const result = pruneGenerations(this.vaultDir, keepFrom);
    this.writer.sizeBytes -= result.removedBytes;
    this.removePacks(deadPacks);
    return result;
  }

  /** Removes packs no kept generation uses (retention, or a compaction given up). */
  removePacks(names: readonly string[]): void {
    deletePacks(this.vaultDir, names);
    this.pages.forget(names);
  }

  get compacting(): boolean {
    return this.stageWanted || this.staging !== null || this.prepared !== null;
  }

  status(): JournalStatus {
    const id = this.writer.identity;
    return {
      vaultId: id.vaultId,
      nodeId: id.nodeId,
      generation: this.tail.generation,
      version: this.tail.version,
      versionCommitted: this.tail.confirmed,
      lastSeq: this.tail.lastSeq.toString(),
      vaultBytes: this.writer.sizeBytes + this.pages.bytes,
      lastSnapshotAt: this.tail.snapshotTakenAt === null ? null : new Date(this.tail.snapshotTakenAt).toISOString(),
      snapshotPending: this.snapshotPending,
    };
  }

  close(): void {
    this.staging = null;
    this.prepared = null;
    this.writer.close();
  }

  private appendCall(call: SavedCall, supersedes: bigint): SealedRecord {
    const sealed = this.sealer.seal({
      type: RecordType.TimedWrites,
      generation: this.tail.generation,
      dataVersion: call.dataVersion,
      supersedes,
      payload: encodeTimedWrites(call.at, call.writes),
    });
    this.writer.append(sealed);
    this.tail.appended(sealed.seq, call.dataVersion, bumpedFrom(call.writes) !== null, supersedes);
    this.callBytes += sealed.bytes.length;
    return sealed;
  }

  private snapshotNow(onProgress?: (done: number, total: number) => void): { taken: SnapshotTaken; packs: NewPack[] } {
    this.abandonCompaction('a snapshot had to be taken inside a call');
    const staged = stageDatabase(this.dbPath, this.vaultDir);
    const builder = new PagedSnapshotBuilder(staged, this.pages, this.keys.page);
    let built: PagedSnapshot | null = null;
    try {
      while (built === null) {
        built = builder.step(50);
        onProgress?.(Math.round(builder.progress * staged.dbBytes), staged.dbBytes);
      }
    } finally {
      builder.close();
      clearStaging(this.vaultDir);
    }
    const taken = this.appendSnapshot(built);
    this.snapshotPending = null;
    return { taken, packs: built.packs };
  }

  private appendSnapshot(snapshot: PagedSnapshot): SnapshotTaken {
    const generation = this.tail.generation + 1;
    for (const r of snapshotRecords(snapshot, generation)) this.writer.append(this.sealer.seal(r));
    const { dataVersion, dbBytes, takenAt } = snapshot.staged;
    this.tail.snapshotWritten(generation, dataVersion, this.sealer.lastSeq, takenAt);
    this.callBytes = 0;
    this.snapshotDbBytes = dbBytes;
    const packBytes = snapshot.packs.reduce((n, p) => n + p.bytes.length, 0);
    return { generation, dataVersion, dbBytes, takenAt, lastSeq: this.sealer.lastSeq, reusedPages: snapshot.reusedPages, addresses: snapshot.addresses, packBytes, packNames: snapshot.packNames };
  }

  private stage(): void {
    this.stageWanted = false;
    try {
      this.staging = { staged: stageDatabase(this.dbPath, this.vaultDir), calls: [], bytes: 0 };
    } catch (err) {
      // Busy (lightningd's cache spilled into the file) or unreadable: try again at a later call.
      this.onCompactionNotice(`could not stage the database for compaction (${(err as Error).message}); will try again`);
    }
  }

  private carry(call: SavedCall): void {
    const staging = this.staging;
    if (!staging) return;
    staging.calls.push(call);
    for (const w of call.writes) staging.bytes += w.length;
    if (staging.bytes > MAX_CARRIED_BYTES) this.abandonCompaction(`more than ${MAX_CARRIED_BYTES} bytes of calls came in while the snapshot was built`);
  }

  /**
   * Switches to the prepared generation: its snapshot, then every call stored since staging, each
   * decided again from the snapshot (tried on a copy of the tail first, so nothing is appended
   * unless all of them follow).
   */
  private switchGeneration(): SnapshotTaken | null {
    const snapshot = this.prepared;
    const staging = this.staging;
    this.prepared = null;
    this.staging = null;
    clearStaging(this.vaultDir);
    if (!snapshot || !staging) return null;
    const trial = this.tail.clone();
    const generation = this.tail.generation + 1;
    let seq = this.sealer.lastSeq + BigInt(snapshotRecords(snapshot, generation).length);
    trial.snapshotWritten(generation, snapshot.staged.dataVersion, seq, snapshot.staged.takenAt);
    const supersedes: bigint[] = [];
    for (const call of staging.calls) {
      const decision = trial.decide(call.dataVersion, call.writes);
      if (decision.kind !== 'append') {
        this.onCompactionNotice(`compaction given up: the calls since the snapshot at version ${snapshot.staged.dataVersion} do not follow it (${decision.kind === 'refuse' || decision.kind === 'snapshot' ? decision.reason : ''})`);
        return null;
      }
      seq += 1n;
      trial.appended(seq, call.dataVersion, bumpedFrom(call.writes) !== null, decision.supersedes);
      supersedes.push(decision.supersedes);
    }
    const taken = this.appendSnapshot(snapshot);
    staging.calls.forEach((call, i) => this.appendCall(call, supersedes[i]));
    return taken;
  }
}

