// Stores sealed records in a vault's segment files durably. A record is on disk (written,
// fdatasync'ed, and for a new segment file the folder fsync'ed too) once sync() returns; only then
// may the caller acknowledge it. Opening takes the vault lock, finds the chain's tail by reading
// the newest generation, and cuts off a torn tail left by a crash (it was never acknowledged).
import fs from 'node:fs';
import path from 'node:path';
import { fsyncDir, truncateDurably } from '../util/durableFs.js';
import { VaultError } from './errors.js';
import { genesisHash, HEADER_BYTES, MAX_SEALED_BYTES } from './format.js';
import { openIdentity, vaultIdBytes, type VaultIdentity } from './identity.js';
import type { VaultKeys } from './keys.js';
import { VaultLock } from './lock.js';
import { VaultReader, type StoredRecord } from './reader.js';
import type { ChainPosition, SealedRecord } from './sealer.js';
import { describeRanges, RedundancyKeeper } from './redundancy/keeper.js';
import { MIRROR_SUFFIX, ownerOf, viewWithMirror } from './redundancy/mirror.js';
import { PARITY_SUFFIX } from './redundancy/parity.js';
import { listSegments, removeWithSidecars, segmentName, segmentsDir } from './segments.js';

export interface WriterOpenOptions {
  /** Called for every record of the newest generation while the tail is found. */
  readonly onRecord?: (record: StoredRecord) => void;
  /** Told about repairs made while opening (torn tail cut off, empty segment removed). */
  readonly onNotice?: (message: string) => void;
  /**
   * Mirror the active segment and give sealed segments parity (docs/FORMAT.md, "Redundancy").
   * Default true; false only to measure what it costs.
   */
  readonly redundancy?: boolean;
}

interface OpenSegment {
  fd: number;
  readonly path: string;
  size: number;
  generation: number;
}

export class VaultWriter {
  private segment: OpenSegment | null = null;
  private dirSyncPending = false;
  private unsynced = false;
  /** The flush started by the newest syncAsync(), settled or not. */
  private lastFlush: Promise<void> = Promise.resolve();
  private flushesInFlight = 0;
  /** Files of finished segments, closed once no flush may still use their descriptors. */
  private retired: number[] = [];
  /**
   * Segments moved away from, sealed (parity made) once the folder entry of the segment after
   * them is durable: until then a crash can take the new file away and leave the old one the
   * newest, and a sealed segment must never be the one appended to.
   */
  private toSeal: string[] = [];
  /** Bytes in the segment files (kept current as records are appended). */
  sizeBytes: number;

  private constructor(
    readonly vaultDir: string,
    readonly identity: VaultIdentity,
    private readonly lock: VaultLock,
    private position: ChainPosition,
    segmentPath: string | null,
    private readonly keeper: RedundancyKeeper,
  ) {
    if (segmentPath !== null) {
      const fd = fs.openSync(segmentPath, 'r+');
      this.segment = { fd, path: segmentPath, size: fs.fstatSync(fd).size, generation: position.generation };
    }
    this.sizeBytes = listSegments(vaultDir).reduce((n, s) => n + fs.statSync(s.path).size, 0);
  }

  static open(vaultDir: string, keys: VaultKeys, options: WriterOpenOptions = {}): VaultWriter {
    const identity = openIdentity(vaultDir, keys);
    const lock = VaultLock.acquire(vaultDir);
    const keeper = new RedundancyKeeper(vaultDir, {
      maxSegmentBytes: identity.segmentBytes + HEADER_BYTES + MAX_SEALED_BYTES,
      onNotice: options.onNotice,
      enabled: options.redundancy,
    });
    try {
      const tail = findTail(vaultDir, identity, keys, keeper, options);
      // A segment that has its parity is sealed: it is never appended to again (that would make
      // its parity stale); the next record starts a new segment.
      const appendTo = tail.segmentPath !== null && !fs.existsSync(tail.segmentPath + PARITY_SUFFIX) ? tail.segmentPath : null;
      keeper.attach(appendTo);
      keeper.finishPending(appendTo);
      return new VaultWriter(vaultDir, identity, lock, tail, appendTo, keeper);
    } catch (err) {
      keeper.close();
      lock.release();
      throw err;
    }
  }

  /** Where the chain ends: the next record must have seq lastSeq + 1. */
  get tail(): ChainPosition {
    return this.position;
  }

  /** Writes a sealed record (durable after sync()). A new generation opens a new segment file. */
  append(record: SealedRecord): void {
    if (record.seq !== this.position.lastSeq + 1n) {
      throw new Error(`record ${record.seq} does not follow record ${this.position.lastSeq} of this vault`);
    }
    if (record.generation < this.position.generation) throw new Error('a record cannot go back to an older generation');
    const seg = this.segmentFor(record);
    try {
      let written = 0;
      while (written < record.bytes.length) {
        written += fs.writeSync(seg.fd, record.bytes, written, record.bytes.length - written, seg.size + written);
      }
      this.keeper.write(seg.size, record.bytes);
    } catch (err) {
      // All or nothing: a record whose append failed (disk full, say) was never acknowledged, so it
      // must not stay whole in the segment where a restore would take it for the in-flight one.
      fs.ftruncateSync(seg.fd, seg.size);
      throw err;
    }
    seg.size += record.bytes.length;
    this.sizeBytes += record.bytes.length;
    this.position = { lastSeq: record.seq, lastHash: record.hash, generation: record.generation };
    this.unsynced = true;
  }

  /** Makes everything appended so far durable. */
  sync(): void {
    if (this.segment && this.unsynced) fs.fdatasyncSync(this.segment.fd);
    this.unsynced = false;
    if (this.dirSyncPending) {
      fsyncDir(segmentsDir(this.vaultDir));
      this.dirSyncPending = false;
      this.sealAfter(this.lastFlush);
    }
  }

  /**
   * Makes everything appended so far durable without blocking the thread (fdatasync on libuv's
   * pool), so the records can travel to other destinations meanwhile. Resolves when they are
   * durable; rejects if the flush failed (the records' durability is then unknown).
   */
  syncAsync(): Promise<void> {
    const seg = this.segment;
    if (!seg || (!this.unsynced && !this.dirSyncPending)) return this.lastFlush;
    const dirSync = this.dirSyncPending;
    this.unsynced = false;
    this.dirSyncPending = false;
    this.flushesInFlight++;
    const flush = new Promise<void>((resolve, reject) => {
      fs.fdatasync(seg.fd, (err) => {
        this.flushesInFlight--;
        this.closeRetired();
        if (err) return reject(err);
        try {
          if (dirSync) fsyncDir(segmentsDir(this.vaultDir));
          resolve();
        } catch (dirErr) {
          reject(dirErr as Error);
        }
      });
    });
    // Everything flushed before must be durable too before this one counts as done.
    this.lastFlush = Promise.all([this.lastFlush, flush]).then(() => undefined);
    this.lastFlush.catch(() => undefined); // the caller handles it; a failure stays for later callers
    if (dirSync) this.sealAfter(this.lastFlush);
    return this.lastFlush;
  }

  close(): void {
    if (this.segment) {
      this.sync();
      fs.closeSync(this.segment.fd);
      this.segment = null;
    }
    this.keeper.close();
    this.closeRetired(true);
    this.lock.release();
  }

  /**
   * Resolves once the background work of redundancy is done (parity of sealed segments). Not
   * needed for safety: a writer that stops first leaves the mirror, and the next open finishes.
   */
  redundancyIdle(): Promise<void> {
    return this.keeper.idle();
  }

  /** The segments waiting to be sealed are sealed once `flush` (which makes the newer segment's folder entry durable) succeeds. */
  private sealAfter(flush: Promise<void>): void {
    const seal = this.toSeal;
    if (seal.length === 0) return;
    this.toSeal = [];
    flush.then(
      () => seal.forEach((file) => this.keeper.seal(file)),
      () => undefined,
    );
  }

  private closeRetired(force = false): void {
    if (this.flushesInFlight > 0 && !force) return;
    for (const fd of this.retired) fs.closeSync(fd);
    this.retired = [];
  }

  private segmentFor(record: SealedRecord): OpenSegment {
    const cur = this.segment;
    if (cur && cur.generation === record.generation && cur.size < this.identity.segmentBytes) return cur;
    if (cur) {
      if (this.unsynced) fs.fdatasyncSync(cur.fd);
      // A flush on another thread may still hold this descriptor: close it once none does.
      this.retired.push(cur.fd);
      this.closeRetired();
      this.segment = null;
      // Sealed (its parity made) once every flush that may still be writing it is done and the
      // new segment's folder entry is durable (sealAfter).
      this.keeper.retire(cur.path);
      this.toSeal.push(cur.path);
    }
    const dir = segmentsDir(this.vaultDir);
    if (!fs.existsSync(dir)) {
      fs.mkdirSync(dir, { recursive: true });
      fsyncDir(this.vaultDir);
    }
    const file = path.join(dir, segmentName(record.generation, record.seq));
    const fd = fs.openSync(file, 'wx', 0o600);
    this.segment = { fd, path: file, size: 0, generation: record.generation };
    this.keeper.startSegment(file);
    this.dirSyncPending = true;
    return this.segment;
  }
}

interface Tail extends ChainPosition {
  segmentPath: string | null;
}

/**
 * Finds where the next record goes, repairing only what was never acknowledged. The newest
 * segment, while a mirror protects it, is read against it record by record (VaultReader with
 * ReadRepair.mirrors): what its mirror repairs is written back durably before the tail is cut.
 */
function findTail(vaultDir: string, identity: VaultIdentity, keys: VaultKeys, keeper: RedundancyKeeper, options: WriterOpenOptions): Tail {
  for (;;) {
    const segments = listSegments(vaultDir);
    const last = segments[segments.length - 1];
    if (!last) return { lastSeq: 0n, lastHash: genesisHash(vaultIdBytes(identity)), generation: 0, segmentPath: null };
    if (fs.statSync(last.path).size === 0) {
      removeWithSidecars(last.path);
      fsyncDir(segmentsDir(vaultDir));
      options.onNotice?.(`removed the empty segment file ${last.name}; it held no acknowledged record`);
      continue;
    }
    const mirrored = keeper.newestMirrored();
    const mirrors = new Map<string, Buffer>();
    if (mirrored) {
      const view = viewWithMirror(fs.readFileSync(mirrored), fs.readFileSync(mirrored + MIRROR_SUFFIX), ownerOf(mirrored), keeper.maxSegmentBytes);
      mirrors.set(mirrored, view.composite);
    }
    const reader = new VaultReader(identity, keys, vaultDir, { fromGeneration: last.generation, repair: { overlay: new Map(), lost: new Map(), mirrors } });
    let lastRecord: StoredRecord | null = null;
    for (const r of reader.records()) {
      options.onRecord?.(r);
      lastRecord = r;
    }
    for (const f of reader.mirrorFindings) {
      keeper.writeBack(f.segment.path, f.data, f.repaired, "its mirror (those bytes failed authentication, the mirror's authenticate)");
      if (f.stale.length > 0) {
        options.onNotice?.(
          `the mirror of ${f.segment.name} is stale at ${describeRanges(f.stale)} (the segment's records there authenticate and are kept); it is written again`,
        );
      }
    }
    const torn = reader.tornTail;
    if (torn) {
      truncateDurably(path.join(segmentsDir(vaultDir), torn.segment), torn.offset);
      options.onNotice?.(`cut off a torn record (${torn.bytes} bytes at ${torn.segment}:${torn.offset}); it was never acknowledged`);
    }
    if (!lastRecord) {
      if (torn) continue; // the newest segment held only a torn record: it is empty now, look again
      throw new VaultError(`the newest generation of ${vaultDir} has no readable record`);
    }
    return { lastSeq: lastRecord.seq, lastHash: lastRecord.hash, generation: last.generation, segmentPath: last.path };
  }
}
