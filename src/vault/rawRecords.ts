// Keyless access to a vault directory's records, for whoever holds sealed records without the key
// (the backup server) and for the node's own writer: reading records by sequence number from the
// segment files, and appending records that arrive already sealed. Only the clear 44-byte headers
// are parsed (docs/FORMAT.md), every length is bounds-checked before use, and nothing is ever
// decrypted. Appends are written with positional writes and become durable in flush (fdatasync of
// the touched files, fsync of the folder for a new segment file); until then they can be rolled
// back to the last durable point, which cuts exactly the bytes that were never made durable.
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { fsyncDir, truncateDurably } from '../util/durableFs.js';
import { VaultError } from './errors.js';
import { decodeHeader, FormatError, HEADER_BYTES, MAGIC, MAX_SEALED_BYTES, recordHash } from './format.js';
import { RedundancyKeeper } from './redundancy/keeper.js';
import { PARITY_SUFFIX } from './redundancy/parity.js';
import { listSegments, removeWithSidecars, segmentName, segmentsDir, type SegmentFile } from './segments.js';

/**
 * A sealed record as stored: header and sealed body, with its sequence number and generation. The
 * one shape of a record everywhere it travels (the node's SealedRecord adds its hash; the server's
 * StoreRecord and the wire's WireRecord, in src/server/, are the same three fields).
 */
export interface RawRecord {
  readonly seq: bigint;
  readonly generation: number;
  /** Header and sealed body (docs/FORMAT.md), never altered. */
  readonly bytes: Buffer;
}

/** Where a vault's records end, as far as the bytes on disk tell without a key. */
export interface RawTail {
  /** Sequence number of the oldest record held (0n when none). */
  readonly firstSeq: bigint;
  /** Sequence number of the newest record held (0n when none). */
  readonly lastSeq: bigint;
  /** SHA-256 of the newest record's bytes (its chain hash), null when none. */
  readonly lastHash: Buffer | null;
  /** Generation of the newest segment (0 when none). */
  readonly lastGeneration: number;
  /** Bytes of records held (the segment files' sizes). */
  readonly bytes: number;
}

/** Largest generation number accepted (it must fit every store's integer column). */
export const MAX_GENERATION = 0x7fffffff;

/** A record offered for appending is malformed or does not continue the vault; nothing was written. */
export class RawRecordError extends Error {
  override name = 'RawRecordError';
}

/** Checks that `record.bytes` is exactly one well-formed record with the numbers it claims. */
export function checkRawRecord(record: RawRecord): void {
  const { seq, generation, bytes } = record;
  if (!Number.isInteger(generation) || generation < 1 || generation > MAX_GENERATION) {
    throw new RawRecordError(`record ${seq}: generation ${generation} is not an integer from 1 to ${MAX_GENERATION}`);
  }
  if (bytes.length < HEADER_BYTES) throw new RawRecordError(`record ${seq}: ${bytes.length} bytes is shorter than a record header`);
  let header;
  try {
    header = decodeHeader(bytes.subarray(0, HEADER_BYTES));
  } catch (err) {
    if (err instanceof FormatError) throw new RawRecordError(`record ${seq}: ${err.message}`);
    throw err;
  }
  if (header.seq !== seq) throw new RawRecordError(`record ${seq}: its header says it is record ${header.seq}`);
  if (HEADER_BYTES + header.sealedLength !== bytes.length) {
    throw new RawRecordError(`record ${seq}: its header says ${HEADER_BYTES + header.sealedLength} bytes, but it has ${bytes.length}`);
  }
}

/** The chain hash of a stored record (SHA-256 of header and sealed body). */
export function rawRecordHash(bytes: Buffer): Buffer {
  return recordHash(bytes.subarray(0, HEADER_BYTES), bytes.subarray(HEADER_BYTES));
}

/** Reads a segment file through a window, so walking its headers costs few system calls. */
class SegmentCursor {
  private window: Buffer = Buffer.alloc(0);
  private windowStart = 0;

  /** `source`: the open file, or its whole (repaired) contents. */
  constructor(
    private readonly source: number | Buffer,
    readonly size: number,
    private readonly segment: SegmentFile,
    private readonly windowBytes = 1 << 20,
  ) {}

  /** Bytes [pos, pos + length) of the file; a view valid until the next call. The caller bounds it by `size`. */
  read(pos: number, length: number): Buffer {
    if (Buffer.isBuffer(this.source)) return this.source.subarray(pos, pos + length);
    const fd = this.source;
    const start = this.windowStart;
    if (pos >= start && pos + length <= start + this.window.length) return this.window.subarray(pos - start, pos - start + length);
    const n = Math.min(Math.max(length, this.windowBytes), this.size - pos);
    const buf = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const r = fs.readSync(fd, buf, got, n - got, pos + got);
      if (r === 0) throw new VaultError(`${this.segment.path} became shorter while it was read (at byte ${pos + got})`);
      got += r;
    }
    this.window = buf;
    this.windowStart = pos;
    return buf.subarray(0, length);
  }
}

export interface ReadRawOptions {
  /** Serve nothing after this sequence number (records not yet durable). */
  readonly untilSeq?: bigint;
  /** Files to read from memory instead (path → contents repaired from parity: redundancy/protectedRead.ts). */
  readonly overlay?: ReadonlyMap<string, Buffer>;
}

/**
 * The records from `fromSeq` on, in order, up to about `maxBytes` (at least one record if there is
 * any). Whole segment files before the one holding `fromSeq` are skipped by their names; inside a
 * segment only headers are read until `fromSeq`. An incomplete record at the very end of the newest
 * segment (a torn tail, or a write in progress) ends the list; anything else out of place
 * (a bad header, a missing record) throws a VaultError naming the file and byte offset.
 */
export function readRawRecords(vaultDir: string, fromSeq: bigint, maxBytes: number, options: ReadRawOptions = {}): RawRecord[] {
  const segments = listSegments(vaultDir);
  const until = options.untilSeq ?? 0xffffffffffffffffn;
  let start = 0;
  for (let i = 0; i < segments.length && segments[i].firstSeq <= fromSeq; i++) start = i;
  const out: RawRecord[] = [];
  let total = 0;
  let expected: bigint | null = null;
  for (let si = start; si < segments.length; si++) {
    const segment = segments[si];
    if (segment.firstSeq > until) break;
    if (expected !== null && segment.firstSeq !== expected) {
      throw new VaultError(`${segment.path} starts at record ${segment.firstSeq}, but record ${expected} comes next: records are missing`);
    }
    expected = segment.firstSeq;
    const isLast = si === segments.length - 1;
    const repaired = options.overlay?.get(segment.path);
    const fd = repaired ? null : fs.openSync(segment.path, 'r');
    try {
      const cursor =
        fd === null ? new SegmentCursor(repaired as Buffer, (repaired as Buffer).length, segment) : new SegmentCursor(fd, fs.fstatSync(fd).size, segment);
      let offset = 0;
      while (offset < cursor.size) {
        if (expected > until) return out;
        const damaged = (what: string): VaultError => new VaultError(`${segment.path} at byte ${offset} (record ${expected}): ${what}`);
        if (cursor.size - offset < HEADER_BYTES) {
          if (isLast) break;
          throw damaged('the file ends inside a record header');
        }
        let header;
        try {
          header = decodeHeader(cursor.read(offset, HEADER_BYTES));
        } catch (err) {
          if (!(err instanceof FormatError)) throw err;
          if (isLast) break;
          throw damaged(`bad record header: ${err.message}`);
        }
        const end = offset + HEADER_BYTES + header.sealedLength;
        if (end > cursor.size) {
          if (isLast) break;
          throw damaged('the file ends inside a record');
        }
        if (header.seq !== expected) throw damaged(`found record ${header.seq} instead`);
        if (header.seq >= fromSeq) {
          const length = end - offset;
          if (out.length > 0 && total + length > maxBytes) return out;
          out.push({ seq: header.seq, generation: segment.generation, bytes: Buffer.from(cursor.read(offset, length)) });
          total += length;
          if (total >= maxBytes) return out;
        }
        expected = header.seq + 1n;
        offset = end;
      }
    } finally {
      if (fd !== null) fs.closeSync(fd);
    }
  }
  return out;
}

export interface AppenderOpenOptions {
  /** Told about repairs made while opening (torn tail cut off, empty segment removed) and about redundancy work. */
  readonly onNotice?: (message: string) => void;
  /** Mirror the active segment and give sealed segments parity (default true; false to measure its cost). */
  readonly redundancy?: boolean;
}

/** A record to append; `hash` may be given when the caller already has the chain hash. */
export type AppendableRecord = RawRecord & { readonly hash?: Buffer };

interface OpenSegment {
  fd: number;
  readonly path: string;
  size: number;
  readonly generation: number;
}

/** What is on disk for sure: the tail, and the segment the next record goes to with its durable size. */
interface DurablePoint {
  readonly tail: TailState;
  readonly segment: { readonly path: string; readonly size: number; readonly generation: number } | null;
  /** Segment files created after this point (they hold nothing durable). */
  readonly created: readonly string[];
}

interface TailState {
  readonly firstSeq: bigint;
  readonly lastSeq: bigint;
  readonly lastGeneration: number;
  readonly bytes: number;
  /** The chain hash of the newest record, or its bytes to hash when asked (null when none). */
  readonly last: { hash: Buffer } | { bytes: Buffer } | null;
}

const fdatasync = promisify(fs.fdatasync);
const fsyncFd = promisify(fs.fsync);
const openFile = promisify(fs.open);
const closeFile = promisify(fs.close);

async function fsyncDirAsync(dir: string): Promise<void> {
  const fd = await openFile(dir, 'r');
  try {
    await fsyncFd(fd);
  } finally {
    await closeFile(fd);
  }
}

/**
 * Appends already sealed records to a vault directory's segment files. Opening finds the tail from
 * the newest segment's headers (no key needed) and durably cuts a torn tail (never acknowledged).
 * `append` writes at once; `flushAsync`/`flushSync` make everything appended so far durable;
 * `rollback` returns to the last durable point after a failed write or flush. One writer per
 * vault directory: the caller holds the lock (the node's vault lock, the server's data lock).
 */
export class RawVaultAppender {
  private current: OpenSegment | null;
  /** Segments rotated away that still hold unflushed bytes; closed once flushed. */
  private retired: OpenSegment[] = [];
  private readonly dirty = new Set<OpenSegment>();
  private readonly dirsToSync = new Set<string>();
  private created: string[] = [];
  /** Segments rotated away, sealed (parity made) once a flush that began after the rotation succeeds. */
  private toSeal: string[] = [];
  private state: TailState;
  private durable: DurablePoint;
  private flushing: Promise<void> = Promise.resolve();
  /** Set by a failed write or flush: nothing more is appended until rollback(). */
  private broken: Error | null = null;
  private closed = false;

  private constructor(
    readonly vaultDir: string,
    readonly segmentBytes: number,
    tail: TailState,
    segmentPath: string | null,
    private readonly keeper: RedundancyKeeper,
  ) {
    this.state = tail;
    this.current = null;
    if (segmentPath !== null) {
      const fd = fs.openSync(segmentPath, 'r+');
      this.current = { fd, path: segmentPath, size: fs.fstatSync(fd).size, generation: tail.lastGeneration };
    }
    this.durable = this.point();
  }

  /** Opens `vaultDir` for appending; `segmentBytes` is the vault's segment size (VAULT.json). */
  static open(vaultDir: string, segmentBytes: number, options: AppenderOpenOptions = {}): RawVaultAppender {
    if (!Number.isInteger(segmentBytes) || segmentBytes < 1) throw new Error(`segment size ${segmentBytes} is not a positive integer`);
    const keeper = new RedundancyKeeper(vaultDir, {
      maxSegmentBytes: segmentBytes + HEADER_BYTES + MAX_SEALED_BYTES,
      onNotice: options.onNotice,
      enabled: options.redundancy,
    });
    try {
      keeper.repairNewestFromMirror();
      const { tail, segmentPath } = findRawTail(vaultDir, options);
      // A segment that has its parity is sealed: never appended to again (its parity would be stale).
      const appendTo = segmentPath !== null && !fs.existsSync(segmentPath + PARITY_SUFFIX) ? segmentPath : null;
      keeper.attach(appendTo);
      keeper.finishPending(appendTo);
      return new RawVaultAppender(vaultDir, segmentBytes, tail, appendTo, keeper);
    } catch (err) {
      keeper.close();
      throw err;
    }
  }

  /** The segment file being appended to (null when none); it has no parity yet. */
  get activeSegment(): string | null {
    return this.current?.path ?? null;
  }

  /** Resolves once the background work of redundancy (parity of sealed segments) is done. */
  redundancyIdle(): Promise<void> {
    return this.keeper.idle();
  }

  get firstSeq(): bigint {
    return this.state.firstSeq;
  }

  /** The tail including records appended but not yet flushed. */
  get tail(): RawTail {
    return publicTail(this.state);
  }

  /** The tail as of the last successful flush. */
  get durableTail(): RawTail {
    return publicTail(this.durable.tail);
  }

  /** True when records were appended since the last flush started. */
  get unflushed(): boolean {
    return this.dirty.size > 0 || this.dirsToSync.size > 0;
  }

  /**
   * Writes one record after the tail (durable only after a flush). The first record of an empty
   * vault may have any sequence number; after that each is the previous + 1. A new generation, or
   * a segment that reached `segmentBytes`, starts a new segment file.
   */
  append(record: AppendableRecord): void {
    if (this.closed) throw new Error(`the vault ${this.vaultDir} is closed`);
    if (this.broken) throw new Error(`the vault ${this.vaultDir} must be rolled back after a failed write (${this.broken.message})`);
    checkRawRecord(record);
    const tail = this.state;
    if (tail.lastSeq !== 0n && record.seq !== tail.lastSeq + 1n) {
      throw new RawRecordError(`record ${record.seq} does not follow record ${tail.lastSeq} of this vault`);
    }
    if (record.generation < tail.lastGeneration) {
      throw new RawRecordError(`record ${record.seq} is of generation ${record.generation}, older than the vault's generation ${tail.lastGeneration}`);
    }
    try {
      const seg = this.segmentFor(record);
      const { bytes } = record;
      let written = 0;
      while (written < bytes.length) {
        written += fs.writeSync(seg.fd, bytes, written, bytes.length - written, seg.size + written);
      }
      this.keeper.write(seg.size, bytes);
      seg.size += bytes.length;
      this.dirty.add(seg);
    } catch (err) {
      this.broken = err as Error;
      throw err;
    }
    this.state = {
      firstSeq: tail.firstSeq === 0n ? record.seq : tail.firstSeq,
      lastSeq: record.seq,
      lastGeneration: record.generation,
      bytes: tail.bytes + record.bytes.length,
      last: record.hash ? { hash: record.hash } : { bytes: record.bytes },
    };
  }

  /** Makes everything appended so far durable, on the thread pool (many vaults sync in parallel). */
  flushAsync(): Promise<void> {
    const run = async (): Promise<void> => {
      const f = this.beginFlush();
      try {
        await Promise.all([...f.segments.map((s) => fdatasync(s.fd)), ...f.dirs.map((d) => fsyncDirAsync(d))]);
      } catch (err) {
        this.failFlush(f, err as Error);
        throw err;
      }
      this.endFlush(f);
    };
    // One flush at a time, so durable points advance in order.
    const p = this.flushing.then(run, run);
    this.flushing = p.catch(() => undefined);
    return p;
  }

  /** Makes everything appended so far durable, blocking (the node's hot path). */
  flushSync(): void {
    const f = this.beginFlush();
    try {
      for (const s of f.segments) fs.fdatasyncSync(s.fd);
      for (const d of f.dirs) fsyncDir(d);
    } catch (err) {
      this.failFlush(f, err as Error);
      throw err;
    }
    this.endFlush(f);
  }

  /**
   * Goes back to the last durable point: removes segment files created since, truncates the
   * segment that was current then to its durable size (and fsyncs it), forgets what was appended.
   */
  rollback(): void {
    const d = this.durable;
    for (const s of this.retired) fs.closeSync(s.fd);
    this.retired = [];
    if (this.current && this.current.path !== d.segment?.path) {
      fs.closeSync(this.current.fd);
      this.current = null;
    }
    this.dirty.clear();
    this.toSeal = [];
    const doomed = [...this.created];
    for (const file of doomed) removeWithSidecars(file);
    if (doomed.length > 0) fsyncDir(segmentsDir(this.vaultDir));
    this.created = [];
    if (d.segment) {
      this.current ??= { fd: fs.openSync(d.segment.path, 'r+'), path: d.segment.path, size: d.segment.size, generation: d.segment.generation };
      fs.ftruncateSync(this.current.fd, d.segment.size);
      fs.fsyncSync(this.current.fd);
      this.current.size = d.segment.size;
    }
    // The mirror may hold bytes cut off just now: checked against the segment, rebuilt if so.
    this.keeper.attach(this.current?.path ?? null);
    this.state = d.tail;
    this.durable = this.point();
    this.broken = null;
  }

  /** Flushes what is pending (unless a write failed), then closes the files. */
  close(): void {
    if (this.closed) return;
    try {
      if (!this.broken && this.unflushed) this.flushSync();
    } finally {
      this.closed = true;
      for (const s of this.retired) fs.closeSync(s.fd);
      this.retired = [];
      if (this.current) fs.closeSync(this.current.fd);
      this.current = null;
      this.keeper.close();
    }
  }

  private point(): DurablePoint {
    const c = this.current;
    return { tail: this.state, segment: c ? { path: c.path, size: c.size, generation: c.generation } : null, created: [...this.created] };
  }

  private beginFlush(): { segments: OpenSegment[]; dirs: string[]; retired: OpenSegment[]; point: DurablePoint; seal: string[] } {
    const f = { segments: [...this.dirty], dirs: [...this.dirsToSync], retired: this.retired, point: this.point(), seal: this.toSeal };
    this.dirty.clear();
    this.dirsToSync.clear();
    this.retired = [];
    this.toSeal = [];
    return f;
  }

  private failFlush(f: { segments: OpenSegment[]; dirs: string[]; retired: OpenSegment[]; seal: string[] }, err: Error): void {
    for (const s of f.segments) this.dirty.add(s);
    for (const d of f.dirs) this.dirsToSync.add(d);
    this.retired.push(...f.retired);
    this.toSeal.push(...f.seal);
    this.broken = err;
  }

  private endFlush(f: { retired: OpenSegment[]; point: DurablePoint; seal: string[] }): void {
    for (const s of f.retired) {
      if (!this.dirty.has(s)) fs.closeSync(s.fd);
    }
    // Segments rotated away before this flush began: durable, and never written again (a rollback
    // goes back to this flush at the earliest, whose segment is a newer one).
    for (const file of f.seal) this.keeper.seal(file);
    this.durable = f.point;
    this.created = this.created.filter((file) => !f.point.created.includes(file));
  }

  private segmentFor(record: RawRecord): OpenSegment {
    const cur = this.current;
    if (cur && cur.generation === record.generation && cur.size < this.segmentBytes) return cur;
    if (cur) {
      this.keeper.retire(cur.path);
      this.toSeal.push(cur.path);
      if (this.dirty.has(cur)) this.retired.push(cur);
      else fs.closeSync(cur.fd);
      this.current = null;
    }
    const dir = segmentsDir(this.vaultDir);
    if (!fs.existsSync(dir)) {
      fs.mkdirSync(dir, { recursive: true });
      this.dirsToSync.add(this.vaultDir);
    }
    const file = path.join(dir, segmentName(record.generation, record.seq));
    const fd = fs.openSync(file, 'wx', 0o600);
    this.created.push(file);
    this.dirsToSync.add(dir);
    this.current = { fd, path: file, size: 0, generation: record.generation };
    this.keeper.startSegment(file);
    return this.current;
  }
}

function publicTail(s: TailState): RawTail {
  let lastHash: Buffer | null = null;
  if (s.last && 'hash' in s.last) lastHash = s.last.hash;
  else if (s.last) {
    lastHash = rawRecordHash(s.last.bytes);
    // Hash once; the state object is shared by the durable point, so patch it in place.
    (s as { last: TailState['last'] }).last = { hash: lastHash };
  }
  return { firstSeq: s.firstSeq, lastSeq: s.lastSeq, lastHash, lastGeneration: s.lastGeneration, bytes: s.bytes };
}

/**
 * Finds the tail from the newest segment's headers. A torn tail (a final record that is
 * incomplete, or whose header does not parse, with no whole record after it) is cut off durably
 * and reported. Anything that looks like damage to acknowledged records is refused, never cut.
 */
function findRawTail(vaultDir: string, options: AppenderOpenOptions): { tail: TailState; segmentPath: string | null } {
  for (;;) {
    const segments = listSegments(vaultDir);
    const last = segments[segments.length - 1];
    if (!last) return { tail: { firstSeq: 0n, lastSeq: 0n, lastGeneration: 0, bytes: 0, last: null }, segmentPath: null };
    const size = fs.statSync(last.path).size;
    if (size === 0) {
      removeWithSidecars(last.path);
      fsyncDir(segmentsDir(vaultDir));
      options.onNotice?.(`removed the empty segment file ${last.path}; it held no acknowledged record`);
      continue;
    }
    const scan = scanSegment(last, size);
    if (scan.tornAt !== null) {
      truncateDurably(last.path, scan.tornAt);
      options.onNotice?.(`cut off a torn record (${size - scan.tornAt} bytes at ${last.path}:${scan.tornAt}); it was never acknowledged`);
    }
    if (scan.lastRecord === null) continue; // the segment held only a torn record: it is empty now
    const bytes = segments.reduce((n, s) => n + (s === last ? (scan.tornAt ?? size) : fs.statSync(s.path).size), 0);
    return {
      tail: {
        firstSeq: segments[0].firstSeq,
        lastSeq: scan.lastSeq,
        lastGeneration: last.generation,
        bytes,
        last: { hash: rawRecordHash(scan.lastRecord) },
      },
      segmentPath: last.path,
    };
  }
}

function scanSegment(segment: SegmentFile, size: number): { lastSeq: bigint; lastRecord: Buffer | null; tornAt: number | null } {
  const fd = fs.openSync(segment.path, 'r');
  try {
    const cursor = new SegmentCursor(fd, size, segment);
    let offset = 0;
    let expected = segment.firstSeq;
    let lastStart = -1;
    let lastEnd = 0;
    let torn = false;
    while (offset < size) {
      if (size - offset < HEADER_BYTES) {
        torn = true;
        break;
      }
      let header;
      try {
        header = decodeHeader(cursor.read(offset, HEADER_BYTES));
      } catch (err) {
        if (!(err instanceof FormatError)) throw err;
        torn = true;
        break;
      }
      const end = offset + HEADER_BYTES + header.sealedLength;
      if (end > size) {
        torn = true;
        break;
      }
      if (header.seq !== expected) {
        throw new VaultError(
          `${segment.path} at byte ${offset}: found record ${header.seq} where record ${expected} belongs; ` + 'the vault is damaged and is left as it is',
        );
      }
      lastStart = offset;
      lastEnd = end;
      expected++;
      offset = end;
    }
    if (torn && wholeRecordAfter(cursor, offset + 1, expected)) {
      throw new VaultError(
        `${segment.path} at byte ${offset}: an unreadable record is followed by a whole record; ` +
          'this is damage, not a torn tail, and the vault is left as it is',
      );
    }
    const lastRecord = lastStart < 0 ? null : Buffer.from(cursor.read(lastStart, lastEnd - lastStart));
    return { lastSeq: expected - 1n, lastRecord, tornAt: torn ? offset : null };
  } finally {
    fs.closeSync(fd);
  }
}

/** True when a well-formed header of a later record, with all its bytes present, starts at or after `from`. */
function wholeRecordAfter(cursor: SegmentCursor, from: number, expectedSeq: bigint): boolean {
  if (from >= cursor.size) return false;
  const rest = Buffer.from(cursor.read(from, cursor.size - from));
  for (let at = rest.indexOf(MAGIC); at >= 0 && at + HEADER_BYTES <= rest.length; at = rest.indexOf(MAGIC, at + 1)) {
    let header;
    try {
      header = decodeHeader(rest.subarray(at, at + HEADER_BYTES));
    } catch {
      continue;
    }
    if (header.seq >= expectedSeq && at + HEADER_BYTES + header.sealedLength <= rest.length) return true;
  }
  return false;
}
