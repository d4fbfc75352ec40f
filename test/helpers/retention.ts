// Compaction and retention in tests: setting a node's `retention` in its lnbackup.json (after
// `makeNode`) and reading what the plugin's status file says about compaction.
import fs from 'node:fs';
import path from 'node:path';
import { configPath, readConfig, writeConfig } from '../../src/cln/config.js';
import type { RetentionSettings } from '../../src/journal/retention.js';
import { STATUS_FILE } from '../../src/cln/statusFile.js';
import type { CompactionStatus } from '../../src/journal/compaction/compactor.js';
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
