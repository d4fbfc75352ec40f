// libsodium's crypto_secretstream_xchacha20poly1305, for the one-message streams Core Lightning
// writes (emergency.recover and its peer_storage blob): a 24-byte header, then one encrypted tag
// byte, the ciphertext and a 16-byte Poly1305 MAC (ABYTES = 17). Built from libsodium's
// specification (doc "Encrypted streams and file encryption", "Algorithm", and its reference
// src/libsodium/crypto_secretstream/xchacha20poly1305/secretstream_xchacha20poly1305.c):
//   init:  k = HChaCha20(key, header[0..16]); nonce = counter || header[16..24], the counter a
//          4-byte little-endian 1 (libsodium's counter_reset; 0 fails on the recorded blobs)
//   push:  poly key = ChaCha20-IETF(k, nonce, block counter 0)[0..32]
//          block   = ChaCha20-IETF(k, nonce, counter 1) XOR (tag || 63 zero bytes); out[0] = block[0]
//          c       = ChaCha20-IETF(k, nonce, counter 2) XOR m
//          mac     = Poly1305(ad || pad16(ad) || block (64) || c || zeros(mlen mod 16)
//                             || le64(adlen) || le64(64 + mlen))
// The padding after c is libsodium's `(0x10 - sizeof block + mlen) & 0xf`, which is mlen mod 16
// (not the pad to 16 its AEADs use): the formula is kept as libsodium computes it. No associated
// data here (Core Lightning passes none). A stream of several messages would update the nonce after
// each; one message needs none of that.
import crypto from 'node:crypto';
import { chacha20 } from '@noble/ciphers/chacha';
import { poly1305 } from '@noble/ciphers/_poly1305';
import { hchacha20 } from '../../vault/aead.js';

export const HEADER_BYTES = 24;
/** The encrypted tag byte and the MAC. */
export const A_BYTES = 17;
export const KEY_BYTES = 32;
/** crypto_secretstream_xchacha20poly1305_TAG_MESSAGE, the tag Core Lightning writes. */
export const TAG_MESSAGE = 0;

export class SecretstreamError extends Error {}

function streamKeyAndNonce(key: Buffer, header: Buffer): { k: Buffer; nonce: Buffer } {
  if (key.length !== KEY_BYTES) throw new RangeError(`a secretstream key is ${KEY_BYTES} bytes, got ${key.length}`);
  const nonce = Buffer.alloc(12);
  nonce.writeUInt32LE(1, 0);
  header.copy(nonce, 4, 16, 24);
  return { k: hchacha20(key, header.subarray(0, 16)), nonce };
}

function mac(k: Buffer, nonce: Buffer, block: Uint8Array, c: Uint8Array): Buffer {
  const polyKey = chacha20(k, nonce, new Uint8Array(32), undefined, 0);
  const lengths = Buffer.alloc(16);
  lengths.writeBigUInt64LE(0n, 0);
  lengths.writeBigUInt64LE(BigInt(64 + c.length), 8);
  const h = poly1305.create(polyKey);
  h.update(block)
    .update(c)
    .update(new Uint8Array(c.length % 16))
    .update(lengths);
  return Buffer.from(h.digest());
}

/** Encrypts one message: header || encrypted tag || ciphertext || MAC. */
export function sealOneMessage(key: Buffer, plaintext: Buffer, header: Buffer = crypto.randomBytes(HEADER_BYTES), tag = TAG_MESSAGE): Buffer {
  if (header.length !== HEADER_BYTES) throw new RangeError(`a secretstream header is ${HEADER_BYTES} bytes`);
  const { k, nonce } = streamKeyAndNonce(key, header);
  const tagBlock = new Uint8Array(64);
  tagBlock[0] = tag;
  const block = chacha20(k, nonce, tagBlock, undefined, 1);
  const c = chacha20(k, nonce, plaintext, undefined, 2);
  return Buffer.concat([header, Buffer.of(block[0]), c, mac(k, nonce, block, c)]);
}

/** Decrypts and authenticates one message; throws SecretstreamError if it is short or altered. */
export function openOneMessage(key: Buffer, stream: Buffer): { plaintext: Buffer; tag: number } {
  if (stream.length < HEADER_BYTES + A_BYTES) {
    throw new SecretstreamError(`a secretstream message is at least ${HEADER_BYTES + A_BYTES} bytes, got ${stream.length}`);
  }
  const header = stream.subarray(0, HEADER_BYTES);
  const { k, nonce } = streamKeyAndNonce(key, header);
  const c = stream.subarray(HEADER_BYTES + 1, stream.length - 16);
  const keyStreamBlock = chacha20(k, nonce, new Uint8Array(64), undefined, 1);
  const tag = keyStreamBlock[0] ^ stream[HEADER_BYTES];
  const block = Buffer.from(keyStreamBlock);
  block[0] = stream[HEADER_BYTES];
  const expected = mac(k, nonce, block, c);
  if (!crypto.timingSafeEqual(expected, stream.subarray(stream.length - 16))) {
    throw new SecretstreamError('the secretstream MAC does not verify: wrong key, or the bytes were altered');
  }
  return { plaintext: Buffer.from(chacha20(k, nonce, c, undefined, 2)), tag };
}
