// Reads a vault's records in order and proves them: bounds, authentication, sequence, hash chain,
// generation layout. The first problem is reported as a CorruptRecordError that names the record.
// An incomplete record at the very end of the last segment (the machine died while writing a
// record that was therefore never acknowledged) is a torn tail: it is reported, not treated as
// damage.
import fs from 'node:fs';
import path from 'node:path';
import { CorruptRecordError } from './errors.js';
import {
  decodeHeader,
  FormatError,
  genesisHash,
  HEADER_BYTES,
  MAGIC,
  MAX_SEALED_BYTES,
  RecordType,
  recordHash,
  type RecordBody,
} from './format.js';
import { vaultIdBytes, type VaultIdentity } from './identity.js';
import type { VaultKeys } from './keys.js';
import { openRecord } from './record.js';
import { describeRanges } from './redundancy/keeper.js';
import type { ReadRepair } from './redundancy/protectedRead.js';
import { listSegments, type SegmentFile } from './segments.js';

export interface StoredRecord {
  readonly seq: bigint;
  readonly body: RecordBody;
  readonly hash: Buffer;
  readonly segment: SegmentFile;
  readonly offset: number;
  readonly size: number;
}

export interface TornTail {
  readonly segment: string;
  readonly offset: number;
  readonly bytes: number;
}

export interface ReadOptions {
  /** Read only the segments of this generation and later ones. */
  readonly fromGeneration?: number;
  /** Read only these segments, in this order (the vault's folder is not listed again). */
  readonly segments?: readonly SegmentFile[];
  /**
   * The vault's damaged files repaired in memory (redundancy/protectedRead.ts repairVaultInMemory):
   * their repaired contents are read instead of the files, and an error in a file with damage
   * that could not be repaired names the lost byte ranges.
   */
  readonly repair?: ReadRepair;
}

export class VaultReader {
  /** Set once reading reached the end: the unacknowledged partial record that was skipped. */
  tornTail: TornTail | null = null;
  /** Bytes of records read so far (for progress). */
  bytesRead = 0;
  readonly segments: SegmentFile[];
  readonly totalBytes: number;

  private readonly repair: ReadRepair | undefined;

  constructor(
    private readonly identity: VaultIdentity,
    private readonly keys: VaultKeys,
    vaultDir: string,
    options: ReadOptions = {},
  ) {
    const from = options.fromGeneration ?? 0;
    this.repair = options.repair;
    this.segments = options.segments ? [...options.segments] : listSegments(vaultDir).filter((s) => s.generation >= from);
    this.totalBytes = this.segments.reduce((n, s) => n + this.sizeOf(s), 0);
  }

  private sizeOf(segment: SegmentFile): number {
    return this.repair?.overlay.get(segment.path)?.length ?? fs.statSync(segment.path).size;
  }

  *records(): Generator<StoredRecord> {
    const at: { segment: SegmentFile | null } = { segment: null };
    try {
      for (const r of this.readRecords((s) => (at.segment = s))) yield r;
    } catch (err) {
      // Damage that redundancy could not repair: say exactly which bytes are lost.
      const seg = at.segment;
      const lost = seg ? this.repair?.lost.get(seg.path) : undefined;
      if (!(err instanceof CorruptRecordError) || !this.repair || this.repair.lost.size === 0) throw err;
      const where =
        seg && lost && lost.length > 0
          ? `${describeRanges(lost)} of ${seg.name}`
          : [...this.repair.lost].map(([file, ranges]) => `${describeRanges(ranges)} of ${path.basename(file)}`).join('; ');
      throw new CorruptRecordError(err.location, `${err.reason} (${where} are damaged beyond what parity can repair)`);
    }
  }

  private *readRecords(entering: (segment: SegmentFile) => void): Generator<StoredRecord> {
    const vaultId = vaultIdBytes(this.identity);
    let expectedSeq: bigint | null = null;
    let prevHash: Buffer | null = null;
    let generation = 0;
    const maxSegmentBytes = this.identity.segmentBytes + HEADER_BYTES + MAX_SEALED_BYTES;
    for (let si = 0; si < this.segments.length; si++) {
      const segment = this.segments[si];
      const isLast = si === this.segments.length - 1;
      entering(segment);
      const size = this.sizeOf(segment);
      if (size > maxSegmentBytes) {
        throw new CorruptRecordError(
          { segment: segment.name, offset: 0, expectedSeq: expectedSeq ?? segment.firstSeq },
          `segment is ${size} bytes, larger than any writer makes (${maxSegmentBytes})`,
        );
      }
      const data = this.repair?.overlay.get(segment.path) ?? fs.readFileSync(segment.path);
      if (expectedSeq !== null && segment.firstSeq !== expectedSeq) {
        throw new CorruptRecordError(
          { segment: segment.name, offset: 0, expectedSeq },
          `segment starts at record ${segment.firstSeq}, so records ${expectedSeq}..${segment.firstSeq - 1n} are missing`,
        );
      }
      if (segment.generation < generation) {
        throw new CorruptRecordError({ segment: segment.name, offset: 0, expectedSeq: segment.firstSeq }, 'segment generation goes backwards');
      }
      generation = segment.generation;
      expectedSeq ??= segment.firstSeq;
      let offset = 0;
      while (offset < data.length) {
        const here = { segment: segment.name, offset, expectedSeq };
        const remaining = data.length - offset;
        const torn = (): boolean => {
          // Only the newest bytes of the vault can be torn, and only if no whole record follows
          // them (a damaged length field must not pass for a torn tail and hide acked records).
          if (!isLast || this.wholeRecordAfter(data, offset + 1, here.expectedSeq, vaultId)) return false;
          this.tornTail = { segment: segment.name, offset, bytes: remaining };
          return true;
        };
        if (remaining < HEADER_BYTES) {
          if (torn()) return;
          throw new CorruptRecordError(here, 'segment ends inside a record header (truncated)');
        }
        const headerBytes = data.subarray(offset, offset + HEADER_BYTES);
        let header;
        try {
          header = decodeHeader(headerBytes);
        } catch (err) {
          if (!(err instanceof FormatError)) throw err;
          if (isZero(data, offset) && torn()) return;
          throw new CorruptRecordError(here, `bad record header: ${err.message}`);
        }
        const end = offset + HEADER_BYTES + header.sealedLength;
        if (end > data.length) {
          if (torn()) return;
          throw new CorruptRecordError(here, 'segment ends inside a record (truncated)');
        }
        if (header.seq !== expectedSeq) {
          const what = header.seq < expectedSeq ? 'an old record replayed or records reordered' : 'records are missing';
          throw new CorruptRecordError(here, `found record ${header.seq} where ${expectedSeq} belongs (${what})`);
        }
        const sealed = data.subarray(offset + HEADER_BYTES, end);
        const body = openRecord(this.keys.record, vaultId, header, headerBytes, sealed);
        if (body === null) {
          throw new CorruptRecordError(here, 'authentication failed: the bytes were altered, or the record belongs to another vault or key');
        }
        const chainStart = header.seq === 1n ? genesisHash(vaultId) : prevHash;
        if (chainStart !== null && !body.prevHash.equals(chainStart)) {
          throw new CorruptRecordError(here, 'hash chain broken: this record does not follow the one before it (swapped or replaced records)');
        }
        if (body.generation !== segment.generation) {
          throw new CorruptRecordError(here, `record says generation ${body.generation} but lies in a segment of generation ${segment.generation}`);
        }
        if (prevHash === null && header.seq > 1n && body.type !== RecordType.SnapshotBegin) {
          // Whole generations may be removed from the front, never part of one.
          throw new CorruptRecordError(
            { ...here, expectedSeq: 1n },
            `records 1..${header.seq - 1n} are missing (a segment file was deleted?): the first record present, ${header.seq}, does not start a generation`,
          );
        }
        const hash = recordHash(headerBytes, sealed);
        const size = end - offset;
        this.bytesRead += size;
        yield { seq: header.seq, body, hash, segment, offset, size };
        prevHash = hash;
        expectedSeq = header.seq + 1n;
        offset = end;
      }
    }
  }

  /** True when a whole, authentic record with a later sequence number starts at or after `from`. */
  private wholeRecordAfter(data: Buffer, from: number, expectedSeq: bigint, vaultId: Buffer): boolean {
    for (let at = data.indexOf(MAGIC, from); at >= 0 && at + HEADER_BYTES <= data.length; at = data.indexOf(MAGIC, at + 1)) {
      const headerBytes = data.subarray(at, at + HEADER_BYTES);
      let header;
      try {
        header = decodeHeader(headerBytes);
      } catch {
        continue;
      }
      const end = at + HEADER_BYTES + header.sealedLength;
      if (header.seq <= expectedSeq || end > data.length) continue;
      if (openRecord(this.keys.record, vaultId, header, headerBytes, data.subarray(at + HEADER_BYTES, end)) !== null) return true;
    }
    return false;
  }
}

function isZero(data: Buffer, from: number): boolean {
  for (let i = from; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}
