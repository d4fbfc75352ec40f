// Parity files (docs/FORMAT.md, "Redundancy"): every immutable file of a vault (a sealed segment,
// a page pack) gets a sidecar `<file>.parity` holding Reed-Solomon parity and a CRC-32 for every
// 4 KiB block, so that damaged blocks are known erasures and are rebuilt from the others.
//
// Geometry: the file's D bytes are cut into k = 24 contiguous data shards of S = roundUp8(ceil(D/24))
// bytes (the last one virtually zero-padded), with m = 3 parity shards of S bytes. Each shard is cut
// into rows of 4 KiB (the last row shorter: S - (R-1)*4096 bytes, still a multiple of 8); row r of
// all 27 shards is one RS stripe, encoded on its own, so any 3 of its 27 blocks may be lost.
//
// The parity file: header copy 1, the m parity shards back to back, header copy 2 (identical).
// Each header copy ends with the SHA-256 of its own bytes, so a damaged copy is known and the
// other one serves.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import zlib from 'node:zlib';
import { writeFileAtomicAsync } from '../../util/durableFs.js';
import { encodeStripe, reconstructStripe } from './reedSolomon.js';

export const PARITY_SUFFIX = '.parity';
export const DATA_SHARDS = 24;
export const PARITY_SHARDS = 3;
export const BLOCK_BYTES = 4096;
export const PARITY_MAGIC = Buffer.from('LNBKPAR1', 'latin1');
export const PARITY_VERSION = 1;
/** Bytes of a header copy before the block checksum table. */
const FIXED_BYTES = 72;
const HEADER_HASH_BYTES = 32;
/** Stripes encoded at once (each on a thread of the pool). */
const CONCURRENCY = 4;

export interface Geometry {
  readonly k: number;
  readonly m: number;
  readonly blockBytes: number;
  /** D: the protected file's length. */
  readonly dataBytes: number;
  /** S: bytes per shard. */
  readonly shardBytes: number;
  /** R: stripes (rows) per shard. */
  readonly rows: number;
}

/** A byte range [start, end) of a file. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

export function roundUp8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

export function geometry(dataBytes: number, k = DATA_SHARDS, m = PARITY_SHARDS, blockBytes = BLOCK_BYTES): Geometry {
  if (!Number.isSafeInteger(dataBytes) || dataBytes < 1) throw new Error(`a protected file must hold at least one byte, not ${dataBytes}`);
  const shardBytes = roundUp8(Math.ceil(dataBytes / k));
  return { k, m, blockBytes, dataBytes, shardBytes, rows: Math.ceil(shardBytes / blockBytes) };
}

/** Bytes of row r's blocks. */
export function rowBytes(g: Geometry, row: number): number {
  return Math.min(g.blockBytes, g.shardBytes - row * g.blockBytes);
}

/** Where data block (shard, row) lies in the file, before clipping to the file's length. */
export function dataBlockStart(g: Geometry, shard: number, row: number): number {
  return shard * g.shardBytes + row * g.blockBytes;
}

export function headerBytes(g: Pick<Geometry, 'k' | 'm' | 'rows'>): number {
  return FIXED_BYTES + 4 * (g.k + g.m) * g.rows + HEADER_HASH_BYTES;
}

export function parityFileBytes(g: Geometry): number {
  return 2 * headerBytes(g) + g.m * g.shardBytes;
}

/**
 * The largest contiguous damaged region (or cut-off end) of a D-byte file that is always
 * repaired, wherever it lies: 3S - 4095 bytes when S >= 4096 (such a region touches at most 3
 * blocks of any stripe), 2S + 1 bytes for files of one row (S < 4096).
 */
export function contiguousTolerance(dataBytes: number): number {
  const g = geometry(dataBytes);
  return Math.min(dataBytes, g.m * g.shardBytes - Math.min(g.blockBytes, g.shardBytes) + 1);
}

const ZERO_BLOCK = Buffer.alloc(BLOCK_BYTES);

/** CRC-32 of `bytes` followed by `pad` zero bytes. */
function crcPadded(bytes: Buffer, pad: number): number {
  let c = zlib.crc32(bytes);
  while (pad > 0) {
    const n = Math.min(pad, ZERO_BLOCK.length);
    c = zlib.crc32(ZERO_BLOCK.subarray(0, n), c);
    pad -= n;
  }
  return c >>> 0;
}

/** Copies data block (shard, row) of `data` (D bytes) into `into` at `at`, zero-padded. */
function copyDataBlock(g: Geometry, data: Buffer, shard: number, row: number, into: Buffer, at: number): void {
  const len = rowBytes(g, row);
  const start = dataBlockStart(g, shard, row);
  const end = Math.min(start + len, data.length);
  const n = Math.max(0, end - start);
  if (n > 0) data.copy(into, at, start, end);
  if (n < len) into.fill(0, at + n, at + len);
}

function dataBlockCrc(g: Geometry, data: Buffer, shard: number, row: number): number {
  const len = rowBytes(g, row);
  const start = dataBlockStart(g, shard, row);
  const end = Math.min(start + len, data.length);
  if (end <= start) return crcPadded(Buffer.alloc(0), len);
  return crcPadded(data.subarray(start, end), len - (end - start));
}

function parityBlockCrc(g: Geometry, parity: Buffer, shard: number, row: number): number {
  const at = shard * g.shardBytes + row * g.blockBytes;
  return zlib.crc32(parity.subarray(at, at + rowBytes(g, row))) >>> 0;
}

/** Index of block (shard 0..k+m-1, row) in the checksum table. */
function crcIndex(g: Geometry, shard: number, row: number): number {
  return shard * g.rows + row;
}

async function forEachRow(rows: number, work: (row: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < rows) await work(next++);
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, rows) }, worker));
}

/** The m parity shards (m * S bytes) of `data`. */
export async function encodeParityShards(g: Geometry, data: Buffer): Promise<Buffer> {
  const parity = Buffer.alloc(g.m * g.shardBytes);
  await forEachRow(g.rows, async (row) => {
    const len = rowBytes(g, row);
    const stripe = Buffer.allocUnsafe(g.k * len);
    for (let i = 0; i < g.k; i++) copyDataBlock(g, data, i, row, stripe, i * len);
    const out = Buffer.alloc(g.m * len);
    await encodeStripe(g.k, g.m, stripe, out, len);
    for (let j = 0; j < g.m; j++) out.copy(parity, j * g.shardBytes + row * g.blockBytes, j * len, (j + 1) * len);
  });
  return parity;
}

function encodeHeader(g: Geometry, sha: Buffer, crcs: Uint32Array): Buffer {
  const h = Buffer.alloc(headerBytes(g));
  PARITY_MAGIC.copy(h, 0);
  h.writeUInt16BE(PARITY_VERSION, 8);
  h.writeUInt8(g.k, 10);
  h.writeUInt8(g.m, 11);
  h.writeUInt32BE(g.blockBytes, 12);
  h.writeBigUInt64BE(BigInt(g.dataBytes), 16);
  h.writeBigUInt64BE(BigInt(g.shardBytes), 24);
  h.writeUInt32BE(g.rows, 32);
  // 36..39 reserved, zero
  sha.copy(h, 40);
  for (let i = 0; i < crcs.length; i++) h.writeUInt32BE(crcs[i], FIXED_BYTES + 4 * i);
  crypto
    .createHash('sha256')
    .update(h.subarray(0, h.length - HEADER_HASH_BYTES))
    .digest()
    .copy(h, h.length - HEADER_HASH_BYTES);
  return h;
}

/** The whole parity file for `data`. */
export async function buildParityFile(data: Buffer): Promise<Buffer> {
  const g = geometry(data.length);
  const parity = await encodeParityShards(g, data);
  const crcs = new Uint32Array((g.k + g.m) * g.rows);
  for (let row = 0; row < g.rows; row++) {
    for (let i = 0; i < g.k; i++) crcs[crcIndex(g, i, row)] = dataBlockCrc(g, data, i, row);
    for (let j = 0; j < g.m; j++) crcs[crcIndex(g, g.k + j, row)] = parityBlockCrc(g, parity, j, row);
  }
  const header = encodeHeader(g, await sha256Yielding(data), crcs);
  return Buffer.concat([header, parity, header]);
}

export interface ParsedParity {
  readonly g: Geometry;
  readonly sha256: Buffer;
  readonly crcs: Uint32Array;
  /** The parity shards (m * S bytes; blocks beyond the end of a cut parity file are zero and fail their CRC). */
  readonly shards: Buffer;
  /** What is wrong with the parity file's own layout (a damaged header copy, a wrong length). */
  readonly problems: string[];
}

interface FixedFields {
  k: number;
  m: number;
  blockBytes: number;
  dataBytes: number;
  shardBytes: number;
  rows: number;
}

/** Reads a header copy's fixed fields, checking every one against the limits before any use. */
function readFixed(buf: Buffer, at: number, maxDataBytes: number): FixedFields | null {
  if (at < 0 || at + FIXED_BYTES > buf.length) return null;
  if (!buf.subarray(at, at + 8).equals(PARITY_MAGIC)) return null;
  if (buf.readUInt16BE(at + 8) !== PARITY_VERSION) return null;
  const k = buf.readUInt8(at + 10);
  const m = buf.readUInt8(at + 11);
  const blockBytes = buf.readUInt32BE(at + 12);
  const d = buf.readBigUInt64BE(at + 16);
  const s = buf.readBigUInt64BE(at + 24);
  const rows = buf.readUInt32BE(at + 32);
  if (k < 1 || k > 24 || m < 1 || m > 6 || blockBytes < 8 || blockBytes > 1 << 20 || blockBytes % 8 !== 0) return null;
  if (d < 1n || d > BigInt(maxDataBytes)) return null;
  const g = geometry(Number(d), k, m, blockBytes);
  if (s !== BigInt(g.shardBytes) || rows !== g.rows) return null;
  return { k, m, blockBytes, dataBytes: g.dataBytes, shardBytes: g.shardBytes, rows };
}

function readHeaderCopy(buf: Buffer, at: number, maxDataBytes: number): { g: Geometry; sha256: Buffer; crcs: Uint32Array } | null {
  const f = readFixed(buf, at, maxDataBytes);
  if (!f) return null;
  const g: Geometry = f;
  const len = headerBytes(g);
  if (at + len > buf.length) return null;
  const h = buf.subarray(at, at + len);
  const want = crypto
    .createHash('sha256')
    .update(h.subarray(0, len - HEADER_HASH_BYTES))
    .digest();
  if (!want.equals(h.subarray(len - HEADER_HASH_BYTES))) return null;
  const crcs = new Uint32Array((g.k + g.m) * g.rows);
  for (let i = 0; i < crcs.length; i++) crcs[i] = h.readUInt32BE(FIXED_BYTES + 4 * i);
  return { g, sha256: Buffer.from(h.subarray(40, 72)), crcs };
}

/** The header length of a parity file of `fileBytes` bytes made with the default geometry, if any. */
function headerBytesForFileSize(fileBytes: number, maxDataBytes: number): number | null {
  const k = DATA_SHARDS;
  const m = PARITY_SHARDS;
  const size = (s: number): number => 2 * headerBytes({ k, m, rows: Math.ceil(s / BLOCK_BYTES) }) + m * s;
  let lo = 1;
  let hi = Math.ceil(roundUp8(Math.ceil(maxDataBytes / k)) / 8);
  while (lo <= hi) {
    const mid = Math.floor((lo + hi) / 2);
    const v = size(mid * 8);
    if (v === fileBytes) return headerBytes({ k, m, rows: Math.ceil((mid * 8) / BLOCK_BYTES) });
    if (v < fileBytes) lo = mid + 1;
    else hi = mid - 1;
  }
  return null;
}

/**
 * Parses a parity file. Returns null when neither header copy is intact (the parity is then
 * useless and must be made again from the data). `maxDataBytes` bounds the protected file's
 * length as recorded, before anything is allocated from it.
 */
export function parseParityFile(buf: Buffer, maxDataBytes: number): ParsedParity | null {
  const problems: string[] = [];
  let header = readHeaderCopy(buf, 0, maxDataBytes);
  if (!header) {
    problems.push('its first header copy is damaged');
    const candidates = new Set<number>();
    const f = readFixed(buf, 0, maxDataBytes);
    if (f) candidates.add(headerBytes(f) + f.m * f.shardBytes);
    const h = headerBytesForFileSize(buf.length, maxDataBytes);
    if (h !== null) candidates.add(buf.length - h);
    for (const at of candidates) {
      const second = readHeaderCopy(buf, at, maxDataBytes);
      if (second && at === headerBytes(second.g) + second.g.m * second.g.shardBytes) {
        header = second;
        break;
      }
    }
    if (!header) return null;
  } else {
    const at = headerBytes(header.g) + header.g.m * header.g.shardBytes;
    if (!readHeaderCopy(buf, at, maxDataBytes)) problems.push('its second header copy is damaged');
  }
  const { g } = header;
  const expected = parityFileBytes(g);
  if (buf.length !== expected) problems.push(`it is ${buf.length} bytes instead of ${expected}`);
  const start = headerBytes(g);
  const shards = Buffer.alloc(g.m * g.shardBytes);
  if (start < buf.length) buf.copy(shards, 0, start, Math.min(buf.length, start + shards.length));
  return { g, sha256: header.sha256, crcs: header.crcs, shards, problems };
}

export interface ParityCheck {
  /** The file's bytes as repaired (D bytes; lost blocks hold whatever was read there, or zeros). */
  readonly data: Buffer;
  /** Ranges of the file that were damaged (or missing) and were rebuilt. */
  readonly repaired: ByteRange[];
  /** Ranges of the file that are damaged and could not be rebuilt. */
  readonly lost: ByteRange[];
  /** Damaged 4 KiB blocks found, data and parity. */
  readonly badBlocks: number;
  /** Stripes with more damaged blocks than parity. */
  readonly badStripes: number;
  /** The parity file itself must be written again (damaged blocks, a damaged header copy, wrong length). */
  readonly parityDamaged: boolean;
  readonly parityProblems: string[];
  /** The data file was longer than recorded (the extra bytes are not part of it). */
  readonly extraBytes: number;
  /** The data file was shorter than recorded. */
  readonly missingBytes: number;
  /** The result matches the SHA-256 in the parity file. */
  readonly verified: boolean;
}

export function mergeRanges(ranges: ByteRange[]): ByteRange[] {
  const sorted = [...ranges].filter((r) => r.end > r.start).sort((a, b) => a.start - b.start);
  const out: { start: number; end: number }[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ start: r.start, end: r.end });
  }
  return out;
}

/**
 * Checks a file's bytes (`actual`, as read: it may be cut short or too long) against its parity
 * and rebuilds every damaged block of each stripe that has at most m of them, in memory.
 */
export async function checkWithParity(actual: Buffer, parity: ParsedParity): Promise<ParityCheck> {
  const { g } = parity;
  const D = g.dataBytes;
  const data = Buffer.alloc(D);
  actual.copy(data, 0, 0, Math.min(D, actual.length));
  const present = Math.min(D, actual.length);
  const shards = parity.shards;
  const repaired: ByteRange[] = [];
  const lost: ByteRange[] = [];
  let badBlocks = 0;
  let badStripes = 0;
  let parityBad = false;
  for (let row = 0; row < g.rows; row++) {
    // Let other work run now and then (a server scrubs while it serves appends).
    if (row % 32 === 31) await yieldToLoop();
    const bad: number[] = [];
    for (let i = 0; i < g.k; i++) {
      const start = dataBlockStart(g, i, row);
      const end = Math.min(start + rowBytes(g, row), D);
      const missing = end > present && end > start;
      if (missing || dataBlockCrc(g, data, i, row) !== parity.crcs[crcIndex(g, i, row)]) bad.push(i);
    }
    for (let j = 0; j < g.m; j++) {
      if (parityBlockCrc(g, shards, j, row) !== parity.crcs[crcIndex(g, g.k + j, row)]) {
        bad.push(g.k + j);
        parityBad = true;
      }
    }
    if (bad.length === 0) continue;
    badBlocks += bad.length;
    const dataBad = bad.filter((i) => i < g.k);
    const ranges = dataBad
      .map((i) => ({ start: dataBlockStart(g, i, row), end: Math.min(dataBlockStart(g, i, row) + rowBytes(g, row), D) }))
      .filter((r) => r.end > r.start);
    if (bad.length > g.m) {
      badStripes++;
      lost.push(...ranges);
      continue;
    }
    const len = rowBytes(g, row);
    const stripe = Buffer.allocUnsafe(g.k * len);
    const par = Buffer.allocUnsafe(g.m * len);
    for (let i = 0; i < g.k; i++) copyDataBlock(g, data, i, row, stripe, i * len);
    for (let j = 0; j < g.m; j++) shards.copy(par, j * len, j * g.shardBytes + row * g.blockBytes, j * g.shardBytes + row * g.blockBytes + len);
    await reconstructStripe(g.k, g.m, stripe, par, len, bad);
    let ok = true;
    for (const i of bad) {
      const block = i < g.k ? stripe.subarray(i * len, (i + 1) * len) : par.subarray((i - g.k) * len, (i - g.k + 1) * len);
      if (zlib.crc32(block) >>> 0 !== parity.crcs[crcIndex(g, i, row)]) ok = false;
    }
    if (!ok) {
      // Damage the checksums did not see (or a damaged checksum table): nothing here can be trusted.
      badStripes++;
      lost.push(...ranges);
      continue;
    }
    for (const i of dataBad) {
      const start = dataBlockStart(g, i, row);
      const end = Math.min(start + len, D);
      if (end > start) stripe.copy(data, start, i * len, i * len + (end - start));
    }
    for (let j = 0; j < g.m; j++) par.copy(shards, j * g.shardBytes + row * g.blockBytes, j * len, (j + 1) * len);
    repaired.push(...ranges);
  }
  let verified = false;
  const mergedLost = mergeRanges(lost);
  if (mergedLost.length === 0) {
    verified = (await sha256Yielding(data)).equals(parity.sha256);
    if (!verified) mergedLost.push({ start: 0, end: D });
  }
  return {
    data,
    repaired: mergeRanges(repaired),
    lost: mergedLost,
    badBlocks,
    badStripes,
    parityDamaged: parityBad || parity.problems.length > 0,
    parityProblems: parity.problems,
    extraBytes: Math.max(0, actual.length - D),
    missingBytes: Math.max(0, D - actual.length),
    verified,
  };
}

/** SHA-256 of a large buffer, a MiB at a time with the event loop let run in between. */
export async function sha256Yielding(data: Buffer): Promise<Buffer> {
  const h = crypto.createHash('sha256');
  const step = 1 << 20;
  for (let at = 0; at < data.length; at += step) {
    h.update(data.subarray(at, Math.min(data.length, at + step)));
    if (at + step < data.length) await yieldToLoop();
  }
  return h.digest();
}

/** True for the temp files writeFileAtomicAsync (util/durableFs.ts) leaves behind if a process dies. */
export function isRedundancyTemp(name: string): boolean {
  return /\.tmp-\d+-\d+$/.test(name);
}

/** Reads a whole file with async I/O in chunks (so that a long read never holds the thread pool). */
export async function readFileChunked(file: string, maxBytes: number, chunkBytes = 1 << 20): Promise<Buffer> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    if (size > maxBytes) throw new Error(`${file} is ${size} bytes, more than the ${maxBytes} it may hold`);
    const buf = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      const { bytesRead } = await fh.read(buf, got, Math.min(chunkBytes, size - got), got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got === size ? buf : buf.subarray(0, got);
  } finally {
    await fh.close();
  }
}

/**
 * Writes `<file>.parity` for an immutable file (a sealed segment, a page pack), durably and
 * atomically. The file must not change any more.
 */
export async function protectFile(file: string, maxDataBytes: number): Promise<void> {
  const data = await readFileChunked(file, maxDataBytes);
  if (data.length === 0) return;
  const parity = await buildParityFile(data);
  await writeFileAtomicAsync(file + PARITY_SUFFIX, parity);
  // Removed meanwhile (retention)? Then the parity protects nothing.
  if (!fs.existsSync(file)) await fs.promises.rm(file + PARITY_SUFFIX, { force: true });
}
