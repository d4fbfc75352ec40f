// BOLT #8's Noise_XK_secp256k1_ChaChaPoly_SHA256 handshake as two pure state machines, with no
// I/O: Initiator (knows the responder's static key in advance) and Responder (learns the
// initiator's in act three). Ephemeral keys can be injected, for the specification's test vectors.
import { createHash } from 'node:crypto';
import { decryptWithAd, encryptWithAd, hkdf } from './cipher.js';
import { ecdh, generatePrivateKey, isValidPublicKey, publicKeyOf } from './keys.js';

export const ACT_ONE_BYTES = 50;
export const ACT_TWO_BYTES = 50;
export const ACT_THREE_BYTES = 66;

const VERSION = 0;
const EMPTY = Buffer.alloc(0);

function sha256(...parts: Buffer[]): Buffer {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

const INITIAL_CK = sha256(Buffer.from('Noise_XK_secp256k1_ChaChaPoly_SHA256', 'ascii'));
const INITIAL_H = sha256(INITIAL_CK, Buffer.from('lightning', 'ascii'));

export class HandshakeError extends Error {}

/**
 * lnbackup's one addition to BOLT #8 (docs/PROTOCOL.md, "Transport"): a responder that takes no
 * more connections answers act one with a refusal of act two's size instead of act two: version
 * byte 255 (which any BOLT #8 initiator rejects), the ASCII tag, and a reason code, zero-padded. It
 * costs the responder no key operation and tells the initiator why, instead of a bare close.
 */
const REFUSAL_VERSION = 0xff;
const REFUSAL_TAG = Buffer.from('lnbackup-refused', 'ascii');

export enum HandshakeRefusal {
  /** Every connection slot is taken. */
  ServerFull = 1,
  /** The per-address limit is reached. */
  TooManyFromAddress = 2,
}

export function refusalAct(reason: HandshakeRefusal): Buffer {
  const act = Buffer.alloc(ACT_TWO_BYTES);
  act[0] = REFUSAL_VERSION;
  REFUSAL_TAG.copy(act, 1);
  act[1 + REFUSAL_TAG.length] = reason;
  return act;
}

/** The reason of a refusal received in place of act two, or null when it is not one. */
export function refusalOf(act: Buffer): HandshakeRefusal | null {
  if (act.length !== ACT_TWO_BYTES || act[0] !== REFUSAL_VERSION || !act.subarray(1, 1 + REFUSAL_TAG.length).equals(REFUSAL_TAG)) return null;
  const reason = act[1 + REFUSAL_TAG.length];
  return reason === HandshakeRefusal.ServerFull || reason === HandshakeRefusal.TooManyFromAddress ? reason : null;
}

/** What an established session needs: the keys of both directions and the rotation salt. */
export interface SessionKeys {
  readonly sendKey: Buffer;
  readonly receiveKey: Buffer;
  readonly chainingKey: Buffer;
  readonly remotePublicKey: Buffer;
}

/** h, ck and the current temporary key, shared by both roles. */
class SymmetricState {
  private h: Buffer;
  private ck: Buffer = INITIAL_CK;
  private tempKey: Buffer = EMPTY;

  constructor(responderStaticKey: Buffer) {
    this.h = sha256(INITIAL_H, responderStaticKey);
  }

  mixHash(data: Buffer): void {
    this.h = sha256(this.h, data);
  }

  mixKey(sharedSecret: Buffer): void {
    [this.ck, this.tempKey] = hkdf(this.ck, sharedSecret);
  }

  /** encryptWithAD(temp_k, nonce, h, plaintext), then h = SHA-256(h || c). */
  encryptAndHash(nonce: number, plaintext: Buffer): Buffer {
    const c = encryptWithAd(this.tempKey, nonce, this.h, plaintext);
    this.mixHash(c);
    return c;
  }

  /** decryptWithAD(temp_k, nonce, h, c), then h = SHA-256(h || c); null on a bad MAC. */
  decryptAndHash(nonce: number, c: Buffer): Buffer | null {
    const plaintext = decryptWithAd(this.tempKey, nonce, this.h, c);
    if (plaintext !== null) this.mixHash(c);
    return plaintext;
  }

  /** The final HKDF(ck, zero): [first key, second key, ck]. */
  split(): [Buffer, Buffer, Buffer] {
    const [first, second] = hkdf(this.ck, EMPTY);
    return [first, second, this.ck];
  }
}

function checkLength(act: string, message: Buffer, expected: number): void {
  if (message.length !== expected) throw new HandshakeError(`${act}: expected ${expected} bytes, got ${message.length}`);
}

function checkVersion(act: string, message: Buffer): void {
  if (message[0] !== VERSION) throw new HandshakeError(`${act}: unknown handshake version ${message[0]}`);
}

/** The peer's ephemeral key from act one or two (bytes 1..34), checked to be a valid point. */
function ephemeralOf(act: string, message: Buffer): Buffer {
  const key = Buffer.from(message.subarray(1, 34));
  if (!isValidPublicKey(key)) throw new HandshakeError(`${act}: the ephemeral key is not a valid public key`);
  return key;
}

function ephemeralAct(e: Buffer, c: Buffer): Buffer {
  return Buffer.concat([Buffer.of(VERSION), e, c]);
}

export class Initiator {
  private readonly state: SymmetricState;
  private readonly ephemeralPublicKey: Buffer;
  private step: 'actOne' | 'actTwo' | 'done' = 'actOne';

  constructor(
    private readonly localKey: Buffer,
    private readonly remotePublicKey: Buffer,
    private readonly ephemeralKey: Buffer = generatePrivateKey(),
  ) {
    if (!isValidPublicKey(remotePublicKey)) throw new HandshakeError('the responder key is not a valid public key');
    this.state = new SymmetricState(remotePublicKey);
    this.ephemeralPublicKey = publicKeyOf(ephemeralKey);
  }

  /** `-> e, es`: the 50 bytes to send first. */
  actOne(): Buffer {
    if (this.step !== 'actOne') throw new HandshakeError('act one was already sent');
    this.step = 'actTwo';
    this.state.mixHash(this.ephemeralPublicKey);
    this.state.mixKey(ecdh(this.remotePublicKey, this.ephemeralKey));
    return ephemeralAct(this.ephemeralPublicKey, this.state.encryptAndHash(0, EMPTY));
  }

  /** Reads act two (`<- e, ee`) and returns act three (`-> s, se`) with the session keys. */
  actTwo(message: Buffer): { actThree: Buffer; keys: SessionKeys } {
    if (this.step !== 'actTwo') throw new HandshakeError('act two is not expected now');
    this.step = 'done';
    checkLength('act two', message, ACT_TWO_BYTES);
    checkVersion('act two', message);
    const re = ephemeralOf('act two', message);
    this.state.mixHash(re);
    this.state.mixKey(ecdh(re, this.ephemeralKey));
    if (this.state.decryptAndHash(0, message.subarray(34)) === null) {
      throw new HandshakeError('act two: bad MAC (the responder does not hold the expected key)');
    }
    const c = this.state.encryptAndHash(1, publicKeyOf(this.localKey));
    this.state.mixKey(ecdh(re, this.localKey));
    const t = this.state.encryptAndHash(0, EMPTY);
    const [sendKey, receiveKey, chainingKey] = this.state.split();
    return {
      actThree: Buffer.concat([Buffer.of(VERSION), c, t]),
      keys: { sendKey, receiveKey, chainingKey, remotePublicKey: this.remotePublicKey },
    };
  }
}

export class Responder {
  private readonly state: SymmetricState;
  private readonly ephemeralPublicKey: Buffer;
  private step: 'actOne' | 'actThree' | 'done' = 'actOne';

  constructor(
    private readonly localKey: Buffer,
    private readonly ephemeralKey: Buffer = generatePrivateKey(),
  ) {
    this.state = new SymmetricState(publicKeyOf(localKey));
    this.ephemeralPublicKey = publicKeyOf(ephemeralKey);
  }

  /** Reads act one (`-> e, es`) and returns act two (`<- e, ee`). */
  actOne(message: Buffer): Buffer {
    if (this.step !== 'actOne') throw new HandshakeError('act one is not expected now');
    this.step = 'actThree';
    checkLength('act one', message, ACT_ONE_BYTES);
    checkVersion('act one', message);
    const re = ephemeralOf('act one', message);
    this.state.mixHash(re);
    this.state.mixKey(ecdh(re, this.localKey));
    if (this.state.decryptAndHash(0, message.subarray(34)) === null) {
      throw new HandshakeError("act one: bad MAC (the initiator does not know this node's key)");
    }
    this.state.mixHash(this.ephemeralPublicKey);
    this.state.mixKey(ecdh(re, this.ephemeralKey));
    return ephemeralAct(this.ephemeralPublicKey, this.state.encryptAndHash(0, EMPTY));
  }

  /** Reads act three (`-> s, se`): the session keys, with the initiator's static key. */
  actThree(message: Buffer): SessionKeys {
    if (this.step !== 'actThree') throw new HandshakeError('act three is not expected now');
    this.step = 'done';
    checkLength('act three', message, ACT_THREE_BYTES);
    checkVersion('act three', message);
    const rs = this.state.decryptAndHash(1, message.subarray(1, 50));
    if (rs === null) throw new HandshakeError("act three: bad MAC on the initiator's key");
    if (!isValidPublicKey(rs)) throw new HandshakeError("act three: the initiator's key is not a valid public key");
    this.state.mixKey(ecdh(rs, this.ephemeralKey));
    if (this.state.decryptAndHash(0, message.subarray(50)) === null) throw new HandshakeError('act three: bad MAC');
    const [receiveKey, sendKey, chainingKey] = this.state.split();
    return { sendKey, receiveKey, chainingKey, remotePublicKey: rs };
  }
}
