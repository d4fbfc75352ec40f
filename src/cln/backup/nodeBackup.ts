// Everything the plugin keeps open for one node: its keys, the journal (the local vault), the
// destinations (servers, replicas) and the durability policy. Opening it brings the servers level
// with the vault first (a server that is ahead has its records proven and adopted, so a node whose
// database is older than what any copy holds is refused by the journal), then opens the journal.
// record() is the hot path: seal and write the call, hand it to the destinations, and resolve when
// the policy is met.
import { Journal, type StoredOutcome, type WriteOutcome } from '../../journal/journal.js';
import { identityPath } from '../../vault/identity.js';
import { MAX_IDENTITY_BYTES } from '../../vault/format.js';
import type { VaultKeys } from '../../vault/keys.js';
import { readBoundedFile } from '../../util/durableFs.js';
import { adoptRecords } from '../../vault/adopt.js';
import { storedCall, type Destination, type DestinationStatus } from '../../destinations/destination.js';
import { scanGenerations, type GenerationPages, type RetentionSettings } from '../../journal/retention.js';
import { Compactor, type CompactionStatus } from '../../journal/compaction/compactor.js';
import { LocalVaultDestination } from '../../destinations/localVault.js';
import { DurabilityPolicy, formatPolicy, parsePolicy, type PolicyEvents, type PolicySpec } from '../../destinations/policy.js';
import { RemoteDestination } from '../../destinations/remote.js';
import { ReplicaDestination } from '../../destinations/replica.js';
import { destinationSettings, resolveIn, retentionSettings, type DestinationSettings, type PluginConfig } from '../config.js';
import { loadNodeKeys } from './nodeKeys.js';
import type { Log } from '../../util/log.js';
import type { EpochMs, MonotonicMs } from '../../util/clock.js';

/** How long close() waits for records in flight to reach the servers. */
const CLOSE_GRACE_MS = 5000;

export interface NodeBackupStatus {
  readonly policy: string;
  readonly localVault: string;
  readonly destinations: DestinationStatus[];
  /** How long the current call has been waiting for its destinations (null: none waits). */
  readonly stalledForMs: number | null;
  readonly compaction: CompactionStatus;
}

export class NodeBackup {
  private readonly compactor: Compactor;

  private constructor(
    readonly journal: Journal,
    readonly policy: DurabilityPolicy,
    /** Fed every call but not counted by the policy: the local vault in cache mode. */
    private readonly background: readonly Destination[],
    private readonly deferSync: boolean,
    private readonly settings: DestinationSettings,
    retention: RetentionSettings,
    generations: GenerationPages[] | null,
    private readonly log: Log,
  ) {
    const others = [...policy.destinations, ...background].filter((d) => d.kind !== 'vault');
    this.compactor = new Compactor(journal, () => others, retention, generations, log);
  }

  static async open(networkDir: string, config: PluginConfig, log: Log, events: PolicyEvents, options: OpenOptions): Promise<NodeBackup> {
    const keys = loadNodeKeys(networkDir, config);
    const settings = destinationSettings(config);
    const spec = parsePolicy(settings.policy);
    const dbPath = resolveIn(networkDir, config.database);
    const notice = (m: string): void => log('info', m);
    const identity = readBoundedFile(identityPath(config.vault), MAX_IDENTITY_BYTES);
    const vaultId = Buffer.from(config.vaultId, 'hex');
    const remotes = settings.remotes.map(
      (url) => new RemoteDestination({ url, vaultDir: config.vault, identity, vaultId, keys, onNotice: (level, m) => log(level, m) }),
    );
    options.onServers?.(remotes);
    const deadline = startDeadline(settings, spec, options.callStartedAt);
    const abort = (): void => void Promise.all(remotes.map((r) => r.close(0)));
    options.signal.addEventListener('abort', abort);
    let journal = Journal.open(config.vault, keys, dbPath, notice);
    try {
      journal = await levelWithServers(journal, remotes, { config, keys, dbPath, notice, deadline, log });
      options.signal.throwIfAborted();
      if (journal.status().vaultId !== config.vaultId) {
        throw new Error(
          `the vault at ${config.vault} has id ${journal.status().vaultId}, but this node was set up with vault ${config.vaultId}; re-run 'lnbackup init'`,
        );
      }
      const deferSync = remotes.length > 0;
      const local = new LocalVaultDestination(config.vault, journal, !deferSync);
      const replicas = settings.replicas.map((file) => ReplicaDestination.open({ file, vaultDir: config.vault, keys, onNotice: notice }));
      const destinations: Destination[] = [...(settings.localVault === 'durable' ? [local] : []), ...remotes, ...replicas];
      const policy = new DurabilityPolicy(destinations, spec, settings.stallLimitSeconds === null ? null : settings.stallLimitSeconds * 1000, events);
      const { gens, damaged } = scanGenerations(journal.identity, keys, config.vault);
      // With damage the kept generations are not all known: nothing is removed until it is repaired.
      if (damaged !== null) log('unusual', `retention is paused until the vault is repaired ('lnbackup scrub --repair'): ${damaged}`);
      return new NodeBackup(
        journal,
        policy,
        settings.localVault === 'durable' ? [] : [local],
        deferSync,
        settings,
        retentionSettings(config),
        damaged === null ? gens : null,
        log,
      );
    } catch (err) {
      journal.close();
      await Promise.all(remotes.map((r) => r.close(0)));
      throw err;
    } finally {
      options.signal.removeEventListener('abort', abort);
    }
  }

  /**
   * Records a db_write call (received at `startedAt`, performance.now()) and, when the journal
   * stored it, resolves once the policy's destinations hold it.
   */
  async record(dataVersion: number, writes: readonly string[], startedAt: MonotonicMs): Promise<WriteOutcome> {
    const recordStarted = performance.now();
    const outcome = this.journal.record(dataVersion, writes, { deferSync: this.deferSync });
    const recordMs = performance.now() - recordStarted;
    if (outcome.kind === 'stored') await this.distribute({ dataVersion, writes, outcome, startedAt, recordMs });
    return outcome;
  }

  /** Hands a stored call to every destination and to compaction; resolves when the policy is met. */
  private distribute(c: { dataVersion: number; writes: readonly string[]; outcome: StoredOutcome; startedAt: MonotonicMs; recordMs: number }): Promise<void> {
    const { outcome } = c;
    const call = storedCall(c.dataVersion, c.writes, outcome);
    // Packs of a snapshot taken inside the call get their parity in the background.
    if (outcome.packs.length > 0)
      this.journal
        .protectPacks(outcome.packs)
        .catch((err: unknown) => this.log('unusual', `parity of new page packs failed (${(err as Error).message}); lnbackup scrub --repair makes it`));
    // A cache-mode local vault is not counted by the policy, but it is flushed all the same.
    const background = this.background.map((d) => d.store(call));
    for (const b of background) b.catch(() => undefined); // its failures show in its status
    const { held, everywhere } = this.policy.store(call, c.startedAt);
    this.compactor.afterCall(outcome, c.recordMs, () => Promise.all([everywhere, ...background]).then(() => undefined));
    return held;
  }

  status(): NodeBackupStatus {
    const all = [...this.policy.destinations, ...this.background];
    return {
      policy: formatPolicy(this.policy.spec),
      localVault: this.settings.localVault,
      destinations: all.map((d) => d.status()),
      stalledForMs: this.policy.stalledForMs(),
      compaction: this.compactor.status(),
    };
  }

  async close(): Promise<void> {
    this.compactor.close();
    this.policy.close();
    await Promise.all([...this.policy.destinations, ...this.background].map((d) => d.close(CLOSE_GRACE_MS)));
    this.journal.close();
  }
}

export interface OpenOptions {
  /** Aborted when the plugin shuts down while it is still opening (servers are given up). */
  readonly signal: AbortSignal;
  /** When the call that opens the backup arrived (Date.now()): the stall limit counts from there. */
  readonly callStartedAt: EpochMs;
  /** Told the server destinations as soon as they exist, so their state can be shown while opening waits for them. */
  readonly onServers?: (servers: readonly Destination[]) => void;
}

/** How long a quorum that can be met without the servers waits for them at start. */
const QUORUM_START_WAIT_MS = 5000;

/**
 * Until when opening waits for the servers to answer: the stall limit (counted from the call that
 * opens), or for ever (policy all: fail-safe) — but a quorum that the local vault and the replicas
 * can meet alone waits only a few seconds; late servers catch up in the background.
 */
function startDeadline(settings: DestinationSettings, spec: PolicySpec, callStartedAt: EpochMs): EpochMs | null {
  const stall = settings.stallLimitSeconds === null ? null : callStartedAt + settings.stallLimitSeconds * 1000;
  const withoutServers = (settings.localVault === 'durable' ? 1 : 0) + settings.replicas.length;
  if (spec.kind === 'quorum' && spec.k <= withoutServers) {
    const quick = Date.now() + QUORUM_START_WAIT_MS;
    return stall === null ? quick : Math.min(stall, quick);
  }
  return stall;
}

interface LevelContext {
  readonly config: PluginConfig;
  readonly keys: VaultKeys;
  readonly dbPath: string;
  readonly notice: (message: string) => void;
  readonly deadline: EpochMs | null;
  readonly log: Log;
}

/**
 * Connects to every server and agrees with each on where its copy ends. A server ahead of the
 * local vault (the node's disk lost records, or the vault is only a cache) has its records proven
 * and adopted into the vault, and the journal is reopened on the longer chain.
 */
async function levelWithServers(journal: Journal, remotes: readonly RemoteDestination[], ctx: LevelContext): Promise<Journal> {
  if (remotes.length === 0) return journal;
  for (;;) {
    const tail = journal.chainTail;
    const results = await Promise.all(remotes.map((r) => r.start(tail, ctx.deadline)));
    let best: { index: number; records: number } | null = null;
    results.forEach((res, index) => {
      if (res.ahead && (best === null || res.records.length > best.records)) best = { index, records: res.records.length };
    });
    if (best === null) return journal;
    const { index } = best as { index: number };
    const ahead = results[index];
    if (!ahead.ahead) return journal;
    journal.close();
    const adopted = await adoptRecords({ vaultDir: ctx.config.vault, keys: ctx.keys, tail, records: ahead.records, source: remotes[index].name });
    ctx.log('unusual', `${remotes[index].name} held ${adopted.records} record(s) beyond the local vault (up to ${adopted.lastSeq}); proved and adopted them`);
    journal = Journal.open(ctx.config.vault, ctx.keys, ctx.dbPath, ctx.notice);
  }
}
