// Segment files: the vault's records live in append-only files under <vault>/segments, named by
// generation and by the sequence number of their first record, so listing the folder gives the
// order and the generations without opening a file.
import fs from 'node:fs';
import path from 'node:path';

export const SEGMENTS_DIR = 'segments';
const NAME = /^g(\d{10})-s(\d{20})\.seg$/;

export interface SegmentFile {
  readonly name: string;
  readonly path: string;
  readonly generation: number;
  readonly firstSeq: bigint;
}

/**
 * Files that protect another file and live beside it (redundancy: parity, the active tail's
 * mirror). Removing a file removes them too.
 */
export const SIDECAR_SUFFIXES = ['.parity', '.mirror'] as const;

/** Removes a file and its sidecars; true when anything was removed. The caller fsyncs the folder. */
export function removeWithSidecars(file: string): boolean {
  let removed = false;
  for (const f of [file, ...SIDECAR_SUFFIXES.map((s) => file + s)]) {
    if (fs.existsSync(f)) {
      fs.rmSync(f, { force: true });
      removed = true;
    }
  }
  return removed;
}

export function segmentsDir(vaultDir: string): string {
  return path.join(vaultDir, SEGMENTS_DIR);
}

export function segmentName(generation: number, firstSeq: bigint): string {
  return `g${String(generation).padStart(10, '0')}-s${firstSeq.toString().padStart(20, '0')}.seg`;
}

/** Written while generations are being removed (vault/prune.ts): holds the first generation kept. */
export const PRUNE_MARKER = 'prune-below';

/**
 * The vault's segment files in record order, without those of generations an interrupted prune
 * was removing; other files in the folder are ignored.
 */
export function listSegments(vaultDir: string): SegmentFile[] {
  const all = listAllSegments(vaultDir);
  const marker = path.join(segmentsDir(vaultDir), PRUNE_MARKER);
  if (!fs.existsSync(marker)) return all;
  const keepFrom = Number.parseInt(fs.readFileSync(marker, 'latin1').slice(0, 16), 10);
  return Number.isSafeInteger(keepFrom) ? all.filter((s) => s.generation >= keepFrom) : all;
}

/** The segment a path names (its generation and first record), or null when the name is not a segment's. */
export function segmentOfPath(file: string): SegmentFile | null {
  const name = path.basename(file);
  const m = NAME.exec(name);
  return m ? { name, path: file, generation: Number(m[1]), firstSeq: BigInt(m[2]) } : null;
}

/** Every segment file present, in record order (pruning ignores the marker). */
export function listAllSegments(vaultDir: string): SegmentFile[] {
  const dir = segmentsDir(vaultDir);
  if (!fs.existsSync(dir)) return [];
  const out: SegmentFile[] = [];
  for (const name of fs.readdirSync(dir)) {
    const s = segmentOfPath(path.join(dir, name));
    if (s) out.push(s);
  }
  return out.sort((a, b) => (a.firstSeq < b.firstSeq ? -1 : a.firstSeq > b.firstSeq ? 1 : 0));
}
