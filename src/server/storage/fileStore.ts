// The embedded server store (`lnbackup server --data <dir>`, the default): one folder per vault
// under <data>/vaults (named by its stored id: storage/vaultScope.ts), each laid out as a vault directory: VAULT.json holds the identity as the
// node sent it (sealed: vault/identityEnvelope.ts), segments/ the records in the vault format
// (16 MiB segments; the node's own size is sealed), plus an `owner` file. The data
// folder is locked against a second server. Appends are written by RawVaultAppender and made
// durable in group-commit rounds (every touched vault's fdatasync in parallel on the thread pool).
// Page packs are files in the vault's pages/ folder (src/vault/packFiles.ts: temp file, fsync,
// rename, fsync of the folder), retention goes through src/vault/prune.ts between two rounds.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fsyncDir, readBoundedFile, writeFileAtomic } from '../../util/durableFs.js';
import { processAlive } from '../../util/processAlive.js';
import { DEFAULT_SEGMENT_BYTES, IDENTITY_FILE } from '../../vault/identity.js';
import { deletePacks as removePacks, isPackName, listPacks, pagesDir, removeStalePackTemps, writeProtectedPack } from '../../vault/packFiles.js';
import { writeIdentityCopy } from '../../vault/redundancy/identityCopy.js';
import { maxSegmentBytes, VerifiedSegments } from '../../vault/redundancy/protectedRead.js';
import { scrubDataDir, scrubVault, type ScrubDataResult, type ScrubOptions } from '../../vault/redundancy/scrub.js';
import { pruneGenerations } from '../../vault/prune.js';
import { removeStaleTemps } from '../../vault/redundancy/keeper.js';
import { RawVaultAppender, readRawRecords, type RawTail } from '../../vault/rawRecords.js';
import { PRUNE_MARKER, SEGMENTS_DIR, listSegments, segmentsDir } from '../../vault/segments.js';
import { checkNewVault, checkPack, GroupCommit, GroupCommittedStore, isOwner, isVaultId, KeyedLock, type VaultTail } from './groupCommit.js';
import { MAX_IDENTITY_BYTES } from '../../vault/format.js';
import {
  PackConflictError,
  StorageUnavailableError,
  type PackPiece,
  type PrunedVault,
  type ServerStore,
  type StoredPack,
  type StoreRecord,
  type StoredVault,
} from './store.js';

export const VAULTS_DIR = 'vaults';
export const OWNER_FILE = 'owner';
export const DATA_LOCK_FILE = 'LOCK';
const STAGING_PREFIX = '.new-';

export type Notice = (message: string) => void;

interface FileVault {
  readonly vaultId: string;
  readonly dir: string;
  /** Replaced when a prune reopens the vault; null when reopening failed (recover tries again). */
  appender: RawVaultAppender | null;
}

export class FileStore extends GroupCommittedStore implements ServerStore {
  readonly kind = 'files';
  readonly location: string;
  private readonly vaults = new Map<string, FileVault>();
  protected readonly commits: GroupCommit;
  /** Pack writes and deletes of a vault, one at a time. */
  private readonly packLocks = new KeyedLock();
  private closed = false;

  private constructor(
    readonly dataDir: string,
    private readonly lock: DataDirLock,
    private readonly onNotice: Notice,
  ) {
    super();
    this.location = dataDir;
    this.commits = new GroupCommit({
      commitRound: (round) => this.commitRound(round),
      recover: (ids) => this.recover(ids),
      unavailable: (err) => this.unavailable(err, this.dataDir),
    });
  }

  /** Opens (creating if needed) the data folder, locks it, and loads every vault's tail. */
  static async open(dataDir: string, onNotice: Notice = () => {}): Promise<FileStore> {
    const dir = path.resolve(dataDir);
    const vaultsDir = path.join(dir, VAULTS_DIR);
    if (!fs.existsSync(vaultsDir)) {
      fs.mkdirSync(vaultsDir, { recursive: true });
      fsyncDir(dir);
      fsyncDir(path.dirname(dir));
    }
    const lock = DataDirLock.acquire(dir);
    try {
      const store = new FileStore(dir, lock, onNotice);
      store.load();
      return store;
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  async createVault(owner: string, vaultId: string, identity: Buffer): Promise<StoredVault> {
    this.checkOpen();
    checkNewVault(owner, vaultId, identity);
    if (this.vaults.has(vaultId)) throw new Error(`vault ${vaultId} already exists`);
    const vaultsDir = path.join(this.dataDir, VAULTS_DIR);
    const dir = path.join(vaultsDir, vaultId);
    if (fs.existsSync(dir)) throw new Error(`${dir} already exists but is not a usable vault (see the notices given at start)`);
    // Built in a staging folder and renamed into place, so a crash never leaves half a vault.
    const staging = path.join(vaultsDir, `${STAGING_PREFIX}${vaultId}`);
    try {
      fs.rmSync(staging, { recursive: true, force: true });
      fs.mkdirSync(path.join(staging, SEGMENTS_DIR), { recursive: true, mode: 0o700 });
      writeFileAtomic(path.join(staging, IDENTITY_FILE), identity, 0o644);
      writeIdentityCopy(staging, identity);
      writeFileAtomic(path.join(staging, OWNER_FILE), `${owner}\n`, 0o644);
      fsyncDir(path.join(staging, SEGMENTS_DIR));
      fs.renameSync(staging, dir);
      fsyncDir(vaultsDir);
    } catch (err) {
      fs.rmSync(staging, { recursive: true, force: true });
      throw this.unavailable(err, vaultsDir, 'the vault was not created');
    }
    const appender = RawVaultAppender.open(dir, DEFAULT_SEGMENT_BYTES, { onNotice: this.onNotice });
    this.vaults.set(vaultId, { vaultId, dir, appender });
    this.commits.addVault({ vaultId, owner, identity }, tailOf(appender.durableTail, null));
    this.commits.setPackBytes(vaultId, 0);
    const created = this.commits.vault(vaultId);
    if (!created) throw new Error(`vault ${vaultId} was not registered`);
    return created;
  }

  append(vaultId: string, records: readonly StoreRecord[]): Promise<void> {
    return this.commits.append(vaultId, records);
  }

  async readRecords(vaultId: string, fromSeq: bigint, maxBytes: number): Promise<StoreRecord[]> {
    const v = this.vaults.get(vaultId);
    if (!v) throw new Error(`no vault ${vaultId} on this server`);
    const durable = this.commits.durableTail(vaultId);
    if (!durable || durable.lastSeq === 0n || fromSeq > durable.lastSeq) return [];
    try {
      // Sealed segments are checked against their parity first (once while unchanged) and served repaired.
      const { overlay } = await this.verified.repairFor(v.dir, fromSeq, maxBytes);
      return readRawRecords(v.dir, fromSeq, maxBytes, { untilSeq: durable.lastSeq, overlay });
    } catch (err) {
      if (isFsError(err)) throw this.unavailable(err, v.dir, 'the records could not be read');
      throw err;
    }
  }

  async putPack(vaultId: string, name: string, bytes: Buffer): Promise<boolean> {
    const v = this.vaultOf(vaultId);
    checkPack(name, bytes.length);
    return this.packLocks.run(vaultId, async () => {
      this.checkOpen();
      const file = path.join(pagesDir(v.dir), name);
      try {
        if (fs.existsSync(file)) {
          if (fs.statSync(file).size === bytes.length && fs.readFileSync(file).equals(bytes)) return false;
          throw new PackConflictError(`vault ${vaultId} already holds pack ${name} with other contents; packs never change`);
        }
        // Whole or not at all: a temporary file, fsync'ed, renamed, and the folder fsync'ed.
        await writeProtectedPack(v.dir, name, bytes);
      } catch (err) {
        if (err instanceof PackConflictError || !isFsError(err)) throw err;
        throw this.unavailable(err, v.dir, `pack ${name} was not stored`);
      }
      this.commits.addPackBytes(vaultId, bytes.length);
      return true;
    });
  }

  async listPacks(vaultId: string): Promise<StoredPack[]> {
    const v = this.vaultOf(vaultId);
    try {
      return listPacks(v.dir).map((p) => ({ name: p.name, bytes: p.bytes }));
    } catch (err) {
      if (isFsError(err)) throw this.unavailable(err, v.dir, 'the packs could not be listed');
      throw err;
    }
  }

  async readPack(vaultId: string, name: string, offset: number, maxBytes: number): Promise<PackPiece | null> {
    const v = this.vaultOf(vaultId);
    if (!isPackName(name)) return null;
    const file = path.join(pagesDir(v.dir), name);
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw this.unavailable(err, v.dir, `pack ${name} could not be read`);
    }
    try {
      const totalBytes = fs.fstatSync(fd).size;
      const n = Math.max(0, Math.min(maxBytes, totalBytes - offset));
      const bytes = Buffer.alloc(n);
      let got = 0;
      while (got < n) {
        const r = fs.readSync(fd, bytes, got, n - got, offset + got);
        if (r === 0) throw new Error(`${file} became shorter while it was read`);
        got += r;
      }
      return { totalBytes, bytes };
    } catch (err) {
      if (isFsError(err)) throw this.unavailable(err, v.dir, `pack ${name} could not be read`);
      throw err;
    } finally {
      fs.closeSync(fd);
    }
  }

  async deletePacks(vaultId: string, names: readonly string[]): Promise<number> {
    const v = this.vaultOf(vaultId);
    for (const name of names) if (!isPackName(name)) throw new Error(`${JSON.stringify(name.slice(0, 80))} is not a pack name`);
    return this.packLocks.run(vaultId, async () => {
      this.checkOpen();
      let freed = 0;
      try {
        for (const name of new Set(names)) {
          const file = path.join(pagesDir(v.dir), name);
          if (fs.existsSync(file)) freed += fs.statSync(file).size;
        }
        removePacks(v.dir, names);
      } catch (err) {
        // Some may be gone: count again from what is left.
        this.commits.setPackBytes(vaultId, packBytesOf(v.dir));
        if (isFsError(err)) throw this.unavailable(err, v.dir, 'the packs were not all removed');
        throw err;
      }
      this.commits.addPackBytes(vaultId, -freed);
      return freed;
    });
  }

  async prune(vaultId: string, keepFromGeneration: number): Promise<PrunedVault> {
    const v = this.vaultOf(vaultId);
    let removedBytes = 0;
    await this.commits.exclusive(vaultId, async (durable) => {
      const limit = Math.min(keepFromGeneration, durable.lastGeneration);
      const first = listSegments(v.dir)[0];
      if (durable.lastSeq === 0n || !first || first.generation >= limit) return durable;
      // Every append so far is durable (operations run between rounds): reopen the vault after the
      // removal so that the appender's own tail (first record, bytes) is the pruned vault's. The
      // background redundancy work (parity of sealed segments) is let finish first.
      try {
        await v.appender?.redundancyIdle();
        v.appender?.close();
        v.appender = null;
        pruneGenerations(v.dir, limit);
        v.appender = this.openAppender(vaultId, v.dir);
      } catch (err) {
        throw this.unavailable(err, v.dir, 'the old generations were not all removed');
      }
      const after = tailOf(v.appender.durableTail, durable.lastWriteAt);
      if (after.lastSeq !== durable.lastSeq || after.lastGeneration !== durable.lastGeneration) {
        throw new StorageUnavailableError(`vault ${vaultId} ends at record ${after.lastSeq} after the prune, not at ${durable.lastSeq} as before`);
      }
      removedBytes = durable.bytes - after.bytes;
      return after;
    });
    const after = this.commits.vault(vaultId);
    if (!after) throw new Error(`vault ${vaultId} was not registered`);
    return { ...after, removedBytes };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.commits.close();
    for (const v of this.vaults.values()) {
      try {
        v.appender?.close();
      } catch (err) {
        this.onNotice(`closing vault ${v.vaultId}: ${(err as Error).message}`);
      }
    }
    this.lock.release();
  }

  private checkOpen(): void {
    if (this.closed) throw new Error('the store is closed');
  }

  /** Repair on read (redundancy/protectedRead.ts); damage found there gets the vault scrubbed at once. */
  private readonly verified = new VerifiedSegments(
    maxSegmentBytes(DEFAULT_SEGMENT_BYTES),
    (m) => this.onNotice(`redundancy: ${m}`),
    (dir) => void this.scrubOne(dir),
  );

  /** The options of every scrub of this store: active segments skipped, changes made where retention cannot interfere. */
  private scrubOptions(repair: boolean): ScrubOptions {
    const skip = new Set<string>();
    for (const v of this.vaults.values()) {
      const active = v.appender?.activeSegment;
      if (active) skip.add(active);
    }
    return {
      repair,
      skip,
      activeWritable: false,
      segmentBytes: DEFAULT_SEGMENT_BYTES,
      guard: async (vaultDir, file, change) => {
        const id = path.basename(vaultDir);
        if (this.closed || !this.vaults.has(id)) return change();
        if (path.basename(path.dirname(file)) === 'pages') return this.packLocks.run(id, change);
        await this.commits.exclusive(id, async (durable) => {
          await change();
          return durable;
        });
      },
    };
  }

  /**
   * Scrubs every vault of the data folder (src/vault/redundancy/scrub.ts) while appends go on: the
   * segments being appended to are skipped, reads are async, and each repair runs between two
   * commit rounds of its vault.
   */
  scrub(repair = true, signal?: AbortSignal): Promise<ScrubDataResult> {
    this.checkOpen();
    return scrubDataDir(this.dataDir, { ...this.scrubOptions(repair), signal });
  }

  private async scrubOne(vaultDir: string): Promise<void> {
    try {
      const r = await scrubVault(vaultDir, this.scrubOptions(true));
      for (const f of r.files)
        if (f.status === 'repaired' || f.status === 'damaged')
          this.onNotice(`redundancy: ${path.basename(vaultDir)}/${f.file}: ${f.status}${f.fixed.length ? ` (${f.fixed.join('; ')})` : ''}`);
    } catch (err) {
      if (!this.closed) this.onNotice(`redundancy: scrubbing ${vaultDir} failed: ${(err as Error).message}`);
    }
  }

  private vaultOf(vaultId: string): FileVault {
    this.checkOpen();
    const v = this.vaults.get(vaultId);
    if (!v) throw new Error(`no vault ${vaultId} on this server`);
    return v;
  }

  private openAppender(vaultId: string, dir: string): RawVaultAppender {
    return RawVaultAppender.open(dir, DEFAULT_SEGMENT_BYTES, { onNotice: (m) => this.onNotice(`vault ${vaultId}: ${m}`) });
  }

  /** Scans <data>/vaults; a broken entry is reported and skipped, never fatal and never changed. */
  private load(): void {
    const vaultsDir = path.join(this.dataDir, VAULTS_DIR);
    for (const name of fs.readdirSync(vaultsDir).sort()) {
      const dir = path.join(vaultsDir, name);
      if (name.startsWith(STAGING_PREFIX)) {
        // A vault being created when the server stopped: createVault never returned, nothing was stored.
        fs.rmSync(dir, { recursive: true, force: true });
        fsyncDir(vaultsDir);
        this.onNotice(`removed ${dir}, a vault whose creation was interrupted`);
        continue;
      }
      if (!isVaultId(name)) {
        this.onNotice(`skipped ${dir}: not a vault folder (the name is not a vault id)`);
        continue;
      }
      try {
        this.loadVault(name, dir);
      } catch (err) {
        this.onNotice(`skipped vault ${name} (${dir}): ${(err as Error).message}`);
      }
    }
  }

  private loadVault(vaultId: string, dir: string): void {
    if (!fs.statSync(dir).isDirectory()) throw new Error('not a folder');
    const identityFile = path.join(dir, IDENTITY_FILE);
    const ownerFile = path.join(dir, OWNER_FILE);
    if (!fs.existsSync(identityFile)) throw new Error(`${IDENTITY_FILE} is missing`);
    if (!fs.existsSync(ownerFile)) throw new Error(`the ${OWNER_FILE} file is missing`);
    const identity = readBoundedFile(identityFile, MAX_IDENTITY_BYTES);
    const owner = readBoundedFile(ownerFile, 1024).toString('utf8').trim();
    if (!isOwner(owner)) throw new Error(`the ${OWNER_FILE} file does not hold an owner key (66 hex digits)`);
    // A prune the server did not finish (it stopped midway): its marker names the generations going.
    const marker = path.join(segmentsDir(dir), PRUNE_MARKER);
    if (fs.existsSync(marker)) {
      const keep = Number.parseInt(fs.readFileSync(marker, 'latin1').slice(0, 16), 10);
      if (Number.isSafeInteger(keep)) {
        const r = pruneGenerations(dir, keep);
        this.onNotice(
          `vault ${vaultId}: finished removing the generations below ${keep} (${r.removedSegments} segment file(s)), begun before the server stopped`,
        );
      }
    }
    removeStalePackTemps(dir);
    removeStaleTemps(pagesDir(dir));
    const appender = this.openAppender(vaultId, dir);
    const segments = listSegments(dir);
    const newest = segments[segments.length - 1];
    const lastWriteAt = newest ? Math.round(fs.statSync(newest.path).mtimeMs) : null;
    this.vaults.set(vaultId, { vaultId, dir, appender });
    this.commits.addVault({ vaultId, owner, identity }, tailOf(appender.durableTail, lastWriteAt));
    this.commits.setPackBytes(vaultId, packBytesOf(dir));
  }

  /** One round: every vault's records written, then all touched vaults fdatasync'ed in parallel. */
  private async commitRound(round: ReadonlyMap<string, readonly StoreRecord[]>): Promise<ReadonlyMap<string, Error>> {
    const failures = new Map<string, Error>();
    const touched: FileVault[] = [];
    for (const [vaultId, records] of round) {
      const v = this.vaults.get(vaultId);
      const appender = v?.appender;
      if (!v || !appender) {
        failures.set(vaultId, new Error(`vault ${vaultId} is not open`));
        continue;
      }
      try {
        for (const r of records) appender.append(r);
        if (appender.unflushed) touched.push(v);
      } catch (err) {
        failures.set(vaultId, this.unavailable(err, v.dir));
        this.rollbackQuietly(v);
      }
    }
    await Promise.all(
      touched.map(async (v) => {
        try {
          await v.appender!.flushAsync();
        } catch (err) {
          failures.set(v.vaultId, this.unavailable(err, v.dir));
          this.rollbackQuietly(v);
        }
      }),
    );
    return failures;
  }

  /** After a failed round: back to the durable point (again, in case the first attempt failed). */
  private async recover(vaultIds: readonly string[]): Promise<ReadonlyMap<string, VaultTail | Error>> {
    const out = new Map<string, VaultTail | Error>();
    for (const id of vaultIds) {
      const v = this.vaults.get(id);
      if (!v) {
        out.set(id, new Error(`vault ${id} is not open`));
        continue;
      }
      try {
        // After a prune that failed midway the vault is opened again from what is on disk.
        if (v.appender === null) v.appender = this.openAppender(id, v.dir);
        else v.appender.rollback();
        out.set(id, tailOf(v.appender.durableTail, this.commits.durableTail(id)?.lastWriteAt ?? null));
      } catch (err) {
        out.set(id, this.unavailable(err, v.dir));
      }
    }
    return out;
  }

  private rollbackQuietly(v: FileVault): void {
    try {
      v.appender?.rollback();
    } catch (err) {
      // recover() tries again before the vault's next round.
      this.onNotice(`vault ${v.vaultId}: could not go back to its durable records yet (${(err as Error).message})`);
    }
  }

  private unavailable(err: unknown, where: string, outcome = 'nothing of this append was acknowledged'): StorageUnavailableError {
    if (err instanceof StorageUnavailableError) return err;
    const e = err as NodeJS.ErrnoException;
    const code = e?.code;
    let what: string;
    switch (code) {
      case 'ENOSPC':
        what = `the server's disk is full (ENOSPC) at ${where}`;
        break;
      case 'EDQUOT':
        what = `the server's disk quota is exhausted (EDQUOT) at ${where}`;
        break;
      case 'EIO':
        what = `the server's disk reported an I/O error (EIO) at ${where}`;
        break;
      case 'EROFS':
        what = `the server's disk is read-only (EROFS) at ${where}`;
        break;
      default:
        what = `the server's storage failed at ${where} (${code ? `${code}: ` : ''}${e?.message ?? String(err)})`;
    }
    const out = new StorageUnavailableError(`${what}; ${outcome}`);
    out.cause = err;
    return out;
  }
}

function tailOf(raw: RawTail, lastWriteAt: number | null): VaultTail {
  return { ...raw, lastWriteAt };
}

function packBytesOf(dir: string): number {
  return listPacks(dir).reduce((n, p) => n + p.bytes, 0);
}

function isFsError(err: unknown): boolean {
  return typeof (err as NodeJS.ErrnoException)?.code === 'string' && typeof (err as NodeJS.ErrnoException)?.syscall === 'string';
}

/** Locks held by this process (a LOCK naming our own pid is ours only if it is in here). */
const heldHere = new Set<string>();

/**
 * The data folder's lock: a LOCK file created exclusively with the server's pid and host, so two
 * servers never share a --data folder. A lock left by a dead process on this host is taken over
 * (same rules as the vault lock in src/vault/lock.ts).
 */
class DataDirLock {
  private constructor(private readonly file: string) {}

  static acquire(dataDir: string): DataDirLock {
    const file = path.join(dataDir, DATA_LOCK_FILE);
    const me = { pid: process.pid, host: os.hostname(), since: new Date().toISOString() };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = fs.openSync(file, 'wx', 0o644);
        try {
          fs.writeSync(fd, JSON.stringify(me));
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        heldHere.add(file);
        return new DataDirLock(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = readLockFile(file);
      if (holder && holder.host !== me.host) {
        throw new Error(
          `the data folder ${dataDir} is locked by pid ${holder.pid} on host ${holder.host} since ${holder.since}. ` +
            `If no lnbackup server runs there any more, delete ${file}.`,
        );
      }
      const ours = holder?.pid === process.pid && heldHere.has(file);
      if (holder && (ours || (holder.pid !== process.pid && processAlive(holder.pid)))) {
        throw new Error(`the data folder ${dataDir} is in use by another lnbackup server (pid ${holder.pid}, since ${holder.since})`);
      }
      // The holder died, or the file is from an earlier process with our pid, or half-written.
      fs.rmSync(file, { force: true });
    }
    throw new Error(`could not take the lock ${file}; another server keeps racing for it`);
  }

  release(): void {
    if (!heldHere.delete(this.file)) return;
    if (readLockFile(this.file)?.pid === process.pid) fs.rmSync(this.file, { force: true });
  }
}

function readLockFile(file: string): { pid: number; host: string; since: string } | null {
  try {
    const info = JSON.parse(fs.readFileSync(file, 'utf8').slice(0, 4096)) as { pid: number; host: string; since: string };
    return typeof info.pid === 'number' && typeof info.host === 'string' ? info : null;
  } catch {
    return null;
  }
}
