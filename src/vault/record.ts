// Sealing and opening one record: header + XChaCha20-Poly1305 body with a fresh random nonce
// (a superseding record reuses a data_version, so nothing about the position may pick the nonce).
import { open, seal, NoncePool, TAG_BYTES } from './aead.js';
import {
  associatedData,
  decodeBody,
  encodeBodyPrefix,
  encodeHeader,
  BODY_PREFIX_BYTES,
  recordHash,
  HEADER_BYTES,
  MAX_PAYLOAD_BYTES,
  type RecordBody,
  type RecordHeader,
} from './format.js';

const nonces = new NoncePool();

export function sealRecord(recordKey: Buffer, vaultId: Buffer, seq: bigint, body: RecordBody): { bytes: Buffer; hash: Buffer } {
  if (body.payload.length > MAX_PAYLOAD_BYTES) {
    throw new Error(`record payload of ${body.payload.length} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte limit`);
  }
  const nonce = nonces.take();
  const sealedLength = BODY_PREFIX_BYTES + body.payload.length + TAG_BYTES;
  const header = encodeHeader(sealedLength, seq, nonce);
  const bytes = seal(recordKey, nonce, associatedData(header, vaultId), [encodeBodyPrefix(body), body.payload], header);
  return { bytes, hash: recordHash(bytes.subarray(0, HEADER_BYTES), bytes.subarray(HEADER_BYTES)) };
}

/** Opens a record's sealed body; null when authentication fails (altered bytes or another key). */
export function openRecord(recordKey: Buffer, vaultId: Buffer, header: RecordHeader, headerBytes: Buffer, sealed: Buffer): RecordBody | null {
  const plain = open(recordKey, header.nonce, associatedData(headerBytes.subarray(0, HEADER_BYTES), vaultId), sealed);
  return plain === null ? null : decodeBody(plain);
}
