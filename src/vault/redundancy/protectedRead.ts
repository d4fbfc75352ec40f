// Repair on read: a vault file read through its protection (parity for sealed segments and packs,
// the mirror for the active segment), every block checked, damaged blocks rebuilt in memory. The
// report names what was repaired and, exactly (file and byte ranges), what could not be.
// repairVaultInMemory does it for every segment of a vault before a restore or a verify reads it:
// VaultReader then reads the repaired contents of damaged files from memory (ReadRepair).
import fs from 'node:fs';
import path from 'node:path';
import { HEADER_BYTES, IDENTITY_FILE, MAX_IDENTITY_BYTES, MAX_SEALED_BYTES, wellFormedRecordEnd } from '../format.js';
import { DEFAULT_SEGMENT_BYTES } from '../identity.js';
import { listPacks, MAX_PACK_BYTES } from '../packFiles.js';
import { listSegments, segmentOfPath } from '../segments.js';
import { checkIdentity, IDENTITY_COPY_NAME } from './identityCopy.js';
import { describeRanges } from './keeper.js';
import { checkWithMirror, MIRROR_SUFFIX, type MirrorCheck } from './mirror.js';
import { checkWithParity, geometry, PARITY_SUFFIX, parityFileBytes, parseParityFile, readFileChunked, type ByteRange, type ParityCheck } from './parity.js';

export type { ByteRange } from './parity.js';

/** How a file is protected, and what reading it found. */
export interface FileReport {
  readonly file: string;
  readonly protection: 'parity' | 'mirror' | 'none';
  /**
   * ok: checked, intact. repaired: damaged, every damaged byte rebuilt. damaged: some bytes could
   * not be rebuilt (`lost`). unverified: no usable protection, the bytes cannot be checked.
   */
  readonly status: 'ok' | 'repaired' | 'damaged' | 'unverified';
  /** Bytes of the file (as it should be). */
  readonly bytes: number;
  /** Ranges of the file that were damaged and are rebuilt in the returned contents. */
  readonly repaired: ByteRange[];
  /** Ranges of the file that are damaged and could not be rebuilt. */
  readonly lost: ByteRange[];
  /** The protection itself needs writing again (damaged parity blocks or header copy, a torn mirror). */
  readonly protectionDamaged: boolean;
  /** What was found, in words. */
  readonly notes: string[];
}

export interface ProtectedRead {
  /** The file's contents, repaired where possible (null when the file is missing and could not be rebuilt). */
  readonly data: Buffer | null;
  readonly report: FileReport;
  /** The parity check, when parity was used. */
  readonly parity: ParityCheck | null;
  /** The mirror check, when the mirror was used. */
  readonly mirror: MirrorCheck | null;
}

export interface ProtectedReadOptions {
  /** Largest length the file may have (bounds every length read from its parity). */
  readonly maxDataBytes: number;
}

/** The bounds for a vault's files: segments at most segmentBytes + one largest record. */
export function maxSegmentBytes(segmentBytes = DEFAULT_SEGMENT_BYTES): number {
  return segmentBytes + HEADER_BYTES + MAX_SEALED_BYTES;
}

/**
 * `raw`, the file as read, is longer than its parity says; `covered` is its first bytes as the
 * parity rebuilt them. When the file is a segment whose records run to exactly the end of
 * `covered` and a well-formed record follows there, the extra bytes are records appended after the
 * parity was made (a writer that went on in a segment it had sealed): returns `covered` with them.
 */
function recordsAppendedAfter(file: string, covered: Buffer, raw: Buffer): Buffer | null {
  const segment = segmentOfPath(file);
  if (!segment) return null;
  let at = 0;
  let seq = segment.firstSeq;
  while (at < covered.length) {
    const end = wellFormedRecordEnd(covered, at, seq);
    if (end === null) return null;
    at = end;
    seq++;
  }
  const whole = Buffer.concat([covered, raw.subarray(covered.length)]);
  return wellFormedRecordEnd(whole, covered.length, seq) === null ? null : whole;
}

async function readIfExists(file: string, maxBytes: number): Promise<Buffer | null> {
  try {
    return await readFileChunked(file, maxBytes);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Reads `file` through its protection: `<file>.parity` when it exists and is readable, else
 * `<file>.mirror`, else the bytes as they are (unverified).
 */
export async function readProtected(file: string, options: ProtectedReadOptions): Promise<ProtectedRead> {
  const max = options.maxDataBytes;
  const notes: string[] = [];
  const raw = await readIfExists(file, max + (1 << 20)).catch((err: Error) => {
    notes.push(`the file could not be read whole (${err.message})`);
    return null;
  });
  const parityRaw = await readIfExists(file + PARITY_SUFFIX, parityFileBytes(geometry(max)) + (1 << 20)).catch((err: Error) => {
    notes.push(`its parity file could not be read (${err.message})`);
    return null;
  });
  if (parityRaw !== null) {
    const parsed = parseParityFile(parityRaw, max);
    if (parsed) {
      const check = await checkWithParity(raw ?? Buffer.alloc(0), parsed);
      if (raw === null) notes.push('the file is missing');
      if (check.missingBytes > 0 && raw !== null) notes.push(`the file is ${check.missingBytes} bytes shorter than it was written`);
      // Bytes past what the parity covers are cut off, unless they are records that continue the
      // file's own: then they were appended after the parity was made, and are kept.
      const later = raw !== null && check.extraBytes > 0 ? recordsAppendedAfter(file, check.data, raw) : null;
      if (later) notes.push(`its last ${check.extraBytes} bytes hold records written after its parity was made: they are kept (its parity must be made again)`);
      else if (check.extraBytes > 0) notes.push(`the file has ${check.extraBytes} bytes more than it was written`);
      if (check.badBlocks > 0) notes.push(`${check.badBlocks} damaged 4 KiB block(s) (data and parity)`);
      for (const p of check.parityProblems) notes.push(`parity file: ${p}`);
      const cutExtra = check.extraBytes > 0 && !later;
      const status = check.lost.length > 0 ? 'damaged' : check.repaired.length > 0 || cutExtra ? 'repaired' : 'ok';
      if (check.lost.length > 0)
        notes.push(`${describeRanges(check.lost)} could not be rebuilt (${check.badStripes} stripe(s) with more than 3 damaged blocks)`);
      const data = later ?? check.data;
      return {
        data: check.lost.length > 0 && raw === null ? null : data,
        parity: check,
        mirror: null,
        report: {
          file,
          protection: 'parity',
          status,
          bytes: data.length,
          repaired: check.repaired,
          lost: check.lost,
          protectionDamaged: check.parityDamaged || later !== null,
          notes,
        },
      };
    }
    notes.push('its parity file is unreadable (both header copies are damaged)');
  }
  if (raw === null) {
    return {
      data: null,
      parity: null,
      mirror: null,
      report: {
        file,
        protection: 'none',
        status: 'damaged',
        bytes: 0,
        repaired: [],
        lost: [],
        protectionDamaged: parityRaw !== null,
        notes: [...notes, 'the file is missing'],
      },
    };
  }
  const segment = segmentOfPath(file);
  const mirrorRaw = segment ? await readIfExists(file + MIRROR_SUFFIX, 2 * max + (1 << 20)).catch(() => null) : null;
  if (segment && mirrorRaw !== null) {
    const check = checkWithMirror(raw, mirrorRaw, segment, max);
    notes.push(...check.problems.map((p) => `mirror: ${p}`));
    if (check.repaired.length > 0) notes.push(`${describeRanges(check.repaired)} differed from the mirror and are taken from it`);
    if (check.conflicts.length > 0)
      notes.push(
        `${describeRanges(check.conflicts)} differ from the mirror, which has no header that vouches for it: the segment's well-formed records are kept (the key decides: lnbackup verify)`,
      );
    return {
      data: check.data,
      parity: null,
      mirror: check,
      report: {
        file,
        protection: 'mirror',
        status: check.repaired.length > 0 ? 'repaired' : 'ok',
        bytes: check.data.length,
        repaired: check.repaired,
        lost: [],
        protectionDamaged: check.mirrorDamaged || parityRaw !== null,
        notes,
      },
    };
  }
  if (parityRaw === null) notes.push('it has no parity and no mirror');
  return {
    data: raw,
    parity: null,
    mirror: null,
    report: { file, protection: 'none', status: 'unverified', bytes: raw.length, repaired: [], lost: [], protectionDamaged: parityRaw !== null, notes },
  };
}

/** What VaultReader needs to read a vault repaired in memory (see reader.ts ReadOptions.repair). */
export interface ReadRepair {
  /** Repaired contents of damaged files, by path. */
  readonly overlay: ReadonlyMap<string, Buffer>;
  /** Ranges that could not be rebuilt, by path. */
  readonly lost: ReadonlyMap<string, readonly ByteRange[]>;
  /**
   * Segments protected by a mirror: the segment as its mirror says it is (MirrorView.composite),
   * by path. A reader with the key tries it only where the segment's own bytes fail to
   * authenticate (vault/settleMirrors.ts); without the key nothing is decided from it.
   */
  readonly mirrors?: ReadonlyMap<string, Buffer>;
}

export interface VaultRepair extends ReadRepair {
  /** Every segment's report (in record order), then every page pack's. */
  readonly files: FileReport[];
  /** The files whose damage was repaired in memory. */
  readonly repaired: FileReport[];
  /** The files with damage that could not be repaired. */
  readonly unrecoverable: FileReport[];
  /** Problems of VAULT.json and its copy (VAULT.json itself is repaired only by `scrub --repair`). */
  readonly identityProblems: string[];
  /** The identity's good bytes (VAULT.json's, or its copy's when VAULT.json is damaged), null when neither is known good. */
  readonly identity: Buffer | null;
}

export interface RepairSummary {
  readonly repaired: { file: string; ranges: ByteRange[] }[];
  readonly unrecoverable: { file: string; ranges: ByteRange[]; notes: string[] }[];
  readonly identityProblems: string[];
}

/**
 * Reads every segment and page pack of a vault through its protection, keeping in memory the repaired
 * contents of damaged ones, for a VaultReader (restore, verify) to read instead of the files.
 * Changes nothing on disk (that is `lnbackup scrub --repair`).
 */
export async function repairVaultInMemory(vaultDir: string, segmentBytes?: number): Promise<VaultRepair> {
  const max = maxSegmentBytes(segmentBytes ?? segmentBytesOf(vaultDir));
  const overlay = new Map<string, Buffer>();
  const lost = new Map<string, ByteRange[]>();
  const mirrors = new Map<string, Buffer>();
  const files: FileReport[] = [];
  const protectedFiles: { path: string; max: number }[] = [
    ...listSegments(vaultDir).map((s) => ({ path: s.path, max })),
    ...listPacks(vaultDir).map((p) => ({ path: p.path, max: MAX_PACK_BYTES })),
  ];
  for (const f of protectedFiles) {
    const r = await readProtected(f.path, { maxDataBytes: f.max });
    if (r.mirror) {
      // Decided record by record with the key (settleMirrors), not here.
      mirrors.set(f.path, r.mirror.composite);
      files.push({ ...r.report, status: 'ok', repaired: [] });
      continue;
    }
    files.push(r.report);
    if (r.report.status === 'repaired' && r.data) overlay.set(f.path, r.data);
    if (r.report.status === 'damaged') {
      lost.set(f.path, r.report.lost);
      // Rebuild what can be: the stripes that could be repaired are right, the rest is as read.
      if (r.data && r.report.repaired.length > 0) overlay.set(f.path, r.data);
    }
  }
  const identity = checkIdentity(vaultDir);
  return {
    overlay,
    lost,
    mirrors,
    files,
    repaired: files.filter((f) => f.status === 'repaired'),
    unrecoverable: files.filter((f) => f.status === 'damaged'),
    identityProblems: identity.identityOk ? [] : identity.problems,
    identity: identity.good,
  };
}

/** The summary for JSON output. */
export function summarizeRepair(r: VaultRepair): RepairSummary {
  return {
    repaired: r.repaired.map((f) => ({ file: f.file, ranges: f.repaired })),
    unrecoverable: r.unrecoverable.map((f) => ({ file: f.file, ranges: f.lost, notes: f.notes })),
    identityProblems: r.identityProblems,
  };
}

/** One line per repaired or damaged file, for notices. */
export function describeRepair(r: VaultRepair): string[] {
  const lines: string[] = [];
  for (const f of r.repaired) {
    lines.push(
      `repaired in memory: ${f.file}: ${describeRanges(f.repaired)} were damaged and are rebuilt from its ${f.protection} (run lnbackup scrub --repair to fix the file)`,
    );
  }
  for (const f of r.unrecoverable) {
    lines.push(`DAMAGED beyond repair: ${f.file}: ${f.lost.length > 0 ? `${describeRanges(f.lost)} cannot be rebuilt` : f.notes.join('; ')}`);
  }
  for (const p of r.identityProblems) {
    lines.push(
      `identity: ${p}${/VAULT\.json is (damaged|missing)/.test(p) ? ` (read from ${IDENTITY_COPY_NAME}; run lnbackup scrub --repair to restore VAULT.json)` : ''}`,
    );
  }
  return lines;
}

/** The vault's segment size from VAULT.json when it can be read without a key, else the default. */
export function segmentBytesOf(vaultDir: string): number {
  try {
    const raw = JSON.parse(fs.readFileSync(path.join(vaultDir, IDENTITY_FILE), 'utf8').slice(0, MAX_IDENTITY_BYTES)) as { segmentBytes?: unknown };
    const n = raw.segmentBytes;
    if (typeof n === 'number' && Number.isInteger(n) && n >= 4096 && n <= 1 << 30) return n;
  } catch {
    // the server's sealed identity, or a damaged one: the default bound
  }
  return DEFAULT_SEGMENT_BYTES;
}

/**
 * Repair on read for a store that serves records (the server's file store): before records are
 * read from sealed segments, those segments are checked against their parity, each once as long
 * as it stays unchanged on disk; damaged ones are served from their repaired contents and
 * reported (`onDamage` then gets the vault, to repair the files in place).
 */
export class VerifiedSegments {
  private readonly clean = new Map<string, string>();

  constructor(
    private readonly maxDataBytes: number,
    private readonly onNotice: (message: string) => void,
    private readonly onDamage: (vaultDir: string) => void,
    private readonly limit = 8192,
  ) {}

  /** The repaired contents to read for records from `fromSeq` on, about `maxBytes` of them. */
  async repairFor(vaultDir: string, fromSeq: bigint, maxBytes: number): Promise<ReadRepair> {
    const overlay = new Map<string, Buffer>();
    const lost = new Map<string, ByteRange[]>();
    const segments = listSegments(vaultDir);
    let start = 0;
    for (let i = 0; i < segments.length && segments[i].firstSeq <= fromSeq; i++) start = i;
    let bytes = 0;
    let damaged = false;
    for (let i = start; i < segments.length && (i === start || bytes < maxBytes); i++) {
      const s = segments[i];
      let stat: fs.Stats;
      try {
        stat = fs.statSync(s.path);
      } catch {
        continue;
      }
      if (i !== start) bytes += stat.size;
      if (!fs.existsSync(s.path + PARITY_SUFFIX)) continue; // the active segment, or one being sealed
      const stamp = `${stat.size}:${stat.mtimeMs}:${stat.ino}`;
      if (this.clean.get(s.path) === stamp) continue;
      const r = await readProtected(s.path, { maxDataBytes: this.maxDataBytes });
      if (r.report.status === 'ok' && !r.report.protectionDamaged) {
        if (this.clean.size >= this.limit) this.clean.delete(this.clean.keys().next().value as string);
        this.clean.set(s.path, stamp);
        continue;
      }
      if (r.report.status === 'repaired' && r.data) {
        overlay.set(s.path, r.data);
        this.onNotice(`${s.path}: ${describeRanges(r.report.repaired)} were damaged on disk; served repaired from its parity`);
      } else if (r.report.status === 'damaged') {
        lost.set(s.path, r.report.lost);
        if (r.data && r.report.repaired.length > 0) overlay.set(s.path, r.data);
        this.onNotice(`${s.path}: DAMAGED beyond repair: ${r.report.lost.length > 0 ? describeRanges(r.report.lost) : r.report.notes.join('; ')}`);
      }
      damaged = true;
    }
    if (damaged) this.onDamage(vaultDir);
    return { overlay, lost };
  }
}
