// More of a node's life than the traces hold: the steady-state calls of a trace played again on a
// node's database, with data_version continuing, through the real Journal and Compactor
// (in-process: the plugin's own hot path and compaction, minus lightningd's JSON-RPC and the
// per-call fsync). Each call runs as lightningd runs it: BEGIN, the statements, the hook (the file
// at rest while the transaction is open), COMMIT. A call whose statements no longer apply (an
// INSERT of a row that now exists) is rolled back before its hook and skipped, so the vault only
// sees calls that commit; it then must restore exactly the database.
import Database from 'better-sqlite3';
import { Compactor } from '../../src/journal/compaction/compactor.js';
import type { RetentionSettings } from '../../src/journal/retention.js';
import { Journal } from '../../src/journal/journal.js';
import { scanGenerations } from '../../src/journal/retention.js';
import type { VaultKeys } from '../../src/vault/keys.js';
import { isTransaction } from './reference.js';

const BUMP = /^(UPDATE vars SET intval = intval \+ 1 WHERE name = 'data_version' AND intval = )\d+(;?)$/;

export interface ContinuationOptions {
  readonly vaultDir: string;
  readonly keys: VaultKeys;
  readonly dbPath: string;
  readonly retention: RetentionSettings;
  /** The calls to play again, in order (only transactions are used). */
  readonly calls: readonly (readonly string[])[];
  /** Stop once this many bytes of SQL have been recorded. */
  readonly targetBytes: number;
  /** Make the records durable (and so let retention run) every this many calls. */
  readonly syncEvery?: number;
  readonly log?: (level: string, message: string) => void;
}

export interface ContinuationResult {
  readonly calls: number;
  readonly skipped: number;
  readonly sqlBytes: number;
  readonly passes: number;
  readonly fromVersion: number;
  readonly toVersion: number;
  readonly compactions: number;
  readonly ms: number;
}

/** Plays `calls` again and again (renumbered) until `targetBytes` of SQL are recorded. */
export async function continueNode(o: ContinuationOptions): Promise<ContinuationResult> {
  const started = Date.now();
  const db = new Database(o.dbPath, { fileMustExist: true });
  db.pragma('foreign_keys = ON');
  // A test database: its durability is not what is measured (the vault's records are).
  db.pragma('synchronous = OFF');
  const log = o.log ?? (() => undefined);
  const journal = Journal.open(o.vaultDir, o.keys, o.dbPath, (m) => log('info', m));
  const { gens, damaged } = scanGenerations(journal.identity, o.keys, o.vaultDir);
  if (damaged !== null) throw new Error(`the vault is damaged: ${damaged}`);
  const compactor = new Compactor(
    journal,
    () => [],
    o.retention,
    gens,
    (level, m) => log(level, m),
  );
  const syncEvery = o.syncEvery ?? 100;
  let version = (db.prepare("SELECT intval FROM vars WHERE name = 'data_version'").get() as { intval: number }).intval;
  const fromVersion = version;
  let nextSync: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } | null = null;
  const deferred = (): NonNullable<typeof nextSync> => {
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined);
    return { promise, resolve, reject };
  };
  let calls = 0;
  let skipped = 0;
  let sqlBytes = 0;
  let passes = 0;
  let sinceSync = 0;
  try {
    while (sqlBytes < o.targetBytes) {
      passes++;
      for (const original of o.calls) {
        if (sqlBytes >= o.targetBytes) break;
        if (!isTransaction(original)) continue;
        const writes = original.map((sql) => sql.replace(BUMP, (_, head: string, tail: string) => `${head}${version}${tail}`));
        // As lightningd does: the transaction is open (the file at rest) while the hook is pending.
        db.exec('BEGIN');
        try {
          for (const sql of writes) db.exec(sql);
        } catch {
          db.exec('ROLLBACK');
          skipped++;
          continue;
        }
        const recordStarted = performance.now();
        const outcome = journal.record(version + 1, writes, { deferSync: true });
        const recordMs = performance.now() - recordStarted;
        if (outcome.kind !== 'stored') {
          db.exec('ROLLBACK');
          throw new Error(`the journal did not store the call for version ${version + 1}: ${outcome.kind}: ${outcome.reason}`);
        }
        nextSync ??= deferred();
        const synced = nextSync.promise;
        compactor.afterCall(outcome, recordMs, () => synced);
        db.exec('COMMIT');
        version++;
        calls++;
        for (const sql of writes) sqlBytes += Buffer.byteLength(sql);
        if (++sinceSync >= syncEvery) {
          sinceSync = 0;
          const batch = nextSync;
          nextSync = null;
          await journal.syncAsync().then(batch.resolve, batch.reject);
        }
        // Between calls the compaction's build runs in slices (as between hooks in the plugin).
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    if (nextSync) {
      const batch = nextSync;
      await journal.syncAsync().then(batch.resolve, batch.reject);
    }
    await new Promise((resolve) => setImmediate(resolve));
    const compactions = compactor.status().compactions;
    return { calls, skipped, sqlBytes, passes, fromVersion, toVersion: version, compactions, ms: Date.now() - started };
  } finally {
    compactor.close();
    journal.close();
    db.close();
  }
}
