// The vault's working keys, derived with HKDF-SHA256 from the root key (the node's
// `makesecret string=lnbackup`, or a key file holding it). One root, separate keys per purpose.
import crypto from 'node:crypto';

export interface VaultKeys {
  /** Seals records (XChaCha20-Poly1305). */
  readonly record: Buffer;
  /** Authenticates the vault identity file (HMAC-SHA256). */
  readonly identity: Buffer;
  /** Seed of the node's transport key (its static BOLT #8 key towards servers). */
  readonly transport: Buffer;
  /** Keys the content addresses of database pages (HMAC-SHA256), so storage learns nothing from them. */
  readonly page: Buffer;
}

function derive(root: Buffer, purpose: string): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', root, Buffer.alloc(0), `lnbackup v1 ${purpose}`, 32));
}

export function vaultKeysFromRoot(root: Buffer): VaultKeys {
  if (root.length !== 32) throw new Error('the root key must be 32 bytes');
  return { record: derive(root, 'record'), identity: derive(root, 'identity'), transport: derive(root, 'transport'), page: derive(root, 'page') };
}
