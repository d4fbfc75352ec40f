// The beacon as peers hold it: built from its content into one sealed 65531-byte blob when it
// fits, or else striped into n shards (Reed-Solomon, k data + n-k parity, the codec of
// src/vault/redundancy/reedSolomon.ts), each itself a sealed 65531-byte blob for one peer, so
// that any k of them rebuild it. Recovering takes whatever blobs peers handed back, refuses each
// bad one by name, and rebuilds the newest beacon that is whole or has k matching shards.
// A shard's payload: u8 index | u8 k | u8 n | u32 content length | the shard's bytes.
import { DecodeError } from '../../util/bytes.js';
import { encodeStripe, reconstructStripe } from '../../vault/redundancy/reedSolomon.js';
import { BeaconError } from './beaconError.js';
import type { BeaconKey } from './beaconKey.js';
import { decodeBeaconContent, encodeBeaconContent, type BeaconContent } from './beaconContent.js';
import { MAX_PAYLOAD_BYTES, openBlob, sealBlob } from './sealedBlob.js';

export interface StripeShape {
  /** Shards any k of which rebuild the beacon. */
  readonly k: number;
  /** Shards in all (one per peer). */
  readonly n: number;
}

export const DEFAULT_STRIPE: StripeShape = { k: 3, n: 5 };
const SHARD_HEADER_BYTES = 7;
/** The largest shard a blob carries, a multiple of 8 as the codec needs. */
const MAX_SHARD_BYTES = Math.floor((MAX_PAYLOAD_BYTES - SHARD_HEADER_BYTES) / 8) * 8;

/** The blobs to send: one when the content fits, else `shape.n` shards, the i-th for the i-th peer. */
export async function buildBeacon(key: BeaconKey, counter: bigint, content: BeaconContent, shape: StripeShape = DEFAULT_STRIPE): Promise<Buffer[]> {
  const bytes = encodeBeaconContent(content);
  if (bytes.length <= MAX_PAYLOAD_BYTES) return [sealBlob(key, 'whole', counter, bytes)];
  const { k, n } = shape;
  if (!Number.isInteger(k) || !Number.isInteger(n) || k < 1 || n <= k || n > 255) throw new RangeError(`a stripe needs 1 <= k < n <= 255, not k=${k} n=${n}`);
  const blockBytes = Math.ceil(bytes.length / k / 8) * 8;
  if (blockBytes > MAX_SHARD_BYTES) {
    throw new RangeError(`the beacon is ${bytes.length} bytes; ${k} shards carry at most ${k * MAX_SHARD_BYTES}: stripe it with a larger k`);
  }
  const data = Buffer.alloc(k * blockBytes);
  bytes.copy(data);
  const parity = Buffer.alloc((n - k) * blockBytes);
  await encodeStripe(k, n - k, data, parity, blockBytes);
  const blobs: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const shard = i < k ? data.subarray(i * blockBytes, (i + 1) * blockBytes) : parity.subarray((i - k) * blockBytes, (i - k + 1) * blockBytes);
    const header = Buffer.alloc(SHARD_HEADER_BYTES);
    header[0] = i;
    header[1] = k;
    header[2] = n;
    header.writeUInt32BE(bytes.length, 3);
    blobs.push(sealBlob(key, 'shard', counter, Buffer.concat([header, shard])));
  }
  return blobs;
}

export interface RecoveredBeacon {
  readonly content: BeaconContent;
  readonly counter: bigint;
  /** 'whole', or the indexes of the shards it was rebuilt from. */
  readonly from: 'whole' | readonly number[];
  /** Each blob that was refused (by its position in the input) and why. */
  readonly refused: readonly { readonly blob: number; readonly error: BeaconError }[];
}

interface Shard {
  /** Its position among the blobs handed in. */
  readonly blob: number;
  readonly bytes: Buffer;
}

/** Shards of one beacon: the same counter and the same shape. */
interface ShardGroup {
  readonly counter: bigint;
  readonly k: number;
  readonly n: number;
  readonly length: number;
  readonly blockBytes: number;
  readonly shards: Map<number, Shard>;
}

function decodeContent(bytes: Buffer, nodeId: Buffer | null): BeaconContent {
  let content: BeaconContent;
  try {
    content = decodeBeaconContent(bytes);
  } catch (err) {
    if (err instanceof DecodeError) throw new BeaconError('malformed', `it authenticates but its content does not decode: ${err.message}`);
    throw err;
  }
  if (nodeId !== null && !content.nodeId.equals(nodeId)) {
    throw new BeaconError('foreign', `it names node ${content.nodeId.toString('hex')}, not ${nodeId.toString('hex')}`);
  }
  return content;
}

function addShard(groups: Map<string, ShardGroup>, counter: bigint, payload: Buffer, blob: number): void {
  if (payload.length < SHARD_HEADER_BYTES + 8) throw new BeaconError('malformed', 'a shard shorter than its header');
  const [index, k, n] = payload;
  const length = payload.readUInt32BE(3);
  const blockBytes = payload.length - SHARD_HEADER_BYTES;
  if (k < 1 || n <= k || index >= n || blockBytes % 8 !== 0 || length > k * blockBytes) {
    throw new BeaconError('malformed', `shard ${index} of k=${k} n=${n} (${length} bytes in ${blockBytes}-byte shards) is inconsistent`);
  }
  const id = `${counter}/${k}/${n}/${length}/${blockBytes}`;
  let group = groups.get(id);
  if (!group) {
    group = { counter, k, n, length, blockBytes, shards: new Map() };
    groups.set(id, group);
  }
  if (!group.shards.has(index)) group.shards.set(index, { blob, bytes: payload.subarray(SHARD_HEADER_BYTES) });
}

async function rebuild(g: ShardGroup): Promise<Buffer> {
  const m = g.n - g.k;
  const data = Buffer.alloc(g.k * g.blockBytes);
  const parity = Buffer.alloc(m * g.blockBytes);
  const lost: number[] = [];
  for (let i = 0; i < g.n; i++) {
    const shard = g.shards.get(i);
    if (shard) shard.bytes.copy(i < g.k ? data : parity, (i < g.k ? i : i - g.k) * g.blockBytes);
    else lost.push(i);
  }
  if (lost.some((i) => i < g.k)) await reconstructStripe(g.k, m, data, parity, g.blockBytes, lost);
  return data.subarray(0, g.length);
}

/**
 * The newest beacon the blobs hold. `newestKnown` is the highest counter already seen valid
 * (-1n if none): anything older is refused as replayed. `nodeId`, when known, must be the one
 * the beacon names. Throws BeaconError when nothing can be rebuilt.
 */
export async function recoverBeacon(key: BeaconKey, blobs: readonly Buffer[], newestKnown = -1n, nodeId: Buffer | null = null): Promise<RecoveredBeacon> {
  const refused: { blob: number; error: BeaconError }[] = [];
  const groups = new Map<string, ShardGroup>();
  let best: { counter: bigint; content: BeaconContent; from: 'whole' | number[] } | null = null;
  for (let i = 0; i < blobs.length; i++) {
    try {
      const opened = openBlob(key, blobs[i], newestKnown);
      if (opened.kind === 'shard') addShard(groups, opened.counter, opened.payload, i);
      else if (best === null || opened.counter > best.counter)
        best = { counter: opened.counter, content: decodeContent(opened.payload, nodeId), from: 'whole' };
    } catch (err) {
      if (!(err instanceof BeaconError)) throw err;
      refused.push({ blob: i, error: err });
    }
  }
  const complete = [...groups.values()].filter((g) => g.shards.size >= g.k).sort((a, b) => (a.counter < b.counter ? 1 : -1));
  for (const g of complete) {
    if (best !== null && best.counter >= g.counter) break;
    try {
      best = { counter: g.counter, content: decodeContent(await rebuild(g), nodeId), from: [...g.shards.keys()].sort((a, b) => a - b) };
      break;
    } catch (err) {
      if (!(err instanceof BeaconError)) throw err;
      for (const shard of g.shards.values()) refused.push({ blob: shard.blob, error: err });
    }
  }
  if (best !== null) return { ...best, refused };
  const partial = [...groups.values()].filter((g) => g.shards.size < g.k).sort((a, b) => (a.counter < b.counter ? 1 : -1))[0];
  if (partial) {
    throw new BeaconError(
      'too-few-shards',
      `the newest striped beacon (counter ${partial.counter}) has ${partial.shards.size} of the ${partial.k} shards needed to rebuild it`,
    );
  }
  if (refused.length > 0) throw refused[0].error;
  throw new BeaconError('no-beacon', 'no blob was handed back');
}
