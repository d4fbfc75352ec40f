// `lnbackup restore`: rebuilds a Core Lightning database from a vault, at the newest version or a
// chosen one. It replays into a scratch file beside the target, checks it (PRAGMA integrity_check
// and foreign_key_check), makes it durable, and only then moves it into place; an existing file is
// replaced only when the caller allows it, together with any sqlite journal left beside it (a
// stale hot journal would otherwise be "rolled back" into the restored database).
import fs from 'node:fs';
import path from 'node:path';
import { versionDistance } from '../journal/dataVersion.js';
import { JournalReplayer, type ReplayOutcome } from '../journal/replay.js';
import { openIdentity, vaultIdBytes } from '../vault/identity.js';
import { PageStore } from '../journal/pageStore.js';
import type { VaultKeys } from '../vault/keys.js';
import { VaultReader, type TornTail } from '../vault/reader.js';
import { VaultError } from '../vault/errors.js';
import { fsyncDir } from '../util/durableFs.js';
import { describeRepair, summarizeRepair, type RepairSummary, type VaultRepair } from '../vault/redundancy/protectedRead.js';
import { settleVaultRepair } from '../vault/settleMirrors.js';
import { cutShort, generationEnd } from '../journal/retention.js';
import { listGenerations, withBaseVersions, type GenerationInfo } from './generations.js';
import { SqliteFileSink } from './sqliteSink.js';

export interface RestoreOptions {
  readonly vaultDir: string;
  readonly keys: VaultKeys;
  readonly to: string;
  /** Restore this data_version instead of the newest. */
  readonly version?: number;
  /** Restore the state of this moment (ms since the epoch) instead of the newest. */
  readonly time?: number;
  /** Leave out the in-flight transaction (acked, commit unknown). Default: include it. */
  readonly excludeInFlight?: boolean;
  readonly force?: boolean;
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  readonly onNotice?: (message: string) => void;
  /**
   * The vault's files checked and repaired in memory first (`await repairVaultInMemory(vaultDir)`,
   * src/vault/redundancy/protectedRead.ts): damaged bytes its parity or mirror rebuilds are read
   * repaired, and each repair is told through onNotice. Without it the files are read as they are.
   */
  readonly repair?: VaultRepair;
}

export interface RestoreResult extends ReplayOutcome {
  readonly to: string;
  readonly dbBytes: number;
  readonly integrityCheck: string;
  readonly foreignKeyViolations: number;
  readonly tornTail: TornTail | null;
  /** What redundancy repaired in memory (and what it could not), when `repair` was given. */
  readonly repairs: RepairSummary | null;
}

export class RestoreError extends VaultError {}

const SQLITE_SIDE_FILES = ['-journal', '-wal', '-shm'];

export function restoreDatabase(request: RestoreOptions): RestoreResult {
  const to = path.resolve(request.to);
  if (fs.existsSync(to) && !request.force) {
    throw new RestoreError(`${to} already exists; pass --force to replace it (stop lightningd first)`);
  }
  const identity = openIdentity(request.vaultDir, request.keys, request.repair?.identity ?? undefined);
  // Mirror-protected segments are decided by their records before anything is read from them.
  const settled = request.repair ? settleVaultRepair(request.vaultDir, identity, request.keys, request.repair) : null;
  const options: RestoreOptions = { ...request, repair: settled?.repair };
  if (settled) for (const line of [...describeRepair(settled.repair), ...settled.notices]) options.onNotice?.(line);
  const gens = withBaseVersions(options.vaultDir, identity, options.keys, listGenerations(options.vaultDir), options.repair).reverse();
  if (gens.length === 0) throw new RestoreError(`the vault at ${options.vaultDir} holds no generation yet; nothing to restore`);
  if (options.version !== undefined && options.time !== undefined) throw new RestoreError('give a version or a time, not both');
  const time = options.time;
  const candidates = gens.filter(
    (g) =>
      g.baseVersion !== null &&
      (options.version === undefined || versionDistance(g.baseVersion, options.version) >= 0) &&
      (time === undefined || (g.snapshotTakenAt !== null && g.snapshotTakenAt <= time)),
  );
  if (candidates.length === 0) {
    const damaged = gens.find((g) => g.damage !== null);
    if (damaged?.damage) throw new RestoreError(damaged.damage);
    const oldest = gens[gens.length - 1].baseVersion;
    throw new RestoreError(
      time !== undefined
        ? `the vault holds nothing as old as ${new Date(time).toISOString()}: its oldest generation starts at ${oldestTime(gens)} (see lnbackup generations)`
        : options.version === undefined || oldest === null
          ? 'no generation of the vault begins with a readable snapshot; run lnbackup verify to find the damage'
          : `no generation in the vault starts at or before version ${options.version}; the oldest starts at ${oldest}`,
    );
  }
  for (const gen of candidates) {
    const scratch = path.join(path.dirname(to), `.${path.basename(to)}.lnbackup-restore-${process.pid}`);
    fs.rmSync(scratch, { force: true });
    try {
      const result = replayGeneration(options, identity, gen, scratch);
      if (result === null) {
        options.onNotice?.(`generation ${gen.generation} is incomplete (its snapshot was interrupted); using the one before it`);
        continue;
      }
      // Replayed to its end: the generation before it must not reach further (cutShort).
      const before = result.reachedTarget ? undefined : gens.find((g) => g.generation < gen.generation);
      const beforeEnd = before ? generationEnd(identity, options.keys, options.vaultDir, before.generation, options.repair) : null;
      if (before && cutShort(result.outcome.version, beforeEnd)) {
        options.onNotice?.(
          `generation ${gen.generation} ends at version ${result.outcome.version} but generation ${before.generation} reaches ${beforeEnd}: ` +
            `a crash interrupted the compaction switch to it; using generation ${before.generation}`,
        );
        continue;
      }
      if (options.version !== undefined && result.outcome.version !== options.version) {
        throw new RestoreError(`version ${options.version} is not in the vault: generation ${gen.generation} ends at version ${result.outcome.version}`);
      }
      for (const suffix of SQLITE_SIDE_FILES) fs.rmSync(to + suffix, { force: true });
      fs.renameSync(scratch, to);
      fsyncDir(path.dirname(to));
      return {
        ...result.outcome,
        to,
        dbBytes: fs.statSync(to).size,
        integrityCheck: result.integrity,
        foreignKeyViolations: 0,
        tornTail: result.tornTail,
        repairs: options.repair ? summarizeRepair(options.repair) : null,
      };
    } finally {
      fs.rmSync(scratch, { force: true });
    }
  }
  throw new RestoreError('every generation that could hold the requested version is incomplete');
}

interface Replayed {
  outcome: ReplayOutcome;
  /** The replay stopped at the version or time asked for (not at the generation's end). */
  reachedTarget: boolean;
  integrity: string;
  tornTail: TornTail | null;
}

function replayGeneration(options: RestoreOptions, identity: ReturnType<typeof openIdentity>, gen: GenerationInfo, scratch: string): Replayed | null {
  const sink = new SqliteFileSink(scratch);
  try {
    const pages = PageStore.open(options.vaultDir, options.keys, vaultIdBytes(identity), options.repair);
    const replayer = new JournalReplayer(sink, { targetVersion: options.version, targetTime: options.time, includeInFlight: !options.excludeInFlight, pages });
    const reader = new VaultReader(identity, options.keys, options.vaultDir, { fromGeneration: gen.generation, repair: options.repair });
    const total = gen.bytes;
    for (const r of reader.records()) {
      if (r.body.generation !== gen.generation) break;
      replayer.feed(r.seq, r.body);
      options.onProgress?.(reader.bytesRead, total);
      if (replayer.done) break;
    }
    if (!replayer.complete) return null;
    const outcome = replayer.finish();
    const db = sink.finish();
    const integrity = (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).join('; ');
    if (integrity !== 'ok') throw new RestoreError(`the rebuilt database fails PRAGMA integrity_check: ${integrity}`);
    const fk = db.pragma('foreign_key_check') as unknown[];
    if (fk.length > 0) throw new RestoreError(`the rebuilt database has ${fk.length} foreign key violations (PRAGMA foreign_key_check)`);
    db.pragma('journal_mode = DELETE');
    sink.close();
    const fd = fs.openSync(scratch, 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    return { outcome, integrity, tornTail: reader.tornTail, reachedTarget: replayer.done };
  } finally {
    sink.close();
  }
}

function oldestTime(gens: readonly GenerationInfo[]): string {
  const times = gens.map((g) => g.snapshotTakenAt).filter((t): t is number => t !== null);
  return times.length === 0 ? 'an unknown time' : new Date(Math.min(...times)).toISOString();
}
