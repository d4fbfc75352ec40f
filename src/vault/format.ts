// The record format (docs/FORMAT.md, format version 1): a clear 44-byte header, then the sealed
// body. The header is authenticated as associated data together with the vault id, so a record
// cannot be moved to another position or another vault unnoticed. Every length is checked against
// its bound before anything is allocated.
import crypto from 'node:crypto';
import { NONCE_BYTES, TAG_BYTES } from './aead.js';

export const MAGIC = Buffer.from('LNBK', 'latin1');
export const FORMAT_VERSION = 1;
export const HEADER_BYTES = 44;
export const BODY_PREFIX_BYTES = 52;
export const HASH_BYTES = 32;
export const VAULT_ID_BYTES = 16;
/** The vault's identity file, in the vault's folder (and, by name, on a server). */
export const IDENTITY_FILE = 'VAULT.json';
/** Largest identity file read (node, server and wire alike; a real one is under 1 KiB). */
export const MAX_IDENTITY_BYTES = 64 * 1024;

/** Largest plaintext payload in one record (a db_write call, or one snapshot chunk). */
export const MAX_PAYLOAD_BYTES = 64 * 1024 * 1024;
export const MAX_SEALED_BYTES = BODY_PREFIX_BYTES + MAX_PAYLOAD_BYTES + TAG_BYTES;

export enum RecordType {
  /** One db_write call: its data_version and statements. */
  Writes = 1,
  /** Starts a generation: a snapshot of the database at `dataVersion` follows. */
  SnapshotBegin = 2,
  /** A piece of the snapshot's database file. */
  SnapshotChunk = 3,
  /** Ends the snapshot: size and SHA-256 of the whole file. */
  SnapshotEnd = 4,
  /** A paged snapshot's pages, by content address (the bytes live in page packs). */
  PageManifest = 5,
  /** One db_write call with the time it was recorded. */
  TimedWrites = 6,
  /** The page packs a paged snapshot reads from (what retention keeps). */
  PackList = 7,
}

export interface RecordHeader {
  readonly sealedLength: number;
  readonly seq: bigint;
  readonly nonce: Buffer;
}

/** What a record says once opened. */
export interface RecordBody {
  readonly type: RecordType;
  readonly generation: number;
  readonly dataVersion: number;
  /** Sequence number of the record this one supersedes (a rewound, never-committed call), or 0n. */
  readonly supersedes: bigint;
  readonly prevHash: Buffer;
  readonly payload: Buffer;
}

export class FormatError extends Error {}

export function encodeHeader(sealedLength: number, seq: bigint, nonce: Buffer): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(h, 0);
  h[4] = FORMAT_VERSION;
  h.writeUInt32BE(sealedLength, 8);
  h.writeBigUInt64BE(seq, 12);
  nonce.copy(h, 20);
  return h;
}

/** Parses and bounds-checks a header; throws FormatError saying what is wrong. */
export function decodeHeader(h: Buffer): RecordHeader {
  if (h.length < HEADER_BYTES) throw new FormatError('header is truncated');
  if (!h.subarray(0, 4).equals(MAGIC)) throw new FormatError('bad magic (not a record boundary)');
  if (h[4] !== FORMAT_VERSION) throw new FormatError(`unsupported record format version ${h[4]}`);
  if (h[5] !== 0 || h[6] !== 0 || h[7] !== 0) throw new FormatError('reserved header bytes are not zero');
  const sealedLength = h.readUInt32BE(8);
  if (sealedLength < BODY_PREFIX_BYTES + TAG_BYTES || sealedLength > MAX_SEALED_BYTES) {
    throw new FormatError(`sealed length ${sealedLength} is out of bounds`);
  }
  const seq = h.readBigUInt64BE(12);
  if (seq === 0n) throw new FormatError('sequence number 0 is invalid');
  return { sealedLength, seq, nonce: Buffer.from(h.subarray(20, 20 + NONCE_BYTES)) };
}

/**
 * Without the key: the end of the record at `offset` of `buf` when a well-formed header of record
 * `expectedSeq` starts there and all its bytes are present; null otherwise.
 */
export function wellFormedRecordEnd(buf: Buffer, offset: number, expectedSeq: bigint): number | null {
  if (buf.length - offset < HEADER_BYTES) return null;
  let header: RecordHeader;
  try {
    header = decodeHeader(buf.subarray(offset, offset + HEADER_BYTES));
  } catch (err) {
    if (err instanceof FormatError) return null;
    throw err;
  }
  const end = offset + HEADER_BYTES + header.sealedLength;
  return header.seq === expectedSeq && end <= buf.length ? end : null;
}

export function encodeBodyPrefix(b: Omit<RecordBody, 'payload'>): Buffer {
  const p = Buffer.alloc(BODY_PREFIX_BYTES);
  p[0] = b.type;
  p.writeUInt32BE(b.generation, 4);
  p.writeUInt32BE(b.dataVersion, 8);
  p.writeBigUInt64BE(b.supersedes, 12);
  b.prevHash.copy(p, 20);
  return p;
}

export function decodeBody(plain: Buffer): RecordBody {
  if (plain.length < BODY_PREFIX_BYTES) throw new FormatError('body is shorter than its fixed part');
  const type = plain[0];
  if (!(type in RecordType) || typeof RecordType[type] !== 'string') throw new FormatError(`unknown record type ${type}`);
  return {
    type: type as RecordType,
    generation: plain.readUInt32BE(4),
    dataVersion: plain.readUInt32BE(8),
    supersedes: plain.readBigUInt64BE(12),
    prevHash: plain.subarray(20, 20 + HASH_BYTES),
    payload: plain.subarray(BODY_PREFIX_BYTES),
  };
}

/** Associated data: the header and the vault id. */
export function associatedData(header: Buffer, vaultId: Buffer): Buffer {
  return Buffer.concat([header, vaultId]);
}

/** The chain hash of a whole stored record (header and sealed body). */
export function recordHash(header: Buffer, sealed: Buffer): Buffer {
  return crypto.createHash('sha256').update(header).update(sealed).digest();
}

/** The value the first record of a vault chains to. */
export function genesisHash(vaultId: Buffer): Buffer {
  return crypto.createHash('sha256').update('lnbackup genesis v1').update(vaultId).digest();
}
