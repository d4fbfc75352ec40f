// Writes a replayed generation into a sqlite file: the snapshot's bytes first, then the db_write
// calls through sqlite with foreign keys ON (cascading deletes are not in the stream). The file is
// a scratch file until restore renames it into place, so replay runs without a rollback journal
// or fsyncs, and consecutive transactions are grouped into one sqlite transaction (no one can
// observe the states in between); statements outside a transaction (the PRAGMA calls) end a group.
import fs from 'node:fs';
import Database from 'better-sqlite3';
import { execStatements, openForReplay } from '../journal/applyWrites.js';
import type { ReplaySink } from '../journal/replay.js';

const GROUP_TRANSACTIONS = 2000;

export class SqliteFileSink implements ReplaySink {
  private fd: number | null = null;
  private db: Database.Database | null = null;
  private grouped = 0;

  constructor(private readonly file: string) {}

  beginSnapshot(): void {
    this.fd = fs.openSync(this.file, 'wx', 0o600);
  }

  snapshotChunk(offset: number, bytes: Buffer): void {
    if (this.fd === null) throw new Error('snapshot chunk before its beginning');
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(this.fd, bytes, done, bytes.length - done, offset + done);
  }

  endSnapshot(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    const db = new Database(this.file);
    db.pragma('journal_mode = OFF');
    db.pragma('synchronous = OFF');
    openForReplay(db);
    this.db = db;
  }

  applyWrites(_dataVersion: number, writes: readonly string[], isTransaction: boolean): void {
    const db = this.database();
    if (!isTransaction) {
      this.endGroup();
      execStatements(db, writes);
      return;
    }
    if (this.grouped === 0) db.exec('BEGIN');
    execStatements(db, writes);
    if (++this.grouped >= GROUP_TRANSACTIONS) this.endGroup();
  }

  /** Commits what is pending and returns the open database (for the final checks). */
  finish(): Database.Database {
    this.endGroup();
    return this.database();
  }

  /** Closes everything; safe to call after a failure. */
  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    this.db?.close();
    this.db = null;
  }

  private endGroup(): void {
    if (this.grouped > 0) this.database().exec('COMMIT');
    this.grouped = 0;
  }

  private database(): Database.Database {
    if (!this.db) throw new Error('statements before the snapshot ended');
    return this.db;
  }
}
