// The beacon's high-water mark against a vault: `highWaterMarkOf` reads where a vault's chain ends
// (the mark the consumer puts in its beacon: generation, sequence and chain hash of the last
// record, with the data_version and time the caller knows), and `checkReachesHighWater` decides
// whether a server's downloaded copy reaches the mark. It must hold the mark's record with the
// mark's hash (or, when retention pruned that record, a newer generation), and end at or after it.
// Anything short of that is a server that rolled back or lost acknowledged records: restoring it
// would give the node a state older than its peers saw.
import { vaultTail } from '../../destinations/transfer.js';
import { openIdentity, vaultIdBytes } from '../../vault/identity.js';
import type { VaultKeys } from '../../vault/keys.js';
import { rawRecordHash, readRawRecords } from '../../vault/rawRecords.js';
import type { HighWaterMark } from '../beacon/beaconContent.js';

/** Where the vault at `vaultDir` ends, as a beacon's high-water mark. */
export function highWaterMarkOf(vaultDir: string, keys: VaultKeys, dataVersion: number, timeMs: number): HighWaterMark {
  const tail = vaultTail(vaultDir, vaultIdBytes(openIdentity(vaultDir, keys)));
  return { generation: tail.generation, sequence: tail.lastSeq, recordHash: tail.lastHash, dataVersion, timeMs };
}

export interface CopyPoint {
  readonly generation: number;
  readonly sequence: bigint;
}

export type HighWaterVerdict =
  { readonly ok: true; readonly copy: CopyPoint } | { readonly ok: false; readonly copy: CopyPoint; readonly reason: 'behind' | 'diverged' };

export function describePoint(p: CopyPoint): string {
  return `generation ${p.generation}, record ${p.sequence}`;
}

export function describeMark(m: HighWaterMark): string {
  return `${describePoint(m)} (data_version ${m.dataVersion}, ${new Date(m.timeMs).toISOString()})`;
}

/** Whether the vault copy at `vaultDir` (already downloaded, not yet proven) reaches `mark`. */
export function checkReachesHighWater(vaultDir: string, keys: VaultKeys, mark: HighWaterMark): HighWaterVerdict {
  const tail = vaultTail(vaultDir, vaultIdBytes(openIdentity(vaultDir, keys)));
  const copy = { generation: tail.generation, sequence: tail.lastSeq };
  if (tail.lastSeq < mark.sequence || tail.generation < mark.generation) return { ok: false, copy, reason: 'behind' };
  const [atMark] = readRawRecords(vaultDir, mark.sequence, 1);
  if (atMark?.seq === mark.sequence) {
    return rawRecordHash(atMark.bytes).equals(mark.recordHash) ? { ok: true, copy } : { ok: false, copy, reason: 'diverged' };
  }
  // The mark's record was pruned by retention: only a newer generation may stand in for it.
  return tail.generation > mark.generation ? { ok: true, copy } : { ok: false, copy, reason: 'diverged' };
}
