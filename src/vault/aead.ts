// XChaCha20-Poly1305 sealing of vault records. The subkey step (HChaCha20) comes from
// @noble/ciphers; the bulk ChaCha20-Poly1305 is Node's native one. This is the standard XChaCha
// construction (draft-irtf-cfrg-xchacha): identical output to noble's xchacha20poly1305
// (a test checks it), about ten times faster on large snapshot chunks.
import crypto from 'node:crypto';
import { hchacha } from '@noble/ciphers/chacha';

export const KEY_BYTES = 32;
export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;

const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);

function words(bytes: Uint8Array, count: number): Uint32Array {
  const out = new Uint32Array(count);
  Buffer.from(out.buffer).set(bytes.subarray(0, count * 4));
  return out;
}

/** HChaCha20 (draft-irtf-cfrg-xchacha, 2.2): the 32-byte subkey of `key` for the first 16 nonce bytes. */
export function hchacha20(key: Uint8Array, input: Uint8Array): Buffer {
  if (key.length !== KEY_BYTES) throw new Error('AEAD key must be 32 bytes');
  if (input.length < 16) throw new Error('HChaCha20 takes 16 input bytes');
  const sub = new Uint32Array(8);
  hchacha(SIGMA, words(key, 8), words(input, 4), sub);
  return Buffer.from(sub.buffer);
}

function subkeyAndIv(key: Uint8Array, nonce: Uint8Array): { subkey: Buffer; iv: Buffer } {
  if (nonce.length !== NONCE_BYTES) throw new Error('AEAD nonce must be 24 bytes');
  const iv = Buffer.alloc(12);
  iv.set(nonce.subarray(16, 24), 4);
  return { subkey: hchacha20(key, nonce), iv };
}

/**
 * Encrypts the concatenation of `parts`; returns `prefix`, then the ciphertext, then the 16-byte tag,
 * in one buffer (the caller's header goes in front without another copy of the record).
 */
export function seal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, parts: readonly Uint8Array[], prefix: Uint8Array = EMPTY): Buffer {
  const { subkey, iv } = subkeyAndIv(key, nonce);
  const c = crypto.createCipheriv('chacha20-poly1305', subkey, iv, { authTagLength: TAG_BYTES });
  let plaintextLength = 0;
  for (const p of parts) plaintextLength += p.length;
  c.setAAD(aad, { plaintextLength });
  const out: Uint8Array[] = [prefix];
  for (const p of parts) out.push(c.update(p));
  c.final();
  out.push(c.getAuthTag());
  return Buffer.concat(out, prefix.length + plaintextLength + TAG_BYTES);
}

const EMPTY = new Uint8Array(0);

/** Random nonces, drawn from the system's CSPRNG in batches (one system call per 256 records). */
export class NoncePool {
  private pool = Buffer.alloc(0);
  private next = 0;

  take(): Buffer {
    if (this.next + NONCE_BYTES > this.pool.length) {
      this.pool = crypto.randomFillSync(Buffer.allocUnsafe(NONCE_BYTES * 256));
      this.next = 0;
    }
    const nonce = this.pool.subarray(this.next, this.next + NONCE_BYTES);
    this.next += NONCE_BYTES;
    return nonce;
  }
}

/** Decrypts and authenticates; returns null when authentication fails. */
export function open(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Buffer | null {
  if (sealed.length < TAG_BYTES) return null;
  const { subkey, iv } = subkeyAndIv(key, nonce);
  const body = sealed.subarray(0, sealed.length - TAG_BYTES);
  const d = crypto.createDecipheriv('chacha20-poly1305', subkey, iv, { authTagLength: TAG_BYTES });
  d.setAAD(aad, { plaintextLength: body.length });
  d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const out = d.update(body);
  try {
    d.final();
  } catch {
    return null;
  }
  return out;
}
