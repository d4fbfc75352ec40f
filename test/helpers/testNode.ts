// Throwaway Core Lightning node directories for tests: <tmp>/node/regtest with a random legacy
// hsm_secret and a vault path beside it (`makeTestNode`), optionally already set up for lnbackup
// by `initNode` with the vault keys at hand (`makeNode`).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { initNode } from '../../src/cli/initNode.js';
import { loadKeys } from '../../src/cli/keyOptions.js';
import type { VaultKeys } from '../../src/vault/keys.js';
import { tempDir } from './paths.js';

export interface TestNode {
  readonly dir: string;
  readonly lightningDir: string;
  readonly networkDir: string;
  readonly hsmSecretPath: string;
  readonly vault: string;
  /** Where lightningd's database is (none exists until the simulator or a test writes one). */
  readonly dbPath: string;
}

/** A node directory with a legacy hsm_secret (default: 32 random bytes); nothing set up yet. */
export function makeTestNode(prefix: string, hsmSecret: Buffer = crypto.randomBytes(32)): TestNode {
  const dir = tempDir(prefix);
  const lightningDir = path.join(dir, 'node');
  const networkDir = path.join(lightningDir, 'regtest');
  fs.mkdirSync(networkDir, { recursive: true });
  const hsmSecretPath = path.join(networkDir, 'hsm_secret');
  fs.writeFileSync(hsmSecretPath, hsmSecret, { mode: 0o400 });
  return { dir, lightningDir, networkDir, hsmSecretPath, vault: path.join(dir, 'vault'), dbPath: path.join(networkDir, 'lightningd.sqlite3') };
}

/** A test node set up for lnbackup, with its vault keys. */
export interface VaultNode extends TestNode {
  readonly keys: VaultKeys;
  readonly nodeId: string | null;
  readonly vaultId: string;
}

export interface MakeNodeOptions {
  /** The vault's segment size (default: lnbackup's). */
  readonly segmentBytes?: number;
  /** The hsm_secret to use (default: 32 random bytes). */
  readonly hsmSecret?: Buffer;
}

/** A `makeTestNode` directory and a vault made by `initNode` (generation 1 at the database's version, 0 when it has none). */
export function makeNode(prefix: string, options: MakeNodeOptions = {}): VaultNode {
  const node = makeTestNode(prefix, options.hsmSecret);
  const { keys, nodeId } = loadKeys({ hsmSecret: node.hsmSecretPath });
  const r = initNode({ lightningDir: node.lightningDir, network: 'regtest', vault: node.vault, segmentBytes: options.segmentBytes });
  return { ...node, keys, nodeId, vaultId: r.vaultId };
}
