// The active segment's mirror (docs/FORMAT.md, "Redundancy"): `<segment>.mirror` receives every
// append's bytes too, in self-checking frames, so that bitrot in the segment still being appended
// to (which has no parity yet) can be repaired. It is written with plain write(), never fsync'ed:
// it protects against bitrot, not crashes (the segment itself is fdatasync'ed before any ack). After
// a crash it may be short or torn; it is checked against the segment when a writer opens the vault
// and rebuilt from the segment where it lacks data.
//
// Frame (all integers big-endian):
//   0  4  magic "LNBM"
//   4  8  offset in the segment
//   12 4  length of the bytes
//   16 4  CRC-32 of the bytes
//   20 4  CRC-32 of frame bytes 0..19
//   24 length  the bytes
import fs from 'node:fs';
import zlib from 'node:zlib';
import type { ByteRange } from './parity.js';
import { mergeRanges } from './parity.js';

export const MIRROR_SUFFIX = '.mirror';
export const FRAME_MAGIC = Buffer.from('LNBM', 'latin1');
export const FRAME_HEADER_BYTES = 24;
/** TailMirror.open's reason when there was no mirror at all. */
export const MIRROR_MISSING = 'it was missing';
/** Frames of a mirror rebuilt from its segment carry at most this many bytes. */
const REBUILD_FRAME_BYTES = 64 * 1024;

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
  /** Bytes of the mirror file that are not part of a frame with an intact header. */
  readonly garbageBytes: number;
}

/**
 * The frames of a mirror file. A frame whose header fails its CRC (or whose numbers are out of
 * bounds) is skipped by looking for the next magic, so damage costs only the frames it touches.
 */
export function parseMirror(buf: Buffer, maxSegmentBytes: number): ParsedMirror {
  const frames: MirrorFrame[] = [];
  let garbage = 0;
  let pos = 0;
  while (pos + FRAME_HEADER_BYTES <= buf.length) {
    let good = false;
    if (buf.readUInt32BE(pos) === FRAME_MAGIC.readUInt32BE(0) && (zlib.crc32(buf.subarray(pos, pos + 20)) >>> 0) === buf.readUInt32BE(pos + 20)) {
      const offset = buf.readBigUInt64BE(pos + 4);
      const length = buf.readUInt32BE(pos + 12);
      const at = pos + FRAME_HEADER_BYTES;
      if (offset + BigInt(length) <= BigInt(maxSegmentBytes) && at + length <= buf.length) {
        const ok = (zlib.crc32(buf.subarray(at, at + length)) >>> 0) === buf.readUInt32BE(pos + 16);
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
  return { frames, garbageBytes: garbage };
}

export interface MirrorCheck {
  /** The segment's bytes with every range an intact frame disagrees with replaced by the frame's bytes. */
  readonly data: Buffer;
  /** Ranges of the segment that differed from intact mirror frames (and were replaced). */
  readonly repaired: ByteRange[];
  /** Ranges of the segment that no intact frame covers (they cannot be checked). */
  readonly unprotected: ByteRange[];
  /** The mirror is not exactly the segment in intact frames (damaged, short, or with extra bytes). */
  readonly mirrorDamaged: boolean;
  readonly problems: string[];
}

/** Checks (and in memory repairs) a segment against its mirror. */
export function checkWithMirror(segment: Buffer, mirror: Buffer, maxSegmentBytes: number): MirrorCheck {
  const parsed = parseMirror(mirror, maxSegmentBytes);
  const data = Buffer.from(segment);
  const repaired: ByteRange[] = [];
  const covered: ByteRange[] = [];
  const problems: string[] = [];
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
    const want = mirror.subarray(f.at, f.at + (end - f.offset));
    const have = segment.subarray(f.offset, end);
    if (!want.equals(have)) {
      let a = 0;
      while (want[a] === have[a]) a++;
      let b = want.length;
      while (want[b - 1] === have[b - 1]) b--;
      want.copy(data, f.offset);
      repaired.push({ start: f.offset + a, end: f.offset + b });
    }
    covered.push({ start: f.offset, end });
  }
  const cover = mergeRanges(covered);
  const unprotected: ByteRange[] = [];
  let at = 0;
  for (const c of cover) {
    if (c.start > at) unprotected.push({ start: at, end: c.start });
    at = Math.max(at, c.end);
  }
  if (at < segment.length) unprotected.push({ start: at, end: segment.length });
  if (badFrames > 0) problems.push(`${badFrames} mirror frame(s) fail their checksum`);
  if (parsed.garbageBytes > 0) problems.push(`${parsed.garbageBytes} byte(s) of the mirror are not in an intact frame`);
  if (beyond > 0) problems.push(`the mirror holds ${beyond} byte(s) past the end of the segment`);
  const unprotectedBytes = unprotected.reduce((n, r) => n + r.end - r.start, 0);
  if (unprotectedBytes > 0) problems.push(`${unprotectedBytes} byte(s) of the segment are not in the mirror`);
  return { data, repaired: mergeRanges(repaired), unprotected, mirrorDamaged: problems.length > 0, problems };
}

/** The mirror of a segment holding `bytes`, in frames of 64 KiB. */
export function mirrorOf(bytes: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += REBUILD_FRAME_BYTES) {
    const chunk = bytes.subarray(at, Math.min(bytes.length, at + REBUILD_FRAME_BYTES));
    parts.push(frameHeader(at, chunk), chunk);
  }
  return Buffer.concat(parts);
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
   * is exactly the segment in intact frames, rewritten from the segment otherwise.
   */
  static open(segmentPath: string, segment: Buffer, maxSegmentBytes: number): { mirror: TailMirror; rebuilt: string | null } {
    const file = segmentPath + MIRROR_SUFFIX;
    let why: string | null = null;
    if (!fs.existsSync(file)) why = segment.length > 0 ? MIRROR_MISSING : null;
    else {
      const size = fs.statSync(file).size;
      if (size > 2 * maxSegmentBytes + (1 << 20)) why = `it is ${size} bytes, far more than its segment`;
      else {
        const check = checkWithMirror(segment, fs.readFileSync(file), maxSegmentBytes);
        if (check.repaired.length > 0) why = 'it disagrees with the segment';
        else if (check.mirrorDamaged) why = check.problems.join('; ');
      }
    }
    if (why === null && fs.existsSync(file)) {
      const fd = fs.openSync(file, 'r+');
      return { mirror: new TailMirror(segmentPath, fd, fs.fstatSync(fd).size), rebuilt: null };
    }
    const bytes = mirrorOf(segment);
    const fd = fs.openSync(file, 'w', 0o600);
    try {
      let written = 0;
      while (written < bytes.length) written += fs.writeSync(fd, bytes, written, bytes.length - written, written);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    return { mirror: new TailMirror(segmentPath, fd, bytes.length), rebuilt: why };
  }

  /** A new, empty mirror for a new (empty) segment. */
  static create(segmentPath: string): TailMirror {
    const fd = fs.openSync(segmentPath + MIRROR_SUFFIX, 'w', 0o600);
    return new TailMirror(segmentPath, fd, 0);
  }

  /** Mirrors bytes just written to the segment at `offset` (one write() call; no fsync). */
  write(offset: number, bytes: Buffer): void {
    if (this.fd === null) return;
    const header = frameHeader(offset, bytes);
    const total = header.length + bytes.length;
    let written = fs.writevSync(this.fd, [header, bytes], this.size);
    while (written < total) {
      const rest = Buffer.concat([header, bytes]).subarray(written);
      written += fs.writeSync(this.fd, rest, 0, rest.length, this.size + written);
    }
    this.size += total;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
