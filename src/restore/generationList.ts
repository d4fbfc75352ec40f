// `lnbackup generations`: what a vault keeps for point-in-time restore. For each generation: its
// snapshot (version, time, pages, packs), the span of versions and times its calls cover, and what
// it costs on disk; then the totals, with the redundancy (parity, mirrors) apart.
import fs from 'node:fs';
import { openIdentity } from '../vault/identity.js';
import type { VaultKeys } from '../vault/keys.js';
import { listPacks } from '../vault/packFiles.js';
import { listSegments } from '../vault/segments.js';
import { vaultDiskUsage } from '../vault/diskUsage.js';
import { scanGenerations } from '../journal/retention.js';

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
  const packSizes = new Map(listPacks(vaultDir).map((p) => [p.name, p.bytes]));
  const segBytes = new Map<number, number>();
  for (const s of listSegments(vaultDir)) segBytes.set(s.generation, (segBytes.get(s.generation) ?? 0) + fs.statSync(s.path).size);
  const { gens, damaged } = scanGenerations(openIdentity(vaultDir, keys), keys, vaultDir);
  const iso = (ms: number): string => new Date(ms).toISOString();
  return {
    vault: vaultDir,
    generations: gens.map((g) => ({
      generation: g.generation,
      complete: g.complete,
      baseVersion: g.baseVersion,
      snapshotTakenAt: iso(g.takenAt),
      lastVersion: g.lastVersion,
      lastCallAt: g.lastCallAt === null ? null : iso(g.lastCallAt),
      calls: g.calls,
      pages: g.pageEntries,
      recordBytes: segBytes.get(g.generation) ?? 0,
      packBytes: [...g.packs].reduce((n, name) => n + (packSizes.get(name) ?? 0), 0),
    })),
    recordBytes: [...segBytes.values()].reduce((a, b) => a + b, 0),
    packBytes: [...packSizes.values()].reduce((a, b) => a + b, 0),
    redundancyBytes: vaultDiskUsage(vaultDir).sidecarBytes,
    damage: damaged,
  };
}
