// Payloads of the journal's record types (the vault seals them; see docs/FORMAT.md):
// a db_write call's statements (with the time it was recorded), and the snapshot's begin / chunk /
// page manifest / end markers.
// Every count and length is checked against what is left before anything is allocated.
import { FormatError, RecordType, type RecordBody } from '../vault/format.js';

const MAX_STATEMENTS = 1_000_000;

export function encodeWrites(writes: readonly string[]): Buffer {
  let total = 4;
  const lengths = new Array<number>(writes.length);
  for (let i = 0; i < writes.length; i++) {
    lengths[i] = Buffer.byteLength(writes[i], 'utf8');
    total += 4 + lengths[i];
  }
  const out = Buffer.allocUnsafe(total);
  out.writeUInt32BE(writes.length, 0);
  let off = 4;
  for (let i = 0; i < writes.length; i++) {
    out.writeUInt32BE(lengths[i], off);
    off += 4;
    off += out.write(writes[i], off, 'utf8');
  }
  return out;
}

export function decodeWrites(payload: Buffer): string[] {
  if (payload.length < 4) throw new FormatError('statement list is truncated');
  const count = payload.readUInt32BE(0);
  if (count > MAX_STATEMENTS || count * 4 > payload.length - 4) throw new FormatError(`statement count ${count} is out of bounds`);
  const out = new Array<string>(count);
  let off = 4;
  for (let i = 0; i < count; i++) {
    if (off + 4 > payload.length) throw new FormatError(`statement ${i + 1} is truncated`);
    const len = payload.readUInt32BE(off);
    off += 4;
    if (len > payload.length - off) throw new FormatError(`statement ${i + 1} length ${len} is out of bounds`);
    out[i] = payload.toString('utf8', off, off + len);
    off += len;
  }
  if (off !== payload.length) throw new FormatError('trailing bytes after the statements');
  return out;
}

export function encodeTimedWrites(at: number, writes: readonly string[]): Buffer {
  const head = Buffer.alloc(8);
  head.writeBigUInt64BE(BigInt(at), 0);
  return Buffer.concat([head, encodeWrites(writes)]);
}

export interface RecordedCall {
  readonly writes: string[];
  /** When it was recorded (ms since the epoch), null for records made before times were kept. */
  readonly at: number | null;
}

/** The db_write call in a Writes or TimedWrites record. */
export function decodeCall(body: RecordBody): RecordedCall {
  return { writes: decodeWrites(body.type === RecordType.Writes ? body.payload : body.payload.subarray(8)), at: callTime(body) };
}

/** When a Writes or TimedWrites record's call was recorded (null: a Writes record, made before times were kept), without decoding its statements. */
export function callTime(body: RecordBody): number | null {
  if (body.type === RecordType.Writes) return null;
  if (body.payload.length < 8) throw new FormatError('timed writes record is truncated');
  return safeNumber(body.payload.readBigUInt64BE(0), 'time');
}

export function isCallRecord(type: RecordType): boolean {
  return type === RecordType.Writes || type === RecordType.TimedWrites;
}

export const PAGE_ADDRESS_BYTES = 16;
/** Most page addresses in one PageManifest record (1 MiB of addresses). */
export const MAX_MANIFEST_ENTRIES = 65_536;
/** Page sizes sqlite allows. */
export const MIN_PAGE_BYTES = 512;
export const MAX_PAGE_BYTES = 65_536;

export interface PageManifest {
  readonly pageSize: number;
  /** Number (from 0) of the first page listed. */
  readonly firstPage: number;
  /** One content address per page, in page order. */
  readonly addresses: Buffer[];
}

export function encodePageManifest(m: PageManifest): Buffer {
  const out = Buffer.alloc(12 + m.addresses.length * PAGE_ADDRESS_BYTES);
  out.writeUInt32BE(m.pageSize, 0);
  out.writeBigUInt64BE(BigInt(m.firstPage), 4);
  m.addresses.forEach((a, i) => a.copy(out, 12 + i * PAGE_ADDRESS_BYTES));
  return out;
}

export function decodePageManifest(p: Buffer): PageManifest {
  if (p.length < 12 || (p.length - 12) % PAGE_ADDRESS_BYTES !== 0) throw new FormatError('page manifest has a wrong size');
  const pageSize = p.readUInt32BE(0);
  if (pageSize < MIN_PAGE_BYTES || pageSize > MAX_PAGE_BYTES || (pageSize & (pageSize - 1)) !== 0)
    throw new FormatError(`page size ${pageSize} is not one sqlite allows`);
  const count = (p.length - 12) / PAGE_ADDRESS_BYTES;
  if (count > MAX_MANIFEST_ENTRIES) throw new FormatError(`page manifest lists ${count} pages, more than ${MAX_MANIFEST_ENTRIES}`);
  const addresses: Buffer[] = [];
  for (let i = 0; i < count; i++) addresses.push(Buffer.from(p.subarray(12 + i * PAGE_ADDRESS_BYTES, 12 + (i + 1) * PAGE_ADDRESS_BYTES)));
  return { pageSize, firstPage: safeNumber(p.readBigUInt64BE(4), 'first page'), addresses };
}

const PACK_NAME = /^p-([0-9a-f]{32})\.pack$/;
/** Most packs one snapshot may read from (64 GiB of 8 MiB packs). */
export const MAX_PACKS_PER_SNAPSHOT = 8192;

export function encodePackList(names: readonly string[]): Buffer {
  const out = Buffer.alloc(4 + names.length * 16);
  out.writeUInt32BE(names.length, 0);
  names.forEach((n, i) => {
    const m = PACK_NAME.exec(n);
    if (!m) throw new Error(`${n} is not a pack name`);
    out.write(m[1], 4 + i * 16, 'hex');
  });
  return out;
}

export function decodePackList(p: Buffer): string[] {
  if (p.length < 4) throw new FormatError('pack list is truncated');
  const count = p.readUInt32BE(0);
  if (count > MAX_PACKS_PER_SNAPSHOT || p.length !== 4 + count * 16) throw new FormatError(`pack list of ${count} packs has a wrong size`);
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(`p-${p.toString('hex', 4 + i * 16, 4 + (i + 1) * 16)}.pack`);
  return out;
}

export interface SnapshotBegin {
  /** Size of the database file being snapshotted (0: no database yet, the schema comes from the journal). */
  readonly dbBytes: number;
  /** When the snapshot was taken (ms since the epoch). */
  readonly takenAt: number;
}

export function encodeSnapshotBegin(b: SnapshotBegin): Buffer {
  const out = Buffer.alloc(16);
  out.writeBigUInt64BE(BigInt(b.dbBytes), 0);
  out.writeBigUInt64BE(BigInt(b.takenAt), 8);
  return out;
}

export function decodeSnapshotBegin(p: Buffer): SnapshotBegin {
  if (p.length !== 16) throw new FormatError('snapshot begin has the wrong size');
  return { dbBytes: safeNumber(p.readBigUInt64BE(0), 'database size'), takenAt: safeNumber(p.readBigUInt64BE(8), 'time') };
}

export function encodeSnapshotChunk(offset: number, bytes: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeBigUInt64BE(BigInt(offset), 0);
  return Buffer.concat([head, bytes]);
}

export function decodeSnapshotChunk(p: Buffer): { offset: number; bytes: Buffer } {
  if (p.length < 8) throw new FormatError('snapshot chunk is truncated');
  return { offset: safeNumber(p.readBigUInt64BE(0), 'chunk offset'), bytes: p.subarray(8) };
}

export interface SnapshotEnd {
  readonly dbBytes: number;
  readonly sha256: Buffer;
}

export function encodeSnapshotEnd(e: SnapshotEnd): Buffer {
  const out = Buffer.alloc(40);
  out.writeBigUInt64BE(BigInt(e.dbBytes), 0);
  e.sha256.copy(out, 8);
  return out;
}

export function decodeSnapshotEnd(p: Buffer): SnapshotEnd {
  if (p.length !== 40) throw new FormatError('snapshot end has the wrong size');
  return { dbBytes: safeNumber(p.readBigUInt64BE(0), 'database size'), sha256: Buffer.from(p.subarray(8, 40)) };
}

function safeNumber(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`${what} ${v} is out of bounds`);
  return Number(v);
}
