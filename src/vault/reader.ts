// Reads a vault's records in order and proves them: bounds, authentication, sequence, hash chain,
// generation layout. The first problem is reported as a CorruptRecordError that names the record.
// An incomplete record at the very end of the last segment (the machine died while writing a
// record that was therefore never acknowledged) is a torn tail: it is reported, not treated as
// damage. A segment that comes with its mirror's view (ReadRepair.mirrors) is decided record by
// record: the segment's bytes where they authenticate as the expected record, the mirror's only
// where the segment's fail and the mirror's authenticate.
import fs from 'node:fs';
import path from 'node:path';
import { CorruptRecordError } from './errors.js';
import { decodeHeader, FormatError, genesisHash, HEADER_BYTES, MAGIC, MAX_SEALED_BYTES, RecordType, recordHash, type RecordBody } from './format.js';
import { vaultIdBytes, type VaultIdentity } from './identity.js';
import type { VaultKeys } from './keys.js';
import { openRecord } from './record.js';
import { describeRanges } from './redundancy/keeper.js';
import { differingRanges } from './redundancy/mirror.js';
import type { ByteRange } from './redundancy/parity.js';
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

/** What proving a record at a position found. */
type RecordAt =
  | { readonly kind: 'ok'; readonly seq: bigint; readonly body: RecordBody; readonly hash: Buffer; readonly end: number }
  | { readonly kind: 'short-header' | 'short-record'; readonly reason: string }
  | { readonly kind: 'bad-header'; readonly reason: string; readonly zero: boolean }
  | { readonly kind: 'corrupt'; readonly reason: string; readonly location?: { expectedSeq: bigint } };

/** What reading a segment against its mirror decided (ReadRepair.mirrors). */
export interface MirrorFinding {
  readonly segment: SegmentFile;
  /** The segment's bytes with the records its mirror repaired laid in. */
  data: Buffer;
  /** Ranges taken from the mirror: the segment's bytes there failed, the mirror's authenticate. */
  readonly repaired: ByteRange[];
  /** Ranges where the mirror disagrees with segment bytes that authenticate (the mirror is stale there). */
  readonly stale: ByteRange[];
}

export class VaultReader {
  /** Set once reading reached the end: the unacknowledged partial record that was skipped. */
  tornTail: TornTail | null = null;
  /** One per segment read that had a mirror to try (ReadRepair.mirrors), in reading order. */
  readonly mirrorFindings: MirrorFinding[] = [];
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
      let data = this.repair?.overlay.get(segment.path) ?? fs.readFileSync(segment.path);
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
      // The segment as its mirror says it is: tried only where the segment's own bytes fail.
      const mirrored = this.repair?.mirrors?.get(segment.path);
      const alt = mirrored && mirrored.length === data.length ? mirrored : null;
      const original = data;
      const finding: MirrorFinding | null = alt ? { segment, data, repaired: [], stale: [] } : null;
      if (finding) this.mirrorFindings.push(finding);
      let offset = 0;
      while (offset < data.length) {
        const here = { segment: segment.name, offset, expectedSeq };
        let got = this.recordAt(data, offset, expectedSeq, prevHash, segment, vaultId);
        if (alt && finding) {
          if (got.kind === 'ok') {
            // The segment's bytes authenticate as this record: they stay, whatever the mirror says.
            finding.stale.push(...differingRanges(data, alt, offset, got.end));
          } else {
            const theirs = this.recordAt(alt, offset, expectedSeq, prevHash, segment, vaultId);
            if (theirs.kind === 'ok') {
              if (data === original) data = finding.data = Buffer.from(original);
              alt.copy(data, offset, offset, theirs.end);
              finding.repaired.push(...differingRanges(original, data, offset, theirs.end));
              got = theirs;
            }
          }
        }
        if (got.kind !== 'ok') {
          const remaining = data.length - offset;
          const isTorn = (): boolean => {
            // Only the newest bytes of the vault can be torn, and only if no whole record follows
            // them (a damaged length field must not pass for a torn tail and hide acked records).
            if (!isLast || this.wholeRecordAfter(data, offset + 1, here.expectedSeq, vaultId)) return false;
            this.tornTail = { segment: segment.name, offset, bytes: remaining };
            return true;
          };
          if (got.kind === 'short-header' || got.kind === 'short-record' || (got.kind === 'bad-header' && got.zero)) {
            if (isTorn()) return;
          }
          throw new CorruptRecordError(got.kind === 'corrupt' && got.location ? { ...here, ...got.location } : here, got.reason);
        }
        this.bytesRead += got.end - offset;
        yield { seq: got.seq, body: got.body, hash: got.hash, segment, offset, size: got.end - offset };
        prevHash = got.hash;
        expectedSeq = got.seq + 1n;
        offset = got.end;
      }
    }
  }

  /** Proves the record at `offset` of `data`: bounds, header, sequence, authentication, chain, generation. */
  private recordAt(data: Buffer, offset: number, expectedSeq: bigint, prevHash: Buffer | null, segment: SegmentFile, vaultId: Buffer): RecordAt {
    if (data.length - offset < HEADER_BYTES) return { kind: 'short-header', reason: 'segment ends inside a record header (truncated)' };
    const headerBytes = data.subarray(offset, offset + HEADER_BYTES);
    let header;
    try {
      header = decodeHeader(headerBytes);
    } catch (err) {
      if (!(err instanceof FormatError)) throw err;
      return { kind: 'bad-header', reason: `bad record header: ${err.message}`, zero: isZero(data, offset) };
    }
    const end = offset + HEADER_BYTES + header.sealedLength;
    if (end > data.length) return { kind: 'short-record', reason: 'segment ends inside a record (truncated)' };
    const corrupt = (reason: string, location?: { expectedSeq: bigint }): RecordAt => ({ kind: 'corrupt', reason, location });
    if (header.seq !== expectedSeq) {
      const what = header.seq < expectedSeq ? 'an old record replayed or records reordered' : 'records are missing';
      return corrupt(`found record ${header.seq} where ${expectedSeq} belongs (${what})`);
    }
    const sealed = data.subarray(offset + HEADER_BYTES, end);
    const body = openRecord(this.keys.record, vaultId, header, headerBytes, sealed);
    if (body === null) return corrupt('authentication failed: the bytes were altered, or the record belongs to another vault or key');
    const chainStart = header.seq === 1n ? genesisHash(vaultId) : prevHash;
    if (chainStart !== null && !body.prevHash.equals(chainStart)) {
      return corrupt('hash chain broken: this record does not follow the one before it (swapped or replaced records)');
    }
    if (body.generation !== segment.generation)
      return corrupt(`record says generation ${body.generation} but lies in a segment of generation ${segment.generation}`);
    if (prevHash === null && header.seq > 1n && body.type !== RecordType.SnapshotBegin) {
      // Whole generations may be removed from the front, never part of one.
      return corrupt(
        `records 1..${header.seq - 1n} are missing (a segment file was deleted?): the first record present, ${header.seq}, does not start a generation`,
        { expectedSeq: 1n },
      );
    }
    return { kind: 'ok', seq: header.seq, body, hash: recordHash(headerBytes, sealed), end };
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
