// A throwaway Core Lightning node directory for tests: <tmp>/node/regtest with a random legacy
// hsm_secret, a vault path beside it, and helpers to read and compare its sqlite database.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { dumpDatabase } from '../../src/simulator/dump.js';
import { tempDir } from './paths.js';

export interface TestNode {
  readonly dir: string;
  readonly lightningDir: string;
  readonly networkDir: string;
  readonly hsmSecret: string;
  readonly vault: string;
  readonly dbPath: string;
}

export function makeTestNode(prefix: string, hsmSecret: Buffer = crypto.randomBytes(32)): TestNode {
  const dir = tempDir(prefix);
  const lightningDir = path.join(dir, 'node');
  const networkDir = path.join(lightningDir, 'regtest');
  fs.mkdirSync(networkDir, { recursive: true });
  const hsm = path.join(networkDir, 'hsm_secret');
  fs.writeFileSync(hsm, hsmSecret, { mode: 0o400 });
  return { dir, lightningDir, networkDir, hsmSecret: hsm, vault: path.join(dir, 'vault'), dbPath: path.join(networkDir, 'lightningd.sqlite3') };
}

/** The logical dump of a database file (opened read-write so a hot journal is rolled back first). */
export function dumpFile(file: string): string {
  const db = new Database(file);
  try {
    return dumpDatabase(db);
  } finally {
    db.close();
  }
}

export function dataVersionOf(file: string): number {
  const db = new Database(file);
  try {
    const row = db.prepare("SELECT intval FROM vars WHERE name = 'data_version'").get() as { intval: number } | undefined;
    return row?.intval ?? 0;
  } finally {
    db.close();
  }
}
