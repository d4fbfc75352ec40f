// What the server-side torture tests check: a server's copy of a node's vault. The file store keeps
// each vault as a vault folder (<data>/vaults/<id>: segments/ in the vault format, VAULT.json as the
// node sent it, sealed since servers get the identity sealed), so its records are compared record
// by record with the node's own vault, and it is restored read-only through a view (the node's
// VAULT.json beside a link to the server's segments). Also: a port for servers that restart on the
// same address, and the first versions of a trace as a plain file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import zlib from 'node:zlib';
import { VAULTS_DIR } from '../../src/server/storage/fileStore.js';
import { identityPath } from '../../src/vault/identity.js';
import { openSealedIdentity } from '../../src/vault/identityEnvelope.js';
import type { VaultKeys } from '../../src/vault/keys.js';
import { readRawRecords, type RawRecord } from '../../src/vault/rawRecords.js';
import { segmentsDir } from '../../src/vault/segments.js';
import { tracePath } from './paths.js';

/** Where the server's file store keeps a vault. */
export function serverVaultDir(dataDir: string, vaultId: string): string {
  return path.join(dataDir, VAULTS_DIR, vaultId);
}

/**
 * A vault folder through which a server's copy is read without touching it: the identity the
 * server holds (unsealed with the node's key when sealed) and a symbolic link to its segments.
 */
export function serverCopyView(serverDir: string, keys: VaultKeys, vaultId: string, viewDir: string): string {
  fs.rmSync(viewDir, { recursive: true, force: true });
  fs.mkdirSync(viewDir, { recursive: true });
  const held = fs.readFileSync(identityPath(serverDir));
  const parsed = JSON.parse(held.toString('utf8')) as { kind?: unknown };
  const identity = typeof parsed.kind === 'string' ? openSealedIdentity(keys, vaultId, held) : held;
  fs.writeFileSync(identityPath(viewDir), identity);
  fs.symlinkSync(segmentsDir(serverDir), segmentsDir(viewDir), 'dir');
  return viewDir;
}

/** Every whole record of a vault folder, in order (a torn record at the very end is left out). */
export function allRecords(vaultDir: string): RawRecord[] {
  return readRawRecords(vaultDir, 1n, Number.MAX_SAFE_INTEGER);
}

/**
 * Checks that the server's records are the node's records byte for byte from record 1 on, no gap,
 * no duplicate: all of them (`whole`), or a prefix (a server killed, or still behind). Returns how
 * many records and bytes the server holds.
 */
export function assertServerHoldsPrefix(localDir: string, serverDir: string, whole: boolean, ctx = ''): { records: number; bytes: number } {
  const local = allRecords(localDir);
  const remote = allRecords(serverDir);
  const at = ctx ? `${ctx}: ` : '';
  if (whole) assert.equal(remote.length, local.length, `${at}the server holds ${remote.length} records, the local vault ${local.length}`);
  else assert.ok(remote.length <= local.length, `${at}the server holds ${remote.length} records, more than the local vault's ${local.length}`);
  let bytes = 0;
  for (let i = 0; i < remote.length; i++) {
    const want = BigInt(i + 1);
    if (remote[i].seq !== want) assert.fail(`${at}the server's record #${i + 1} is seq ${remote[i].seq}, expected ${want} (a gap or a duplicate)`);
    if (local[i].seq !== want) assert.fail(`${at}the local vault's record #${i + 1} is seq ${local[i].seq}`);
    if (!remote[i].bytes.equals(local[i].bytes)) assert.fail(`${at}record ${want} differs between the server and the local vault`);
    if (remote[i].generation !== local[i].generation) {
      assert.fail(`${at}record ${want} is in generation ${remote[i].generation} on the server, ${local[i].generation} locally`);
    }
    bytes += remote[i].bytes.length;
  }
  return { records: remote.length, bytes };
}

/**
 * A port free right now, outside the kernel's ephemeral range (32768 and up), so that no outgoing
 * connection takes it while the server that owns it is down between a kill and its restart.
 */
export async function fixedPort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port found between 20000 and 32000');
}

/** A trace's entries up to data_version `maxVersion`, as a plain .jsonl file in `dir` (parsed fast by each lifetime). */
export function traceHead(dir: string, name: string, maxVersion: number): string {
  const lines = zlib.gunzipSync(fs.readFileSync(tracePath(name))).toString('utf8').split('\n');
  const kept: string[] = [];
  for (const line of lines) {
    if (line.trim() === '') continue;
    const obj = JSON.parse(line) as { data_version?: number };
    if (obj.data_version !== undefined && obj.data_version > maxVersion) break;
    kept.push(line);
  }
  const file = path.join(dir, `${path.basename(name, '.jsonl.gz')}-first-${maxVersion}.jsonl`);
  fs.writeFileSync(file, kept.join('\n') + '\n');
  return file;
}
