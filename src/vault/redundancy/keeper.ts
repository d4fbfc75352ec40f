// What a vault's writer does for redundancy (docs/FORMAT.md, "Redundancy"); one class shared by
// the node's VaultWriter and the keyless RawVaultAppender (the server's store, downloads):
//   - before the tail is looked for: repairs the newest segment from its mirror;
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
import { checkWithMirror, MIRROR_MISSING, MIRROR_SUFFIX, TailMirror } from './mirror.js';
import { isRedundancyTemp, PARITY_SUFFIX, protectFile } from './parity.js';

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

  /**
   * Before the tail is found: bytes of the newest segment that disagree with intact frames of its
   * mirror are bitrot (the mirror's frames are checksummed, the segment's bytes are not), so they
   * are written back from the mirror, durably. Never adds bytes past the segment's end.
   */
  repairNewestFromMirror(): void {
    if (!this.enabled) return;
    const segments = listSegments(this.vaultDir);
    const last = segments[segments.length - 1];
    if (!last || fs.existsSync(last.path + PARITY_SUFFIX)) return;
    const mirrorFile = last.path + MIRROR_SUFFIX;
    if (!fs.existsSync(mirrorFile)) return;
    const size = fs.statSync(last.path).size;
    const mirrorSize = fs.statSync(mirrorFile).size;
    if (size === 0 || size > this.options.maxSegmentBytes || mirrorSize > 2 * this.options.maxSegmentBytes + (1 << 20)) return;
    const check = checkWithMirror(fs.readFileSync(last.path), fs.readFileSync(mirrorFile), this.options.maxSegmentBytes);
    if (check.repaired.length === 0) return;
    const fd = fs.openSync(last.path, 'r+');
    try {
      for (const r of check.repaired) fs.writeSync(fd, check.data, r.start, r.end - r.start, r.start);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    this.notice(`repaired ${describeRanges(check.repaired)} of ${last.path} from its mirror (the segment's bytes had changed on disk)`);
  }

  /** The segment now appended to is `segmentPath` (null: none); its mirror is checked, rebuilt if needed. */
  attach(segmentPath: string | null): void {
    this.mirror?.close();
    this.mirror = null;
    if (!this.enabled || segmentPath === null) return;
    const { mirror, rebuilt } = TailMirror.open(segmentPath, fs.readFileSync(segmentPath), this.options.maxSegmentBytes);
    this.mirror = mirror;
    // A missing mirror (a vault made before mirrors existed) is made silently; damage is told.
    if (rebuilt && rebuilt !== MIRROR_MISSING) this.notice(`rebuilt the mirror of ${path.basename(segmentPath)} from the segment (${rebuilt})`);
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
      if (fs.existsSync(this.vaultDir) && fs.existsSync(file)) this.notice(`${what} failed (${(err as Error).message}); it is done again at the next open or by lnbackup scrub --repair`);
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
