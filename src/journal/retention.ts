// Retention: which generations a vault keeps, and which page packs they still use. The newest
// complete generation is always kept, with as many before it as `keepGenerations` asks, and every
// one needed to restore any moment of the last `keepSeconds`. Incomplete generations (a snapshot
// interrupted by a crash) older than the newest complete one are never needed.
import { RecordType } from '../vault/format.js';
import { CorruptRecordError } from '../vault/errors.js';
import type { VaultIdentity } from '../vault/identity.js';
import type { VaultKeys } from '../vault/keys.js';
import { VaultReader } from '../vault/reader.js';
import { decodePackList, decodePageManifest, decodeSnapshotBegin } from './payloads.js';

export interface RetentionRule {
  readonly keepGenerations: number;
  readonly keepSeconds: number;
}

export interface GenerationPages {
  readonly generation: number;
  readonly takenAt: number;
  readonly complete: boolean;
  /** Hex content addresses of its snapshot's pages (empty for a snapshot stored whole). */
  readonly pages: Set<string>;
  /** The packs its pages are read from. */
  readonly packs: Set<string>;
}

/** The first generation to keep (everything below it may go). */
export function firstKept(gens: readonly GenerationPages[], rule: RetentionRule, now = Date.now()): number {
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

/**
 * Reads every generation's snapshot records (begin, manifests, end). Damage stops the reading:
 * the generations read so far are returned, with `damaged` set (retention then removes nothing).
 */
export function readGenerationPages(identity: VaultIdentity, keys: VaultKeys, vaultDir: string): { gens: GenerationPages[]; damaged: string | null } {
  const gens: GenerationPages[] = [];
  let current: { generation: number; takenAt: number; complete: boolean; pages: Set<string>; packs: Set<string> } | null = null;
  const reader = new VaultReader(identity, keys, vaultDir);
  try {
    for (const r of reader.records()) {
      const body = r.body;
      if (body.type === RecordType.SnapshotBegin) {
        current = { generation: body.generation, takenAt: decodeSnapshotBegin(body.payload).takenAt, complete: false, pages: new Set(), packs: new Set() };
        gens.push(current);
      } else if (current && body.type === RecordType.PageManifest) {
        for (const a of decodePageManifest(body.payload).addresses) current.pages.add(a.toString('hex'));
      } else if (current && body.type === RecordType.PackList) {
        for (const name of decodePackList(body.payload)) current.packs.add(name);
      } else if (current && body.type === RecordType.SnapshotEnd) {
        current.complete = true;
      }
    }
  } catch (err) {
    if (!(err instanceof CorruptRecordError)) throw err;
    return { gens, damaged: err.message };
  }
  return { gens, damaged: null };
}
