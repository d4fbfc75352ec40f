// `lnbackup generations`: what a vault keeps for point-in-time restore. For each generation: its
// snapshot (version, time, pages, packs), the span of versions and times its calls cover, and what
// it costs on disk; then the totals, with the redundancy (parity, mirrors) apart.
import fs from 'node:fs';
import { RecordType } from '../vault/format.js';
import { CorruptRecordError } from '../vault/errors.js';
import { openIdentity } from '../vault/identity.js';
import type { VaultKeys } from '../vault/keys.js';
import { listPacks } from '../vault/packFiles.js';
import { VaultReader } from '../vault/reader.js';
import { listSegments } from '../vault/segments.js';
import { vaultDiskUsage } from '../vault/diskUsage.js';
import { decodeCall, decodePackList, decodePageManifest, decodeSnapshotBegin, isCallRecord } from '../journal/payloads.js';

export interface GenerationSummary {
  readonly generation: number;
  readonly complete: boolean;
  readonly baseVersion: number;
  readonly snapshotTakenAt: string;
  /** The newest version its calls reach, and when the newest call was recorded (null: none timed). */
  readonly lastVersion: number;
  readonly lastCallAt: string | null;
  readonly calls: number;
  readonly pages: number;
  /** Bytes of its segment files (snapshot records and calls). */
  readonly recordBytes: number;
  /** Bytes of the packs its pages are read from (packs are shared between generations). */
  readonly packBytes: number;
}

export interface GenerationsReport {
  readonly vault: string;
  readonly generations: GenerationSummary[];
  readonly recordBytes: number;
  readonly packBytes: number;
  /** Parity files and the active segment's mirror. */
  readonly redundancyBytes: number;
  /** Why the listing stopped early (damage), or null. */
  readonly damage: string | null;
}

export function listGenerationSummaries(vaultDir: string, keys: VaultKeys): GenerationsReport {
  const identity = openIdentity(vaultDir, keys);
  const packSizes = new Map(listPacks(vaultDir).map((p) => [p.name, p.bytes]));
  const segBytes = new Map<number, number>();
  for (const s of listSegments(vaultDir)) segBytes.set(s.generation, (segBytes.get(s.generation) ?? 0) + fs.statSync(s.path).size);
  const out: GenerationSummary[] = [];
  let cur: { -readonly [K in keyof GenerationSummary]: GenerationSummary[K] } | null = null;
  let damage: string | null = null;
  try {
    for (const r of new VaultReader(identity, keys, vaultDir).records()) {
      const b = r.body;
      if (b.type === RecordType.SnapshotBegin) {
        cur = {
          generation: b.generation,
          complete: false,
          baseVersion: b.dataVersion,
          snapshotTakenAt: new Date(decodeSnapshotBegin(b.payload).takenAt).toISOString(),
          lastVersion: b.dataVersion,
          lastCallAt: null,
          calls: 0,
          pages: 0,
          recordBytes: segBytes.get(b.generation) ?? 0,
          packBytes: 0,
        };
        out.push(cur);
      } else if (!cur) {
        continue;
      } else if (b.type === RecordType.PageManifest) {
        cur.pages += decodePageManifest(b.payload).addresses.length;
      } else if (b.type === RecordType.PackList) {
        cur.packBytes = decodePackList(b.payload).reduce((n, name) => n + (packSizes.get(name) ?? 0), 0);
      } else if (b.type === RecordType.SnapshotEnd) {
        cur.complete = true;
      } else if (isCallRecord(b.type)) {
        const at = decodeCall(b).at;
        cur.calls++;
        cur.lastVersion = b.dataVersion;
        if (at !== null) cur.lastCallAt = new Date(at).toISOString();
      }
    }
  } catch (err) {
    if (!(err instanceof CorruptRecordError)) throw err;
    damage = err.message;
  }
  return {
    vault: vaultDir,
    generations: out,
    recordBytes: [...segBytes.values()].reduce((a, b) => a + b, 0),
    packBytes: [...packSizes.values()].reduce((a, b) => a + b, 0),
    redundancyBytes: vaultDiskUsage(vaultDir).sidecarBytes,
    damage,
  };
}
