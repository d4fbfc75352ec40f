// Retention's storage side: removing whole generations from the front of a vault, never the
// newest one. A marker file (segments/prune-below, written atomically first) says which
// generations are going; every reader (listSegments) ignores them from that moment, so a crash
// midway leaves a vault that still starts at a generation boundary, and the next prune finishes
// the job. The node's local vault and the server's file store both prune through this module.
import fs from 'node:fs';
import path from 'node:path';
import { fsyncDir, writeFileAtomic } from '../util/durableFs.js';
import { listAllSegments, PRUNE_MARKER, removeWithSidecars, segmentsDir } from './segments.js';

export interface PruneResult {
  readonly removedSegments: number;
  readonly removedBytes: number;
}

/** Removes the segments of every generation below `keepFromGeneration`; the newest generation always stays. */
export function pruneGenerations(vaultDir: string, keepFromGeneration: number): PruneResult {
  const segments = listAllSegments(vaultDir);
  const newest = segments[segments.length - 1]?.generation ?? 0;
  const limit = Math.min(keepFromGeneration, newest);
  const doomed = segments.filter((s) => s.generation < limit);
  const marker = path.join(segmentsDir(vaultDir), PRUNE_MARKER);
  if (doomed.length === 0) {
    if (fs.existsSync(marker)) fs.rmSync(marker);
    return { removedSegments: 0, removedBytes: 0 };
  }
  writeFileAtomic(marker, `${limit}\n`);
  let removedBytes = 0;
  for (const s of doomed) {
    removedBytes += fs.statSync(s.path).size;
    removeWithSidecars(s.path);
  }
  fs.rmSync(marker);
  fsyncDir(segmentsDir(vaultDir));
  return { removedSegments: doomed.length, removedBytes };
}
