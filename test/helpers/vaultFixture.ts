// Vaults made in-process without lightningd, for the vault, journal, corruption and CLI tests: a
// Journal fed with recorded db_write calls, the CLI run as a real child process, and the forms in
// which a node's secrets could leak into output. (Nodes come from testNode.ts, the reference
// replay to compare restores with from reference.ts.)
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { Journal } from '../../src/journal/journal.js';
import { rootKeyFromHsmSecret } from '../../src/keys/keySource.js';
import { cliEntry } from './paths.js';
import type { VaultNode } from './testNode.js';

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
export function feedNode(node: VaultNode, calls: readonly { dataVersion: number; writes: readonly string[] }[]): bigint[] {
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    return feed(journal, calls);
  } finally {
    journal.close();
  }
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
export function secretStrings(node: VaultNode): string[] {
  const raw = [fs.readFileSync(node.hsmSecretPath), rootKeyFromHsmSecret(node.hsmSecretPath).key, node.keys.record, node.keys.identity];
  return raw.flatMap((b) => [b.toString('hex'), b.toString('hex').toUpperCase(), b.toString('base64'), b.toString('base64url')]);
}

/** Fails when any secret form occurs in `text`. */
export function assertNoSecrets(node: VaultNode, text: string, where: string): void {
  for (const s of secretStrings(node)) {
    if (text.includes(s)) throw new Error(`${where} contains key material`);
  }
}
