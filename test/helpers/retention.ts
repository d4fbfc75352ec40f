// Compaction and retention in tests: setting a node's `retention` in its lnbackup.json (after
// `makeNode`), reading what the plugin's status file says about compaction, and measuring a vault.
import fs from 'node:fs';
import path from 'node:path';
import { configPath, readConfig, writeConfig, type RetentionSettings } from '../../src/cln/config.js';
import { STATUS_FILE } from '../../src/cln/statusFile.js';
import type { CompactionStatus } from '../../src/cln/compactor.js';
import type { TestNode } from './testNode.js';

/** Sets (merges) `retention` in the node's lnbackup.json; the plugin reads it at its next start. */
export function setRetention(node: TestNode, partial: Partial<RetentionSettings>): void {
  const config = readConfig(node.networkDir);
  writeConfig(node.networkDir, { ...config, retention: { ...(config.retention ?? {}), ...partial } });
  // Read it back the way the plugin will: a setting it would refuse fails here, not in the plugin.
  const back = readConfig(node.networkDir);
  if (JSON.stringify(back.retention) !== JSON.stringify({ ...(config.retention ?? {}), ...partial })) {
    throw new Error(`${configPath(node.networkDir)} did not keep the retention settings`);
  }
}

/** The `compaction` part of lnbackup-status.json (null when the file or the field is not there). */
export function compactionStatus(node: TestNode): CompactionStatus | null {
  try {
    const status = JSON.parse(fs.readFileSync(path.join(node.networkDir, STATUS_FILE), 'utf8')) as { compaction?: CompactionStatus };
    return status.compaction ?? null;
  } catch {
    return null;
  }
}

export interface VaultSize {
  /** segments/*.seg */
  readonly segmentBytes: number;
  /** pages/*.pack */
  readonly packBytes: number;
  /** Redundancy sidecars (*.parity, *.mirror) anywhere in the vault. */
  readonly sidecarBytes: number;
  /** Everything else (VAULT.json, the lock, staging, temp files). */
  readonly otherBytes: number;
  readonly segments: number;
  readonly packs: number;
}

/** What a vault's files take, by kind. */
export function vaultSize(vaultDir: string): VaultSize {
  let segmentBytes = 0;
  let packBytes = 0;
  let sidecarBytes = 0;
  let otherBytes = 0;
  let segments = 0;
  let packs = 0;
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        walk(p);
        continue;
      }
      const size = fs.statSync(p).size;
      if (/\.(parity|mirror)$/.test(e.name)) sidecarBytes += size;
      else if (e.name.endsWith('.seg')) {
        segmentBytes += size;
        segments++;
      } else if (e.name.endsWith('.pack')) {
        packBytes += size;
        packs++;
      } else otherBytes += size;
    }
  };
  walk(vaultDir);
  return { segmentBytes, packBytes, sidecarBytes, otherBytes, segments, packs };
}
