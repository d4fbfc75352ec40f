// BOLT #1 "Peer Storage": `peer_storage` (type 7, a node asks its peer to keep a blob) and
// `peer_storage_retrieval` (type 9, the peer hands back what it keeps). Both are a u16 length then
// the blob, which BOLT #1 limits to 65531 bytes (what one 65535-byte message leaves for it).
import { ByteReader, ByteWriter, DecodeError } from '../../util/bytes.js';
import { readTlvStream } from './tlv.js';

/** BOLT #1: the sender "MUST limit its blob to 65531 bytes". */
export const MAX_BLOB_BYTES = 65531;
const NO_EVEN: ReadonlySet<bigint> = new Set();

export interface PeerStorageBlob {
  readonly blob: Buffer;
}

export function decodePeerStorage(payload: Buffer, what: 'peer_storage' | 'peer_storage_retrieval'): PeerStorageBlob {
  const r = new ByteReader(payload);
  const length = r.u16(`${what} length`);
  if (length > MAX_BLOB_BYTES) throw new DecodeError(`${what} blob is ${length} bytes, more than the ${MAX_BLOB_BYTES} BOLT #1 allows`);
  if (length > r.remaining) throw new DecodeError(`${what} says ${length} bytes but only ${r.remaining} follow`);
  const blob = Buffer.from(r.view(length, `${what} blob`));
  readTlvStream(r, NO_EVEN, what);
  return { blob };
}

export function encodePeerStorage(m: PeerStorageBlob): Buffer {
  if (m.blob.length > MAX_BLOB_BYTES) throw new RangeError(`a peer storage blob is at most ${MAX_BLOB_BYTES} bytes, got ${m.blob.length}`);
  return new ByteWriter().u16Bytes(m.blob).finish();
}
