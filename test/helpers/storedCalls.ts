// Turns db_write calls into the StoredCall objects destinations receive, by journaling them into a
// real vault with the real Journal (the records are the sealed bytes the journal appended).
import { storedCall, type StoredCall } from '../../src/destinations/destination.js';
import type { Journal } from '../../src/journal/journal.js';

/** Records one call in the journal (it must be stored) and returns it as destinations see it. */
export function recordCall(journal: Journal, dataVersion: number, writes: readonly string[]): StoredCall {
  const out = journal.record(dataVersion, writes);
  if (out.kind !== 'stored') throw new Error(`call for version ${dataVersion} was ${out.kind}: ${out.reason}`);
  if (out.records.length === 0 || out.records[out.records.length - 1].seq !== out.seq) {
    throw new Error(`the journal handed back no Writes record for version ${dataVersion}`);
  }
  return storedCall(dataVersion, [...writes], out);
}
