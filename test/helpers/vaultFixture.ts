// Vaults made in-process without lightningd, for the vault, journal and corruption tests: a node
// directory with a random legacy hsm_secret, `initNode` (generation 1 from an empty snapshot), a
// Journal fed with recorded db_write calls, an independent plain replay to compare against, and
// the CLI run as a real child process.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import Database from 'better-sqlite3';
import { initNode } from '../../src/cli/initNode.js';
import { loadKeys } from '../../src/cli/keyOptions.js';
import { Journal } from '../../src/journal/journal.js';
import { rootKeyFromHsmSecret } from '../../src/keys/keySource.js';
import { dumpDatabase } from '../../src/simulator/dump.js';
import { loadTraceChain, parseSegmentSpec, type CallEntry } from '../../src/simulator/trace.js';
import { createIdentity } from '../../src/vault/identity.js';
import type { VaultKeys } from '../../src/vault/keys.js';
import { cliEntry, tempDir, tracePath } from './paths.js';

/** node3's whole history: node3 up to 42, the failure trace (real rewinds), node3 from 240 on. */
export const NODE3_CHAIN = [
  `${tracePath('cln-v26.06-node3.jsonl.gz')}@1-42`,
  tracePath('cln-v26.06-node3-fail.jsonl.gz'),
  `${tracePath('cln-v26.06-node3.jsonl.gz')}@240-`,
];

let node3Cache: CallEntry[] | null = null;

/** The calls of node3's chain in order, superseded ones (acked, never committed) flagged. */
export function node3Calls(): CallEntry[] {
  node3Cache ??= loadTraceChain(NODE3_CHAIN.map(parseSegmentSpec)).filter((e): e is CallEntry => e.kind === 'call');
  return node3Cache;
}

export interface TestNode {
  readonly dir: string;
  readonly lightningDir: string;
  readonly networkDir: string;
  readonly hsmSecretPath: string;
  readonly vault: string;
  /** Where lightningd's database would be (none exists unless a test writes one). */
  readonly dbPath: string;
  readonly keys: VaultKeys;
  readonly nodeId: string | null;
  readonly vaultId: string;
}

export interface MakeNodeOptions {
  /** Create the vault with this segment size first (init then reopens it). */
  readonly segmentBytes?: number;
  /** The hsm_secret to use (default: 32 random bytes). */
  readonly hsmSecret?: Buffer;
}

/** A node directory with a legacy hsm_secret and a vault made by `initNode` (generation 1 at version 0). */
export function makeNode(prefix: string, options: MakeNodeOptions = {}): TestNode {
  const dir = tempDir(prefix);
  const lightningDir = path.join(dir, 'node');
  const networkDir = path.join(lightningDir, 'regtest');
  fs.mkdirSync(networkDir, { recursive: true });
  const hsmSecretPath = path.join(networkDir, 'hsm_secret');
  fs.writeFileSync(hsmSecretPath, options.hsmSecret ?? crypto.randomBytes(32), { mode: 0o400 });
  const vault = path.join(dir, 'vault');
  const { keys, nodeId } = loadKeys({ hsmSecret: hsmSecretPath });
  if (options.segmentBytes !== undefined) {
    fs.mkdirSync(vault, { mode: 0o700 });
    createIdentity(vault, keys, nodeId, options.segmentBytes);
  }
  const r = initNode({ lightningDir, network: 'regtest', vault });
  return { dir, lightningDir, networkDir, hsmSecretPath, vault, dbPath: path.join(networkDir, 'lightningd.sqlite3'), keys, nodeId, vaultId: r.vaultId };
}

/** Records the calls; every one must be stored. Returns the sequence numbers. */
export function feed(journal: Journal, calls: readonly { dataVersion: number; writes: readonly string[] }[]): bigint[] {
  const seqs: bigint[] = [];
  for (const c of calls) {
    const out = journal.record(c.dataVersion, c.writes);
    if (out.kind !== 'stored') throw new Error(`call for version ${c.dataVersion} was ${out.kind}: ${out.reason}`);
    seqs.push(out.seq);
  }
  return seqs;
}

/** Opens the node's journal, records the calls, closes it. */
export function feedNode(node: TestNode, calls: readonly { dataVersion: number; writes: readonly string[] }[]): bigint[] {
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    return feed(journal, calls);
  } finally {
    journal.close();
  }
}

const BUMP = /^UPDATE vars SET intval = intval \+ 1 WHERE name = 'data_version' AND intval = \d+;?$/;

/**
 * An independent plain replay (not lnbackup's code): foreign keys ON, each call with the version
 * bump inside BEGIN/COMMIT, calls without it outside any transaction.
 */
export function plainReplay(writeSets: Iterable<readonly string[]>, file = ':memory:'): Database.Database {
  const db = new Database(file);
  db.pragma('foreign_keys = ON');
  for (const writes of writeSets) {
    const tx = BUMP.test(writes[writes.length - 1] ?? '');
    if (tx) db.exec('BEGIN');
    for (const sql of writes) db.exec(sql);
    if (tx) db.exec('COMMIT');
  }
  return db;
}

/** The committed history: the calls minus superseded ones, up to (and including) `untilVersion`'s transaction. */
export function effectiveWrites(calls: readonly CallEntry[], untilVersion = Infinity): string[][] {
  const out: string[][] = [];
  for (const e of calls) {
    if (e.superseded) continue;
    if (e.bumps && e.dataVersion > untilVersion) break;
    out.push(e.writes);
  }
  return out;
}

export function dumpOf(db: Database.Database): string {
  try {
    return dumpDatabase(db);
  } finally {
    db.close();
  }
}

export function dumpFile(file: string): string {
  return dumpOf(new Database(file, { readonly: true, fileMustExist: true }));
}

export interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the built `lnbackup` command as a child process. */
export function runCli(args: readonly string[]): CliRun {
  const r = spawnSync(process.execPath, [cliEntry, ...args], { encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every form in which the node's secrets could leak into output: hsm_secret, root key, vault keys. */
export function secretStrings(node: TestNode): string[] {
  const raw = [fs.readFileSync(node.hsmSecretPath), rootKeyFromHsmSecret(node.hsmSecretPath).key, node.keys.record, node.keys.identity];
  return raw.flatMap((b) => [b.toString('hex'), b.toString('hex').toUpperCase(), b.toString('base64'), b.toString('base64url')]);
}

/** Fails when any secret form occurs in `text`. */
export function assertNoSecrets(node: TestNode, text: string, where: string): void {
  for (const s of secretStrings(node)) {
    if (text.includes(s)) throw new Error(`${where} contains key material`);
  }
}
