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

export function segmentsDir(vaultDir: string): string {
  return path.join(vaultDir, SEGMENTS_DIR);
}

export function segmentName(generation: number, firstSeq: bigint): string {
  return `g${String(generation).padStart(10, '0')}-s${firstSeq.toString().padStart(20, '0')}.seg`;
}

/** The vault's segment files in record order; other files in the folder are ignored. */
export function listSegments(vaultDir: string): SegmentFile[] {
  const dir = segmentsDir(vaultDir);
  if (!fs.existsSync(dir)) return [];
  const out: SegmentFile[] = [];
  for (const name of fs.readdirSync(dir)) {
    const m = NAME.exec(name);
    if (!m) continue;
    out.push({ name, path: path.join(dir, name), generation: Number(m[1]), firstSeq: BigInt(m[2]) });
  }
  return out.sort((a, b) => (a.firstSeq < b.firstSeq ? -1 : a.firstSeq > b.firstSeq ? 1 : 0));
}
