// Vault ids are scoped by owner: a client names its vaults by the node's own vault ids, and two
// keys can hold the same id without seeing each other (no squatting, no existence oracle). Every
// vault is stored under SHA-256("lnbackup/vault-scope" || owner key || vault id)[0..16], an id no
// other key can be given; a vault stored by an earlier version, under the node's plain id, stays
// there and is found there (by its owner only), so nothing moves when a server starts. The node's
// id is kept in clear in each vault's identity envelope (src/vault/identityEnvelope.ts), which is
// how listings and status name a vault as its owner knows it.
import { createHash } from 'node:crypto';

const SCOPE_TAG = Buffer.from('lnbackup/vault-scope', 'ascii');
const HEX_ID = /^[0-9a-f]{32}$/;

/** Where `owner` (66 hex) keeps its vault `vaultId` (32 hex). */
export function scopedVaultId(owner: string, vaultId: string): string {
  return createHash('sha256').update(SCOPE_TAG).update(Buffer.from(owner, 'hex')).update(Buffer.from(vaultId, 'hex')).digest().subarray(0, 16).toString('hex');
}

/** The node's vault id named in clear in an identity envelope, or null when it names none. */
export function envelopeVaultId(identity: Buffer): string | null {
  try {
    const parsed = JSON.parse(identity.toString('utf8')) as { vaultId?: unknown } | null;
    return typeof parsed?.vaultId === 'string' && HEX_ID.test(parsed.vaultId) ? parsed.vaultId : null;
  } catch {
    return null;
  }
}
