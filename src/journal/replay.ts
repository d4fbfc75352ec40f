// Turns one generation's records into the database they describe: the snapshot's bytes, then the
// db_write calls in order, minus superseded ones. A transaction record is held back until the next
// record tells whether it was committed (a later record that supersedes it drops it); the one still
// held at the end is the in-flight transaction (acked, commit unknown). Restore and verify share
// this logic; only the sink differs.
import crypto from 'node:crypto';
import { FormatError, RecordType, type RecordBody } from '../vault/format.js';
import { bumpedFrom, nextVersion, versionDistance } from './dataVersion.js';
import { decodeCall, decodePageManifest, decodeSnapshotBegin, decodeSnapshotChunk, decodeSnapshotEnd, isCallRecord } from './payloads.js';

export interface ReplaySink {
  beginSnapshot(dbBytes: number): void;
  snapshotChunk(offset: number, bytes: Buffer): void;
  endSnapshot(): void;
  /** A db_write call: a transaction when it carries the version bump, else statements outside one. */
  applyWrites(dataVersion: number, writes: readonly string[], isTransaction: boolean): void;
}

/** A sink that builds nothing: for checking a generation (verify, status) without a database. */
export const DISCARD_SINK: ReplaySink = { beginSnapshot() {}, snapshotChunk() {}, endSnapshot() {}, applyWrites() {} };

export class JournalError extends Error {
  constructor(
    readonly seq: bigint,
    reason: string,
  ) {
    super(`record ${seq}: ${reason}`);
  }
}

export interface ReplayOutcome {
  readonly generation: number;
  readonly baseVersion: number;
  /** The data_version of the rebuilt database. */
  readonly version: number;
  /** True when the last transaction applied is the in-flight one (acked; its commit is unknown). */
  readonly inFlight: boolean;
  /** The last version known to be committed by the node. */
  readonly committedVersion: number;
  readonly transactions: number;
  readonly statements: number;
  readonly superseded: number;
  readonly snapshotBytes: number;
  readonly snapshotTakenAt: number;
  /** When the newest call applied was recorded (null: no timed call in the generation). */
  readonly lastCallAt: number | null;
}

interface Pending {
  seq: bigint;
  dataVersion: number;
  writes: string[];
  at: number | null;
}

/** Where a paged snapshot's pages come from (the vault's page packs: journal/pageStore.ts). */
export interface PageSource {
  /** The page with this content address, checked; throws if it is missing or damaged. */
  page(address: Buffer, pageSize: number): Buffer;
}

export interface ReplayOptions {
  /** Stop once the database reaches this data_version. */
  readonly targetVersion?: number;
  /** Stop at the state of this moment (ms since the epoch): calls recorded later are left out. */
  readonly targetTime?: number;
  /** Needed for generations whose snapshot is paged. */
  readonly pages?: PageSource;
  /** Apply the in-flight transaction at the end (default true). */
  readonly includeInFlight?: boolean;
}

export class JournalReplayer {
  private generation = 0;
  private baseVersion = 0;
  private version = 0;
  private committedVersion = 0;
  private snapshotBytes = -1;
  private snapshotTakenAt = 0;
  private snapshotWritten = 0;
  private snapshotHash = crypto.createHash('sha256');
  private snapshotDone = false;
  private pending: Pending | null = null;
  private transactions = 0;
  private statements = 0;
  private superseded = 0;
  private reached = false;
  private lastCallAt: number | null = null;

  constructor(
    private readonly sink: ReplaySink,
    private readonly options: ReplayOptions = {},
  ) {}

  /** True once the target version is reached: feed no more records. */
  get done(): boolean {
    return this.reached;
  }

  /** The generation's snapshot has ended (a generation without it cannot be restored). */
  get complete(): boolean {
    return this.snapshotDone;
  }

  feed(seq: bigint, body: RecordBody): void {
    if (this.reached) return;
    try {
      this.feedRecord(seq, body);
    } catch (err) {
      if (err instanceof FormatError) throw new JournalError(seq, `payload is malformed: ${err.message}`);
      throw err;
    }
  }

  private feedRecord(seq: bigint, body: RecordBody): void {
    if (this.snapshotBytes < 0) {
      if (body.type !== RecordType.SnapshotBegin) throw new JournalError(seq, 'a generation must start with a snapshot');
      const begin = decodeSnapshotBegin(body.payload);
      this.generation = body.generation;
      this.baseVersion = this.version = this.committedVersion = body.dataVersion;
      this.snapshotBytes = begin.dbBytes;
      this.snapshotTakenAt = begin.takenAt;
      this.sink.beginSnapshot(begin.dbBytes);
      return;
    }
    if (!this.snapshotDone) {
      this.feedSnapshot(seq, body);
      return;
    }
    if (!isCallRecord(body.type)) throw new JournalError(seq, `unexpected ${RecordType[body.type]} record inside a generation's changes`);
    this.feedWrites(seq, body);
  }

  private feedSnapshot(seq: bigint, body: RecordBody): void {
    if (body.type === RecordType.PageManifest) {
      const manifest = decodePageManifest(body.payload);
      if (manifest.firstPage * manifest.pageSize !== this.snapshotWritten) {
        throw new JournalError(
          seq,
          `page manifest from page ${manifest.firstPage} does not continue the snapshot (${this.snapshotWritten} of ${this.snapshotBytes} bytes so far)`,
        );
      }
      if (this.snapshotWritten + manifest.addresses.length * manifest.pageSize > this.snapshotBytes) {
        throw new JournalError(seq, `page manifest runs past the snapshot's ${this.snapshotBytes} bytes`);
      }
      const pages = this.options.pages;
      if (!pages) throw new JournalError(seq, 'this generation is a paged snapshot, and no page store was given');
      for (const address of manifest.addresses) {
        let bytes: Buffer;
        try {
          bytes = pages.page(address, manifest.pageSize);
        } catch (err) {
          // A page the vault lacks, or one whose pack is damaged: this snapshot cannot be rebuilt.
          throw new JournalError(seq, (err as Error).message);
        }
        this.snapshotHash.update(bytes);
        this.sink.snapshotChunk(this.snapshotWritten, bytes);
        this.snapshotWritten += bytes.length;
      }
      return;
    }
    if (body.type === RecordType.PackList) return; // for retention; the pages are found by address
    if (body.type === RecordType.SnapshotChunk) {
      const chunk = decodeSnapshotChunk(body.payload);
      if (chunk.offset !== this.snapshotWritten || chunk.offset + chunk.bytes.length > this.snapshotBytes) {
        throw new JournalError(
          seq,
          `snapshot chunk at offset ${chunk.offset} does not continue the snapshot (${this.snapshotWritten} of ${this.snapshotBytes} bytes so far)`,
        );
      }
      this.snapshotHash.update(chunk.bytes);
      this.snapshotWritten += chunk.bytes.length;
      this.sink.snapshotChunk(chunk.offset, chunk.bytes);
      return;
    }
    if (body.type !== RecordType.SnapshotEnd) throw new JournalError(seq, 'the snapshot ends without its end record');
    const end = decodeSnapshotEnd(body.payload);
    if (end.dbBytes !== this.snapshotBytes) {
      throw new JournalError(seq, `snapshot end says ${end.dbBytes} bytes but its beginning said ${this.snapshotBytes}`);
    }
    if (this.snapshotWritten !== this.snapshotBytes) {
      throw new JournalError(seq, `snapshot ends after ${this.snapshotWritten} of its ${this.snapshotBytes} bytes`);
    }
    if (!this.snapshotHash.digest().equals(end.sha256)) throw new JournalError(seq, 'snapshot content does not match its SHA-256');
    this.snapshotDone = true;
    this.sink.endSnapshot();
    if (this.options.targetVersion === this.baseVersion) this.reached = true;
  }

  private feedWrites(seq: bigint, body: RecordBody): void {
    const { writes, at } = decodeCall(body);
    const targetTime = this.options.targetTime;
    if (targetTime !== undefined && at !== null && at > targetTime) {
      // The first call after the moment: it tells whether the transaction before it committed.
      if (body.supersedes !== 0n && this.pending?.seq === body.supersedes) this.pending = null;
      else this.flushPending();
      this.reached = true;
      return;
    }
    if (body.supersedes !== 0n) {
      if (this.pending === null || this.pending.seq !== body.supersedes) {
        throw new JournalError(seq, `it supersedes record ${body.supersedes}, which is not the in-flight transaction`);
      }
      this.pending = null;
      this.superseded += 1;
    }
    const from = bumpedFrom(writes);
    const isTransaction = from !== null;
    if (isTransaction && nextVersion(from) !== body.dataVersion) {
      throw new JournalError(seq, `it says version ${body.dataVersion} but its statements bump the version from ${from}`);
    }
    if (isTransaction) {
      this.flushPending();
      if (this.reached) return;
      if (body.supersedes === 0n && versionDistance(this.version, body.dataVersion) !== 1) {
        throw new JournalError(seq, `transaction to version ${body.dataVersion} does not follow version ${this.version}`);
      }
      this.pending = { seq, dataVersion: body.dataVersion, writes, at };
      return;
    }
    // Statements outside a transaction happen at the version the database is at.
    if (this.pending && body.dataVersion === this.pending.dataVersion) this.flushPending();
    if (this.reached) return;
    this.apply(body.dataVersion, writes, false, at);
    this.committedVersion = body.dataVersion;
  }

  private flushPending(): void {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    this.apply(p.dataVersion, p.writes, true, p.at);
    this.committedVersion = p.dataVersion;
  }

  private apply(dataVersion: number, writes: readonly string[], isTransaction: boolean, at: number | null): void {
    if (at !== null) this.lastCallAt = at;
    this.sink.applyWrites(dataVersion, writes, isTransaction);
    this.version = dataVersion;
    if (isTransaction) this.transactions += 1;
    this.statements += writes.length;
    if (this.options.targetVersion !== undefined && isTransaction && dataVersion === this.options.targetVersion) this.reached = true;
  }

  /** Ends the replay (applying the in-flight transaction unless told not to) and reports. */
  finish(): ReplayOutcome {
    let inFlight = false;
    if (this.pending && !this.reached) {
      const wanted = this.options.includeInFlight !== false;
      const beyondTarget = this.options.targetVersion !== undefined && versionDistance(this.options.targetVersion, this.pending.dataVersion) > 0;
      if (wanted && !beyondTarget) {
        const p = this.pending;
        this.pending = null;
        this.apply(p.dataVersion, p.writes, true, p.at);
        inFlight = true;
      }
    }
    return {
      generation: this.generation,
      baseVersion: this.baseVersion,
      version: this.version,
      inFlight,
      committedVersion: this.committedVersion,
      transactions: this.transactions,
      statements: this.statements,
      superseded: this.superseded,
      snapshotBytes: Math.max(0, this.snapshotBytes),
      snapshotTakenAt: this.snapshotTakenAt,
      lastCallAt: this.lastCallAt,
    };
  }
}
