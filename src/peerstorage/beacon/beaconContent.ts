// What a beacon says (its plaintext, version 1): where the node's backup is and how far it must
// reach. Layout (big-endian):
//   u8 content version (1) | node id (33) | u64 created (Unix ms)
//   u8 server count (<= 16), each: u16 + UTF-8 URL (<= 512 bytes) | pinned key (33) | vault id (16)
//   high-water mark: u32 generation | u64 sequence | record hash (32) | u32 data_version | u64 time (Unix ms)
//   u16 channel count, each: u16 + one `staticbackup` record (Core Lightning's modern_scb_chan,
//   restorable with lightningd's `recoverchannel` when every server is gone)
// Decoding checks every count and length against its bound and the bytes left.
import { ByteReader, ByteWriter, DecodeError } from '../../util/bytes.js';

const CONTENT_VERSION = 1;
export const MAX_SERVERS = 16;
export const MAX_URL_BYTES = 512;
const NODE_ID_BYTES = 33;
const VAULT_ID_BYTES = 16;
const HASH_BYTES = 32;

export interface BeaconServer {
  readonly url: string;
  readonly pinnedKey: Buffer;
  readonly vaultId: Buffer;
}

/** The newest durable point of the backup: a restore must reach it. */
export interface HighWaterMark {
  readonly generation: number;
  readonly sequence: bigint;
  readonly recordHash: Buffer;
  readonly dataVersion: number;
  readonly timeMs: number;
}

export interface BeaconContent {
  readonly nodeId: Buffer;
  readonly createdMs: number;
  readonly servers: readonly BeaconServer[];
  readonly highWater: HighWaterMark;
  /** The records of lightningd's `staticbackup` RPC (`scb[]`), as bytes. */
  readonly channelBackup: readonly Buffer[];
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** A URL: u16-prefixed UTF-8, refused when it is not valid UTF-8. */
function readUrl(r: ByteReader): string {
  const bytes = r.u16Bytes(MAX_URL_BYTES, 'beacon server URL');
  try {
    return UTF8.decode(bytes);
  } catch {
    throw new DecodeError('a beacon server URL is not valid UTF-8');
  }
}

/** A u64 of milliseconds, refused beyond what a JavaScript number holds exactly. */
function readMs(r: ByteReader, field: string): number {
  const v = r.u64(field);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DecodeError(`${field} ${v} is beyond any real time`);
  return Number(v);
}

export function encodeBeaconContent(c: BeaconContent): Buffer {
  if (c.servers.length > MAX_SERVERS) throw new RangeError(`a beacon names at most ${MAX_SERVERS} servers`);
  if (c.channelBackup.length > 0xffff) throw new RangeError('a beacon holds at most 65535 channel records');
  const w = new ByteWriter().u8(CONTENT_VERSION).fixed(c.nodeId, NODE_ID_BYTES).u64(BigInt(c.createdMs)).u8(c.servers.length);
  for (const s of c.servers) {
    if (Buffer.byteLength(s.url, 'utf8') > MAX_URL_BYTES) throw new RangeError(`a server URL is at most ${MAX_URL_BYTES} bytes`);
    w.string(s.url).fixed(s.pinnedKey, NODE_ID_BYTES).fixed(s.vaultId, VAULT_ID_BYTES);
  }
  const h = c.highWater;
  w.u32(h.generation).u64(h.sequence).fixed(h.recordHash, HASH_BYTES).u32(h.dataVersion).u64(BigInt(h.timeMs));
  w.u16(c.channelBackup.length);
  for (const record of c.channelBackup) w.u16Bytes(record);
  return w.finish();
}

export function decodeBeaconContent(bytes: Buffer): BeaconContent {
  const r = new ByteReader(bytes);
  const version = r.u8('beacon content version');
  if (version !== CONTENT_VERSION) throw new DecodeError(`beacon content version ${version} is unknown; this lnbackup reads version ${CONTENT_VERSION}`);
  const nodeId = r.fixed(NODE_ID_BYTES, 'beacon node id');
  const createdMs = readMs(r, 'beacon created time');
  const servers: BeaconServer[] = [];
  const serverCount = r.count(r.u8('beacon server count'), MAX_SERVERS, 2 + NODE_ID_BYTES + VAULT_ID_BYTES, 'beacon server');
  for (let i = 0; i < serverCount; i++) {
    servers.push({ url: readUrl(r), pinnedKey: r.fixed(NODE_ID_BYTES, 'beacon server key'), vaultId: r.fixed(VAULT_ID_BYTES, 'beacon vault id') });
  }
  const highWater: HighWaterMark = {
    generation: r.u32('beacon generation'),
    sequence: r.u64('beacon sequence'),
    recordHash: r.fixed(HASH_BYTES, 'beacon record hash'),
    dataVersion: r.u32('beacon data_version'),
    timeMs: readMs(r, 'beacon high-water time'),
  };
  const channelCount = r.count(r.u16('beacon channel count'), 0xffff, 2, 'beacon channel record');
  const channelBackup: Buffer[] = [];
  for (let i = 0; i < channelCount; i++) channelBackup.push(Buffer.from(r.u16Bytes(0xffff, 'beacon channel record')));
  r.end('the beacon content');
  return { nodeId, createdMs, servers, highWater, channelBackup };
}
