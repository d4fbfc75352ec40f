// Retention: which generations a vault keeps, and which page packs they still use; and the one
// scan of a vault's records that says what each generation holds (for retention and `lnbackup
// generations`). The newest complete generation is always kept, with as many before it as
// `keepGenerations` asks, and every one needed to restore any moment of the last `keepSeconds`.
// Incomplete generations (a snapshot interrupted by a crash) older than the newest complete one are
// never needed.
import { RecordType } from '../vault/format.js';
import { CorruptRecordError } from '../vault/errors.js';
import type { VaultIdentity } from '../vault/identity.js';
import type { VaultKeys } from '../vault/keys.js';
import { VaultReader } from '../vault/reader.js';
import type { ReadRepair } from '../vault/redundancy/protectedRead.js';
import { versionDistance } from './dataVersion.js';
import { callTime, decodePackList, decodePageManifest, decodeSnapshotBegin, isCallRecord } from './payloads.js';
import type { EpochMs } from '../util/clock.js';

export interface RetentionRule {
  /** Keep at least this many complete generations (the newest included). */
  readonly keepGenerations: number;
  /** Keep every generation needed to restore any moment of the last this many seconds. */
  readonly keepSeconds: number;
}

/** When to compact (the plugin's config, `retention`) and what to keep. */
export interface RetentionSettings extends RetentionRule {
  /** Compact once the calls since the last snapshot exceed this share of the database's size... */
  readonly compactRatio: number;
  /** ...and at least this many bytes. */
  readonly compactMinBytes: number;
}

export interface GenerationPages {
  readonly generation: number;
  /** When its snapshot was taken. */
  readonly takenAt: EpochMs;
  readonly complete: boolean;
  /** Hex content addresses of its snapshot's pages (empty for a snapshot stored whole). */
  readonly pages: Set<string>;
  /** The packs its pages are read from. */
  readonly packs: Set<string>;
}

/**
 * A generation whose calls end behind where the generation before it ends was cut short: a crash
 * interrupted the compaction switch that wrote it (its snapshot ended, but not every call made
 * while the snapshot was built was written again after it). The generation before it holds those
 * calls, so it is the one to restore from, keep, and write after (docs/FORMAT.md, "Compaction").
 */
export function cutShort(lastVersion: number, previousLastVersion: number | null): boolean {
  return previousLastVersion !== null && versionDistance(lastVersion, previousLastVersion) > 0;
}

/** The first generation to keep (everything below it may go). */
export function firstKept(gens: readonly GenerationPages[], rule: RetentionRule, now: EpochMs = Date.now()): number {
  const complete = gens.filter((g) => g.complete).sort((a, b) => b.generation - a.generation);
  if (complete.length === 0) return gens.length === 0 ? 0 : Math.min(...gens.map((g) => g.generation));
  let keep = complete[0].generation;
  let kept = 1;
  let nextStart = complete[0].takenAt;
  for (const g of complete.slice(1)) {
    // g serves the moments from its snapshot until the next generation's snapshot.
    const needed = kept < rule.keepGenerations || nextStart > now - rule.keepSeconds * 1000;
    if (!needed) break;
    keep = g.generation;
    kept++;
    nextStart = g.takenAt;
  }
  return keep;
}

/** Pages used by the generations from `from` on. */
export function livePages(gens: readonly GenerationPages[], from: number): Set<string> {
  const live = new Set<string>();
  for (const g of gens) if (g.generation >= from) for (const p of g.pages) live.add(p);
  return live;
}

/** Packs used by the generations from `from` on (every other pack may go). */
export function livePacks(gens: readonly GenerationPages[], from: number): Set<string> {
  const live = new Set<string>();
  for (const g of gens) if (g.generation >= from) for (const p of g.packs) live.add(p);
  return live;
}

/** What one scan of a vault's records tells of a generation, beyond the pages retention needs. */
export interface GenerationScan extends GenerationPages {
  /** The version its snapshot is at. */
  readonly baseVersion: number;
  /** The newest version its calls reach (the base when it has none). */
  readonly lastVersion: number;
  readonly calls: number;
  /** When its newest call was recorded (ms since the epoch; null: none timed). */
  readonly lastCallAt: number | null;
  /** Entries of its page manifests (pages, counted as often as they occur). */
  readonly pageEntries: number;
}

/**
 * Reads every record once: each generation's snapshot records (begin, manifests, pack list, end)
 * and a count of its calls. Damage stops the reading: the generations read so far are returned,
 * with `damaged` set (retention then removes nothing).
 */
export function scanGenerations(identity: VaultIdentity, keys: VaultKeys, vaultDir: string): { gens: GenerationScan[]; damaged: string | null } {
  const gens: GenerationScan[] = [];
  let current: { -readonly [K in keyof GenerationScan]: GenerationScan[K] } | null = null;
  // Generations share most of their pages: one string per address, however many sets hold it.
  const interned = new Map<string, string>();
  const intern = (hex: string): string => interned.get(hex) ?? (interned.set(hex, hex), hex);
  try {
    for (const r of new VaultReader(identity, keys, vaultDir).records()) {
      const body = r.body;
      if (body.type === RecordType.SnapshotBegin) {
        const takenAt = decodeSnapshotBegin(body.payload).takenAt;
        current = {
          generation: body.generation,
          takenAt,
          complete: false,
          pages: new Set(),
          packs: new Set(),
          baseVersion: body.dataVersion,
          lastVersion: body.dataVersion,
          calls: 0,
          lastCallAt: null,
          pageEntries: 0,
        };
        gens.push(current);
      } else if (!current) {
        continue;
      } else if (body.type === RecordType.PageManifest) {
        const addresses = decodePageManifest(body.payload).addresses;
        current.pageEntries += addresses.length;
        for (const a of addresses) current.pages.add(intern(a.toString('hex')));
      } else if (body.type === RecordType.PackList) {
        for (const name of decodePackList(body.payload)) current.packs.add(name);
      } else if (body.type === RecordType.SnapshotEnd) {
        current.complete = true;
      } else if (isCallRecord(body.type)) {
        current.calls++;
        current.lastVersion = body.dataVersion;
        current.lastCallAt = callTime(body) ?? current.lastCallAt;
      }
    }
  } catch (err) {
    if (!(err instanceof CorruptRecordError)) throw err;
    return { gens: markCutShort(gens), damaged: err.message };
  }
  return { gens: markCutShort(gens), damaged: null };
}

/**
 * Where a generation's records end (the version of its last call, or of its snapshot), read from
 * the vault; null when it has no readable first record. Damage further in ends the reading there.
 */
export function generationEnd(identity: VaultIdentity, keys: VaultKeys, vaultDir: string, generation: number, repair?: ReadRepair): number | null {
  let end: number | null = null;
  try {
    for (const r of new VaultReader(identity, keys, vaultDir, { fromGeneration: generation, repair }).records()) {
      if (r.body.generation !== generation) break;
      if (r.body.type === RecordType.SnapshotBegin || isCallRecord(r.body.type)) end = r.body.dataVersion;
    }
  } catch (err) {
    if (!(err instanceof CorruptRecordError)) throw err;
  }
  return end;
}

/** A generation cut short (cutShort) counts as incomplete: retention keeps the one before it. */
function markCutShort(gens: GenerationScan[]): GenerationScan[] {
  return gens.map((g, i) => (g.complete && i > 0 && cutShort(g.lastVersion, gens[i - 1].lastVersion) ? { ...g, complete: false } : g));
}
