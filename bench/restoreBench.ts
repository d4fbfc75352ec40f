// Section 2: restore speed, two ways in the same run. A full-history vault (a lnbackup run with
// compaction off: every record since the first) restored by restoreDatabase (src/restore/rebuild.ts),
// against a plain sqlite replay of the same trace (gunzip + JSON.parse per line + better-sqlite3 with
// foreign keys ON) done the way src/restore/sqliteSink.ts replays (journal_mode=OFF, synchronous=OFF,
// consecutive bump transactions grouped into one sqlite transaction, calls without a bump run
// outside), so the ratio is lnbackup's own overhead. Also the naive plain replay (one transaction
// per call, default pragmas), and restore's parts: reading and opening the vault alone, and the
// final checks it runs. And a compacted vault (default retention: the newest snapshot's pages and
// the records after it) restored, against copying the node's database file (copy + fsync), which
// is what a snapshot restore can at best approach.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import Database from 'better-sqlite3';
import { execStatements, openForReplay } from '../src/journal/applyWrites.js';
import { bumpedFrom } from '../src/journal/dataVersion.js';
import { DISCARD_SINK, JournalReplayer } from '../src/journal/replay.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { sameDatabaseFiles } from '../src/simulator/dump.js';
import { openIdentity } from '../src/vault/identity.js';
import { VaultReader } from '../src/vault/reader.js';
import { vaultDiskUsage } from '../src/vault/diskUsage.js';
import { listSegments } from '../src/vault/segments.js';
import { progress, type TraceInfo, type VaultNode } from './setup.js';
import { median, msSince, now, round2 } from './stats.js';

/** Must match src/restore/sqliteSink.ts. */
const GROUP_TRANSACTIONS = 2000;

export interface RestoreSection {
  readonly vaultBytes: number;
  readonly records: number;
  readonly statements: number;
  readonly transactions: number;
  readonly dbBytes: number;
  /** Median of the rounds (ms). */
  readonly restoreMs: number;
  readonly plainMs: number;
  readonly naiveMs: number;
  /** The same sqlite work from already-parsed calls: no gunzip, no JSON, no vault (ms). */
  readonly sqliteOnlyMs: number;
  /** Reading, authenticating and decoding the vault with no database (ms). */
  readonly readOnlyMs: number;
  /** integrity_check + foreign_key_check + journal_mode=DELETE + fsync, run on the plain replica (ms). */
  readonly checksMs: number;
  readonly restoreRuns: number[];
  readonly plainRuns: number[];
  readonly ratio: number;
  readonly identical: boolean;
  readonly restoredVersion: number;
}

interface TraceCall {
  data_version: number;
  writes: string[];
}

/** Applies already-parsed calls the way sqliteSink does: the sqlite work alone, no parsing. */
export function applyParsed(trace: TraceInfo, file: string): void {
  const db = new Database(file);
  try {
    db.pragma('journal_mode = OFF');
    db.pragma('synchronous = OFF');
    openForReplay(db);
    let grouped = 0;
    for (const c of trace.calls) {
      if (!c.bumps) {
        if (grouped > 0) db.exec('COMMIT');
        grouped = 0;
        execStatements(db, c.writes);
        continue;
      }
      if (grouped === 0) db.exec('BEGIN');
      execStatements(db, c.writes);
      if (++grouped >= GROUP_TRANSACTIONS) {
        db.exec('COMMIT');
        grouped = 0;
      }
    }
    if (grouped > 0) db.exec('COMMIT');
  } finally {
    db.close();
  }
}

/** Replays the trace file into `file`: matched to sqliteSink (grouped) or naive. Returns statements. */
export function plainReplay(traceFile: string, file: string, how: 'matched' | 'naive'): number {
  const raw = fs.readFileSync(traceFile);
  const text = (raw[0] === 0x1f && raw[1] === 0x8b ? zlib.gunzipSync(raw) : raw).toString('utf8');
  const db = new Database(file);
  let statements = 0;
  try {
    if (how === 'matched') {
      db.pragma('journal_mode = OFF');
      db.pragma('synchronous = OFF');
    }
    openForReplay(db);
    let grouped = 0;
    const endGroup = (): void => {
      if (grouped > 0) db.exec('COMMIT');
      grouped = 0;
    };
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      const line = text.slice(start, end);
      start = end + 1;
      if (line.trim() === '') continue;
      const call = JSON.parse(line) as Partial<TraceCall> & { MARK?: string };
      if (call.MARK !== undefined || !call.writes) continue;
      const writes = call.writes;
      statements += writes.length;
      const isTransaction = bumpedFrom(writes) !== null;
      if (how === 'naive') {
        if (isTransaction) db.exec('BEGIN');
        execStatements(db, writes);
        if (isTransaction) db.exec('COMMIT');
        continue;
      }
      if (!isTransaction) {
        endGroup();
        execStatements(db, writes);
        continue;
      }
      if (grouped === 0) db.exec('BEGIN');
      execStatements(db, writes);
      if (++grouped >= GROUP_TRANSACTIONS) endGroup();
    }
    endGroup();
  } finally {
    db.close();
  }
  return statements;
}

/** The checks restoreDatabase runs after replaying, timed on a database built elsewhere. */
function finalChecks(file: string): void {
  const db = new Database(file);
  try {
    const integrity = (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).join('; ');
    if (integrity !== 'ok') throw new Error(`the plain replica fails integrity_check: ${integrity}`);
    const fk = db.pragma('foreign_key_check') as unknown[];
    if (fk.length > 0) throw new Error(`the plain replica has ${fk.length} foreign key violations`);
    db.pragma('journal_mode = DELETE');
  } finally {
    db.close();
  }
  const fd = fs.openSync(file, 'r+');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
}

function removeDb(file: string): void {
  for (const suffix of ['', '-journal', '-wal', '-shm']) fs.rmSync(file + suffix, { force: true });
}

export interface RestoreVaults {
  /** Compaction off: restored by replaying every record. */
  readonly fullHistory: { readonly node: VaultNode; readonly dataVersion: number };
  /** Default retention: restored from the newest snapshot and the records after it. */
  readonly compacted: { readonly node: VaultNode; readonly dataVersion: number };
}

/** The compacted vault's restore against a copy of the database file (median of the rounds). */
export interface SnapshotRestore {
  readonly vaultBytes: number;
  readonly dbBytes: number;
  readonly restoreMs: number;
  readonly copyMs: number;
  readonly ratio: number;
  readonly identical: boolean;
}

/** One restore of the node's vault into `to` (replaced), its time added to `runs`. */
function timedRestore(node: VaultNode, to: string, runs: number[]): ReturnType<typeof restoreDatabase> {
  removeDb(to);
  const t = now();
  const outcome = restoreDatabase({ vaultDir: node.vault, keys: node.keys(), to, force: true });
  runs.push(msSince(t));
  return outcome;
}

function copyDurably(from: string, to: string): void {
  fs.copyFileSync(from, to);
  const fd = fs.openSync(to, 'r+');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function runSnapshotRestore(v: RestoreVaults['compacted'], workDir: string, rounds: number): SnapshotRestore {
  const { node, dataVersion } = v;
  const restored = path.join(workDir, 'restored-compacted.sqlite3');
  const copy = path.join(workDir, 'copy.sqlite3');
  const restoreRuns: number[] = [];
  const copyRuns: number[] = [];
  let outcome: ReturnType<typeof restoreDatabase> | null = null;
  for (let round = 0; round < rounds; round++) {
    progress(`restore (compacted vault): round ${round + 1}/${rounds}...`);
    const steps: (() => void)[] = [
      () => {
        outcome = timedRestore(node, restored, restoreRuns);
      },
      () => {
        removeDb(copy);
        const t = now();
        copyDurably(node.dbPath, copy);
        copyRuns.push(msSince(t));
      },
    ];
    for (let k = 0; k < steps.length; k++) steps[(round + k) % steps.length]();
  }
  const result = outcome as ReturnType<typeof restoreDatabase> | null;
  if (!result) throw new Error('no restore ran');
  const identical = sameDatabaseFiles(node.dbPath, restored) && result.version === dataVersion;
  for (const f of [restored, copy]) removeDb(f);
  const usage = vaultDiskUsage(node.vault);
  const restoreMs = median(restoreRuns);
  const copyMs = median(copyRuns);
  return {
    vaultBytes: usage.segmentBytes + usage.packBytes,
    dbBytes: fs.statSync(node.dbPath).size,
    restoreMs: round2(restoreMs),
    copyMs: round2(copyMs),
    ratio: round2(restoreMs / copyMs),
    identical,
  };
}

/** Both restores of section 2. */
export type RestoreResults = RestoreSection & { readonly compacted: SnapshotRestore };

export function runRestoreSection(trace: TraceInfo, vaults: RestoreVaults, workDir: string, rounds: number): RestoreResults {
  const compacted = runSnapshotRestore(vaults.compacted, workDir, rounds);
  return { ...runFullHistoryRestore(trace, vaults.fullHistory.node, vaults.fullHistory.dataVersion, workDir, rounds), compacted };
}

function runFullHistoryRestore(trace: TraceInfo, node: VaultNode, nodeVersion: number, workDir: string, rounds: number): RestoreSection {
  const keys = node.keys();
  const vaultBytes = listSegments(node.vault).reduce((n, s) => n + fs.statSync(s.path).size, 0);
  const restored = path.join(workDir, 'restored.sqlite3');
  const plain = path.join(workDir, 'plain.sqlite3');
  const restoreRuns: number[] = [];
  const plainRuns: number[] = [];
  const sqliteRuns: number[] = [];
  let outcome: ReturnType<typeof restoreDatabase> | null = null;
  let plainStatements = 0;
  for (let round = 0; round < rounds; round++) {
    progress(`restore: round ${round + 1}/${rounds}...`);
    const steps: (() => void)[] = [
      () => {
        outcome = timedRestore(node, restored, restoreRuns);
      },
      () => {
        removeDb(plain);
        const t = now();
        plainStatements = plainReplay(trace.path, plain, 'matched');
        plainRuns.push(msSince(t));
      },
      () => {
        removeDb(plain);
        const t = now();
        applyParsed(trace, plain);
        sqliteRuns.push(msSince(t));
      },
    ];
    for (let k = 0; k < steps.length; k++) steps[(round + k) % steps.length]();
  }
  const result = outcome as ReturnType<typeof restoreDatabase> | null;
  if (!result) throw new Error('no restore ran');
  if (result.statements !== plainStatements) {
    throw new Error(`restore applied ${result.statements} statements but the plain replay ${plainStatements}`);
  }

  progress("restore: comparing the restored database with the node's...");
  const identical = sameDatabaseFiles(node.dbPath, restored);

  progress('restore: vault read alone, final checks, naive plain replay...');
  const identity = openIdentity(node.vault, keys);
  let t = now();
  const reader = new VaultReader(identity, keys, node.vault);
  const replayer = new JournalReplayer(DISCARD_SINK);
  let records = 0;
  for (const r of reader.records()) {
    replayer.feed(r.seq, r.body);
    records++;
  }
  replayer.finish();
  const readOnlyMs = msSince(t);

  t = now();
  finalChecks(plain);
  const checksMs = msSince(t);

  const naive = path.join(workDir, 'naive.sqlite3');
  removeDb(naive);
  t = now();
  plainReplay(trace.path, naive, 'naive');
  const naiveMs = msSince(t);
  for (const f of [restored, plain, naive]) removeDb(f);

  const restoreMs = median(restoreRuns);
  const plainMs = median(plainRuns);
  return {
    vaultBytes,
    records,
    statements: result.statements,
    transactions: result.transactions,
    dbBytes: result.dbBytes,
    restoreMs: Math.round(restoreMs),
    plainMs: Math.round(plainMs),
    naiveMs: Math.round(naiveMs),
    sqliteOnlyMs: Math.round(median(sqliteRuns)),
    readOnlyMs: Math.round(readOnlyMs),
    checksMs: Math.round(checksMs),
    restoreRuns: restoreRuns.map(Math.round),
    plainRuns: plainRuns.map(Math.round),
    ratio: round2(restoreMs / plainMs),
    identical: identical && result.version === nodeVersion,
    restoredVersion: result.version,
  };
}
