// The node side of the record chain: numbers records, links each to the hash of the one before,
// and seals them. The sealed bytes it returns are what every destination stores, unchanged.
import { sealRecord } from './record.js';
import type { RecordBody } from './format.js';
import type { RawRecord } from './rawRecords.js';

/** A record this node sealed: the stored record (seq, generation, bytes) and its chain hash. */
export interface SealedRecord extends RawRecord {
  readonly hash: Buffer;
}

export type NewRecord = Omit<RecordBody, 'prevHash'>;

export interface ChainPosition {
  readonly lastSeq: bigint;
  readonly lastHash: Buffer;
  readonly generation: number;
}

export class RecordSealer {
  private seq: bigint;
  private prevHash: Buffer;

  constructor(
    private readonly recordKey: Buffer,
    private readonly vaultId: Buffer,
    position: ChainPosition,
  ) {
    this.seq = position.lastSeq;
    this.prevHash = position.lastHash;
  }

  get lastSeq(): bigint {
    return this.seq;
  }

  seal(record: NewRecord): SealedRecord {
    const seq = this.seq + 1n;
    const sealed = sealRecord(this.recordKey, this.vaultId, seq, { ...record, prevHash: this.prevHash });
    this.seq = seq;
    this.prevHash = sealed.hash;
    return { seq, generation: record.generation, bytes: sealed.bytes, hash: sealed.hash };
  }
}
