// What a server keeps of a vault's identity file: its format and vault id in clear (the server
// checks them), everything else (the node id, the creation time, the key check) sealed under a key
// derived from the vault's identity key. The sealing is deterministic (the nonce is a keyed hash of
// the contents), so the node sends the same bytes on every connection and the server can compare
// them, and the server learns nothing about which node it serves.
import crypto from 'node:crypto';
import { open, seal, NONCE_BYTES } from './aead.js';
import { WrongKeyError } from './errors.js';
import type { VaultKeys } from './keys.js';

const ENVELOPE_FORMAT = 'lnbackup-vault';
const KIND = 'sealed-identity-v1';

interface Envelope {
  readonly format: string;
  readonly kind: string;
  readonly vaultId: string;
  readonly sealed: string;
}

function envelopeKey(keys: VaultKeys): Buffer {
  return crypto.createHmac('sha256', keys.identity).update('lnbackup identity envelope key').digest();
}

/** The envelope for a vault's VAULT.json bytes. */
export function sealIdentity(keys: VaultKeys, vaultId: string, vaultJson: Buffer): Buffer {
  const key = envelopeKey(keys);
  const nonce = crypto.createHmac('sha256', key).update(vaultJson).digest().subarray(0, NONCE_BYTES);
  const aad = Buffer.from(`${KIND}:${vaultId}`, 'utf8');
  const sealed = seal(key, nonce, aad, [vaultJson], nonce);
  const envelope: Envelope = { format: ENVELOPE_FORMAT, kind: KIND, vaultId, sealed: sealed.toString('base64') };
  return Buffer.from(JSON.stringify(envelope), 'utf8');
}

/** The VAULT.json bytes inside an envelope; WrongKeyError when it is not this key's (or was altered). */
export function openSealedIdentity(keys: VaultKeys, vaultId: string, bytes: Buffer): Buffer {
  let e: Partial<Envelope>;
  try {
    e = JSON.parse(bytes.toString('utf8')) as Partial<Envelope>;
  } catch {
    throw new WrongKeyError('the vault identity the server holds is not readable');
  }
  if (e.format !== ENVELOPE_FORMAT || e.kind !== KIND || e.vaultId !== vaultId || typeof e.sealed !== 'string') {
    throw new WrongKeyError(`the vault identity the server holds is not a sealed identity of vault ${vaultId}`);
  }
  const sealed = Buffer.from(e.sealed, 'base64');
  const plain = open(envelopeKey(keys), sealed.subarray(0, NONCE_BYTES), Buffer.from(`${KIND}:${vaultId}`, 'utf8'), sealed.subarray(NONCE_BYTES));
  if (plain === null)
    throw new WrongKeyError(
      `the vault identity the server holds for vault ${vaultId} does not open with this key: it belongs to another node, or it was altered`,
    );
  return plain;
}
