// A Compactor over a test node's journal, built as NodeBackup builds one (the vault's generations
// scanned first), keeping one generation; by default it compacts at every chance.
import { Compactor, type PackHolder } from '../../src/journal/compaction/compactor.js';
import type { Journal } from '../../src/journal/journal.js';
import { scanGenerations, type RetentionSettings } from '../../src/journal/retention.js';
import type { Log } from '../../src/util/log.js';
import type { VaultNode } from './testNode.js';

/** Compact whenever the driver may: no growth threshold. */
export const COMPACT_ALWAYS: RetentionSettings = { compactRatio: 0, compactMinBytes: 0, keepGenerations: 1, keepSeconds: 0 };
/** Never compact on growth (only what a call forces, e.g. a snapshot taken inside it). */
export const COMPACT_NEVER: RetentionSettings = { compactRatio: 1e9, compactMinBytes: 1e12, keepGenerations: 1, keepSeconds: 0 };

export function compactorFor(
  node: Pick<VaultNode, 'vault' | 'keys'>,
  journal: Journal,
  destinations: () => readonly PackHolder[],
  settings: RetentionSettings = COMPACT_ALWAYS,
  log: Log = () => undefined,
): Compactor {
  const { gens } = scanGenerations(journal.identity, node.keys, node.vault);
  return new Compactor(journal, destinations, settings, gens, log);
}
