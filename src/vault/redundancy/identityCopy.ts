// VAULT.json's protection (docs/FORMAT.md, "Redundancy"): a second copy, VAULT.json.copy, written
// when the identity is, holding a line with the SHA-256 of the identity's bytes and then those very
// bytes. Whichever of VAULT.json and the copy's bytes matches that hash is good; when the hash line
// is damaged, two equal copies are both good.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { readBoundedFile, writeFileAtomic } from '../../util/durableFs.js';
import { IDENTITY_FILE, MAX_IDENTITY_BYTES } from '../format.js';

export const IDENTITY_COPY_NAME = 'VAULT.json.copy';
const COPY_TAG = 'lnbackup-identity-copy v1 sha256=';

export function identityCopyBytes(identity: Buffer): Buffer {
  const sha = crypto.createHash('sha256').update(identity).digest('hex');
  return Buffer.concat([Buffer.from(`${COPY_TAG}${sha}\n`, 'latin1'), identity]);
}

/** Writes VAULT.json.copy for the identity bytes (atomically, durably). */
export function writeIdentityCopy(vaultDir: string, identity: Buffer, mode = 0o644): void {
  writeFileAtomic(path.join(vaultDir, IDENTITY_COPY_NAME), identityCopyBytes(identity), mode);
}

export interface IdentityCheck {
  /** The good identity bytes, when known. */
  readonly good: Buffer | null;
  readonly identityOk: boolean;
  /** The copy exists and is exactly right. */
  readonly copyOk: boolean;
  readonly problems: string[];
}

function readMaybe(file: string): Buffer | null {
  try {
    return readBoundedFile(file, MAX_IDENTITY_BYTES);
  } catch {
    return null;
  }
}

/** Compares VAULT.json with its copy and says which bytes are good. */
export function checkIdentity(vaultDir: string): IdentityCheck {
  const id = readMaybe(path.join(vaultDir, IDENTITY_FILE));
  const copyFile = readMaybe(path.join(vaultDir, IDENTITY_COPY_NAME));
  const problems: string[] = [];
  if (copyFile === null) {
    if (id === null)
      return { good: null, identityOk: false, copyOk: false, problems: [`${IDENTITY_FILE} and ${IDENTITY_COPY_NAME} are both missing or unreadable`] };
    problems.push(`${IDENTITY_COPY_NAME} is missing`);
    return { good: id, identityOk: true, copyOk: false, problems };
  }
  // The hash line has a fixed length, so the copied bytes start at a fixed offset: a flipped bit in
  // its newline (the identity itself holds newlines) must not move where they are read from.
  const lineBytes = COPY_TAG.length + 64 + 1;
  const line = copyFile.subarray(0, lineBytes).toString('latin1');
  const sha = line.startsWith(COPY_TAG) && /^[0-9a-f]{64}\n$/.test(line.slice(COPY_TAG.length)) ? line.slice(COPY_TAG.length, -1) : null;
  const copied = copyFile.length >= lineBytes ? copyFile.subarray(lineBytes) : null;
  const hash = (b: Buffer | null): string | null => (b === null ? null : crypto.createHash('sha256').update(b).digest('hex'));
  const idGood = id !== null && sha !== null && hash(id) === sha;
  const copyGood = copied !== null && sha !== null && hash(copied) === sha;
  if (idGood && copyGood) return { good: id, identityOk: true, copyOk: true, problems };
  if (idGood) {
    problems.push(`${IDENTITY_COPY_NAME} is damaged`);
    return { good: id, identityOk: true, copyOk: false, problems };
  }
  if (copyGood) {
    problems.push(id === null ? `${IDENTITY_FILE} is missing` : `${IDENTITY_FILE} is damaged (it does not match the SHA-256 kept in ${IDENTITY_COPY_NAME})`);
    return { good: copied, identityOk: false, copyOk: true, problems };
  }
  // The hash line is damaged: two equal copies are both right.
  if (id !== null && copied !== null && id.equals(copied)) {
    problems.push(`${IDENTITY_COPY_NAME}'s checksum line is damaged`);
    return { good: id, identityOk: true, copyOk: false, problems };
  }
  problems.push(`${IDENTITY_FILE} and ${IDENTITY_COPY_NAME} disagree and neither matches the checksum: the identity cannot be told good`);
  return { good: null, identityOk: false, copyOk: false, problems };
}

/** True when VAULT.json exists; the copy is judged by checkIdentity. */
export function hasIdentity(vaultDir: string): boolean {
  return fs.existsSync(path.join(vaultDir, IDENTITY_FILE)) || fs.existsSync(path.join(vaultDir, IDENTITY_COPY_NAME));
}
