// `lnbackup status`: what a vault holds. Without a key: node id, generations, files, sizes, the
// newest record number and write time (what untrusted storage can see too). With the key: each
// generation's snapshot version, the newest version, and whether its last transaction is in flight.
import fs from 'node:fs';
import { DISCARD_SINK, JournalReplayer, type ReplayOutcome } from '../journal/replay.js';
import { readIdentity, openIdentity, vaultIdBytes } from '../vault/identity.js';
import { PageStore } from '../journal/pageStore.js';
import type { VaultKeys } from '../vault/keys.js';
import { VaultReader } from '../vault/reader.js';
import { listGenerations, withBaseVersions } from './generations.js';

export interface VaultStatus {
  readonly vault: string;
  readonly vaultId: string;
  readonly nodeId: string | null;
  readonly createdAt: string;
  readonly formatVersion: number;
  readonly totalBytes: number;
  readonly segmentFiles: number;
  readonly lastWriteAt: string | null;
  readonly generations: {
    generation: number;
    segments: number;
    bytes: number;
    firstSeq: string;
    baseVersion: number | null;
    snapshotTakenAt: string | null;
  }[];
  /** With the key: the newest generation replayed (without writing a database). */
  readonly latest: (ReplayOutcome & { lastSeq: string }) | null;
}

export function vaultStatus(vaultDir: string, keys: VaultKeys | null): VaultStatus {
  const identity = keys ? openIdentity(vaultDir, keys) : readIdentity(vaultDir);
  let gens = listGenerations(vaultDir);
  if (keys) gens = withBaseVersions(vaultDir, identity, keys, gens);
  const segments = gens.flatMap((g) => g.segments);
  const lastSegment = segments[segments.length - 1];
  let latest: VaultStatus['latest'] = null;
  const newest = gens[gens.length - 1];
  if (keys && newest) {
    const replayer = new JournalReplayer(DISCARD_SINK, { pages: PageStore.open(vaultDir, keys, vaultIdBytes(identity)) });
    const reader = new VaultReader(identity, keys, vaultDir, { fromGeneration: newest.generation });
    let lastSeq = 0n;
    for (const r of reader.records()) {
      replayer.feed(r.seq, r.body);
      lastSeq = r.seq;
    }
    latest = { ...replayer.finish(), lastSeq: lastSeq.toString() };
  }
  return {
    vault: vaultDir,
    vaultId: identity.vaultId,
    nodeId: identity.nodeId,
    createdAt: identity.createdAt,
    formatVersion: identity.formatVersion,
    totalBytes: gens.reduce((n, g) => n + g.bytes, 0),
    segmentFiles: segments.length,
    lastWriteAt: lastSegment ? fs.statSync(lastSegment.path).mtime.toISOString() : null,
    generations: gens.map((g) => ({
      generation: g.generation,
      segments: g.segments.length,
      bytes: g.bytes,
      firstSeq: g.firstSeq.toString(),
      baseVersion: g.baseVersion,
      snapshotTakenAt: g.snapshotTakenAt === null ? null : new Date(g.snapshotTakenAt).toISOString(),
    })),
    latest,
  };
}
