// The hot path below the plugin: a db_write call goes through the supersede rule (supersede.ts),
// is sealed into the next record of the chain, and is made durable in the vault before record()
// returns (or, with deferSync, once the caller has it flushed). It takes the paged snapshots that
// start generations inside a call when the vault cannot follow the node otherwise (at init, or
// when the vault is behind), and makes compaction's call-time transitions (stage, carry, switch:
// compaction/transitions.ts, where the whole compaction reads top to bottom). It refuses a node
// whose database is older than the vault.
import { vaultIdBytes, type VaultIdentity } from '../vault/identity.js';
import { RecordType } from '../vault/format.js';
import type { VaultKeys } from '../vault/keys.js';
import path from 'node:path';
import { deletePacks, pagesDir, protectPack, removeStalePackTemps } from '../vault/packFiles.js';
import { pruneGenerations, type PruneResult } from '../vault/prune.js';
import { RecordSealer, type ChainPosition, type SealedRecord } from '../vault/sealer.js';
import { listSegments } from '../vault/segments.js';
import { VaultWriter } from '../vault/writer.js';
import { bumpedFrom } from './dataVersion.js';
import { Compaction, type SavedCall, type Switched } from './compaction/transitions.js';
import { clearStaging, PagedSnapshotBuilder, snapshotRecords, stageDatabase, type PagedSnapshot, type SnapshotTaken } from './pagedSnapshot.js';
import { PageStore, type NewPack } from './pageStore.js';
import { decodeSnapshotBegin, encodeTimedWrites, isCallRecord } from './payloads.js';
import { SnapshotBusyError } from './snapshotSource.js';
import { SupersedeRule } from './supersede.js';
import { cutShort, generationEnd } from './retention.js';

/** A call the journal stored: what it appended and what it started. */
export interface StoredOutcome {
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

export type WriteOutcome = StoredOutcome | { readonly kind: 'unprotected'; readonly reason: string } | { readonly kind: 'refused'; readonly reason: string };

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

export class Journal {
  private snapshotPending: string | null = null;
  private callBytes = 0;
  private snapshotDbBytes = 0;
  /** The compaction in progress (driven between calls by compaction/compactor.ts). */
  readonly compaction: Compaction;

  private constructor(
    private readonly writer: VaultWriter,
    private readonly sealer: RecordSealer,
    private readonly tail: SupersedeRule,
    private readonly dbPath: string,
    readonly pages: PageStore,
    private readonly keys: VaultKeys,
    growth: Growth,
  ) {
    this.callBytes = growth.callBytes;
    this.snapshotDbBytes = growth.dbBytes;
    this.compaction = new Compaction({
      vaultDir: writer.vaultDir,
      dbPath,
      rule: () => this.tail,
      lastSeq: () => this.sealer.lastSeq,
      appendSnapshot: (snapshot) => this.appendSnapshot(snapshot),
      appendCall: (call, supersedes) => this.appendCall(call, supersedes),
    });
  }

  /** Opens the vault for writing; `onNotice` hears about repairs of unacknowledged tails. */
  static open(vaultDir: string, keys: VaultKeys, dbPath: string, onNotice?: (message: string) => void): Journal {
    const tail = new SupersedeRule();
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
    });
    const previous = listSegments(vaultDir)
      .filter((seg) => seg.generation < tail.generation)
      .at(-1)?.generation;
    const previousLast = tail.generationComplete && previous !== undefined ? generationEnd(writer.identity, keys, vaultDir, previous) : null;
    if (tail.generationComplete && tail.version !== null && cutShort(tail.version, previousLast)) {
      // A crash interrupted the switch to this generation: the calls after it are in the one
      // before. Nothing more is written to it; the next call starts a generation from a snapshot.
      tail.generationComplete = false;
      onNotice?.(
        `generation ${tail.generation} ends at version ${tail.version} but the one before it reaches ${previousLast}: a compaction switch was interrupted; the next call starts a new generation from a snapshot`,
      );
    }
    clearStaging(vaultDir);
    removeStalePackTemps(vaultDir);
    const sealer = new RecordSealer(keys.record, vaultIdBytes(writer.identity), writer.tail);
    const pages = PageStore.open(vaultDir, keys, vaultIdBytes(writer.identity));
    for (const d of pages.damaged) onNotice?.(`page pack damaged: ${d}`);
    return new Journal(writer, sealer, tail, dbPath, pages, keys, { callBytes, dbBytes });
  }

  get vaultDir(): string {
    return this.writer.vaultDir;
  }

  /** Where the chain ends now. */
  get chainTail(): ChainPosition {
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
    const switched = this.compaction.atCall(this.snapshotPending !== null, { dataVersion, writes });
    const compacted = switched?.taken ?? null;
    /** What this call adds to the chain, in order: a new generation's records (if one starts), then the call's. */
    const records: SealedRecord[] = switched ? [...switched.records] : [];
    const from = bumpedFrom(writes);
    let decision = this.tail.decide(dataVersion, writes, from);
    let snapshot: SnapshotTaken | null = null;
    let packs: NewPack[] = [];
    if (decision.kind === 'snapshot') {
      try {
        const now = this.snapshotNow();
        ({ taken: snapshot, packs } = now);
        records.push(...now.records);
      } catch (err) {
        if (!(err instanceof SnapshotBusyError)) throw err;
        this.snapshotPending = `${decision.reason}; ${err.message}`;
        return { kind: 'unprotected', reason: this.snapshotPending };
      }
      decision = this.tail.decide(dataVersion, writes, from);
      if (decision.kind === 'snapshot') {
        return {
          kind: 'refused',
          reason: `after a fresh snapshot at version ${snapshot.dataVersion} the call for version ${dataVersion} still does not follow: ${decision.reason}`,
        };
      }
    }
    if (decision.kind === 'refuse') return { kind: 'refused', reason: decision.reason };
    const at = Date.now();
    const sealed = this.appendCall({ dataVersion, writes, at }, decision.supersedes);
    if (!options.deferSync) this.writer.sync();
    this.compaction.carry({ dataVersion, writes, at });
    records.push(sealed);
    return { kind: 'stored', seq: sealed.seq, supersedes: decision.supersedes, snapshot, compacted, records, packs };
  }

  /** Starts a new generation from a snapshot of the node's database, now (durable on return). */
  takeSnapshot(onProgress?: (done: number, total: number) => void): SnapshotTaken & { readonly packs: readonly NewPack[] } {
    const { taken, packs } = this.snapshotNow(onProgress);
    this.writer.sync();
    return { ...taken, packs };
  }

  /** Writes the parity of packs this journal wrote (off the thread: Reed-Solomon runs in the pool). */
  protectPacks(packs: readonly NewPack[]): Promise<void> {
    return Promise.all(packs.map((p) => protectPack(path.join(pagesDir(this.vaultDir), p.name)))).then(() => undefined);
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
    this.compaction.drop();
    this.writer.close();
  }

  /** Appends a call's record (a TimedWrites record) and returns it. */
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

  private snapshotNow(onProgress?: (done: number, total: number) => void): Switched & { packs: NewPack[] } {
    this.compaction.giveUp('a snapshot had to be taken inside a call');
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
    const appended = this.appendSnapshot(built);
    this.snapshotPending = null;
    return { ...appended, packs: built.packs };
  }

  /** Appends a paged snapshot's records: a new generation starts. */
  private appendSnapshot(snapshot: PagedSnapshot): Switched {
    const generation = this.tail.generation + 1;
    const records = snapshotRecords(snapshot, generation).map((r) => this.sealer.seal(r));
    for (const r of records) this.writer.append(r);
    const { dataVersion, dbBytes, takenAt } = snapshot.staged;
    this.tail.snapshotWritten(generation, dataVersion, this.sealer.lastSeq, takenAt);
    this.callBytes = 0;
    this.snapshotDbBytes = dbBytes;
    const packBytes = snapshot.packs.reduce((n, p) => n + p.bytes.length, 0);
    const taken = {
      generation,
      dataVersion,
      dbBytes,
      takenAt,
      lastSeq: this.sealer.lastSeq,
      reusedPages: snapshot.reusedPages,
      addresses: snapshot.addresses,
      packBytes,
      packNames: snapshot.packNames,
    };
    return { taken, records };
  }
}
