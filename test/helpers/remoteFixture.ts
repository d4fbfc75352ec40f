// What the tests of the node's side of a server share: numbered scratch folders, an in-process
// BackupServer on 127.0.0.1, a RemoteDestination for a local vault that records its notices, and
// the check that a server's copy holds the local vault's records byte for byte.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { RemoteDestination, type NoticeLevel, type RemoteOptions } from '../../src/destinations/remote.js';
import { BackupServer, type RunningServer, type ServerOptions } from '../../src/server/server.js';
import type { VaultKeys } from '../../src/vault/keys.js';
import { readRawRecords } from '../../src/vault/rawRecords.js';
import { identityPath } from '../../src/vault/identity.js';
import { tempDir } from './paths.js';
import { serverVaultDir as vaultFolder } from './serverCopy.js';

export interface Notice {
  readonly level: NoticeLevel;
  readonly message: string;
}

/** A function that makes a new, numbered folder under one temporary root named `prefix`. */
export function folderMaker(prefix: string): (name: string) => string {
  const root = tempDir(prefix);
  let made = 0;
  return (name) => {
    const dir = path.join(root, `${name}-${++made}`);
    fs.mkdirSync(dir);
    return dir;
  };
}

export function startServer(dataDir: string, extra: Partial<ServerOptions> = {}): Promise<RunningServer> {
  return BackupServer.start({ host: '127.0.0.1', port: 0, dataDir, allow: 'open', ...extra });
}

/** A local vault as a RemoteDestination needs it. */
export interface RemoteVault {
  readonly dir: string;
  readonly identityBytes: Buffer;
  readonly vaultId: Buffer;
  readonly keys: VaultKeys;
}

export function remoteFor(v: RemoteVault, url: string, notices: Notice[], extra: Partial<RemoteOptions> = {}): RemoteDestination {
  return new RemoteDestination({
    url,
    vaultDir: v.dir,
    identity: v.identityBytes,
    vaultId: v.vaultId,
    keys: v.keys,
    onNotice: (level, message) => notices.push({ level, message }),
    ...extra,
  });
}

/** A RemoteDestination for a test node's vault (set up by initNode), its notices as `level: message`. */
export function remoteForNode(
  node: { readonly vault: string; readonly vaultId: string; readonly keys: VaultKeys },
  url: string,
  notices: string[],
): RemoteDestination {
  const v = { dir: node.vault, identityBytes: fs.readFileSync(identityPath(node.vault)), vaultId: Buffer.from(node.vaultId, 'hex'), keys: node.keys };
  return remoteFor(v, url, [], { onNotice: (level, message) => notices.push(`${level}: ${message}`) });
}

/** Where the file store keeps a vault (that exists; helpers/serverCopy.ts). */
export function serverVaultDir(dataDir: string, vaultId: Buffer): string {
  return vaultFolder(dataDir, vaultId.toString('hex'));
}

/** The server's copy holds exactly the local vault's records (the kept ones), byte for byte. */
export function assertSameRecords(localDir: string, serverDir: string): void {
  const local = readRawRecords(localDir, 0n, Number.MAX_SAFE_INTEGER);
  const remote = readRawRecords(serverDir, 0n, Number.MAX_SAFE_INTEGER);
  assert.equal(remote.length, local.length, `the server holds ${remote.length} records, the local vault ${local.length}`);
  for (let i = 0; i < local.length; i++) {
    assert.equal(remote[i].seq, local[i].seq, 'no gap, no duplicate');
    assert.ok(remote[i].bytes.equals(local[i].bytes), `record ${local[i].seq} differs`);
    assert.equal(remote[i].generation, local[i].generation);
  }
}
