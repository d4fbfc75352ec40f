// The active segment's mirror (docs/FORMAT.md, "The active segment's mirror"): `<segment>.mirror`
// receives every append's bytes too, in self-checking frames, so that bitrot in the segment still
// being appended to (which has no parity yet) can be repaired. Appends to it are plain write()s,
// never fsync'ed: it protects against bitrot, not crashes. What makes it safe to repair from is
// that it never holds a frame older than its segment's durable bytes: every change that drops or
// replaces frames (a rewrite, a new mirror over an old file of the same name) is durable before the
// writer appends again, and such a mirror says so with its header (format 2). A mirror without that
// header (written by lnbackup before it) may hold stale frames: its frames are used only where the
// segment's own bytes are not a well-formed record, and the readers with the key decide by
// authentication either way (vault/settleMirrors.ts).
//
// Mirror file: a 24-byte header, then frames (all integers big-endian).
//   header: 0 4 magic "LNBH", 4 1 version = 2, 5 3 zero, 8 4 the segment's generation,
//           12 8 the segment's first record, 20 4 CRC-32 of header bytes 0..19
//   frame:  0 4 magic "LNBM", 4 8 offset in the segment, 12 4 length of the bytes,
//           16 4 CRC-32 of the bytes, 20 4 CRC-32 of frame bytes 0..19, 24 length the bytes
import fs from 'node:fs';
import zlib from 'node:zlib';
import { writeFileAtomic } from '../../util/durableFs.js';
import { wellFormedRecordEnd } from '../format.js';
import { segmentOfPath } from '../segments.js';
import type { ByteRange } from './parity.js';
import { mergeRanges } from './parity.js';

export const MIRROR_SUFFIX = '.mirror';
export const FRAME_MAGIC = Buffer.from('LNBM', 'latin1');
export const FRAME_HEADER_BYTES = 24;
const HEADER_MAGIC = Buffer.from('LNBH', 'latin1');
export const MIRROR_HEADER_BYTES = 24;
const MIRROR_VERSION = 2;
/** TailMirror.open's reason when there was no mirror at all. */
export const MIRROR_MISSING = 'it was missing';
/**
 * TailMirror.open's reason when the mirror is intact but lacks the segment's last bytes: what a
 * process killed between its write to the segment and its write to the mirror leaves (the segment
 * is written first). Expected after a crash, so the writers say nothing about it.
 */
export const MIRROR_BEHIND = 'it lacks the bytes last written to the segment';
/** Frames of a mirror rebuilt from its segment carry at most this many bytes. */
const REBUILD_FRAME_BYTES = 64 * 1024;

/** The segment a mirror belongs to, as its file name says. */
export interface MirrorOwner {
  readonly generation: number;
  readonly firstSeq: bigint;
}

/** The owner of the segment at `segmentPath` (from its name). */
export function ownerOf(segmentPath: string): MirrorOwner {
  const s = segmentOfPath(segmentPath);
  if (!s) throw new Error(`${segmentPath} is not named like a segment file`);
  return s;
}

/** The header of a mirror (format 2) of the segment `owner`. */
export function mirrorHeader(owner: MirrorOwner): Buffer {
  const h = Buffer.alloc(MIRROR_HEADER_BYTES);
  HEADER_MAGIC.copy(h, 0);
  h[4] = MIRROR_VERSION;
  h.writeUInt32BE(owner.generation, 8);
  h.writeBigUInt64BE(owner.firstSeq, 12);
  h.writeUInt32BE(zlib.crc32(h.subarray(0, 20)) >>> 0, 20);
  return h;
}

function readMirrorHeader(buf: Buffer): MirrorOwner | null {
  if (buf.length < MIRROR_HEADER_BYTES || !buf.subarray(0, 4).equals(HEADER_MAGIC) || buf[4] !== MIRROR_VERSION) return null;
  if (zlib.crc32(buf.subarray(0, 20)) >>> 0 !== buf.readUInt32BE(20)) return null;
  return { generation: buf.readUInt32BE(8), firstSeq: buf.readBigUInt64BE(12) };
}

export function frameHeader(offset: number, bytes: Buffer): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  FRAME_MAGIC.copy(h, 0);
  h.writeBigUInt64BE(BigInt(offset), 4);
  h.writeUInt32BE(bytes.length, 12);
  h.writeUInt32BE(zlib.crc32(bytes) >>> 0, 16);
  h.writeUInt32BE(zlib.crc32(h.subarray(0, 20)) >>> 0, 20);
  return h;
}

export interface MirrorFrame {
  /** Offset in the segment. */
  readonly offset: number;
  readonly length: number;
  /** Where the bytes are in the mirror file. */
  readonly at: number;
  /** The bytes match their CRC. */
  readonly ok: boolean;
}

export interface ParsedMirror {
  readonly frames: MirrorFrame[];
  /** Bytes of the mirror file that are not part of a frame with an intact header (nor the file's header). */
  readonly garbageBytes: number;
  /** The segment the file's header names (format 2), or null: no header (an earlier version's mirror) or a damaged one. */
  readonly owner: MirrorOwner | null;
}

/**
 * The frames of a mirror file. A frame whose header fails its CRC (or whose numbers are out of
 * bounds) is skipped by looking for the next magic, so damage costs only the frames it touches.
 */
export function parseMirror(buf: Buffer, maxSegmentBytes: number): ParsedMirror {
  const frames: MirrorFrame[] = [];
  const owner = readMirrorHeader(buf);
  let garbage = 0;
  let pos = owner ? MIRROR_HEADER_BYTES : 0;
  while (pos + FRAME_HEADER_BYTES <= buf.length) {
    let good = false;
    if (buf.readUInt32BE(pos) === FRAME_MAGIC.readUInt32BE(0) && zlib.crc32(buf.subarray(pos, pos + 20)) >>> 0 === buf.readUInt32BE(pos + 20)) {
      const offset = buf.readBigUInt64BE(pos + 4);
      const length = buf.readUInt32BE(pos + 12);
      const at = pos + FRAME_HEADER_BYTES;
      if (offset + BigInt(length) <= BigInt(maxSegmentBytes) && at + length <= buf.length) {
        const ok = zlib.crc32(buf.subarray(at, at + length)) >>> 0 === buf.readUInt32BE(pos + 16);
        frames.push({ offset: Number(offset), length, at, ok });
        pos = at + length;
        good = true;
      }
    }
    if (!good) {
      const next = buf.indexOf(FRAME_MAGIC, pos + 1);
      const end = next < 0 ? buf.length : next;
      garbage += end - pos;
      pos = end;
    }
  }
  garbage += buf.length - pos;
  return { frames, garbageBytes: garbage, owner };
}

export interface MirrorView {
  /** The segment's bytes with every intact frame laid over them, later frames over earlier ones. */
  readonly composite: Buffer;
  /** The mirror's header names this segment: its frames are never older than the segment's durable bytes. */
  readonly trusted: boolean;
  /** Ranges of the segment that no intact frame covers (they cannot be checked). */
  readonly unprotected: ByteRange[];
  /** What is wrong with the mirror itself (none: it is exactly the segment in intact frames, with its header). */
  readonly problems: string[];
}

/** The segment as its mirror's intact frames say it is; never longer than the segment. */
export function viewWithMirror(segment: Buffer, mirror: Buffer, owner: MirrorOwner, maxSegmentBytes: number): MirrorView {
  const parsed = parseMirror(mirror, maxSegmentBytes);
  const composite = Buffer.from(segment);
  const covered: ByteRange[] = [];
  let badFrames = 0;
  let beyond = 0;
  for (const f of parsed.frames) {
    if (!f.ok) {
      badFrames++;
      continue;
    }
    if (f.offset >= segment.length) {
      beyond += f.length;
      continue;
    }
    const end = Math.min(f.offset + f.length, segment.length);
    if (end < f.offset + f.length) beyond += f.offset + f.length - end;
    mirror.copy(composite, f.offset, f.at, f.at + (end - f.offset));
    covered.push({ start: f.offset, end });
  }
  const unprotected: ByteRange[] = [];
  let at = 0;
  for (const c of mergeRanges(covered)) {
    if (c.start > at) unprotected.push({ start: at, end: c.start });
    at = Math.max(at, c.end);
  }
  if (at < segment.length) unprotected.push({ start: at, end: segment.length });
  const trusted = parsed.owner !== null && parsed.owner.generation === owner.generation && parsed.owner.firstSeq === owner.firstSeq;
  const problems: string[] = [];
  if (parsed.owner === null) problems.push(mirror.length > 0 ? 'it has no header (an earlier version made it, or the header is damaged)' : 'it is empty');
  else if (!trusted) problems.push(`its header names another segment (generation ${parsed.owner.generation}, first record ${parsed.owner.firstSeq})`);
  if (badFrames > 0) problems.push(`${badFrames} mirror frame(s) fail their checksum`);
  if (parsed.garbageBytes > 0) problems.push(`${parsed.garbageBytes} byte(s) of the mirror are not in an intact frame`);
  if (beyond > 0) problems.push(`the mirror holds ${beyond} byte(s) past the end of the segment`);
  const unprotectedBytes = unprotected.reduce((n, r) => n + r.end - r.start, 0);
  if (unprotectedBytes > 0) problems.push(`${unprotectedBytes} byte(s) of the segment are not in the mirror`);
  return { composite, trusted, unprotected, problems };
}

/** The ranges where two buffers of the same length differ (compared 4 KiB at a time, then byte by byte). */
export function differingRanges(a: Buffer, b: Buffer, from = 0, to = a.length): ByteRange[] {
  const out: ByteRange[] = [];
  const BLOCK = 4096;
  for (let at = from; at < to; at += BLOCK) {
    const end = Math.min(to, at + BLOCK);
    if (a.subarray(at, end).equals(b.subarray(at, end))) continue;
    let i = at;
    while (i < end) {
      if (a[i] === b[i]) {
        i++;
        continue;
      }
      const start = i;
      while (i < end && a[i] !== b[i]) i++;
      out.push({ start, end: i });
    }
  }
  return mergeRanges(out);
}

/** The mirror's only problem is that its frames stop short of the segment's end. */
function lacksOnlyTheTail(check: MirrorCheck, segmentBytes: number): boolean {
  return check.problems.length === 1 && check.unprotected.length === 1 && check.unprotected[0].end === segmentBytes;
}

export interface MirrorCheck {
  /** The segment's bytes with what its mirror repairs laid over them. */
  readonly data: Buffer;
  /** Ranges of the segment replaced by the mirror's bytes. */
  readonly repaired: ByteRange[];
  /**
   * Ranges where intact frames disagree with the bytes kept: the segment's bytes there are a
   * well-formed record and the mirror has no header that vouches for its frames (only a reader
   * with the key can tell which is right; vault/settleMirrors.ts).
   */
  readonly conflicts: ByteRange[];
  readonly unprotected: ByteRange[];
  /** The segment as the mirror's intact frames say it is (MirrorView.composite). */
  readonly composite: Buffer;
  /** The mirror is not exactly the segment in intact frames under its header: it must be written again. */
  readonly mirrorDamaged: boolean;
  readonly problems: string[];
}

/**
 * Checks (and in memory repairs) a segment against its mirror, without the key. A trusted mirror
 * (format 2, for this segment) is right wherever its intact frames and the segment disagree. An
 * untrusted one repairs only records whose bytes in the segment are not well-formed (a bad header,
 * a wrong sequence number, a length past the end): where the segment holds a well-formed record
 * that differs from the mirror, the segment's bytes are kept and the difference is a conflict.
 */
export function checkWithMirror(segment: Buffer, mirror: Buffer, owner: MirrorOwner, maxSegmentBytes: number): MirrorCheck {
  const view = viewWithMirror(segment, mirror, owner, maxSegmentBytes);
  let data = view.composite;
  if (!view.trusted) {
    data = Buffer.from(segment);
    let at = 0;
    for (let seq = owner.firstSeq; at < segment.length; seq++) {
      const own = wellFormedRecordEnd(segment, at, seq);
      if (own !== null) {
        at = own;
        continue;
      }
      const theirs = wellFormedRecordEnd(view.composite, at, seq);
      if (theirs === null) break;
      view.composite.copy(data, at, at, theirs);
      at = theirs;
    }
  }
  const repaired = differingRanges(segment, data);
  const conflicts = view.trusted ? [] : differingRanges(data, view.composite);
  const problems = [...view.problems];
  if (conflicts.length > 0) problems.push(`${conflicts.length} range(s) where its frames disagree with well-formed records of the segment`);
  return { data, repaired, conflicts, unprotected: view.unprotected, composite: view.composite, mirrorDamaged: problems.length > 0, problems };
}

/** The mirror (format 2) of the segment `owner` holding `bytes`, in frames of 64 KiB. */
export function mirrorOf(bytes: Buffer, owner: MirrorOwner): Buffer {
  const parts: Buffer[] = [mirrorHeader(owner)];
  for (let at = 0; at < bytes.length; at += REBUILD_FRAME_BYTES) {
    const chunk = bytes.subarray(at, Math.min(bytes.length, at + REBUILD_FRAME_BYTES));
    parts.push(frameHeader(at, chunk), chunk);
  }
  return Buffer.concat(parts);
}

function writeAllSync(fd: number, bytes: Buffer, position: number): void {
  let written = 0;
  while (written < bytes.length) written += fs.writeSync(fd, bytes, written, bytes.length - written, position + written);
}

/** An open mirror receiving a segment's appends. */
export class TailMirror {
  private constructor(
    readonly segmentPath: string,
    private fd: number | null,
    private size: number,
  ) {}

  /**
   * Opens the mirror of the segment `segmentPath` whose bytes are `segment`: kept as it is when it
   * is exactly the segment in intact frames under its header, otherwise written again from the
   * segment atomically and durably (temp file, fsync, rename, fsync of the folder), so that no
   * frame it drops can come back after a crash once the next append is durable.
   */
  static open(segmentPath: string, segment: Buffer, maxSegmentBytes: number): { mirror: TailMirror; rebuilt: string | null } {
    const file = segmentPath + MIRROR_SUFFIX;
    const owner = ownerOf(segmentPath);
    let why: string | null = null;
    if (!fs.existsSync(file)) why = MIRROR_MISSING;
    else {
      const size = fs.statSync(file).size;
      if (size > 2 * maxSegmentBytes + (1 << 20)) why = `it is ${size} bytes, far more than its segment`;
      else {
        const check = checkWithMirror(segment, fs.readFileSync(file), owner, maxSegmentBytes);
        if (check.repaired.length > 0 || check.conflicts.length > 0) why = 'it disagrees with the segment';
        else if (check.mirrorDamaged) why = lacksOnlyTheTail(check, segment.length) ? MIRROR_BEHIND : check.problems.join('; ');
      }
    }
    if (why !== null) writeFileAtomic(file, mirrorOf(segment, owner), 0o600, `${file}.tmp-${process.pid}-0`);
    const fd = fs.openSync(file, 'r+');
    return { mirror: new TailMirror(segmentPath, fd, fs.fstatSync(fd).size), rebuilt: why };
  }

  /**
   * A new mirror for a new (empty) segment. A file of that name left from a segment that a crash
   * removed is emptied durably (fsync) before any frame can follow; a brand-new file needs no fsync.
   */
  static create(segmentPath: string): TailMirror {
    const file = segmentPath + MIRROR_SUFFIX;
    const header = mirrorHeader(ownerOf(segmentPath));
    let fd: number;
    try {
      fd = fs.openSync(file, 'wx', 0o600);
      writeAllSync(fd, header, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      fd = fs.openSync(file, 'w', 0o600);
      writeAllSync(fd, header, 0);
      fs.fsyncSync(fd);
    }
    return new TailMirror(segmentPath, fd, header.length);
  }

  /** Mirrors bytes just written to the segment at `offset` (one write() call; no fsync). */
  write(offset: number, bytes: Buffer): void {
    if (this.fd === null) return;
    const header = frameHeader(offset, bytes);
    const total = header.length + bytes.length;
    const written = fs.writevSync(this.fd, [header, bytes], this.size);
    if (written < total) writeAllSync(this.fd, Buffer.concat([header, bytes]).subarray(written), this.size + written);
    this.size += total;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
