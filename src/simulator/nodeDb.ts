// The simulated node's database: `<networkDir>/lightningd.sqlite3`, opened (and created when absent,
// as on a fresh node) with lightningd's replay settings, and its current data_version.
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { openForReplay } from '../journal/applyWrites.js';

export const DB_FILE = 'lightningd.sqlite3';

export function openNodeDatabase(networkDir: string): Database.Database {
  fs.mkdirSync(networkDir, { recursive: true });
  const db = new Database(path.join(networkDir, DB_FILE));
  openForReplay(db);
  return db;
}

/** `vars.data_version`, or 0 for an empty (fresh) database. */
export function readDataVersion(db: Database.Database): number {
  const hasVars = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'vars'").get();
  if (!hasVars) return 0;
  const row = db.prepare("SELECT intval FROM vars WHERE name = 'data_version'").get() as { intval: number } | undefined;
  return row?.intval ?? 0;
}
