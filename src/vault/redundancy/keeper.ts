// What a vault's writer does for redundancy (docs/FORMAT.md, "Redundancy"); one class shared by
// the node's VaultWriter and the keyless RawVaultAppender (the server's store, downloads):
//   - before the tail is looked for: repairs the newest segment from its mirror (without the key;
//     a writer with the key decides record by record while it finds the tail and writes back here);
//   - while a segment is appended to: mirrors every append (one write(), no fsync);
//   - once a segment is sealed (the writer moved on and its bytes are durable): computes its
//     parity file in the background (Reed-Solomon on the thread pool, written atomically), then
//     removes its mirror;
//   - at open: finishes the parity of sealed segments that still have a mirror, and of page packs
//     that have none.
// Failures of background work are reported (onNotice), never thrown at the writer: the mirror stays
// and the next open (or `lnbackup scrub --repair`) finishes the job.
import fs from 'node:fs';
import path from 'node:path';
import { processAlive } from '../../util/processAlive.js';
import { listPacks, MAX_PACK_BYTES, pagesDir } from '../packFiles.js';
import { listSegments, segmentsDir } from '../segments.js';
import { checkWithMirror, MIRROR_BEHIND, MIRROR_MISSING, MIRROR_SUFFIX, ownerOf, TailMirror } from './mirror.js';
import { isRedundancyTemp, PARITY_SUFFIX, protectFile, type ByteRange } from './parity.js';

export interface KeeperOptions {
  /** Largest segment file the vault may hold (segment size + one largest record). */
  readonly maxSegmentBytes: number;
  readonly onNotice?: (message: string) => void;
  /** false: no mirror and no parity (benchmarks measuring their cost). Default true. */
  readonly enabled?: boolean;
}

export class RedundancyKeeper {
  private mirror: TailMirror | null = null;
  private readonly pending = new Set<Promise<void>>();
  private readonly sealing = new Set<string>();
  readonly enabled: boolean;

  constructor(
    readonly vaultDir: string,
    private readonly options: KeeperOptions,
  ) {
    this.enabled = options.enabled !== false;
  }

  get maxSegmentBytes(): number {
    return this.options.maxSegmentBytes;
  }

  /**
   * Before the tail is found, for a writer without the key (the server's store, downloads): the
   * newest segment is checked against its mirror (checkWithMirror: a mirror whose header vouches
   * for it repairs every difference, an older one only records that are not well-formed) and what
   * it repairs is written back, durably. Never adds bytes past the segment's end.
   */
  repairNewestFromMirror(): void {
    const newest = this.newestMirrored();
    if (!newest) return;
    const check = checkWithMirror(fs.readFileSync(newest), fs.readFileSync(newest + MIRROR_SUFFIX), ownerOf(newest), this.options.maxSegmentBytes);
    if (check.conflicts.length > 0) {
      this.notice(
        `the mirror of ${path.basename(newest)} disagrees with well-formed records of the segment at ${describeRanges(check.conflicts)} and has no header that vouches for it: ` +
          "the segment's bytes are kept (a reader with the key decides: lnbackup verify) and the mirror is written again",
      );
    }
    this.writeBack(newest, check.data, check.repaired, 'its mirror');
  }

  /** The newest segment when a mirror protects it (it has no parity yet, and is of a size a writer makes), else null. */
  newestMirrored(): string | null {
    if (!this.enabled) return null;
    const segments = listSegments(this.vaultDir);
    const last = segments[segments.length - 1];
    if (!last || fs.existsSync(last.path + PARITY_SUFFIX) || !fs.existsSync(last.path + MIRROR_SUFFIX)) return null;
    const size = fs.statSync(last.path).size;
    const mirrorSize = fs.statSync(last.path + MIRROR_SUFFIX).size;
    if (size === 0 || size > this.options.maxSegmentBytes || mirrorSize > 2 * this.options.maxSegmentBytes + (1 << 20)) return null;
    return last.path;
  }

  /** Writes `ranges` of `data` (the segment's repaired contents) back into the segment and fsyncs it. */
  writeBack(segmentPath: string, data: Buffer, ranges: readonly ByteRange[], source: string): void {
    if (ranges.length === 0) return;
    const fd = fs.openSync(segmentPath, 'r+');
    try {
      for (const r of ranges) fs.writeSync(fd, data, r.start, r.end - r.start, r.start);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    this.notice(`repaired ${describeRanges(ranges)} of ${segmentPath} from ${source} (the segment's bytes had changed on disk)`);
  }

  /** The segment now appended to is `segmentPath` (null: none); its mirror is checked, rebuilt if needed. */
  attach(segmentPath: string | null): void {
    this.mirror?.close();
    this.mirror = null;
    if (!this.enabled || segmentPath === null) return;
    const { mirror, rebuilt } = TailMirror.open(segmentPath, fs.readFileSync(segmentPath), this.options.maxSegmentBytes);
    this.mirror = mirror;
    // A missing mirror (a vault made before mirrors existed) and one a crash left behind the segment
    // are made again silently; damage is told.
    if (rebuilt && rebuilt !== MIRROR_MISSING && rebuilt !== MIRROR_BEHIND)
      this.notice(`rebuilt the mirror of ${path.basename(segmentPath)} from the segment (${rebuilt})`);
  }

  /** A new, empty segment file is now appended to. */
  startSegment(segmentPath: string): void {
    this.mirror?.close();
    this.mirror = this.enabled ? TailMirror.create(segmentPath) : null;
  }

  /** Bytes just written to the active segment at `offset`. */
  write(offset: number, bytes: Buffer): void {
    this.mirror?.write(offset, bytes);
  }

  /** The active segment is no longer appended to (its mirror is closed, kept until it is sealed). */
  retire(segmentPath: string): void {
    if (this.mirror?.segmentPath === segmentPath) {
      this.mirror.close();
      this.mirror = null;
    }
  }

  /** `segmentPath` is sealed and durable: its parity is made in the background, then its mirror goes. */
  seal(segmentPath: string): void {
    if (!this.enabled || this.sealing.has(segmentPath)) return;
    this.sealing.add(segmentPath);
    this.track(
      (async () => {
        try {
          if (!fs.existsSync(segmentPath)) return;
          if (!(await this.checkBeforeSealing(segmentPath))) return;
          await protectFile(segmentPath, this.options.maxSegmentBytes);
          await fs.promises.rm(segmentPath + MIRROR_SUFFIX, { force: true });
        } finally {
          this.sealing.delete(segmentPath);
        }
      })(),
      `sealing ${segmentPath}`,
      segmentPath,
    );
  }

  /**
   * Before a segment's parity is made from its bytes: bitrot its mirror repairs is written back
   * first (parity must not make damage permanent). False when the mirror conflicts with the
   * segment's records (a mirror of an earlier version): the segment is then left unsealed, with
   * its mirror, for a reader with the key (restore, verify) to decide.
   */
  private async checkBeforeSealing(segmentPath: string): Promise<boolean> {
    let mirror: Buffer;
    try {
      mirror = await fs.promises.readFile(segmentPath + MIRROR_SUFFIX);
    } catch {
      return true; // no mirror to check against
    }
    const check = checkWithMirror(await fs.promises.readFile(segmentPath), mirror, ownerOf(segmentPath), this.options.maxSegmentBytes);
    if (check.conflicts.length > 0) {
      this.notice(
        `${path.basename(segmentPath)} is not sealed: its mirror disagrees with well-formed records at ${describeRanges(check.conflicts)} (lnbackup verify decides with the key)`,
      );
      return false;
    }
    this.writeBack(segmentPath, check.data, check.repaired, 'its mirror, before sealing it');
    return true;
  }

  /**
   * At open: parity for every sealed segment that still has its mirror (the writer stopped before
   * sealing finished) and for every page pack without one; stale temp files of dead writers go.
   */
  finishPending(activePath: string | null): void {
    if (!this.enabled) return;
    for (const dir of [segmentsDir(this.vaultDir), pagesDir(this.vaultDir)]) removeStaleTemps(dir);
    for (const s of listSegments(this.vaultDir)) {
      if (s.path === activePath) continue;
      if (fs.existsSync(s.path + MIRROR_SUFFIX)) {
        if (fs.existsSync(s.path + PARITY_SUFFIX)) fs.rmSync(s.path + MIRROR_SUFFIX, { force: true });
        else this.seal(s.path);
      }
    }
    for (const p of listPacks(this.vaultDir)) {
      if (p.bytes > 0 && !fs.existsSync(p.path + PARITY_SUFFIX)) {
        this.track(protectFile(p.path, MAX_PACK_BYTES), `protecting ${p.path}`, p.path);
      }
    }
  }

  /** Resolves once no background work is left. */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  close(): void {
    this.mirror?.close();
    this.mirror = null;
  }

  /** Background work on `file`; a failure is told, unless the file or the vault was removed meanwhile (retention, a download's temp folder). */
  private track(work: Promise<void>, what: string, file: string): void {
    const p = work.catch((err: unknown) => {
      if (fs.existsSync(this.vaultDir) && fs.existsSync(file))
        this.notice(`${what} failed (${(err as Error).message}); it is done again at the next open or by lnbackup scrub --repair`);
    });
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  private notice(message: string): void {
    this.options.onNotice?.(message);
  }
}

/** "bytes 10..19 and 4096..8191" */
export function describeRanges(ranges: readonly { start: number; end: number }[]): string {
  const parts = ranges.map((r) => `bytes ${r.start}..${r.end - 1}`);
  if (parts.length <= 1) return parts[0] ?? 'no bytes';
  return `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}`;
}

/** Removes temp files (of atomic parity and repair writes) left by processes that are gone. */
export function removeStaleTemps(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  let n = 0;
  for (const name of fs.readdirSync(dir)) {
    if (!isRedundancyTemp(name)) continue;
    const pid = Number(/\.tmp-(\d+)-\d+$/.exec(name)?.[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    fs.rmSync(path.join(dir, name), { force: true });
    n++;
  }
  return n;
}
