// One sealed peer-storage blob of lnbackup: always exactly 65531 bytes (BOLT #1's limit, which it
// says to pad to, so the size tells a peer nothing), holding either a whole beacon or one shard of
// a striped one. Layout (big-endian):
//   0  4  magic "LNBB"            4  1  format version (1)      5  1  kind (1 whole, 2 shard)
//   6 16  key fingerprint (beaconKey.ts)                       22  8  counter (u64)
//  30 24  nonce                  54 ..  XChaCha20-Poly1305 ciphertext of the padded body
//  65515 16 MAC; the 54 header bytes are the associated data.
// The body is a u32 length, that many bytes of payload, then zeros to the end.
// Opening refuses, by name: a wrong size (truncated / oversize), another magic, an unknown
// version, another node's fingerprint (foreign), a failed MAC (tampered), a counter below the
// newest the caller knows (replayed), and a body whose length does not fit (malformed).
import crypto from 'node:crypto';
import { open, seal } from '../../vault/aead.js';
import { MAX_BLOB_BYTES } from '../wire/peerStorage.js';
import { BeaconError } from './beaconError.js';
import { FINGERPRINT_BYTES, type BeaconKey } from './beaconKey.js';

export const BLOB_BYTES = MAX_BLOB_BYTES;
const MAGIC = Buffer.from('LNBB', 'ascii');
const FORMAT_VERSION = 1;
const HEADER_BYTES = 4 + 1 + 1 + FINGERPRINT_BYTES + 8 + 24;
const MAC_BYTES = 16;
const BODY_BYTES = BLOB_BYTES - HEADER_BYTES - MAC_BYTES;
/** The most payload one blob carries. */
export const MAX_PAYLOAD_BYTES = BODY_BYTES - 4;

export type BlobKind = 'whole' | 'shard';
const KIND_CODES: Record<BlobKind, number> = { whole: 1, shard: 2 };

export interface OpenedBlob {
  readonly kind: BlobKind;
  readonly counter: bigint;
  readonly payload: Buffer;
}

export function sealBlob(key: BeaconKey, kind: BlobKind, counter: bigint, payload: Buffer): Buffer {
  if (payload.length > MAX_PAYLOAD_BYTES) throw new RangeError(`a blob carries at most ${MAX_PAYLOAD_BYTES} bytes, not ${payload.length}`);
  if (counter < 0n || counter > 0xffffffffffffffffn) throw new RangeError('the counter is a u64');
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header[4] = FORMAT_VERSION;
  header[5] = KIND_CODES[kind];
  key.fingerprint.copy(header, 6);
  header.writeBigUInt64BE(counter, 22);
  const nonce = crypto.randomBytes(24);
  nonce.copy(header, 30);
  const body = Buffer.alloc(BODY_BYTES);
  body.writeUInt32BE(payload.length, 0);
  payload.copy(body, 4);
  return seal(key.seal, nonce, header, [body], header);
}

/** Opens one blob; `newestKnown` is the highest counter the caller has seen valid (or -1n). */
export function openBlob(key: BeaconKey, blob: Buffer, newestKnown: bigint): OpenedBlob {
  if (blob.length < BLOB_BYTES) throw new BeaconError('truncated', `a beacon is exactly ${BLOB_BYTES} bytes, this one ${blob.length}`);
  if (blob.length > BLOB_BYTES) throw new BeaconError('oversize', `a beacon is exactly ${BLOB_BYTES} bytes, this one ${blob.length}`);
  if (!blob.subarray(0, 4).equals(MAGIC))
    throw new BeaconError('not-a-beacon', 'it does not start with "LNBB" (another program\'s blob, e.g. Core Lightning\'s own channel backup)');
  if (blob[4] !== FORMAT_VERSION) throw new BeaconError('unknown-version', `format version ${blob[4]}; this lnbackup reads version ${FORMAT_VERSION}`);
  const kind = blob[5] === 1 ? 'whole' : blob[5] === 2 ? 'shard' : null;
  if (kind === null) throw new BeaconError('malformed', `kind ${blob[5]} is neither 1 (whole) nor 2 (shard)`);
  if (!blob.subarray(6, 6 + FINGERPRINT_BYTES).equals(key.fingerprint)) throw new BeaconError('foreign', "it was sealed under another node's key");
  const header = blob.subarray(0, HEADER_BYTES);
  const body = open(key.seal, blob.subarray(30, 54), header, blob.subarray(HEADER_BYTES));
  if (body === null) throw new BeaconError('tampered', 'its authentication tag does not verify: the bytes were changed');
  const counter = blob.readBigUInt64BE(22);
  if (counter < newestKnown) throw new BeaconError('replayed', `its counter ${counter} is older than ${newestKnown}, the newest beacon already seen`);
  const length = body.readUInt32BE(0);
  if (length > MAX_PAYLOAD_BYTES) throw new BeaconError('malformed', `its payload length ${length} is more than a blob holds`);
  return { kind, counter, payload: Buffer.from(body.subarray(4, 4 + length)) };
}
