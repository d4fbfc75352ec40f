// secp256k1 keys of the encrypted transport: node identity keys (random or derived from a seed),
// their 33-byte compressed public keys, the parsing of a pinned key, and the ECDH of BOLT #8.
import { createHash, randomBytes } from 'node:crypto';
import { secp256k1 } from '@noble/curves/secp256k1.js';

const SEED_TAG = Buffer.from('lnbackup/transport-key', 'ascii');

function isValidPrivateKey(key: Buffer): boolean {
  return secp256k1.utils.isValidSecretKey(key);
}

/** 33 bytes, prefix 02 or 03, and a point on the curve. */
export function isValidPublicKey(key: Buffer): boolean {
  return key.length === 33 && (key[0] === 2 || key[0] === 3) && secp256k1.utils.isValidPublicKey(key, true);
}

export function generatePrivateKey(): Buffer {
  for (;;) {
    const key = randomBytes(32);
    if (isValidPrivateKey(key)) return key;
  }
}

/** SHA-256(tag || seed || counter) for counter = 0, 1, ... until the digest is a valid scalar. */
export function privateKeyFromSeed(seed: Buffer): Buffer {
  if (seed.length !== 32) throw new Error(`a transport key seed is 32 bytes, got ${seed.length}`);
  const counter = Buffer.alloc(4);
  for (let i = 0; ; i++) {
    counter.writeUInt32BE(i);
    const key = createHash('sha256').update(SEED_TAG).update(seed).update(counter).digest();
    if (isValidPrivateKey(key)) return key;
  }
}

export function publicKeyOf(privateKey: Buffer): Buffer {
  if (!isValidPrivateKey(privateKey)) throw new Error('not a valid secp256k1 private key');
  return Buffer.from(secp256k1.getPublicKey(privateKey, true));
}

export function parsePublicKeyHex(hex: string): Buffer {
  if (!/^[0-9a-fA-F]{66}$/.test(hex)) {
    throw new Error(`a public key is 66 hex digits (33 bytes, compressed), got ${JSON.stringify(hex.length > 80 ? `${hex.slice(0, 80)}...` : hex)}`);
  }
  const key = Buffer.from(hex, 'hex');
  if (!isValidPublicKey(key)) throw new Error(`${hex} is not a valid secp256k1 public key (compressed, prefix 02 or 03, on the curve)`);
  return key;
}

/** BOLT #8's ECDH: SHA-256 of the compressed shared point. `publicKey` must be valid. */
export function ecdh(publicKey: Buffer, privateKey: Buffer): Buffer {
  return createHash('sha256')
    .update(secp256k1.getSharedSecret(privateKey, publicKey, true))
    .digest();
}
