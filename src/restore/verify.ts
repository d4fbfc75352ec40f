// `lnbackup verify`: reads every record of a vault without writing a database and proves it:
// authentication, sequence, hash chain, each generation's snapshot (size and SHA-256) and the
// supersede rules. The first bad record is named precisely (sequence number, file, byte offset).
import { DISCARD_SINK, JournalError, JournalReplayer, type ReplayOutcome } from '../journal/replay.js';
import { CorruptRecordError } from '../vault/errors.js';
import { openIdentity, vaultIdBytes } from '../vault/identity.js';
import { PageStore } from '../journal/pageStore.js';
import type { VaultKeys } from '../vault/keys.js';
import { VaultReader, type StoredRecord, type TornTail } from '../vault/reader.js';
import { describeRepair, summarizeRepair, type RepairSummary, type VaultRepair } from '../vault/redundancy/protectedRead.js';
import { settleVaultRepair } from '../vault/settleMirrors.js';

export interface BadRecord {
  readonly seq: string;
  readonly segment: string;
  readonly offset: number;
  readonly reason: string;
}

export interface GenerationReport extends ReplayOutcome {
  readonly complete: boolean;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly records: number;
  readonly bytes: number;
  readonly generations: GenerationReport[];
  readonly tornTail: TornTail | null;
  readonly firstBadRecord: BadRecord | null;
  /** What redundancy repaired in memory before the check (and what it could not), when `repair` was given. */
  readonly repairs: RepairSummary | null;
  /** What redundancy repaired or found stale, in words (one line each). */
  readonly notices: string[];
}

/**
 * `repair`: the vault's files checked and repaired in memory first (`await repairVaultInMemory(vaultDir)`);
 * the records are then proved as repaired, and the report says what was repaired.
 */
export function verifyVault(vaultDir: string, keys: VaultKeys, onProgress?: (done: number, total: number) => void, found?: VaultRepair): VerifyReport {
  const identity = openIdentity(vaultDir, keys, found?.identity ?? undefined);
  // Mirror-protected segments are decided by their records before anything is read from them.
  const settled = found ? settleVaultRepair(vaultDir, identity, keys, found) : null;
  const repair = settled?.repair;
  const notices = settled ? [...describeRepair(settled.repair), ...settled.notices] : [];
  const reader = new VaultReader(identity, keys, vaultDir, { repair });
  const repairs = repair ? summarizeRepair(repair) : null;
  const pages = PageStore.open(vaultDir, keys, vaultIdBytes(identity), repair);
  const generations: GenerationReport[] = [];
  let replayer: JournalReplayer | null = null;
  let records = 0;
  let generation = -1;
  let current: StoredRecord | null = null;
  const close = (): void => {
    if (replayer) generations.push({ ...replayer.finish(), complete: replayer.complete });
  };
  try {
    for (const r of reader.records()) {
      current = r;
      if (!replayer || r.body.generation !== generation) {
        close();
        replayer = new JournalReplayer(DISCARD_SINK, { pages });
        generation = r.body.generation;
      }
      replayer.feed(r.seq, r.body);
      records += 1;
      onProgress?.(reader.bytesRead, reader.totalBytes);
    }
    close();
  } catch (err) {
    const bad = describe(err, current);
    if (!bad) throw err;
    if (!(err instanceof JournalError)) close();
    return { ok: false, records, bytes: reader.bytesRead, generations, tornTail: null, firstBadRecord: bad, repairs, notices };
  }
  return { ok: true, records, bytes: reader.bytesRead, generations, tornTail: reader.tornTail, firstBadRecord: null, repairs, notices };
}

function describe(err: unknown, current: StoredRecord | null): BadRecord | null {
  if (err instanceof CorruptRecordError) {
    return { seq: err.location.expectedSeq.toString(), segment: err.location.segment, offset: err.location.offset, reason: err.reason };
  }
  if (err instanceof JournalError && current) {
    return { seq: err.seq.toString(), segment: current.segment.name, offset: current.offset, reason: err.message.replace(/^record \d+: /, '') };
  }
  return null;
}
