// The supersede rule (docs/CORE-LIGHTNING.md, "Answers to db_write"; docs/FORMAT.md, "Supersede
// rules"): what the vault's newest generation says about the node's database, and what to do with
// the next db_write call. A call that carries the bump to
// version N while the vault's newest record is an unconfirmed bump to N is the rewind case (that
// transaction was acked but never committed): it supersedes that record. A repeated version
// *without* a bump (the migrations' PRAGMA calls) is kept. Anything that would put the vault
// behind the node needs a new snapshot; anything that says the node is older than the vault is
// refused. Versions are compared on the u32 circle.
import { RecordType, type RecordBody } from '../vault/format.js';
import { bumpedFrom, nextVersion, versionDistance } from './dataVersion.js';
import { decodeCall, decodeSnapshotBegin } from './payloads.js';
import type { EpochMs } from '../util/clock.js';

export type Decision =
  | { readonly kind: 'append'; readonly supersedes: bigint }
  | { readonly kind: 'snapshot'; readonly reason: string }
  | { readonly kind: 'refuse'; readonly reason: string };

export class SupersedeRule {
  /** Newest generation (0: none). */
  generation = 0;
  /** Its snapshot ended (the generation can be restored). */
  generationComplete = false;
  /** data_version the vault holds now (the snapshot's, or the last transaction's). */
  version: number | null = null;
  /** Whether `version` is known to be committed by the node. */
  confirmed = false;
  /** The newest unconfirmed transaction record (the only one that may be superseded). */
  inFlightSeq: bigint | null = null;
  lastSeq = 0n;
  /** When the newest snapshot was taken. */
  snapshotTakenAt: EpochMs | null = null;

  /** Follows one record of the vault, in order. */
  observe(seq: bigint, body: RecordBody, writes?: readonly string[]): void {
    this.lastSeq = seq;
    switch (body.type) {
      case RecordType.SnapshotBegin:
        this.generation = body.generation;
        this.generationComplete = false;
        this.version = body.dataVersion;
        this.confirmed = true;
        this.inFlightSeq = null;
        this.snapshotTakenAt = decodeSnapshotBegin(body.payload).takenAt;
        return;
      case RecordType.SnapshotEnd:
        this.generationComplete = true;
        return;
      case RecordType.SnapshotChunk:
      case RecordType.PageManifest:
      case RecordType.PackList:
        return;
      case RecordType.Writes:
      case RecordType.TimedWrites: {
        const hasBump = bumpedFrom(writes ?? decodeCall(body).writes) !== null;
        this.followWrites(seq, body.dataVersion, hasBump, body.supersedes);
      }
    }
  }

  private followWrites(seq: bigint, dataVersion: number, hasBump: boolean, supersedes: bigint): void {
    if (hasBump) {
      this.version = dataVersion;
      this.confirmed = false;
      this.inFlightSeq = seq;
    } else {
      if (supersedes !== 0n || dataVersion === this.version) this.confirmed = true;
      if (supersedes !== 0n) this.inFlightSeq = null;
      this.version = dataVersion;
    }
  }

  /** What to do with a db_write call for `dataVersion` whose statements are `writes` (bumping from `from`). */
  decide(dataVersion: number, writes: readonly string[], from: number | null = bumpedFrom(writes)): Decision {
    if (this.generation === 0) return { kind: 'snapshot', reason: 'the vault holds no snapshot yet' };
    if (!this.generationComplete || this.version === null) {
      return { kind: 'snapshot', reason: 'the newest snapshot was interrupted before it ended' };
    }
    if (from !== null && nextVersion(from) !== dataVersion) {
      return { kind: 'refuse', reason: `malformed call: data_version ${dataVersion}, but its statements bump the version from ${from}` };
    }
    const d = versionDistance(this.version, dataVersion);
    if (from !== null) {
      if (d === 1) return { kind: 'append', supersedes: 0n };
      if (d === 0 && !this.confirmed && this.inFlightSeq !== null) return { kind: 'append', supersedes: this.inFlightSeq };
      if (d > 1) return { kind: 'snapshot', reason: `the node is at version ${from} but the vault only has ${this.version}` };
      return { kind: 'refuse', reason: this.staleReason(from) };
    }
    if (d === 0) return { kind: 'append', supersedes: 0n };
    if (d === -1 && !this.confirmed && this.inFlightSeq !== null) {
      // The database is one behind an unconfirmed transaction: that transaction never committed.
      return { kind: 'append', supersedes: this.inFlightSeq };
    }
    if (d > 0) return { kind: 'snapshot', reason: `the node is at version ${dataVersion} but the vault only has ${this.version}` };
    return { kind: 'refuse', reason: this.staleReason(dataVersion) };
  }

  /** A copy to try calls on without changing this one. */
  clone(): SupersedeRule {
    return Object.assign(new SupersedeRule(), this);
  }

  /** Records that a complete snapshot now starts generation `generation`. */
  snapshotWritten(generation: number, dataVersion: number, lastSeq: bigint, takenAt: EpochMs): void {
    this.generation = generation;
    this.generationComplete = true;
    this.version = dataVersion;
    this.confirmed = true;
    this.inFlightSeq = null;
    this.lastSeq = lastSeq;
    this.snapshotTakenAt = takenAt;
  }

  /** Records the effect of a record this process just appended. */
  appended(seq: bigint, dataVersion: number, hasBump: boolean, supersedes: bigint): void {
    this.lastSeq = seq;
    this.followWrites(seq, dataVersion, hasBump, supersedes);
  }

  private staleReason(nodeVersion: number): string {
    return (
      `the node's database is at data_version ${nodeVersion}, older than the backup, which holds ${this.version}` +
      `${this.confirmed ? ' (committed)' : ''}: this lightningd is running on a stale copy of its database`
    );
  }
}
