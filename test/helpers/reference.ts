// The tests' independent reference for what a node's database must hold: node3's recorded history,
// a plain sqlite replay of recorded calls (better-sqlite3 only, none of lnbackup's journal or
// restore code; the trace's `superseded` flags say which calls never committed), the committed
// history up to a version, an incremental replay for the crash torture, and logical dumps of
// databases and database files to compare against it.
import Database from 'better-sqlite3';
import { dumpDatabase } from '../../src/simulator/dump.js';
import { readDataVersion } from '../../src/simulator/nodeDb.js';
import { loadTraceChain, parseSegmentSpec, type CallEntry, type TraceEntry } from '../../src/simulator/trace.js';
import { tracePath } from './paths.js';

/** node3's whole history: node3 up to 42, the failure trace (real rewinds), node3 from 240 on. */
export const NODE3_CHAIN = [
  `${tracePath('cln-v26.06-node3.jsonl.gz')}@1-42`,
  tracePath('cln-v26.06-node3-fail.jsonl.gz'),
  `${tracePath('cln-v26.06-node3.jsonl.gz')}@240-`,
];

/** The entries of a chain of segment specs (`file[@from-[to]]`), superseded calls flagged. */
export function loadChain(specs: readonly string[]): TraceEntry[] {
  return loadTraceChain(specs.map(parseSegmentSpec));
}

/** The calls among the entries (markers dropped), in order. */
export function callsOf(entries: readonly TraceEntry[]): CallEntry[] {
  return entries.filter((e): e is CallEntry => e.kind === 'call');
}

let node3Cache: CallEntry[] | null = null;

/** The calls of node3's chain in order, superseded ones (acked, never committed) flagged. */
export function node3Calls(): CallEntry[] {
  node3Cache ??= callsOf(loadChain(NODE3_CHAIN));
  return node3Cache;
}

const BUMP = /^UPDATE vars SET intval = intval \+ 1 WHERE name = 'data_version' AND intval = \d+;?$/;

/** A call is a transaction when its last statement is the data_version bump (our own test, not lnbackup's). */
export function isTransaction(writes: readonly string[]): boolean {
  return BUMP.test(writes[writes.length - 1] ?? '');
}

/** Runs one call the plain way: a transaction inside BEGIN/COMMIT, a call without the bump outside any transaction. */
export function applyCall(db: Database.Database, writes: readonly string[]): void {
  const tx = isTransaction(writes);
  if (tx) db.exec('BEGIN');
  for (const sql of writes) db.exec(sql);
  if (tx) db.exec('COMMIT');
}

/** An independent plain replay (foreign keys ON, each call applied by `applyCall`) into `file`; returns the open database. */
export function plainReplay(writeSets: Iterable<readonly string[]>, file = ':memory:'): Database.Database {
  const db = new Database(file);
  db.pragma('foreign_keys = ON');
  for (const writes of writeSets) applyCall(db, writes);
  return db;
}

/** The calls that committed: all but the superseded ones. */
function committedCalls(entries: readonly TraceEntry[]): CallEntry[] {
  return callsOf(entries).filter((e) => !e.superseded);
}

/** From `history[from]` on: the writes through the transaction to `untilVersion` and the calls without bump after it. */
function writesThrough(history: readonly CallEntry[], from: number, untilVersion: number): string[][] {
  const out: string[][] = [];
  for (let i = from; i < history.length; i++) {
    const h = history[i];
    if (isTransaction(h.writes) && h.dataVersion > untilVersion) break;
    out.push(h.writes);
  }
  return out;
}

/** The committed history: the calls minus superseded ones, up to (and including) `untilVersion`'s transaction. */
export function effectiveWrites(entries: readonly TraceEntry[], untilVersion = Infinity): string[][] {
  return writesThrough(committedCalls(entries), 0, untilVersion);
}

/**
 * The plain replay of the committed history, advanced as a node advances (for the crash torture,
 * which checks hundreds of versions of one history); the states just ahead of it are dumped inside
 * a savepoint that is rolled back.
 */
export class IncrementalReplay {
  private readonly db = plainReplay([]);
  private readonly history: CallEntry[];
  private next = 0;
  private version = 0;

  constructor(entries: readonly TraceEntry[]) {
    this.history = committedCalls(entries);
  }

  /** The history not applied yet, through the transaction to `v` and the calls without bump after it. */
  private through(v: number): string[][] {
    return writesThrough(this.history, this.next, v);
  }

  /** Applies the committed history up to version `v` (which never goes back). */
  advanceTo(v: number): void {
    if (v < this.version) throw new Error(`the reference is at ${this.version}, cannot go back to ${v}`);
    for (const writes of this.through(v)) {
      applyCall(this.db, writes);
      this.next++;
    }
    this.version = v;
  }

  /** The dump of the committed state at `v` (at or after the reference's own version). */
  dumpAt(v: number): string {
    return this.dumpWith(this.through(v));
  }

  /** The dump of the committed state at `c` plus the uncommitted transaction `writes` (to c+1). */
  dumpInFlight(c: number, writes: readonly string[]): string {
    return this.dumpWith([...this.through(c), writes]);
  }

  private dumpWith(extra: readonly (readonly string[])[]): string {
    if (extra.length === 0) return dumpDatabase(this.db);
    this.db.exec('SAVEPOINT probe');
    try {
      for (const writes of extra) for (const sql of writes) this.db.exec(sql);
      return dumpDatabase(this.db);
    } finally {
      this.db.exec('ROLLBACK TO probe');
      this.db.exec('RELEASE probe');
    }
  }

  close(): void {
    this.db.close();
  }
}

/** The logical dump of an open database, which is then closed. */
export function dumpOf(db: Database.Database): string {
  try {
    return dumpDatabase(db);
  } finally {
    db.close();
  }
}

/**
 * Opens an existing database file read-write, as the node's next start would: a hot journal left
 * by a crash is rolled back first.
 */
export function openDbFile(file: string): Database.Database {
  return new Database(file, { fileMustExist: true });
}

/** The logical dump of a database file (hot journal rolled back first). */
export function dumpFile(file: string): string {
  return dumpOf(openDbFile(file));
}

/** `vars.data_version` of a database file (hot journal rolled back first), 0 for an empty database. */
export function dataVersionOf(file: string): number {
  const db = openDbFile(file);
  try {
    return readDataVersion(db);
  } finally {
    db.close();
  }
}
