// Vault ids are scoped by owner: a client names its vaults by the node's own vault ids, and two
// keys can hold the same id without seeing each other (no squatting, no existence oracle). The
// first key to create an id holds it under that very id (so every vault stored before ids were
// scoped is where it was, and an operator sees the node's own id); any other key's vault of that id
// is stored under SHA-256("lnbackup/vault-scope" || owner key || vault id)[0..16]. The node's id is
// kept in clear in each vault's identity envelope (src/vault/identityEnvelope.ts), which is how a
// listing names the vault as its owner knows it.
import { createHash } from 'node:crypto';

const SCOPE_TAG = Buffer.from('lnbackup/vault-scope', 'ascii');
const HEX_ID = /^[0-9a-f]{32}$/;

/** Where `owner` (66 hex) keeps its vault `vaultId` (32 hex) when another key holds that id. */
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
