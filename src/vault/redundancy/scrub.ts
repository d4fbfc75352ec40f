// Scrub: reads every file of a vault (segments, page packs, their parity files and mirrors,
// VAULT.json and its copy), checks everything, and with `repair` fixes what it can in place:
// a damaged file is rewritten whole from its repaired contents (temp file, fsync, rename over,
// fsync of the folder: a crash leaves the old file or the new one, never a mix), damaged or
// missing parity files and mirrors are made again, VAULT.json is restored from its copy. Keyless:
// it serves a node's vault and a server's data folder alike. All reads are async, in chunks.
import fs from 'node:fs';
import path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { processAlive } from '../../util/processAlive.js';
import { decodeHeader, FormatError, HEADER_BYTES } from '../format.js';
import { VaultLock } from '../lock.js';
import { isPackName, listPacks, MAX_PACK_BYTES, PAGES_DIR } from '../packFiles.js';
import { listAllSegments, listSegments, SEGMENTS_DIR, type SegmentFile } from '../segments.js';
import { checkIdentity, IDENTITY_COPY_NAME, identityCopyBytes } from './identityCopy.js';
import { IDENTITY_FILE } from '../format.js';
import { describeRanges, removeStaleTemps } from './keeper.js';
import { MIRROR_SUFFIX, mirrorOf } from './mirror.js';
import { writeFileAtomicAsync } from '../../util/durableFs.js';
import { buildParityFile, isRedundancyTemp, PARITY_SUFFIX, type ByteRange } from './parity.js';
import { maxSegmentBytes, readProtected, segmentBytesOf } from './protectedRead.js';

export type ScrubStatus = 'ok' | 'repaired' | 'damaged' | 'unprotected' | 'skipped';

export interface ScrubFile {
  /** Path inside the vault folder, e.g. segments/g0000000001-s00000000000000000001.seg */
  readonly file: string;
  readonly kind: 'segment' | 'active segment' | 'pack' | 'identity' | 'leftover';
  readonly bytes: number;
  /**
   * ok: intact. repaired: something was wrong and is fixed now (with --repair). damaged: damage
   * is left (beyond repair, or found without --repair). unprotected: no usable parity or mirror
   * (made with --repair). skipped: being appended to by the server, or removed meanwhile.
   */
  readonly status: ScrubStatus;
  readonly found: string[];
  readonly fixed: string[];
  /** Byte ranges of the file that are damaged and could not be rebuilt. */
  readonly lost: ByteRange[];
}

export interface ScrubVaultResult {
  readonly vault: string;
  /** No damage left and nothing unprotected. */
  readonly ok: boolean;
  readonly checkedFiles: number;
  readonly bytes: number;
  readonly repairedFiles: number;
  readonly damagedFiles: number;
  readonly unprotectedFiles: number;
  /** Files with something to say (every file with --verbose use of `files` is not needed: ok files are left out). */
  readonly files: ScrubFile[];
}

export interface ScrubOptions {
  readonly repair: boolean;
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Segment files being appended to right now: not read at all (the server's own scrub). */
  readonly skip?: ReadonlySet<string>;
  /**
   * May the active segment (and its mirror) be rewritten? Default: with `repair`, when the vault's
   * writer lock can be taken (no plugin is writing); a server scrub says false.
   */
  readonly activeWritable?: boolean;
  /** The vault's segment size (default: from VAULT.json, or lnbackup's default). */
  readonly segmentBytes?: number;
  /**
   * Runs each change to a file (rewrite, new parity, mirror removal) for the owner of the vault:
   * the server runs it where retention cannot remove the file meanwhile. Default: at once.
   */
  readonly guard?: (vaultDir: string, file: string, change: () => Promise<void>) => Promise<void>;
  /** Stops the scrub between two files (it then throws ScrubStopped). */
  readonly signal?: AbortSignal;
}

export class ScrubStopped extends Error {
  override name = 'ScrubStopped';
}

function checkStop(options: ScrubOptions): void {
  if (options.signal?.aborted) throw new ScrubStopped('the scrub was stopped');
}

type Guarded = (file: string, change: () => Promise<void>) => Promise<boolean>;

/** A change is made only if the file is still there when its turn comes (retention may remove it). */
function guarded(vaultDir: string, options: ScrubOptions): Guarded {
  return async (file, change) => {
    let done = false;
    const run = async (): Promise<void> => {
      if (!fs.existsSync(file)) return;
      await change();
      done = true;
    };
    if (options.guard) await options.guard(vaultDir, file, run);
    else await run();
    return done;
  };
}

interface Counter {
  done: number;
  total: number;
}

export async function scrubVault(vaultDir: string, options: ScrubOptions): Promise<ScrubVaultResult> {
  if (!fs.existsSync(vaultDir) || !fs.statSync(vaultDir).isDirectory()) throw new Error(`${vaultDir} is not a folder`);
  const hasIdentity = fs.existsSync(path.join(vaultDir, IDENTITY_FILE)) || fs.existsSync(path.join(vaultDir, IDENTITY_COPY_NAME));
  if (!hasIdentity && !fs.existsSync(path.join(vaultDir, SEGMENTS_DIR)))
    throw new Error(`${vaultDir} is not an lnbackup vault (no ${IDENTITY_FILE}, no ${SEGMENTS_DIR}/)`);
  let lock: VaultLock | null = null;
  let activeWritable = options.activeWritable;
  if (activeWritable === undefined) {
    activeWritable = false;
    if (options.repair) {
      try {
        lock = VaultLock.acquire(vaultDir);
        activeWritable = true;
      } catch {
        lock = null;
      }
    }
  }
  try {
    return await scrubLocked(vaultDir, { ...options, activeWritable });
  } finally {
    lock?.release();
  }
}

async function scrubLocked(vaultDir: string, options: ScrubOptions & { activeWritable: boolean }): Promise<ScrubVaultResult> {
  const maxSeg = maxSegmentBytes(options.segmentBytes ?? segmentBytesOf(vaultDir));
  const segments = listSegments(vaultDir);
  const packs = listPacks(vaultDir);
  const counter: Counter = {
    done: 0,
    total: segments.reduce((n, s) => n + sizeOr0(s.path), 0) + packs.reduce((n, p) => n + p.bytes, 0),
  };
  const files: ScrubFile[] = [];
  const rel = (p: string): string => path.relative(vaultDir, p);

  files.push(await scrubIdentity(vaultDir, options.repair));
  const last = segments[segments.length - 1];
  for (const s of segments) {
    checkStop(options);
    const active = s === last && !fs.existsSync(s.path + PARITY_SUFFIX);
    if (active && options.skip?.has(s.path)) {
      files.push({ file: rel(s.path), kind: 'active segment', bytes: sizeOr0(s.path), status: 'skipped', found: ['being appended to'], fixed: [], lost: [] });
    } else if (active) {
      files.push(await scrubActive(vaultDir, s, maxSeg, options));
    } else {
      files.push(await scrubSealed(vaultDir, s.path, 'segment', maxSeg, options, s));
    }
    counter.done += sizeOr0(s.path);
    options.onProgress?.(counter.done, counter.total);
  }
  for (const p of packs) {
    checkStop(options);
    files.push(await scrubSealed(vaultDir, p.path, 'pack', MAX_PACK_BYTES, options, null));
    counter.done += p.bytes;
    options.onProgress?.(counter.done, counter.total);
  }
  files.push(...scrubLeftovers(vaultDir, options.repair));
  const checked = files.filter((f) => f.kind !== 'leftover' && f.status !== 'skipped');
  const count = (st: ScrubStatus): number => files.filter((f) => f.status === st).length;
  return {
    vault: vaultDir,
    ok: count('damaged') === 0 && count('unprotected') === 0,
    checkedFiles: checked.length,
    bytes: counter.total,
    repairedFiles: count('repaired'),
    damagedFiles: count('damaged'),
    unprotectedFiles: count('unprotected'),
    files: files.filter((f) => f.status !== 'ok'),
  };
}

function sizeOr0(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function modeOf(file: string): number {
  try {
    return fs.statSync(file).mode & 0o777;
  } catch {
    return 0o600;
  }
}

async function scrubIdentity(vaultDir: string, repair: boolean): Promise<ScrubFile> {
  const check = checkIdentity(vaultDir);
  const file = path.join(vaultDir, IDENTITY_FILE);
  const found = [...check.problems];
  const fixed: string[] = [];
  const bytes = check.good?.length ?? 0;
  if (check.good === null) return { file: IDENTITY_FILE, kind: 'identity', bytes, status: 'damaged', found, fixed, lost: [{ start: 0, end: sizeOr0(file) }] };
  if (repair && !check.identityOk) {
    await writeFileAtomicAsync(file, check.good, 0o644);
    fixed.push(`restored ${IDENTITY_FILE} from ${IDENTITY_COPY_NAME}`);
  }
  if (repair && !check.copyOk) {
    await writeFileAtomicAsync(path.join(vaultDir, IDENTITY_COPY_NAME), identityCopyBytes(check.good), 0o644);
    fixed.push(`wrote ${IDENTITY_COPY_NAME} again`);
  }
  const status: ScrubStatus = found.length === 0 ? 'ok' : repair ? 'repaired' : check.identityOk ? 'unprotected' : 'damaged';
  return { file: IDENTITY_FILE, kind: 'identity', bytes, status, found, fixed, lost: [] };
}

/** A sealed segment or a pack: checked through its parity (or, while sealing is pending, its mirror). */
async function scrubSealed(
  vaultDir: string,
  file: string,
  kind: 'segment' | 'pack',
  max: number,
  options: ScrubOptions,
  segment: SegmentFile | null,
): Promise<ScrubFile> {
  const rel = path.relative(vaultDir, file);
  const change = guarded(vaultDir, options);
  const mode = modeOf(file);
  const pr = await readProtected(file, { maxDataBytes: max });
  const r = pr.report;
  const found = [...r.notes];
  const fixed: string[] = [];
  const hasMirror = fs.existsSync(file + MIRROR_SUFFIX);
  if (!fs.existsSync(file) && !fs.existsSync(file + PARITY_SUFFIX)) {
    return { file: rel, kind, bytes: 0, status: 'skipped', found: ['removed while the scrub ran'], fixed, lost: [] };
  }
  if (r.status === 'damaged' || (pr.mirror?.conflicts.length ?? 0) > 0) {
    // Left exactly as it is: the damage stays visible, and nothing is made from bytes that are wrong
    // (nor from a segment whose mirror disagrees with its records: a reader with the key decides).
    return { file: rel, kind, bytes: r.bytes, status: 'damaged', found, fixed, lost: r.lost };
  }
  let status: ScrubStatus = 'ok';
  const data = pr.data as Buffer;
  if (r.status === 'repaired') {
    status = options.repair ? 'repaired' : 'damaged';
    if (options.repair && (await change(file, () => writeFileAtomicAsync(file, data, mode)))) {
      fixed.push(
        `rewrote the file with ${describeRanges(r.repaired.length > 0 ? r.repaired : [{ start: r.bytes, end: r.bytes + (pr.parity?.extraBytes ?? 0) }])} repaired`,
      );
    }
  }
  if (r.protection === 'parity') {
    if (r.protectionDamaged) {
      if (status === 'ok') status = options.repair ? 'repaired' : 'damaged';
      const parity = options.repair ? await buildParityFile(data) : null;
      if (parity && (await change(file, () => writeFileAtomicAsync(file + PARITY_SUFFIX, parity, 0o600)))) {
        fixed.push('wrote its parity file again');
      }
    }
    if (hasMirror) {
      found.push('a mirror is left beside it (its parity is complete)');
      if (options.repair) {
        await change(file, () => fs.promises.rm(file + MIRROR_SUFFIX, { force: true }));
        fixed.push('removed the mirror');
        if (status === 'ok') status = 'repaired';
      }
    }
  } else {
    // No usable parity: sealing never finished (the mirror is there), or the parity is lost.
    const problem = segment ? structureProblem(data, segment) : null;
    if (problem) {
      found.push(`its records do not line up (${problem}): no parity is made from it`);
      return { file: rel, kind, bytes: data.length, status: 'damaged', found, fixed, lost: [] };
    }
    if (status === 'ok') status = options.repair ? 'repaired' : 'unprotected';
    const parity = options.repair && data.length > 0 ? await buildParityFile(data) : null;
    if (parity && (await change(file, () => writeFileAtomicAsync(file + PARITY_SUFFIX, parity, 0o600)))) {
      fixed.push(
        r.protection === 'mirror' ? 'made its parity (checked against its mirror)' : 'made its parity from the file as it is (it could not be checked)',
      );
      if (hasMirror) {
        await change(file, () => fs.promises.rm(file + MIRROR_SUFFIX, { force: true }));
        fixed.push('removed its mirror');
      }
    }
  }
  return { file: rel, kind, bytes: data.length, status, found, fixed, lost: [] };
}

/** The segment being appended to: checked against its mirror; changed only when no writer has the vault. */
async function scrubActive(vaultDir: string, s: SegmentFile, max: number, options: ScrubOptions & { activeWritable: boolean }): Promise<ScrubFile> {
  const rel = path.relative(vaultDir, s.path);
  const mode = modeOf(s.path);
  const pr = await readProtected(s.path, { maxDataBytes: max });
  const r = pr.report;
  const found = [...r.notes];
  const fixed: string[] = [];
  const data = pr.data;
  if (!data) return { file: rel, kind: 'active segment', bytes: 0, status: 'skipped', found: ['removed while the scrub ran'], fixed, lost: [] };
  const differs = r.repaired.length > 0;
  const writable = options.repair && options.activeWritable;
  const conflicts = pr.mirror?.conflicts ?? [];
  if (conflicts.length > 0) {
    // Without the key nothing tells which of the two is right: both are left for the writer's open,
    // which decides by authentication (and repairs the segment or writes the mirror again).
    found.push(
      'nothing was changed: the writer decides with the key when it next opens the vault (start lightningd; lnbackup verify tells which bytes authenticate)',
    );
    return { file: rel, kind: 'active segment', bytes: data.length, status: 'damaged', found, fixed, lost: [] };
  }
  if (!options.activeWritable) {
    // A writer appends to it meanwhile: its mirror may lag a little behind; only a difference counts.
    if (!differs) return { file: rel, kind: 'active segment', bytes: data.length, status: 'ok', found: [], fixed, lost: [] };
    found.push('the vault is in use by a writer: nothing was changed (the writer repairs it from the mirror when it next opens the vault)');
    return { file: rel, kind: 'active segment', bytes: data.length, status: 'damaged', found, fixed, lost: [] };
  }
  let status: ScrubStatus = 'ok';
  if (differs) {
    status = writable ? 'repaired' : 'damaged';
    if (writable) {
      await writeFileAtomicAsync(s.path, data, mode);
      fixed.push(`rewrote the segment with ${describeRanges(r.repaired)} taken from its mirror`);
    }
  }
  if (r.protection !== 'mirror' || r.protectionDamaged || differs) {
    if (r.protection !== 'mirror') found.push('it has no mirror');
    if (status === 'ok') status = writable ? 'repaired' : 'unprotected';
    if (writable) {
      await writeFileAtomicAsync(s.path + MIRROR_SUFFIX, mirrorOf(data, s), 0o600);
      fixed.push('wrote its mirror again from the segment');
    }
  }
  return { file: rel, kind: 'active segment', bytes: data.length, status, found, fixed, lost: [] };
}

/** Parity files and mirrors whose file is gone (a removal cut short), and temp files of dead writers. */
function scrubLeftovers(vaultDir: string, repair: boolean): ScrubFile[] {
  const out: ScrubFile[] = [];
  const present = new Set([...listAllSegments(vaultDir).map((s) => s.path), ...listPacks(vaultDir).map((p) => p.path)]);
  for (const sub of [SEGMENTS_DIR, PAGES_DIR]) {
    const dir = path.join(vaultDir, sub);
    if (!fs.existsSync(dir)) continue;
    for (const name of fs.readdirSync(dir)) {
      const full = path.join(dir, name);
      const base = name.endsWith(PARITY_SUFFIX)
        ? name.slice(0, -PARITY_SUFFIX.length)
        : name.endsWith(MIRROR_SUFFIX)
          ? name.slice(0, -MIRROR_SUFFIX.length)
          : null;
      if (base === null || present.has(path.join(dir, base))) continue;
      if (!/^g\d{10}-s\d{20}\.seg$/.test(base) && !isPackName(base)) continue;
      if (repair) fs.rmSync(full, { force: true });
      out.push({
        file: path.relative(vaultDir, full),
        kind: 'leftover',
        bytes: sizeOr0(full),
        status: repair ? 'repaired' : 'ok',
        found: [`${name} protects ${base}, which is gone (a removal was cut short)`],
        fixed: repair ? ['removed it'] : [],
        lost: [],
      });
    }
    const stale = fs.readdirSync(dir).filter((n) => isRedundancyTemp(n) && !processAlive(Number(/\.tmp-(\d+)-\d+$/.exec(n)?.[1])));
    if (stale.length > 0) {
      if (repair) removeStaleTemps(dir);
      out.push({
        file: sub,
        kind: 'leftover',
        bytes: 0,
        status: repair ? 'repaired' : 'ok',
        found: [`${stale.length} temp file(s) of an interrupted write`],
        fixed: repair ? ['removed them'] : [],
        lost: [],
      });
    }
  }
  return out;
}

/** Without the key: do the record headers of a sealed segment line up, end to end? */
function structureProblem(data: Buffer, s: SegmentFile): string | null {
  let offset = 0;
  let expected = s.firstSeq;
  while (offset < data.length) {
    if (data.length - offset < HEADER_BYTES) return `the file ends inside a record header at byte ${offset}`;
    let header;
    try {
      header = decodeHeader(data.subarray(offset, offset + HEADER_BYTES));
    } catch (err) {
      if (err instanceof FormatError) return `bad record header at byte ${offset}: ${err.message}`;
      throw err;
    }
    if (header.seq !== expected) return `record ${header.seq} at byte ${offset} where ${expected} belongs`;
    offset += HEADER_BYTES + header.sealedLength;
    expected++;
  }
  return offset === data.length ? null : `the last record runs past the end of the file`;
}

export interface ScrubDataResult {
  readonly dataDir: string;
  readonly ok: boolean;
  readonly vaults: ScrubVaultResult[];
  readonly checkedFiles: number;
  readonly bytes: number;
  readonly repairedFiles: number;
  readonly damagedFiles: number;
  readonly unprotectedFiles: number;
}

/** True when the server that locks this data folder is running (its LOCK names a live process). */
export function dataDirInUse(dataDir: string): boolean {
  try {
    const info = JSON.parse(fs.readFileSync(path.join(dataDir, 'LOCK'), 'utf8').slice(0, 4096)) as { pid?: unknown };
    return typeof info.pid === 'number' && info.pid !== process.pid && processAlive(info.pid);
  } catch {
    return false;
  }
}

/** Scrubs every vault of a server's data folder (<data>/vaults/<id>). */
export async function scrubDataDir(dataDir: string, options: ScrubOptions): Promise<ScrubDataResult> {
  const vaultsDir = path.join(dataDir, 'vaults');
  if (!fs.existsSync(vaultsDir)) throw new Error(`${dataDir} is not an lnbackup server's data folder (no vaults/ in it)`);
  const names = fs
    .readdirSync(vaultsDir)
    .filter((n) => /^[0-9a-f]{32}$/.test(n))
    .sort();
  const dirs = names.map((n) => path.join(vaultsDir, n)).filter((d) => fs.statSync(d).isDirectory());
  const sizes = dirs.map((d) => listSegments(d).reduce((n, s) => n + sizeOr0(s.path), 0) + listPacks(d).reduce((n, p) => n + p.bytes, 0));
  const total = sizes.reduce((a, b) => a + b, 0);
  const activeWritable = options.activeWritable ?? (options.repair && !dataDirInUse(dataDir));
  const vaults: ScrubVaultResult[] = [];
  let before = 0;
  for (let i = 0; i < dirs.length; i++) {
    const base = before;
    vaults.push(
      await scrubVault(dirs[i], {
        ...options,
        activeWritable,
        onProgress: options.onProgress && ((done) => options.onProgress?.(base + done, total)),
      }),
    );
    before += sizes[i];
    await yieldToLoop();
  }
  const sum = (f: (v: ScrubVaultResult) => number): number => vaults.reduce((n, v) => n + f(v), 0);
  return {
    dataDir,
    ok: vaults.every((v) => v.ok),
    vaults,
    checkedFiles: sum((v) => v.checkedFiles),
    bytes: sum((v) => v.bytes),
    repairedFiles: sum((v) => v.repairedFiles),
    damagedFiles: sum((v) => v.damagedFiles),
    unprotectedFiles: sum((v) => v.unprotectedFiles),
  };
}
