// Paged snapshots (docs/FORMAT.md): the node's database as a list of page addresses, with only the
// pages the vault does not hold yet sealed into new packs. Staging copies the file while a db_write
// hook is pending (the only moment it is at rest: snapshotSource.ts), which costs one file copy;
// building (hashing every page, sealing the new ones) can then run inside the hook, or in slices
// between hooks for a compaction, while the node goes on. What building costs grows with the pages
// that changed, plus one keyed hash per page.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { RecordType } from '../vault/format.js';
import type { NewRecord } from '../vault/sealer.js';
import { pageAddress, type SealedPage } from './pagePack.js';
import type { NewPack, PageStore } from './pageStore.js';
import {
  encodePackList,
  encodePageManifest,
  encodeSnapshotBegin,
  encodeSnapshotEnd,
  MAX_MANIFEST_ENTRIES,
  MAX_PAGE_BYTES,
  MIN_PAGE_BYTES,
} from './payloads.js';
import { withConsistentSnapshot } from './snapshotSource.js';
import type { EpochMs } from '../util/clock.js';

export const STAGING_DIR = 'staging';
const STAGED_FILE = 'database.snapshot';
/** sqlite's default, used for an empty database. */
const DEFAULT_PAGE_BYTES = 4096;
/** New pages held in memory (sealed) before they are written as a pack. */
const PACK_BATCH_BYTES = 8 * 1024 * 1024;
/**
 * The same between hooks (asyncWrites): assembling a pack's bytes still takes the event loop, about
 * 1 ms per MiB, so packs are kept smaller there.
 */
const ASYNC_PACK_BATCH_BYTES = 2 * 1024 * 1024;
/**
 * Pages read, hashed and (when new) sealed between two looks at the clock: 256 KiB, a few ms at
 * most even when every page is new, so a slice overruns its budget by little.
 */
const READ_BYTES = 256 * 1024;

export interface StagedDatabase {
  readonly file: string;
  readonly dataVersion: number;
  readonly dbBytes: number;
  /** When the file was copied. */
  readonly takenAt: EpochMs;
}

/** Copies the database file as it is at rest (call only while a db_write hook is pending). */
export function stageDatabase(dbPath: string, vaultDir: string): StagedDatabase {
  const dir = path.join(vaultDir, STAGING_DIR);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, STAGED_FILE);
  return withConsistentSnapshot(dbPath, (view) => {
    const takenAt = Date.now();
    if (view.dbBytes === 0) {
      fs.writeFileSync(file, Buffer.alloc(0));
    } else {
      // A reflink where the filesystem has them (btrfs, XFS): no bytes copied while the hook waits.
      fs.copyFileSync(dbPath, file, fs.constants.COPYFILE_FICLONE);
      const copied = fs.statSync(file).size;
      if (copied !== view.dbBytes) throw new Error(`copying ${dbPath} gave ${copied} bytes, not ${view.dbBytes}`);
    }
    return { file, dataVersion: view.dataVersion, dbBytes: view.dbBytes, takenAt };
  });
}

/** Removes what staging left (after a snapshot is built, given up, or at open after a crash). */
export function clearStaging(vaultDir: string): void {
  fs.rmSync(path.join(vaultDir, STAGING_DIR), { recursive: true, force: true });
}

export interface PagedSnapshot {
  readonly staged: StagedDatabase;
  readonly pageSize: number;
  readonly addresses: Buffer[];
  readonly sha256: Buffer;
  /** Packs written for it (already durable in the local vault). */
  readonly packs: NewPack[];
  /** Every pack its pages are read from (the new ones included). */
  readonly packNames: string[];
  /** Pages it shares with what the vault held. */
  readonly reusedPages: number;
}

/** A paged snapshot as written to the chain: the generation it starts and what it is made of. */
export interface SnapshotTaken {
  readonly generation: number;
  readonly dataVersion: number;
  readonly dbBytes: number;
  /** When the database was copied. */
  readonly takenAt: EpochMs;
  readonly lastSeq: bigint;
  /** Pages it shares with what the vault held before. */
  readonly reusedPages: number;
  /** Content addresses of its pages, in page order. */
  readonly addresses: readonly Buffer[];
  /** Bytes of the packs written for it. */
  readonly packBytes: number;
  /** Every pack its pages are read from. */
  readonly packNames: readonly string[];
}

/**
 * Builds a paged snapshot from a staged copy, a slice at a time: step() until it returns the
 * result. With `asyncWrites`, a full batch of new pages is written as a pack on the thread pool:
 * step() then returns null, and the caller awaits written() before the next step.
 */
export class PagedSnapshotBuilder {
  private readonly fd: number;
  private readonly pageSize: number;
  private readonly pageCount: number;
  private readonly hash = crypto.createHash('sha256');
  private readonly addresses: Buffer[] = [];
  private readonly packs: NewPack[] = [];
  private batch: SealedPage[] = [];
  private readonly batchAddresses = new Set<string>();
  private readonly usedPacks = new Set<string>();
  private reused = 0;
  private next = 0;
  private closed = false;
  private writing: Promise<void> | null = null;

  constructor(
    private readonly staged: StagedDatabase,
    private readonly store: PageStore,
    private readonly pageKey: Buffer,
    /** Packs whose pages are stored again rather than reused (mostly dead packs: PageStore.sparsePacks). */
    private readonly rewrite: ReadonlySet<string> = new Set(),
    private readonly asyncWrites = false,
  ) {
    this.fd = fs.openSync(staged.file, 'r');
    this.pageSize = staged.dbBytes === 0 ? DEFAULT_PAGE_BYTES : readPageSize(this.fd, staged.file);
    if (staged.dbBytes % this.pageSize !== 0) {
      fs.closeSync(this.fd);
      throw new Error(`the database is ${staged.dbBytes} bytes, not a whole number of ${this.pageSize}-byte pages`);
    }
    this.pageCount = staged.dbBytes / this.pageSize;
  }

  /** Share of the pages done, 0..1. */
  get progress(): number {
    return this.pageCount === 0 ? 1 : this.next / this.pageCount;
  }

  /** Resolves once the pack write under way (asyncWrites) is durable; rejects when it failed. */
  async written(): Promise<void> {
    await this.writing;
  }

  /** Works for about `budgetMs` (Infinity: to the end); returns the snapshot once done. */
  step(budgetMs = Infinity): PagedSnapshot | null {
    if (this.writing !== null) throw new Error('a pack is being written: await written() before the next step');
    const until = performance.now() + budgetMs;
    const perRead = Math.max(1, Math.floor(READ_BYTES / this.pageSize));
    while (this.next < this.pageCount) {
      const n = Math.min(perRead, this.pageCount - this.next);
      const chunk = Buffer.alloc(n * this.pageSize);
      const got = fs.readSync(this.fd, chunk, 0, chunk.length, this.next * this.pageSize);
      if (got !== chunk.length) throw new Error(`the staged copy of the database ended early (page ${this.next})`);
      this.hash.update(chunk);
      for (let i = 0; i < n; i++) this.takePage(chunk.subarray(i * this.pageSize, (i + 1) * this.pageSize));
      this.next += n;
      if (this.batch.length * this.pageSize >= (this.asyncWrites ? ASYNC_PACK_BATCH_BYTES : PACK_BATCH_BYTES) && this.flush()) return null;
      if (performance.now() >= until) return null;
    }
    if (this.flush()) return null;
    this.close();
    return {
      staged: this.staged,
      pageSize: this.pageSize,
      addresses: this.addresses,
      sha256: this.hash.digest(),
      packs: this.packs,
      packNames: [...new Set([...this.usedPacks, ...this.packs.map((p) => p.name)])],
      reusedPages: this.reused,
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }

  private takePage(page: Buffer): void {
    const address = pageAddress(this.pageKey, page);
    this.addresses.push(address);
    const hex = address.toString('hex');
    const stored = this.store.packOf(address, this.rewrite);
    if (stored !== null || this.batchAddresses.has(hex)) {
      if (stored !== null) this.usedPacks.add(stored);
      this.reused++;
      return;
    }
    this.batchAddresses.add(hex);
    this.batch.push(this.store.sealPage(address, page));
  }

  /** Writes the batch of new pages as packs; true when that goes on in the background (asyncWrites). */
  private flush(): boolean {
    if (this.batch.length === 0) return false;
    const batch = this.batch;
    this.batch = [];
    this.batchAddresses.clear();
    if (!this.asyncWrites) {
      this.packs.push(...this.store.writePages(this.pageSize, batch));
      return false;
    }
    this.writing = this.store.writePagesAsync(this.pageSize, batch).then((packs) => {
      this.packs.push(...packs);
      this.writing = null;
    });
    return true;
  }
}

/** The records that start a generation from a paged snapshot: SnapshotBegin, manifests, SnapshotEnd. */
export function snapshotRecords(snapshot: PagedSnapshot, generation: number): NewRecord[] {
  const base = { generation, dataVersion: snapshot.staged.dataVersion, supersedes: 0n };
  const out: NewRecord[] = [
    { ...base, type: RecordType.SnapshotBegin, payload: encodeSnapshotBegin({ dbBytes: snapshot.staged.dbBytes, takenAt: snapshot.staged.takenAt }) },
  ];
  for (let first = 0; first < snapshot.addresses.length; first += MAX_MANIFEST_ENTRIES) {
    const addresses = snapshot.addresses.slice(first, first + MAX_MANIFEST_ENTRIES);
    out.push({ ...base, type: RecordType.PageManifest, payload: encodePageManifest({ pageSize: snapshot.pageSize, firstPage: first, addresses }) });
  }
  out.push({ ...base, type: RecordType.PackList, payload: encodePackList(snapshot.packNames) });
  out.push({ ...base, type: RecordType.SnapshotEnd, payload: encodeSnapshotEnd({ dbBytes: snapshot.staged.dbBytes, sha256: snapshot.sha256 }) });
  return out;
}

/** The page size in a sqlite file's header (bytes 16-17; 1 means 65536). */
function readPageSize(fd: number, file: string): number {
  const head = Buffer.alloc(18);
  if (fs.readSync(fd, head, 0, 18, 0) !== 18) throw new Error(`${file} is too short to be a sqlite database`);
  const raw = head.readUInt16BE(16);
  const size = raw === 1 ? 65536 : raw;
  if (size < MIN_PAGE_BYTES || size > MAX_PAGE_BYTES || (size & (size - 1)) !== 0) throw new Error(`${file} has no valid sqlite page size in its header`);
  return size;
}
