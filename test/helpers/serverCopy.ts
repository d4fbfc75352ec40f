// What the server-side torture tests check: a server's copy of a node's vault. The file store keeps
// each vault as a vault folder (<data>/vaults/<owner-scoped id>: segments/ in the vault format, VAULT.json as the
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
import { envelopeVaultId, scopedVaultId } from '../../src/server/storage/vaultScope.js';
import { privateKeyFromSeed, publicKeyOf } from '../../src/transport/keys.js';
import { IDENTITY_FILE, identityPath } from '../../src/vault/identity.js';
import { openSealedIdentity } from '../../src/vault/identityEnvelope.js';
import type { VaultKeys } from '../../src/vault/keys.js';
import { listPacks, pagesDir } from '../../src/vault/packFiles.js';
import { readRawRecords, type RawRecord } from '../../src/vault/rawRecords.js';
import { segmentsDir } from '../../src/vault/segments.js';
import { tracePath } from './paths.js';

/**
 * Where the server's file store keeps a vault: with its owner's key, its owner-scoped folder;
 * without, the one folder whose identity names that vault id (the vault must exist then).
 */
export function serverVaultDir(dataDir: string, vaultId: string, owner?: string): string {
  const vaults = path.join(dataDir, VAULTS_DIR);
  if (owner !== undefined) return path.join(vaults, scopedVaultId(owner, vaultId));
  const found = (fs.existsSync(vaults) ? fs.readdirSync(vaults) : []).filter((name) => {
    const file = path.join(vaults, name, IDENTITY_FILE);
    return fs.existsSync(file) && envelopeVaultId(fs.readFileSync(file)) === vaultId;
  });
  if (found.length !== 1) throw new Error(`${vaults} holds ${found.length} vaults of id ${vaultId}, not one`);
  return path.join(vaults, found[0]);
}

/** The server-side owner of a node's vaults: its transport public key. */
export function ownerOf(keys: VaultKeys): string {
  return publicKeyOf(privateKeyFromSeed(keys.transport)).toString('hex');
}

/**
 * A vault folder through which a server's copy is read without touching it: the identity the
 * server holds (unsealed with the node's key when sealed) and symbolic links to its segments and packs.
 */
export function serverCopyView(serverDir: string, keys: VaultKeys, vaultId: string, viewDir: string): string {
  fs.rmSync(viewDir, { recursive: true, force: true });
  fs.mkdirSync(viewDir, { recursive: true });
  const held = fs.readFileSync(identityPath(serverDir));
  const parsed = JSON.parse(held.toString('utf8')) as { kind?: unknown };
  const identity = typeof parsed.kind === 'string' ? openSealedIdentity(keys, vaultId, held) : held;
  fs.writeFileSync(identityPath(viewDir), identity);
  fs.symlinkSync(segmentsDir(serverDir), segmentsDir(viewDir), 'dir');
  // Paged snapshots read their pages from the server's packs.
  if (fs.existsSync(pagesDir(serverDir))) fs.symlinkSync(pagesDir(serverDir), pagesDir(viewDir), 'dir');
  return viewDir;
}

/** Every whole record of a vault folder, in order (a torn record at the very end is left out). */
export function allRecords(vaultDir: string): RawRecord[] {
  return readRawRecords(vaultDir, 1n, Number.MAX_SAFE_INTEGER);
}

/**
 * Checks that the server's records are the node's records byte for byte, no gap, no duplicate: all
 * of them (`whole`: the server ends where the local vault ends), or a prefix (a server killed, or
 * still behind). Retention removes whole old generations from the front of each copy, not at the
 * same moment: a copy may start after record 1, but only at the first record of a generation, and
 * records held by one copy only at the front are not compared. The server's page packs are the
 * node's (where the node still has them). Returns the server's records (counted up to its last
 * seq, removed ones included, so the figure never goes down) and the bytes it holds (records and
 * packs).
 */
export function assertServerHoldsPrefix(localDir: string, serverDir: string, whole: boolean, ctx = ''): { records: number; bytes: number } {
  const local = allRecords(localDir);
  const remote = allRecords(serverDir);
  const at = ctx ? `${ctx}: ` : '';
  const contiguous = (list: readonly RawRecord[], what: string): void => {
    for (let i = 1; i < list.length; i++) {
      if (list[i].seq !== list[i - 1].seq + 1n) assert.fail(`${at}${what} record after ${list[i - 1].seq} is seq ${list[i].seq} (a gap or a duplicate)`);
    }
  };
  contiguous(local, "the local vault's");
  contiguous(remote, "the server's");
  const localFirst = local[0]?.seq ?? 1n;
  const localLast = local[local.length - 1]?.seq ?? 0n;
  const remoteLast = remote[remote.length - 1]?.seq ?? 0n;
  if (whole) assert.equal(remoteLast, localLast, `${at}the server holds records up to ${remoteLast}, the local vault up to ${localLast}`);
  else assert.ok(remoteLast <= localLast, `${at}the server holds records up to ${remoteLast}, beyond the local vault's ${localLast}`);
  const localAt = (seq: bigint): RawRecord | undefined => (seq >= localFirst && seq <= localLast ? local[Number(seq - localFirst)] : undefined);
  if (remote.length > 0 && remote[0].seq !== 1n) {
    const before = localAt(remote[0].seq - 1n);
    if (before && before.generation >= remote[0].generation) {
      assert.fail(`${at}the server's copy starts at record ${remote[0].seq}, inside generation ${remote[0].generation} (not at its first record)`);
    }
  }
  let bytes = 0;
  for (const r of remote) {
    bytes += r.bytes.length;
    const mine = localAt(r.seq);
    if (!mine) {
      if (r.seq < localFirst) continue; // the node's retention removed it already
      assert.fail(`${at}the server holds record ${r.seq}, which the local vault does not`);
    }
    if (!r.bytes.equals(mine.bytes)) assert.fail(`${at}record ${r.seq} differs between the server and the local vault`);
    if (r.generation !== mine.generation) assert.fail(`${at}record ${r.seq} is in generation ${r.generation} on the server, ${mine.generation} locally`);
  }
  const localPacks = new Map(listPacks(localDir).map((p) => [p.name, p]));
  for (const p of listPacks(serverDir)) {
    const mine = localPacks.get(p.name);
    if (mine && !fs.readFileSync(p.path).equals(fs.readFileSync(mine.path)))
      assert.fail(`${at}page pack ${p.name} differs between the server and the local vault`);
    bytes += p.bytes;
  }
  return { records: Number(remoteLast), bytes };
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
  const lines = zlib
    .gunzipSync(fs.readFileSync(tracePath(name)))
    .toString('utf8')
    .split('\n');
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
