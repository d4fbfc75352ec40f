// What a vault's files take on disk, by kind: segments (records), page packs, the redundancy
// sidecars (parity files, the active segment's mirror) and everything else. Used by
// `lnbackup generations`, the vault-size tests and the benchmark.
import fs from 'node:fs';
import path from 'node:path';
import { SIDECAR_SUFFIXES } from './segments.js';

export interface VaultDiskUsage {
  /** segments/*.seg */
  readonly segmentBytes: number;
  /** pages/*.pack */
  readonly packBytes: number;
  /** Redundancy sidecars (*.parity, *.mirror) anywhere in the vault. */
  readonly sidecarBytes: number;
  /** Everything else (VAULT.json and its copy, the lock, staging, temp files). */
  readonly otherBytes: number;
  readonly segments: number;
  readonly packs: number;
}

export function vaultDiskUsage(vaultDir: string): VaultDiskUsage {
  const u = { segmentBytes: 0, packBytes: 0, sidecarBytes: 0, otherBytes: 0, segments: 0, packs: 0 };
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        walk(p);
        continue;
      }
      let size: number;
      try {
        size = fs.statSync(p).size;
      } catch {
        continue; // removed while we walked (a temp file renamed, a pruned segment)
      }
      if (SIDECAR_SUFFIXES.some((s) => e.name.endsWith(s))) u.sidecarBytes += size;
      else if (e.name.endsWith('.seg')) {
        u.segmentBytes += size;
        u.segments++;
      } else if (e.name.endsWith('.pack')) {
        u.packBytes += size;
        u.packs++;
      } else u.otherBytes += size;
    }
  };
  walk(vaultDir);
  return u;
}
