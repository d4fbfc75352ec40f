// Payloads of the journal's record types (the vault seals them; see docs/FORMAT.md):
// a db_write call's statements, and the snapshot's begin / chunk / end markers.
// Every count and length is checked against what is left before anything is allocated.
import { FormatError } from '../vault/format.js';

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
