// The generations a vault holds: for each, its segment files and size, and (with the key) the
// snapshot it starts from. Used to pick the generation a restore starts from and by `status`.
import fs from 'node:fs';
import { decodeSnapshotBegin } from '../journal/payloads.js';
import { RecordType } from '../vault/format.js';
import type { VaultIdentity } from '../vault/identity.js';
import type { VaultKeys } from '../vault/keys.js';
import { VaultReader } from '../vault/reader.js';
import { CorruptRecordError } from '../vault/errors.js';
import { listSegments, type SegmentFile } from '../vault/segments.js';
import type { ReadRepair } from '../vault/redundancy/protectedRead.js';

export interface GenerationInfo {
  readonly generation: number;
  readonly segments: SegmentFile[];
  readonly bytes: number;
  readonly firstSeq: bigint;
  /** From the generation's first record (needs the key): the snapshot's version and time. */
  readonly baseVersion: number | null;
  readonly snapshotTakenAt: number | null;
  /** Why the first record could not be read (it is damaged), or null. */
  readonly damage: string | null;
}

export function listGenerations(vaultDir: string): GenerationInfo[] {
  const byGen = new Map<number, SegmentFile[]>();
  for (const s of listSegments(vaultDir)) {
    const list = byGen.get(s.generation) ?? [];
    list.push(s);
    byGen.set(s.generation, list);
  }
  return [...byGen.entries()].map(([generation, segments]) => ({
    generation,
    segments,
    bytes: segments.reduce((n, s) => n + fs.statSync(s.path).size, 0),
    firstSeq: segments[0].firstSeq,
    baseVersion: null,
    snapshotTakenAt: null,
    damage: null,
  }));
}

/** Adds each generation's snapshot version and time, read from its first record (in its first segment). */
export function withBaseVersions(vaultDir: string, identity: VaultIdentity, keys: VaultKeys, gens: GenerationInfo[], repair?: ReadRepair): GenerationInfo[] {
  return gens.map((g) => {
    const reader = new VaultReader(identity, keys, vaultDir, { segments: g.segments.slice(0, 1), repair });
    try {
      for (const r of reader.records()) {
        if (r.body.type !== RecordType.SnapshotBegin) return g;
        return { ...g, baseVersion: r.body.dataVersion, snapshotTakenAt: decodeSnapshotBegin(r.body.payload).takenAt };
      }
    } catch (err) {
      // A damaged first record leaves this generation without a known base; the others still serve.
      if (!(err instanceof CorruptRecordError)) throw err;
      return { ...g, damage: err.message };
    }
    return g;
  });
}
