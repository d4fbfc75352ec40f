// The hot path below the plugin: a db_write call goes through the supersede rules (JournalTail),
// is sealed into the next record of the chain, and is made durable in the vault before record()
// returns (or, with deferSync, once the caller has it flushed). It also takes the snapshots that
// start generations (at init, or when the vault is behind the node), and refuses a node whose
// database is older than the vault.
import { RecordType } from '../vault/format.js';
import { vaultIdBytes } from '../vault/identity.js';
import type { VaultKeys } from '../vault/keys.js';
import { RecordSealer, type SealedRecord } from '../vault/sealer.js';
import { VaultWriter } from '../vault/writer.js';
import { bumpedFrom } from './dataVersion.js';
import { encodeWrites } from './payloads.js';
import { SnapshotBusyError } from './snapshotSource.js';
import { writeSnapshot, type SnapshotTaken } from './snapshotWriter.js';
import { JournalTail } from './tail.js';

export type WriteOutcome =
  | {
      readonly kind: 'stored';
      readonly seq: bigint;
      readonly supersedes: bigint;
      readonly snapshot: SnapshotTaken | null;
      /** The records this call added to the chain, in order (a snapshot's, then the Writes record). */
      readonly records: readonly SealedRecord[];
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

export class Journal {
  private snapshotPending: string | null = null;
  /** Records appended since the current call began. */
  private appended: SealedRecord[] = [];

  private constructor(
    private readonly writer: VaultWriter,
    private readonly sealer: RecordSealer,
    private readonly tail: JournalTail,
    private readonly dbPath: string,
  ) {}

  /** Opens the vault for writing; `onNotice` hears about repairs of unacknowledged tails. */
  static open(vaultDir: string, keys: VaultKeys, dbPath: string, onNotice?: (message: string) => void): Journal {
    const tail = new JournalTail();
    let journal: Journal | null = null;
    const writer = VaultWriter.open(vaultDir, keys, {
      onRecord: (r) => tail.observe(r.seq, r.body),
      onNotice,
      onAppend: (r) => journal?.appended.push(r),
    });
    const sealer = new RecordSealer(keys.record, vaultIdBytes(writer.identity), writer.tail);
    journal = new Journal(writer, sealer, tail, dbPath);
    return journal;
  }

  /** Where the chain ends now. */
  get chainTail(): { readonly lastSeq: bigint; readonly lastHash: Buffer; readonly generation: number } {
    return this.writer.tail;
  }

  /** Makes every record written so far durable in the vault, off the thread. */
  syncAsync(): Promise<void> {
    return this.writer.syncAsync();
  }

  /** Records one db_write call (durable on return unless deferSync), or says why it must not (refused) or could not (unprotected). */
  record(dataVersion: number, writes: readonly string[], options: RecordOptions = {}): WriteOutcome {
    this.appended = [];
    const from = bumpedFrom(writes);
    let decision = this.tail.decide(dataVersion, writes, from);
    let snapshot: SnapshotTaken | null = null;
    if (decision.kind === 'snapshot') {
      try {
        snapshot = this.takeSnapshot();
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
    const sealed = this.sealer.seal({
      type: RecordType.Writes,
      generation: this.tail.generation,
      dataVersion,
      supersedes: decision.supersedes,
      payload: encodeWrites(writes),
    });
    this.writer.append(sealed);
    if (!options.deferSync) this.writer.sync();
    this.tail.appended(sealed.seq, dataVersion, from !== null, decision.supersedes);
    const records = this.appended;
    this.appended = [];
    return { kind: 'stored', seq: sealed.seq, supersedes: decision.supersedes, snapshot, records };
  }

  /** Starts a new generation from a consistent snapshot of the node's database (durable on return). */
  takeSnapshot(onProgress?: (done: number, total: number) => void): SnapshotTaken {
    const taken = writeSnapshot(this.dbPath, this.sealer, this.writer, onProgress);
    this.tail.snapshotWritten(taken.generation, taken.dataVersion, taken.lastSeq, taken.takenAt);
    this.snapshotPending = null;
    return taken;
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
      vaultBytes: this.writer.sizeBytes,
      lastSnapshotAt: this.tail.snapshotTakenAt === null ? null : new Date(this.tail.snapshotTakenAt).toISOString(),
      snapshotPending: this.snapshotPending,
    };
  }

  close(): void {
    this.writer.close();
  }
}
