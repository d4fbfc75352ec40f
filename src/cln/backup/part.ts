// The backup part of the plugin: the db_write hook. Each call is made durable on the policy's
// destinations before it answers `continue` (`abort` when the node must not go on). The node's
// backup (journal, servers, replicas) is opened at the first call that needs it, so a lightningd
// started only for --help never takes the vault's lock. This part is on the db_write path: it must
// never call lightningd's RPC (lightningd waits for the hook: a deadlock), and the lint rules keep
// it from importing src/cln/rpc/.
import { setTimeout as sleep } from 'node:timers/promises';
import type { JournalStatus, WriteOutcome } from '../../journal/journal.js';
import type { Destination, DestinationStatus } from '../../destinations/destination.js';
import { PolicyFailedError, StallLimitError, type PolicyEvents } from '../../destinations/policy.js';
import { LatencyWindow, type LatencySummary } from '../../util/latency.js';
import { readConfig, type PluginConfig } from '../config.js';
import { ABORT, CONTINUE, parseDbWriteParams } from '../pluginProtocol.js';
import type { PartContext, PluginPart } from '../part.js';
import { NodeBackup, type NodeBackupStatus } from './nodeBackup.js';
import type { EpochMs, MonotonicMs } from '../../util/clock.js';

const RESTORE_HINT =
  "Do NOT start this node again on this database. Restore the newest state from the backup with 'lnbackup restore --vault <vault> --hsm-secret <hsm_secret> --to <lightningd.sqlite3>' (or '--from lnbackup://…' instead of --vault, from a server; see 'lnbackup restore --help'), then start lightningd.";

const STALL_GUIDANCE =
  'lightningd is stopped before it commits anything that is not backed up. Bring the destinations back (see lnbackup-status.json and the log above), or change them with `lnbackup destination`, then start lightningd again.';

/** While the backup is being opened (waiting for servers). */
export interface OpeningStatus {
  /** How long it has been opening (ms, Date.now() clock). */
  readonly openingForMs: number;
  /** The same: the call that opens it waits as long (what monitoring reads as the stall). */
  readonly stalledForMs: number;
  /** The servers it waits for. */
  readonly destinations: DestinationStatus[];
}

/** The backup part's status: the vault, then the open backup's (or the opening's), then the hook's. */
export type BackupStatus = { readonly vault: string | null } & ((JournalStatus & NodeBackupStatus) | OpeningStatus | Record<never, never>) & {
    readonly hookLatency: LatencySummary;
    readonly lastError: string | null;
  };

export class BackupPart implements PluginPart<BackupStatus> {
  readonly name = 'backup';
  readonly hooks = { db_write: (params: unknown) => this.dbWrite(params) };
  private node: NodeBackup | null = null;
  private opening: Promise<NodeBackup> | null = null;
  /** Since when (Date.now()) the backup is being opened (waiting for servers), or null. */
  private openingSince: EpochMs | null = null;
  /** The servers an opening waits for (shown in status meanwhile). */
  private openingServers: readonly Destination[] = [];
  private config: PluginConfig | null = null;
  private readonly latency = new LatencyWindow();
  private lastError: string | null = null;
  private postgresNoticeGiven = false;
  private readonly policyEvents: PolicyEvents = {
    onStall: (waitedMs, description) => {
      this.ctx.log('broken', `STALLED for ${(waitedMs / 1000).toFixed(0)} s: ${description}. lightningd waits (fail-safe); lnbackup keeps retrying.`);
      this.ctx.statusUrgent();
    },
    onRecovered: (waitedMs) => {
      this.ctx.log('info', `the stall is over after ${(waitedMs / 1000).toFixed(1)} s; the destinations hold every record again`);
      this.ctx.statusUrgent();
    },
    onBackgroundFailure: (destination, message) => {
      if (this.ctx.shutdown.aborted) return; // closing destinations reject what they still hold
      this.ctx.log('unusual', `${destination} failed (the policy went on without it): ${message}`);
      this.ctx.statusUrgent();
    },
  };

  constructor(
    private readonly networkDir: string,
    private readonly ctx: PartContext,
  ) {}

  /** Closes everything; an opening still waiting for servers is given up. */
  async close(): Promise<void> {
    await this.closeNode();
  }

  status(): BackupStatus {
    const node = this.node;
    const vault = this.config?.vault ?? null;
    const tail = { hookLatency: this.latency.summary(), lastError: this.lastError };
    if (node) return { vault, ...node.journal.status(), ...node.status(), ...tail };
    if (this.openingSince !== null) {
      const openingForMs = Date.now() - this.openingSince;
      return { vault, openingForMs, stalledForMs: openingForMs, destinations: this.openingServers.map((d) => d.status()), ...tail };
    }
    return { vault, ...tail };
  }

  private async closeNode(): Promise<void> {
    const node = this.node ?? (await this.opening?.catch(() => null)) ?? null;
    this.node = null;
    this.opening = null;
    await node?.close();
  }

  private async dbWrite(params: unknown): Promise<typeof CONTINUE | typeof ABORT> {
    const started = performance.now();
    const call = parseDbWriteParams(params);
    if (!call) {
      this.fail('a db_write call without a valid data_version and writes list arrived; refusing it so nothing unrecorded is committed');
      return ABORT;
    }
    if (call.writes.length === 0) {
      if (!this.postgresNoticeGiven) {
        this.ctx.log('info', 'db_write calls carry no statements (PostgreSQL backend): PostgreSQL replication protects this node, not the vault');
        this.postgresNoticeGiven = true;
      }
      return CONTINUE;
    }
    const outcome = await this.recordWithRetry(call.dataVersion, call.writes, started);
    this.latency.add(performance.now() - started);
    this.ctx.statusChanged();
    return this.answer(call.dataVersion, outcome);
  }

  /** The one place a call's outcome is turned into lightningd's answer and the operator's log. */
  private answer(dataVersion: number, outcome: WriteOutcome | null): typeof CONTINUE | typeof ABORT {
    if (outcome === null) return ABORT;
    switch (outcome.kind) {
      case 'stored':
        if (outcome.snapshot) {
          const s = outcome.snapshot;
          this.ctx.log('info', `started generation ${s.generation} from a snapshot of the database at version ${s.dataVersion} (${s.dbBytes} bytes)`);
        }
        if (outcome.supersedes !== 0n) {
          this.ctx.log(
            'info',
            `version ${dataVersion} came again: its earlier record ${outcome.supersedes} was acknowledged but never committed, and is superseded`,
          );
        }
        return CONTINUE;
      case 'unprotected':
        this.lastError = outcome.reason;
        this.ctx.log('unusual', `version ${dataVersion} is NOT backed up yet: ${outcome.reason}. The previous generation stays restorable.`);
        return CONTINUE;
      case 'refused':
        this.fail(`refusing version ${dataVersion}: ${outcome.reason}. ${RESTORE_HINT}`);
        return ABORT;
    }
  }

  /**
   * Records a call. A policy that cannot be met (destinations failed, or the stall limit passed)
   * stops the node; other failures (vault I/O) reopen everything and retry for a bounded time.
   * `started` is when the call arrived (performance.now()).
   */
  private async recordWithRetry(dataVersion: number, writes: readonly string[], started: MonotonicMs): Promise<WriteOutcome | null> {
    const deadline = Date.now() + (this.config?.failureRetrySeconds ?? 30) * 1000;
    let delay = 100;
    for (let attempt = 1; ; attempt++) {
      try {
        // The stall limit counts from the call's arrival, on the Date.now() clock the opening uses.
        const node = await this.openNode(Date.now() - (performance.now() - started));
        return await node.record(dataVersion, writes, started);
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        if (err instanceof PolicyFailedError || err instanceof StallLimitError) {
          this.fail(`could not make version ${dataVersion} durable: ${msg}. ${STALL_GUIDANCE}`);
          return null;
        }
        if (this.ctx.shutdown.aborted) return null;
        await this.closeNode();
        const fatal = this.config === null || Date.now() + delay > deadline;
        this.fail(
          `could not make version ${dataVersion} durable (attempt ${attempt}): ${msg}` +
            (fatal ? '. Stopping lightningd before it commits anything unrecorded; fix the cause and start it again.' : `; retrying in ${delay} ms`),
        );
        if (fatal) return null;
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  /** `callStartedAt`: when the call that opens arrived (Date.now()). */
  private openNode(callStartedAt: EpochMs): Promise<NodeBackup> {
    if (this.node) return Promise.resolve(this.node);
    this.opening ??= (async () => {
      this.config ??= readConfig(this.networkDir);
      this.openingSince = Date.now();
      // Opening may wait for servers (policy all): keep the status file saying so.
      this.ctx.statusUrgent();
      const reporter = setInterval(() => this.ctx.statusUrgent(), 10_000);
      try {
        const node = await NodeBackup.open(this.networkDir, this.config, (level, m) => this.ctx.log(level, m), this.policyEvents, {
          signal: this.ctx.shutdown,
          callStartedAt,
          onServers: (servers) => (this.openingServers = servers),
        });
        this.node = node;
        this.lastError = null;
        return node;
      } finally {
        clearInterval(reporter);
        this.openingSince = null;
        this.openingServers = [];
      }
    })();
    const opening = this.opening;
    opening.catch(() => {
      if (this.opening === opening) this.opening = null;
    });
    return opening;
  }

  private fail(message: string): void {
    this.lastError = message;
    this.ctx.log('broken', message);
    this.ctx.statusUrgent();
  }
}
