// The server's static transport key: <data>/server.key, 32 random bytes (mode 0600), created at the
// first start and read at every later one. Its public key is what nodes pin in the server's URL
// (lnbackup://<public key>@host:port), so losing or replacing this file changes the server's identity.
import fs from 'node:fs';
import path from 'node:path';
import { readBoundedFile, writeFileAtomic } from '../util/durableFs.js';
import { generatePrivateKey, publicKeyOf } from '../transport/keys.js';

export const SERVER_KEY_FILE = 'server.key';

export interface ServerKey {
  readonly privateKey: Buffer;
  readonly publicKey: Buffer;
  readonly file: string;
  /** True when this call made the key (first start). */
  readonly created: boolean;
  /** Something the operator should fix (a key file others can read). */
  readonly warnings: readonly string[];
}

export function loadOrCreateServerKey(dataDir: string): ServerKey {
  const file = path.join(dataDir, SERVER_KEY_FILE);
  if (!fs.existsSync(file)) {
    const privateKey = generatePrivateKey();
    writeFileAtomic(file, privateKey, 0o600);
    return { privateKey, publicKey: publicKeyOf(privateKey), file, created: true, warnings: [] };
  }
  const privateKey = readBoundedFile(file, 32);
  if (privateKey.length !== 32) {
    throw new Error(
      `${file} is ${privateKey.length} bytes, not the 32 of a server key: it is damaged. Restore it from a copy (nodes pin its public key), or move it away to make a new key (every node must then be given the new URL).`,
    );
  }
  let publicKey: Buffer;
  try {
    publicKey = publicKeyOf(privateKey);
  } catch {
    throw new Error(
      `${file} does not hold a valid secp256k1 private key: it is damaged. Restore it from a copy, or move it away to make a new key (every node must then be given the new URL).`,
    );
  }
  const warnings: string[] = [];
  const mode = fs.statSync(file).mode & 0o777;
  if (mode & 0o077) warnings.push(`${file} can be read by other users (mode ${mode.toString(8)}); run: chmod 600 ${file}`);
  return { privateKey, publicKey, file, created: false, warnings };
}
