// Incremental (paged) snapshot cost against a full one, in one run: a 100 MB sqlite database is
// snapshotted into an empty vault (every page is new: a full snapshot), then 1% of its pages are
// changed and it is snapshotted again (only those pages are new). Both are the real code path
// (stage the file, hash every page, seal the new ones into packs, fsync).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { PagedSnapshotBuilder, stageDatabase, clearStaging } from '../src/journal/pagedSnapshot.js';
import { PageStore } from '../src/journal/pageStore.js';
import { vaultKeysFromRoot } from '../src/vault/keys.js';

export interface SnapshotRun {
  readonly stageMs: number;
  readonly buildMs: number;
  readonly newPages: number;
  readonly pages: number;
  readonly packBytes: number;
}

export interface SnapshotSection {
  readonly dbBytes: number;
  readonly changedShare: number;
  readonly full: SnapshotRun;
  readonly incremental: SnapshotRun;
  /** incremental / full, total time. */
  readonly timeRatio: number;
}

/** Rows of this size fill one 4 KiB page each, so the database has dbMegabytes × 256 pages. */
const ROW_BYTES = 3000;

export function runSnapshotSection(workDir: string, dbMegabytes = 100, changedShare = 0.01): SnapshotSection {
  const dir = fs.mkdtempSync(path.join(workDir, 'snapshot-'));
  const dbPath = path.join(dir, 'node.sqlite3');
  const rows = dbMegabytes * 256;
  const db = new Database(dbPath);
  db.exec(
    "CREATE TABLE vars (name TEXT PRIMARY KEY, intval INTEGER); INSERT INTO vars VALUES ('data_version', 1); CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB);",
  );
  const insert = db.prepare('INSERT INTO blobs (id, b) VALUES (?, ?)');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(i, crypto.randomBytes(ROW_BYTES));
  })();
  const keys = vaultKeysFromRoot(crypto.randomBytes(32));
  const vaultId = crypto.randomBytes(16);
  const vaultDir = path.join(dir, 'vault');
  fs.mkdirSync(vaultDir);
  const store = PageStore.open(vaultDir, keys, vaultId);
  const snap = (): SnapshotRun => {
    const t0 = performance.now();
    const staged = stageDatabase(dbPath, vaultDir);
    const t1 = performance.now();
    const builder = new PagedSnapshotBuilder(staged, store, keys.page);
    const built = builder.step();
    const t2 = performance.now();
    clearStaging(vaultDir);
    if (!built) throw new Error('the snapshot did not finish');
    return {
      stageMs: t1 - t0,
      buildMs: t2 - t1,
      newPages: built.addresses.length - built.reusedPages,
      pages: built.addresses.length,
      packBytes: built.packs.reduce((n, p) => n + p.bytes.length, 0),
    };
  };
  const full = snap();
  const update = db.prepare('UPDATE blobs SET b = ? WHERE id = ?');
  const changedRows = Math.max(1, Math.round(rows * changedShare));
  db.transaction(() => {
    for (let i = 0; i < changedRows; i++) update.run(crypto.randomBytes(ROW_BYTES), crypto.randomInt(rows));
  })();
  db.close();
  const incremental = snap();
  const dbBytes = fs.statSync(dbPath).size;
  fs.rmSync(dir, { recursive: true, force: true });
  return { dbBytes, changedShare, full, incremental, timeRatio: (incremental.stageMs + incremental.buildMs) / (full.stageMs + full.buildMs) };
}

export function snapshotLines(s: SnapshotSection): string[] {
  const row = (name: string, r: SnapshotRun): string =>
    `    ${name.padEnd(12)} stage ${r.stageMs.toFixed(0).padStart(5)} ms  build ${r.buildMs.toFixed(0).padStart(6)} ms  new pages ${String(r.newPages).padStart(6)} of ${r.pages}  packs written ${(r.packBytes / 1048576).toFixed(1)} MiB`;
  return [
    `  paged snapshot of a ${(s.dbBytes / 1048576).toFixed(0)} MiB database, then again with ~${(s.changedShare * 100).toFixed(0)}% of its rows rewritten:`,
    row('full', s.full),
    row('incremental', s.incremental),
    `    incremental / full time: ${s.timeRatio.toFixed(3)} (the rest is staging the file and one keyed hash per page)`,
  ];
}
