// Applies one db_write call's statements to a sqlite database the way lightningd does:
// a call that carries the data_version bump is one transaction; a call without it (the PRAGMA
// calls around migrations' table rebuilds) runs outside any transaction. Foreign keys must be ON
// for the connection (cascading deletes are not in the stream).
import type Database from 'better-sqlite3';

export function openForReplay(db: Database.Database): void {
  db.pragma('foreign_keys = ON');
}

/** Runs the statements one by one; throws the first sqlite error, naming the statement index. */
export function execStatements(db: Database.Database, writes: readonly string[]): void {
  for (let i = 0; i < writes.length; i++) {
    try {
      db.exec(writes[i]);
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new Error(`statement ${i + 1} of ${writes.length} failed: ${msg}`);
    }
  }
}
