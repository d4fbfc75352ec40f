// The vault identity file (VAULT.json): which node the vault belongs to, its random id, layout
// parameters, and a key check (HMAC under a key derived from the root key), so a wrong key or a
// foreign vault is refused before any record is read, and an edited identity is noticed.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { readBoundedFile, writeFileAtomic } from '../util/durableFs.js';
import { VaultError, WrongKeyError } from './errors.js';
import { FORMAT_VERSION, IDENTITY_FILE, MAX_IDENTITY_BYTES, VAULT_ID_BYTES } from './format.js';
import type { VaultKeys } from './keys.js';
import { writeIdentityCopy } from './redundancy/identityCopy.js';

// Defined in format.ts; named here too for the modules that read the identity file by name.
export { IDENTITY_FILE } from './format.js';
export const DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024;

export interface VaultIdentity {
  readonly format: 'lnbackup-vault';
  readonly formatVersion: number;
  readonly vaultId: string;
  readonly nodeId: string | null;
  readonly createdAt: string;
  readonly segmentBytes: number;
  readonly keyCheck: string;
}

type Unchecked = Omit<VaultIdentity, 'keyCheck'>;

function keyCheck(keys: VaultKeys, id: Unchecked): string {
  const canonical = JSON.stringify([id.format, id.formatVersion, id.vaultId, id.nodeId, id.createdAt, id.segmentBytes]);
  return crypto.createHmac('sha256', keys.identity).update(canonical).digest('hex');
}

export function vaultIdBytes(id: VaultIdentity): Buffer {
  return Buffer.from(id.vaultId, 'hex');
}

export function identityPath(vaultDir: string): string {
  return path.join(vaultDir, IDENTITY_FILE);
}

export function vaultExists(vaultDir: string): boolean {
  return fs.existsSync(identityPath(vaultDir));
}

export function createIdentity(vaultDir: string, keys: VaultKeys, nodeId: string | null, segmentBytes = DEFAULT_SEGMENT_BYTES): VaultIdentity {
  const base: Unchecked = {
    format: 'lnbackup-vault',
    formatVersion: FORMAT_VERSION,
    vaultId: crypto.randomBytes(VAULT_ID_BYTES).toString('hex'),
    nodeId,
    createdAt: new Date().toISOString(),
    segmentBytes,
  };
  const id: VaultIdentity = { ...base, keyCheck: keyCheck(keys, base) };
  const bytes = Buffer.from(JSON.stringify(id, null, 2) + '\n', 'utf8');
  writeFileAtomic(identityPath(vaultDir), bytes, 0o644);
  // The second copy (docs/FORMAT.md, "Redundancy"): `lnbackup scrub --repair` restores VAULT.json from it.
  writeIdentityCopy(vaultDir, bytes);
  return id;
}

/**
 * Reads the identity without a key (status); shape-checked. `bytes`: the identity's bytes known
 * good from elsewhere (VAULT.json.copy, when VAULT.json is damaged: redundancy/identityCopy.ts).
 */
export function readIdentity(vaultDir: string, bytes?: Buffer): VaultIdentity {
  const file = identityPath(vaultDir);
  if (bytes === undefined && !fs.existsSync(file)) {
    throw new VaultError(`${vaultDir} is not an lnbackup vault (no ${IDENTITY_FILE}); create one with 'lnbackup init'`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse((bytes ?? readBoundedFile(file, MAX_IDENTITY_BYTES)).toString('utf8'));
  } catch (err) {
    throw new VaultError(`${file} is unreadable or not JSON (${(err as Error).message}); the vault identity is damaged`);
  }
  const r = raw as Record<string, unknown>;
  const ok =
    r.format === 'lnbackup-vault' &&
    typeof r.formatVersion === 'number' &&
    typeof r.vaultId === 'string' &&
    /^[0-9a-f]{32}$/.test(r.vaultId) &&
    (r.nodeId === null || (typeof r.nodeId === 'string' && /^0[23][0-9a-f]{64}$/.test(r.nodeId))) &&
    typeof r.createdAt === 'string' &&
    typeof r.segmentBytes === 'number' &&
    Number.isInteger(r.segmentBytes) &&
    r.segmentBytes >= 4096 &&
    r.segmentBytes <= 1 << 30 &&
    typeof r.keyCheck === 'string';
  if (!ok) throw new VaultError(`${file} does not describe an lnbackup vault; the vault identity is damaged`);
  if (r.formatVersion !== FORMAT_VERSION) {
    throw new VaultError(`vault format version ${String(r.formatVersion)} is not supported by this lnbackup (it reads ${FORMAT_VERSION}); upgrade lnbackup`);
  }
  return raw as VaultIdentity;
}

/** Reads the identity (from `bytes` when given, as readIdentity) and proves the key belongs to it. */
export function openIdentity(vaultDir: string, keys: VaultKeys, bytes?: Buffer): VaultIdentity {
  const id = readIdentity(vaultDir, bytes);
  const expected = Buffer.from(keyCheck(keys, id), 'hex');
  const actual = Buffer.from(id.keyCheck, 'hex');
  if (actual.length !== expected.length || !crypto.timingSafeEqual(actual, expected)) {
    const who = id.nodeId ? `node ${id.nodeId}` : 'another key';
    throw new WrongKeyError(
      `the key does not open the vault at ${vaultDir} (it belongs to ${who}). ` +
        "Use that node's hsm_secret or key file; if VAULT.json was edited, restore it from a copy.",
    );
  }
  return id;
}
