// The symmetric cryptography of BOLT #8: ChaCha20-Poly1305 with Noise's little-endian nonces,
// HKDF-SHA256, and CipherState, one direction of an established session (its nonce, its key
// rotation after nonce 1000, and the sealing and opening of frames: encrypted length, then body).
import { createCipheriv, createDecipheriv, hkdfSync } from 'node:crypto';

const ALGORITHM = 'chacha20-poly1305';
const AEAD_OPTIONS = { authTagLength: 16 } as const;
const EMPTY = Buffer.alloc(0);
const ROTATE_AT_NONCE = 1000;

export const MAC_BYTES = 16;
/** The encrypted 2-byte length and its MAC that open every frame. */
export const FRAME_HEADER_BYTES = 2 + MAC_BYTES;
export const MAX_FRAME_PLAINTEXT = 0xffff;

const iv = Buffer.alloc(12);

/**
 * 32 zero bits then the nonce as a little-endian u64 (nonces here never pass 2^32), in a buffer
 * reused by every call: createCipheriv copies its IV, so each result is used before the next call.
 */
function nonceBytes(nonce: number): Buffer {
  iv.writeUInt32LE(nonce, 4);
  return iv;
}

/** RFC 5869 with an empty info: the two 32-byte halves of the 64-byte output. */
export function hkdf(salt: Buffer, ikm: Buffer): [Buffer, Buffer] {
  const okm = Buffer.from(hkdfSync('sha256', ikm, salt, EMPTY, 64));
  return [okm.subarray(0, 32), okm.subarray(32)];
}

/** Ciphertext then the 16-byte MAC. */
export function encryptWithAd(key: Buffer, nonce: number, ad: Buffer, plaintext: Buffer): Buffer {
  const cipher = createCipheriv(ALGORITHM, key, nonceBytes(nonce), AEAD_OPTIONS);
  cipher.setAAD(ad, { plaintextLength: plaintext.length });
  const body = cipher.update(plaintext);
  cipher.final();
  return Buffer.concat([body, cipher.getAuthTag()]);
}

/** The plaintext, or null if the MAC does not match (or the input is shorter than a MAC). */
export function decryptWithAd(key: Buffer, nonce: number, ad: Buffer, ciphertext: Buffer): Buffer | null {
  if (ciphertext.length < MAC_BYTES) return null;
  const split = ciphertext.length - MAC_BYTES;
  const decipher = createDecipheriv(ALGORITHM, key, nonceBytes(nonce), AEAD_OPTIONS);
  decipher.setAAD(ad, { plaintextLength: split });
  decipher.setAuthTag(ciphertext.subarray(split));
  const plaintext = decipher.update(ciphertext.subarray(0, split));
  try {
    decipher.final();
  } catch {
    return null;
  }
  return plaintext;
}

/** The bytes a frame with this much plaintext takes on the wire. */
export function frameBytes(plaintextLength: number): number {
  return FRAME_HEADER_BYTES + plaintextLength + MAC_BYTES;
}

export class CipherState {
  private nonce = 0;

  /** `chainingKey` is the ck at the end of act three, the salt of this direction's rotations. */
  constructor(
    private key: Buffer,
    private chainingKey: Buffer,
  ) {}

  private advance(): void {
    this.nonce += 1;
    if (this.nonce === ROTATE_AT_NONCE) {
      [this.chainingKey, this.key] = hkdf(this.chainingKey, this.key);
      this.nonce = 0;
    }
  }

  /** Encrypts the concatenation of `parts` (no AD) into `out` at `offset`, MAC last; returns the end offset. */
  private sealInto(parts: readonly Buffer[], out: Buffer, offset: number): number {
    const cipher = createCipheriv(ALGORITHM, this.key, nonceBytes(this.nonce), AEAD_OPTIONS);
    let at = offset;
    for (const part of parts) at += cipher.update(part).copy(out, at);
    cipher.final();
    at += cipher.getAuthTag().copy(out, at);
    this.advance();
    return at;
  }

  /**
   * Writes one frame whose plaintext is the concatenation of `parts` (`length` bytes in all, at
   * most 65535) into `out` at `offset`, which must have frameBytes(length) bytes free; returns
   * the end offset.
   */
  writeFrame(parts: readonly Buffer[], length: number, out: Buffer, offset: number): number {
    if (length > MAX_FRAME_PLAINTEXT) throw new RangeError(`a frame carries at most ${MAX_FRAME_PLAINTEXT} bytes, got ${length}`);
    const prefix = Buffer.allocUnsafe(2);
    prefix.writeUInt16BE(length);
    return this.sealInto(parts, out, this.sealInto([prefix], out, offset));
  }

  /** One frame carrying `plaintext`, in a buffer of its own. */
  encryptFrame(plaintext: Buffer): Buffer {
    const out = Buffer.allocUnsafe(frameBytes(plaintext.length));
    this.writeFrame([plaintext], plaintext.length, out, 0);
    return out;
  }

  /** The body length from a frame's 18-byte header, or null on a bad MAC. */
  openLength(header: Buffer): number | null {
    const prefix = decryptWithAd(this.key, this.nonce, EMPTY, header);
    if (prefix === null) return null;
    this.advance();
    return prefix.readUInt16BE();
  }

  /** The plaintext of a frame's body (ciphertext and MAC), or null on a bad MAC. */
  openBody(body: Buffer): Buffer | null {
    const plaintext = decryptWithAd(this.key, this.nonce, EMPTY, body);
    if (plaintext !== null) this.advance();
    return plaintext;
  }
}
