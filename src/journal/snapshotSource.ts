// Reads a consistent copy of the node's sqlite file without stopping the node. While a db_write
// hook is pending, lightningd holds its write transaction open and the file is at rest at the
// previous version; we take sqlite's SHARED lock through a read-only connection that never waits
// (busy timeout 0), read the file's bytes while holding it, and release it before the hook is
// answered. If lightningd holds more than a RESERVED lock (its cache spilled into the file), the
// lock is refused and we report SnapshotBusyError instead of waiting or reading torn pages.
import fs from 'node:fs';
import Database from 'better-sqlite3';

export const SNAPSHOT_CHUNK_BYTES = 1024 * 1024;

export class SnapshotBusyError extends Error {
  constructor(dbPath: string) {
    super(`${dbPath} is locked by its writer right now; the snapshot is retried at the next db_write call`);
  }
}

export interface SnapshotView {
  /** data_version stored in the file (0 for an empty file or one without the vars table yet). */
  readonly dataVersion: number;
  readonly dbBytes: number;
  /** The file's bytes, in order, in chunks of at most SNAPSHOT_CHUNK_BYTES. */
  chunks(): Generator<{ offset: number; bytes: Buffer }>;
}

const EMPTY: SnapshotView = { dataVersion: 0, dbBytes: 0, *chunks() {} };

/** Runs `use` with a consistent view of the database file; the lock is released when it returns. */
export function withConsistentSnapshot<T>(dbPath: string, use: (view: SnapshotView) => T): T {
  if (!fs.existsSync(dbPath) || fs.statSync(dbPath).size === 0) return use(EMPTY);
  const db = new Database(dbPath, { readonly: true, fileMustExist: true, timeout: 0 });
  try {
    db.prepare('BEGIN').run();
    let dataVersion: number;
    try {
      dataVersion = readDataVersion(db);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_BUSY') throw new SnapshotBusyError(dbPath);
      throw err;
    }
    // Holding SHARED: no writer can change the file until we end the read transaction.
    const fd = fs.openSync(dbPath, 'r');
    try {
      const dbBytes = fs.fstatSync(fd).size;
      return use({ dataVersion, dbBytes, chunks: () => readChunks(fd, dbBytes) });
    } finally {
      // Closing our descriptor drops this process's POSIX locks on the file: only after reading.
      fs.closeSync(fd);
    }
  } finally {
    if (db.inTransaction) db.prepare('COMMIT').run();
    db.close();
  }
}

function readDataVersion(db: Database.Database): number {
  const table = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'vars'").get();
  if (!table) return 0;
  const row = db.prepare("SELECT intval FROM vars WHERE name = 'data_version'").get() as { intval: number } | undefined;
  return row?.intval ?? 0;
}

function* readChunks(fd: number, dbBytes: number): Generator<{ offset: number; bytes: Buffer }> {
  for (let offset = 0; offset < dbBytes; offset += SNAPSHOT_CHUNK_BYTES) {
    const len = Math.min(SNAPSHOT_CHUNK_BYTES, dbBytes - offset);
    const bytes = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const n = fs.readSync(fd, bytes, got, len - got, offset + got);
      if (n === 0) throw new Error(`the database file shrank while it was being copied (at byte ${offset + got})`);
      got += n;
    }
    yield { offset, bytes };
  }
}
