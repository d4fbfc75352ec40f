// A live sqlite replica of the node's database as a destination (`--replica <file>`): a hot
// standby that is, at every moment, a clean Core Lightning database at the version the vault holds.
// Each db_write call is applied the way lightningd applies it (a call with the data_version bump is
// one transaction, a call without it runs outside any) with synchronous=FULL, so the commit is
// durable when store() resolves.
//
// Unlike Core Lightning's built-in replica it never copies over a replica that is *newer* than the
// backup (that is a stale node, or a backup that lost its tail: the operator must look), it
// rebuilds an older or missing replica from the vault with progress, and it knows which record
// the replica applied last: the low 32 bits of that record's seq are kept in the database header
// (PRAGMA application_id, which Core Lightning does not use, so the replica stays a plain Core
// Lightning database). A replica at the vault's version whose mark is not the vault's last
// Writes record holds a transaction that was superseded (acked, never committed): it is rebuilt,
// or brought forward record by record when that is exact. A rewind seen live (a call that
// supersedes an earlier record) rebuilds the replica from the vault the same way.
import fs from 'node:fs';
import path from 'node:path';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { bumpedFrom, versionDistance } from '../journal/dataVersion.js';
import { decodeCall, isCallRecord } from '../journal/payloads.js';
import { PageStore } from '../journal/pageStore.js';
import { JournalReplayer, type ReplayOutcome } from '../journal/replay.js';
import { cutShort, generationEnd } from '../journal/retention.js';
import { SupersedeRule } from '../journal/supersede.js';
import { listGenerations } from '../restore/generations.js';
import { SqliteFileSink } from '../restore/sqliteSink.js';
import { fsyncDir } from '../util/durableFs.js';
import { decodeHeader, HEADER_BYTES, RecordType, type RecordBody } from '../vault/format.js';
import { openIdentity, vaultIdBytes, type VaultIdentity } from '../vault/identity.js';
import type { VaultKeys } from '../vault/keys.js';
import { VaultReader } from '../vault/reader.js';
import { openRecord } from '../vault/record.js';
import type { SealedRecord } from '../vault/sealer.js';
import { DestinationFailedError, type Destination, type DestinationState, type DestinationStatus, type StoredCall } from './destination.js';

export interface ReplicaOpenOptions {
  /** The replica database file (created when missing). */
  readonly file: string;
  readonly vaultDir: string;
  readonly keys: VaultKeys;
  /** Told what happens to the replica (rebuilds, catch-ups, failures). */
  readonly onNotice: (message: string) => void;
  /** Progress of a rebuild: bytes of vault records replayed so far, and in all. */
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/** The suffix of the scratch file a rebuild writes beside the replica before renaming it into place. */
export const REBUILD_SUFFIX = '.rebuild-tmp';

/** Records between two turns of the event loop while a rebuild runs inside store(). */
const RECORDS_PER_TURN = 256;
/** At most this many bytes of statements are held to bring a replica forward; beyond, it is rebuilt. */
const CATCH_UP_MAX_BYTES = 64 * 1024 * 1024;
const SQLITE_SIDE_FILES = ['-wal', '-shm', '-journal'];
const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');

/** The mark kept in PRAGMA application_id: the low 32 bits of a record's seq. */
export function replicaMark(seq: bigint): number {
  return Number(BigInt.asUintN(32, seq));
}

/** What a replica file holds, read without changing it. */
export type ReplicaFileState =
  | { readonly kind: 'missing' }
  /** A database without any table (a 0-byte file included). */
  | { readonly kind: 'empty' }
  | { readonly kind: 'node'; readonly version: number; readonly mark: number }
  /** Not something lnbackup may overwrite: not sqlite, not a Core Lightning database, unreadable. */
  | { readonly kind: 'foreign'; readonly reason: string };

/**
 * Reads a replica file's data_version and mark read-only; the file's bytes are never changed, and
 * sqlite's -wal/-shm files that only this read created are removed again.
 */
export function inspectReplica(file: string): ReplicaFileState {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'foreign', reason: `cannot be read (${(err as Error).message})` };
  }
  if (!st.isFile()) return { kind: 'foreign', reason: 'is not a regular file' };
  if (st.size === 0) return { kind: 'empty' };
  const head = Buffer.alloc(SQLITE_MAGIC.length);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, head, 0, head.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (!head.equals(SQLITE_MAGIC)) return { kind: 'foreign', reason: 'is not a sqlite database' };
  const existed = new Set(SQLITE_SIDE_FILES.filter((s) => fs.existsSync(file + s)));
  let db: Database.Database | null = null;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    return readState(db);
  } catch (err) {
    return { kind: 'foreign', reason: `cannot be read by sqlite (${(err as Error).message})` };
  } finally {
    db?.close();
    // A read-only connection to a WAL database leaves the -wal and -shm it had to create.
    const wal = file + '-wal';
    if (!existed.has('-wal') && fs.existsSync(wal) && fs.statSync(wal).size === 0) {
      fs.rmSync(wal, { force: true });
      if (!existed.has('-shm')) fs.rmSync(file + '-shm', { force: true });
    }
  }
}

function readState(db: Database.Database): ReplicaFileState {
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[];
  if (tables.length === 0) return { kind: 'empty' };
  if (!tables.includes('vars')) return { kind: 'foreign', reason: 'has tables but no vars table: it is not a Core Lightning database' };
  const row = db.prepare("SELECT intval FROM vars WHERE name = 'data_version'").get() as { intval: unknown } | undefined;
  const v = row?.intval;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= 0x1_0000_0000) {
    return { kind: 'foreign', reason: 'has no valid data_version in its vars table: it is not a Core Lightning database' };
  }
  const mark = (db.pragma('application_id', { simple: true }) as number) >>> 0;
  return { kind: 'node', version: v, mark };
}

/** One Writes record, decoded. */
interface WritesCall {
  readonly seq: bigint;
  readonly dataVersion: number;
  readonly supersedes: bigint;
  readonly writes: string[];
}

/** The newest restorable generation of the vault, as the replica sees it. */
interface VaultView {
  readonly generation: number;
  readonly bytes: number;
  /** The data_version a restore reaches (the in-flight transaction included). */
  readonly version: number;
  readonly lastSeq: bigint;
  /** The generation's last Writes record (0n: none yet). */
  readonly lastWritesSeq: bigint;
  /** The replica's mark found in this generation, and the Writes records after it (null: not found, or too much to hold). */
  readonly catchUp: { readonly markSeq: bigint; readonly calls: readonly WritesCall[] } | null;
}

/** Reads the newest generation whose snapshot is complete; collects what follows `from` (a replica's version and mark). */
function scanVault(
  vaultDir: string,
  keys: VaultKeys,
  identity: VaultIdentity,
  from: { version: number; mark: number } | null,
  onNotice: (m: string) => void,
): VaultView | null {
  const gens = listGenerations(vaultDir).reverse();
  for (const gen of gens) {
    const tail = new SupersedeRule();
    const reader = new VaultReader(identity, keys, vaultDir, { fromGeneration: gen.generation });
    let lastSeq = 0n;
    let lastWritesSeq = 0n;
    let complete = false;
    let markSeq: bigint | null = null;
    let after: WritesCall[] = [];
    let afterBytes = 0;
    let overflow = false;
    for (const r of reader.records()) {
      if (r.body.generation !== gen.generation) break;
      if (lastSeq === 0n && r.body.type !== RecordType.SnapshotBegin) break;
      let writes: string[] | undefined;
      if (r.body.type === RecordType.SnapshotEnd) complete = true;
      if (isCallRecord(r.body.type)) {
        lastWritesSeq = r.seq;
        if (from !== null && replicaMark(r.seq) === from.mark && r.body.dataVersion === from.version) {
          markSeq = r.seq;
          after = [];
          afterBytes = 0;
          overflow = false;
        } else if (markSeq !== null && !overflow) {
          afterBytes += r.body.payload.length;
          if (afterBytes > CATCH_UP_MAX_BYTES) {
            overflow = true;
            after = [];
          } else {
            writes = decodeCall(r.body).writes;
            after.push({ seq: r.seq, dataVersion: r.body.dataVersion, supersedes: r.body.supersedes, writes });
          }
        }
      }
      tail.observe(r.seq, r.body, writes);
      lastSeq = r.seq;
    }
    if (!complete || tail.version === null) {
      onNotice(`generation ${gen.generation} of the vault is incomplete (its snapshot was interrupted); the replica follows the one before it`);
      continue;
    }
    const before = gens.find((g) => g.generation < gen.generation);
    const beforeEnd = before ? generationEnd(identity, keys, vaultDir, before.generation) : null;
    if (cutShort(tail.version, beforeEnd)) {
      onNotice(
        `generation ${gen.generation} of the vault ends at version ${tail.version} but the one before it reaches ${beforeEnd} (a compaction switch was interrupted); the replica follows the one before it`,
      );
      continue;
    }
    return {
      generation: gen.generation,
      bytes: gen.bytes,
      version: tail.version,
      lastSeq,
      lastWritesSeq,
      catchUp: markSeq !== null && !overflow ? { markSeq, calls: after } : null,
    };
  }
  return null;
}

/** A record ready to replay: from the vault, or opened from a call's sealed bytes. */
interface PlainRecord {
  readonly seq: bigint;
  readonly body: RecordBody;
  readonly size: number;
}

/** What a rebuild replays: a generation's records from the vault (all, or those below a seq), then records in hand. */
interface RebuildPlan {
  readonly generation: number;
  /** Read the vault's records of the generation: all of them (null), or those below this seq. */
  readonly fromVault: { readonly below: bigint | null } | null;
  readonly extra: readonly PlainRecord[];
}

interface Rebuilt {
  readonly outcome: ReplayOutcome;
  readonly lastSeq: bigint;
  readonly lastWritesSeq: bigint;
}

/** The replica's failure to apply a statement. */
class StatementError extends Error {
  constructor(
    readonly index: number,
    readonly count: number,
    readonly statement: string,
    readonly sqliteMessage: string,
  ) {
    super(`statement ${index + 1} of ${count} failed: ${sqliteMessage}`);
  }
}

/** A rebuild inside store() stopped because the destination is closing. */
class Aborted extends Error {}

interface Queued {
  readonly call: StoredCall;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

const clip = (sql: string): string => (sql.length > 300 ? `${sql.slice(0, 300)}...` : sql);

export class ReplicaDestination implements Destination {
  readonly kind = 'replica' as const;
  private db: Database.Database | null = null;
  /** The replica's data_version (null: a database without tables). */
  private version: number | null = null;
  private identity: VaultIdentity | null = null;
  private durableSeq = 0n;
  private handedSeq = 0n;
  private failure: string | null = null;
  private lastDurableAt: number | null = null;
  private readonly queue: Queued[] = [];
  private queuedRecords = 0;
  private running = false;
  private idle: Promise<void> = Promise.resolve();
  private rebuilding = false;
  private closing = false;
  private closed = false;

  private constructor(
    readonly name: string,
    private readonly file: string,
    private readonly vaultDir: string,
    private readonly keys: VaultKeys,
    private readonly onNotice: (message: string) => void,
    private readonly onProgress: ((doneBytes: number, totalBytes: number) => void) | undefined,
  ) {}

  /**
   * Opens the replica at plugin start (synchronously, while lightningd waits): a replica newer than
   * the vault is left untouched and the destination is failed; an older, missing or superseded one
   * is brought to the vault's newest version. Problems make the destination failed, never throw.
   */
  static open(options: ReplicaOpenOptions): ReplicaDestination {
    const d = new ReplicaDestination(options.file, path.resolve(options.file), options.vaultDir, options.keys, options.onNotice, options.onProgress);
    try {
      d.start();
    } catch (err) {
      d.db?.close();
      d.db = null;
      d.fail(`replica ${d.name} could not be opened: ${(err as Error).message}`);
    }
    return d;
  }

  private start(): void {
    const state = inspectReplica(this.file);
    if (state.kind === 'foreign') {
      this.fail(
        `replica ${this.name} ${state.reason}; lnbackup will not overwrite it. ` +
          'Check the --replica path; move the file away and the replica will be created from the vault at the next start.',
      );
      return;
    }
    // A rebuild interrupted by a crash leaves its scratch file; it is ours and worthless.
    fs.rmSync(this.file + REBUILD_SUFFIX, { force: true });
    this.identity = openIdentity(this.vaultDir, this.keys);
    const view = scanVault(this.vaultDir, this.keys, this.identity, state.kind === 'node' ? state : null, this.onNotice);
    if (view === null) {
      this.fail(`the vault at ${this.vaultDir} holds no complete generation yet: there is nothing to build the replica ${this.name} from (run lnbackup init)`);
      return;
    }
    if (state.kind === 'node') {
      const ahead = versionDistance(view.version, state.version);
      if (ahead > 0) {
        this.fail(
          `replica ${this.name} holds data_version ${state.version}, NEWER than the backup in ${this.vaultDir} (version ${view.version}). ` +
            'It holds a newer state than the backup: is this lightningd running on a stale copy of its database? ' +
            'Investigate before anything (compare the node database, the replica and lnbackup status); running a node on an old state can lose its channels. ' +
            'lnbackup never copies over a newer replica: the file is left untouched and the replica takes no records in this run. ' +
            'Only once you know the replica must go, move it away; it will then be rebuilt from the vault at the next start.' +
            (ahead === 1
              ? ` (One version ahead: if the node's database is at version ${view.version} too, the machine stopped after the replica committed a transaction and before the vault made it durable; lightningd never committed it, and the replica can be moved away.)`
              : ''),
        );
        return;
      }
      if (ahead === 0 && state.mark === replicaMark(view.lastWritesSeq)) {
        this.attach(view.lastSeq);
        return;
      }
      if (view.catchUp !== null && this.catchUp(view, state.version)) return;
    }
    const was =
      state.kind === 'missing'
        ? 'is missing'
        : state.kind === 'empty'
          ? 'is an empty database'
          : state.version === view.version
            ? `is at the vault's version ${view.version} but did not apply the vault's last record (${view.lastWritesSeq}): it may hold a transaction the node never committed (superseded)`
            : `is at data_version ${state.version}, older than the vault (${view.version})`;
    const fromText = state.kind === 'node' ? `version ${state.version}` : state.kind === 'missing' ? 'no database' : 'an empty database';
    this.onNotice(`replica ${this.name} ${was}: rebuilding it from the vault (generation ${view.generation}, version ${view.version})`);
    const started = performance.now();
    const rebuilt = runSync(this.rebuildSteps({ generation: view.generation, fromVault: { below: null }, extra: [] }));
    this.install(rebuilt);
    this.onNotice(
      `replica ${this.name} rebuilt from ${fromText} to version ${this.version ?? 'none (empty database)'} ` +
        `(${rebuilt.outcome.transactions} transactions, ${((performance.now() - started) / 1000).toFixed(1)} s)`,
    );
  }

  /** Opens the replica for writing, in sync with the vault up to `lastSeq`. */
  private attach(lastSeq: bigint): void {
    this.db = this.openDatabase();
    this.version = this.currentVersion();
    this.durableSeq = lastSeq;
    if (this.handedSeq < lastSeq) this.handedSeq = lastSeq;
  }

  private openDatabase(): Database.Database {
    const db = new Database(this.file);
    try {
      db.pragma('foreign_keys = ON');
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal') this.onNotice(`replica ${this.name}: sqlite could not switch it to WAL mode (it is in ${String(mode)} mode)`);
      db.pragma('synchronous = FULL');
      return db;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  private currentVersion(): number | null {
    const s = readState(this.database());
    if (s.kind === 'node') return s.version;
    if (s.kind === 'empty') return null;
    throw new Error(s.kind === 'foreign' ? `the replica ${s.reason}` : 'the replica is missing');
  }

  /**
   * Brings a replica forward with the vault's Writes records after the one it applied last, when
   * that is exact (none of them supersedes a record the replica holds). False: rebuild instead.
   */
  private catchUp(view: VaultView, fromVersion: number): boolean {
    const cu = view.catchUp;
    if (cu === null) return false;
    const effective: WritesCall[] = [];
    for (const c of cu.calls) {
      if (c.supersedes !== 0n) {
        // Only the newest transaction can be superseded; one the replica holds needs a rebuild.
        if (effective[effective.length - 1]?.seq !== c.supersedes) return false;
        effective.pop();
      }
      effective.push(c);
    }
    try {
      this.db = this.openDatabase();
      this.version = this.currentVersion();
      for (const c of effective) {
        if (!this.follows(c.writes, c.dataVersion)) throw new Error(`record ${c.seq} does not follow version ${this.version}`);
        this.applyWrites(c.seq, c.dataVersion, c.writes);
      }
      const s = readState(this.database());
      if (s.kind !== 'node' || s.version !== view.version || s.mark !== replicaMark(view.lastWritesSeq)) throw new Error('it did not reach the vault');
    } catch (err) {
      this.db?.close();
      this.db = null;
      this.onNotice(`replica ${this.name}: bringing it forward from version ${fromVersion} failed (${(err as Error).message})`);
      return false;
    }
    this.durableSeq = view.lastSeq;
    this.handedSeq = view.lastSeq;
    this.lastDurableAt = Date.now();
    this.onNotice(`replica ${this.name} brought forward from version ${fromVersion} to ${view.version} (${effective.length} calls from the vault)`);
    return true;
  }

  store(call: StoredCall): Promise<void> {
    const last = call.records[call.records.length - 1];
    if (last !== undefined && last.seq > this.handedSeq) this.handedSeq = last.seq;
    if (this.failure !== null) return Promise.reject(new DestinationFailedError(this.name, this.failure));
    if (this.closing) return Promise.reject(new DestinationFailedError(this.name, `replica ${this.name} is closed`));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ call, resolve, reject });
      this.queuedRecords += call.records.length;
      if (!this.running) {
        this.running = true;
        this.idle = this.runQueue();
      }
    });
  }

  /** Applies the queued calls in order; clears `running` before it returns (synchronously when nothing awaited). */
  private async runQueue(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.closing && this.failure === null) {
        const item = this.queue[0];
        try {
          const pending = this.process(item.call);
          if (pending) await pending;
        } catch (err) {
          if (err instanceof Aborted) break;
          this.fail(this.describeFailure(item.call, err));
          break;
        }
        this.queue.shift();
        this.queuedRecords -= item.call.records.length;
        item.resolve();
      }
      if (this.failure !== null) this.rejectQueued(this.failure);
    } finally {
      this.running = false;
    }
  }

  /** One call: applied as lightningd applies it, or a rebuild when the replica cannot simply follow. */
  private process(call: StoredCall): Promise<void> | void {
    const last = call.records[call.records.length - 1];
    if (last === undefined) return;
    if (call.supersedes !== 0n) {
      return this.rebuildFor(
        call,
        `version ${call.dataVersion} came again: the transaction in record ${call.supersedes}, which the replica applied, was never committed by the node`,
      );
    }
    if (!this.follows(call.writes, call.dataVersion)) {
      const at = this.version ?? 0;
      return this.rebuildFor(
        call,
        call.snapshot
          ? `a new generation starts from a snapshot of the node at another version than the replica's ${at}`
          : `the call for version ${call.dataVersion} does not follow the replica's version ${at}`,
      );
    }
    this.applyWrites(last.seq, call.dataVersion, call.writes);
    this.confirm(last.seq);
  }

  /** Does a call continue the replica's version (a bump from it, or statements at it)? */
  private follows(writes: readonly string[], dataVersion: number): boolean {
    const from = bumpedFrom(writes);
    const at = this.version ?? 0;
    return from !== null ? from === at : dataVersion === at;
  }

  /** Runs a call's statements (a transaction when it carries the bump) and sets the mark; durable on return. */
  private applyWrites(seq: bigint, dataVersion: number, writes: readonly string[]): void {
    const db = this.database();
    const transaction = bumpedFrom(writes) !== null;
    if (transaction) db.exec('BEGIN');
    try {
      for (let i = 0; i < writes.length; i++) {
        try {
          db.exec(writes[i]);
        } catch (err) {
          throw new StatementError(i, writes.length, writes[i], (err as Error).message);
        }
      }
      db.pragma(`application_id = ${BigInt.asIntN(32, seq)}`);
      if (transaction) db.exec('COMMIT');
    } catch (err) {
      if (db.inTransaction) {
        try {
          db.exec('ROLLBACK');
        } catch {
          // sqlite rolled back already (some errors end the transaction themselves)
        }
      }
      throw err;
    }
    this.version = dataVersion;
  }

  private confirm(seq: bigint): void {
    if (seq > this.durableSeq) this.durableSeq = seq;
    this.lastDurableAt = Date.now();
  }

  /** Rebuilds the replica from the vault's records before this call and the call's own records (so it includes the call). */
  private async rebuildFor(call: StoredCall, why: string): Promise<void> {
    const extra = this.openCallRecords(call.records);
    const first = extra[0];
    const startsGeneration = first.body.type === RecordType.SnapshotBegin;
    const plan: RebuildPlan = { generation: first.body.generation, fromVault: startsGeneration ? null : { below: first.seq }, extra };
    const from = this.version;
    this.onNotice(`replica ${this.name}: ${why}; rebuilding it from the vault`);
    const started = performance.now();
    this.rebuilding = true;
    try {
      const rebuilt = await this.runAsync(this.rebuildSteps(plan));
      this.install(rebuilt);
      this.confirm(rebuilt.lastSeq);
      this.onNotice(
        `replica ${this.name} rebuilt from version ${from ?? 'none'} to ${this.version ?? 'none'} ` +
          `(${rebuilt.outcome.transactions} transactions, ${((performance.now() - started) / 1000).toFixed(1)} s)`,
      );
    } finally {
      this.rebuilding = false;
    }
  }

  /** Opens the sealed records a call handed over (they are not necessarily readable from the vault yet). */
  private openCallRecords(records: readonly SealedRecord[]): PlainRecord[] {
    const vaultId = vaultIdBytes(this.vaultIdentity());
    return records.map((r) => {
      const headerBytes = r.bytes.subarray(0, HEADER_BYTES);
      const header = decodeHeader(headerBytes);
      const body = openRecord(this.keys.record, vaultId, header, headerBytes, r.bytes.subarray(HEADER_BYTES));
      if (body === null || header.seq !== r.seq) throw new Error(`record ${r.seq} handed to the replica does not open with the vault's key`);
      return { seq: r.seq, body, size: r.bytes.length };
    });
  }

  private vaultIdentity(): VaultIdentity {
    this.identity ??= openIdentity(this.vaultDir, this.keys);
    return this.identity;
  }

  /** Replays a plan into `<file>.rebuild-tmp`, checks it, sets the mark and makes it durable; yields between batches. */
  private *rebuildSteps(plan: RebuildPlan): Generator<void, Rebuilt> {
    const tmp = this.file + REBUILD_SUFFIX;
    fs.rmSync(tmp, { force: true });
    const sink = new SqliteFileSink(tmp);
    let ok = false;
    try {
      const pages = PageStore.open(this.vaultDir, this.keys, vaultIdBytes(this.vaultIdentity()));
      const replayer = new JournalReplayer(sink, { includeInFlight: true, pages });
      const extraBytes = plan.extra.reduce((n, r) => n + r.size, 0);
      let total = extraBytes;
      let done = 0;
      let last: { seq: bigint; hash: Buffer | null } | null = null;
      let lastWritesSeq = 0n;
      let count = 0;
      const feed = (seq: bigint, body: RecordBody): void => {
        replayer.feed(seq, body);
        if (isCallRecord(body.type)) lastWritesSeq = seq;
      };
      if (plan.fromVault !== null) {
        const reader = new VaultReader(this.vaultIdentity(), this.keys, this.vaultDir, { fromGeneration: plan.generation });
        total += listGenerations(this.vaultDir).find((g) => g.generation === plan.generation)?.bytes ?? reader.totalBytes;
        const below = plan.fromVault.below;
        for (const r of reader.records()) {
          if (r.body.generation !== plan.generation || (below !== null && r.seq >= below)) break;
          feed(r.seq, r.body);
          last = { seq: r.seq, hash: r.hash };
          done = reader.bytesRead;
          if (++count % RECORDS_PER_TURN === 0) {
            this.onProgress?.(done, total);
            yield;
          }
        }
        if (below !== null) total = done + extraBytes;
      }
      for (const r of plan.extra) {
        if (last !== null && (r.seq !== last.seq + 1n || (last.hash !== null && !r.body.prevHash.equals(last.hash)))) {
          throw new Error(`the vault ends at record ${last.seq} but the call's records begin at ${r.seq}: the vault lacks records the replica needs`);
        }
        feed(r.seq, r.body);
        last = { seq: r.seq, hash: null };
        done += r.size;
        if (++count % RECORDS_PER_TURN === 0) {
          this.onProgress?.(done, total);
          yield;
        }
      }
      if (!replayer.complete) throw new Error(`generation ${plan.generation}'s snapshot is incomplete`);
      const outcome = replayer.finish();
      const db = sink.finish();
      const integrity = (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).join('; ');
      if (integrity !== 'ok') throw new Error(`the rebuilt database fails PRAGMA integrity_check: ${integrity}`);
      const fk = db.pragma('foreign_key_check') as unknown[];
      if (fk.length > 0) throw new Error(`the rebuilt database has ${fk.length} foreign key violations`);
      db.pragma(`application_id = ${BigInt.asIntN(32, lastWritesSeq)}`);
      db.pragma('journal_mode = DELETE');
      sink.close();
      const fd = fs.openSync(tmp, 'r+');
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      this.onProgress?.(total, total);
      ok = true;
      return { outcome, lastSeq: last?.seq ?? 0n, lastWritesSeq };
    } finally {
      sink.close();
      if (!ok) fs.rmSync(tmp, { force: true });
    }
  }

  /** Moves a rebuilt scratch file over the replica durably and reopens it. */
  private install(rebuilt: Rebuilt): void {
    this.db?.close();
    this.db = null;
    // The old file's WAL goes with it; sqlite first moves what it holds into the file, so that a
    // crash between the unlink and the rename leaves an older replica, never a torn one.
    if (fs.existsSync(this.file + '-wal')) {
      try {
        new Database(this.file, { fileMustExist: true }).close();
      } catch {
        // Unreadable: it is replaced anyway.
      }
    }
    for (const suffix of SQLITE_SIDE_FILES) fs.rmSync(this.file + suffix, { force: true });
    fs.renameSync(this.file + REBUILD_SUFFIX, this.file);
    fsyncDir(path.dirname(this.file));
    this.attach(rebuilt.lastSeq);
  }

  /** Runs a rebuild, giving the event loop a turn between batches; stops when the destination closes. */
  private async runAsync<T>(steps: Generator<void, T>): Promise<T> {
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value;
      await nextTurn();
      if (this.closing) {
        steps.return(undefined as never);
        throw new Aborted();
      }
    }
  }

  private describeFailure(call: StoredCall, err: unknown): string {
    const recover =
      `The replica takes no more records in this run (it stays at version ${this.version ?? 'none'}; the node and the vault are not affected). ` +
      `To recover, delete ${this.name} (and its -wal and -shm files): it is rebuilt from the vault at the next start.`;
    if (err instanceof StatementError) {
      return (
        `replica ${this.name}: sqlite refused statement ${err.index + 1} of ${err.count} of the call for version ${call.dataVersion}: ` +
        `${clip(err.statement)} -- ${err.sqliteMessage}. The replica no longer matches the node's database. ${recover}`
      );
    }
    return `replica ${this.name}: cannot apply the call for version ${call.dataVersion}: ${(err as Error).message}. ${recover}`;
  }

  private fail(message: string): void {
    if (this.failure !== null) return;
    this.failure = message;
    this.onNotice(message);
    this.rejectQueued(message);
  }

  /** Rejects every queued call, the one being applied included (its commit did not happen). */
  private rejectQueued(message: string): void {
    const items = this.queue.splice(0);
    this.queuedRecords = 0;
    for (const item of items) item.reject(new DestinationFailedError(this.name, message));
  }

  private database(): Database.Database {
    if (this.db === null) throw new Error('the replica database is not open');
    return this.db;
  }

  status(): DestinationStatus {
    const state: DestinationState = this.failure !== null ? 'failed' : this.rebuilding || this.queue.length > 0 ? 'catching-up' : 'ok';
    return {
      name: this.name,
      kind: this.kind,
      state,
      durableSeq: this.durableSeq.toString(),
      lagRecords: this.queuedRecords,
      lastError: this.failure,
      lastDurableAt: this.lastDurableAt === null ? null : new Date(this.lastDurableAt).toISOString(),
    };
  }

  storePack(): Promise<void> {
    // A replica is the node's database itself (pages applied from the records): it keeps no packs.
    return Promise.resolve();
  }

  prune(): Promise<void> {
    // A replica holds only the newest state, no generations, so there is nothing to remove.
    return Promise.resolve();
  }

  /** Waits at most `graceMs` for the queued calls, then stops (a rebuild in progress is abandoned) and closes the database. */
  async close(graceMs: number): Promise<void> {
    if (this.closed) return;
    if (this.running) {
      const ac = new AbortController();
      await Promise.race([this.idle, sleep(Math.max(0, graceMs), undefined, { signal: ac.signal }).catch(() => undefined)]);
      ac.abort();
    }
    this.closing = true;
    await this.idle;
    const items = this.queue.splice(0);
    this.queuedRecords = 0;
    for (const item of items)
      item.reject(new DestinationFailedError(this.name, `replica ${this.name} closed before version ${item.call.dataVersion} was applied`));
    this.db?.close();
    this.db = null;
    this.closed = true;
  }
}

function runSync<T>(steps: Generator<void, T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}
