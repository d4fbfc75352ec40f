// The lnbackup-cln plugin's logic, independent of stdio: answers getmanifest and init, handles
// each db_write call (durable on the policy's destinations before `continue`; `abort` when the node
// must not go on), and serves lnbackup-status. The node's backup (journal, servers, replicas) is
// opened at the first call that needs it, so a lightningd started only for --help never takes the
// vault's lock.
import { setTimeout as sleep } from 'node:timers/promises';
import type { WriteOutcome } from '../journal/journal.js';
import type { Destination } from '../destinations/destination.js';
import { PolicyFailedError, StallLimitError, type PolicyEvents } from '../destinations/policy.js';
import { LatencyWindow } from '../util/latency.js';
import { readConfig, type PluginConfig } from './config.js';
import { NodeBackup } from './nodeBackup.js';
import {
  ABORT,
  CONTINUE,
  MANIFEST,
  STATUS_METHOD,
  error,
  logNotification,
  parseDbWriteParams,
  result,
  type JsonRpcRequest,
  type LogLevel,
} from './protocol.js';
import { StatusFile } from './statusFile.js';

export interface PluginIo {
  /** Writes one protocol message to lightningd. */
  send(text: string): void;
}

const RESTORE_HINT =
  "Do NOT start this node again on this database. Restore the newest state from the backup with 'lnbackup restore --vault <vault> --hsm-secret <hsm_secret> --to <lightningd.sqlite3>' (or '--from lnbackup://…' instead of --vault, from a server; see 'lnbackup restore --help'), then start lightningd.";

const STALL_GUIDANCE =
  'lightningd is stopped before it commits anything that is not backed up. Bring the destinations back (see lnbackup-status.json and the log above), or change them with `lnbackup destination`, then start lightningd again.';

export class LnbackupPlugin {
  private node: NodeBackup | null = null;
  private opening: Promise<NodeBackup> | null = null;
  /** Since when (Date.now()) the backup is being opened (waiting for servers), or null. */
  private openingSince: number | null = null;
  /** The servers an opening waits for (shown in status meanwhile). */
  private openingServers: readonly Destination[] = [];
  private readonly shutdown = new AbortController();
  private config: PluginConfig | null = null;
  private readonly latency = new LatencyWindow();
  private initialized = false;
  private lastError: string | null = null;
  private postgresNoticeGiven = false;
  private readonly statusFile: StatusFile;
  private readonly policyEvents: PolicyEvents = {
    onStall: (waitedMs, description) => {
      this.log('broken', `STALLED for ${(waitedMs / 1000).toFixed(0)} s: ${description}. lightningd waits (fail-safe); lnbackup keeps retrying.`);
      this.statusFile.writeNow();
    },
    onRecovered: (waitedMs) => {
      this.log('info', `the stall is over after ${(waitedMs / 1000).toFixed(1)} s; the destinations hold every record again`);
      this.statusFile.writeNow();
    },
    onBackgroundFailure: (destination, message) => {
      if (this.shutdown.signal.aborted) return; // closing destinations reject what they still hold
      this.log('unusual', `${destination} failed (the policy went on without it): ${message}`);
      this.statusFile.writeNow();
    },
  };

  constructor(
    private readonly networkDir: string,
    private readonly io: PluginIo,
  ) {
    this.statusFile = new StatusFile(networkDir, () => this.status());
  }

  /** Handles one request; db_write calls must be handed in one at a time, in order. */
  async handle(req: JsonRpcRequest): Promise<void> {
    const id = req.id;
    switch (req.method) {
      case 'getmanifest':
        if (id !== undefined) this.io.send(result(id, MANIFEST));
        return;
      case 'init':
        this.initialized = true;
        if (id !== undefined) this.io.send(result(id, {}));
        return;
      case 'db_write': {
        const answer = await this.dbWrite(req.params);
        if (id !== undefined) this.io.send(result(id, answer));
        return;
      }
      case STATUS_METHOD:
        if (id !== undefined) this.io.send(result(id, this.status()));
        return;
      default:
        if (id !== undefined) this.io.send(error(id, -32601, `lnbackup does not know the method '${req.method}'`));
    }
  }

  log(level: LogLevel, message: string): void {
    this.io.send(logNotification(level, `lnbackup: ${message}`));
  }

  /** Closes everything; an opening still waiting for servers is given up. */
  async close(): Promise<void> {
    this.shutdown.abort();
    this.statusFile.close(); // the last state written still shows the destinations
    await this.closeNode();
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
        this.log('info', 'db_write calls carry no statements (PostgreSQL backend): PostgreSQL replication protects this node, not the vault');
        this.postgresNoticeGiven = true;
      }
      return CONTINUE;
    }
    const outcome = await this.recordWithRetry(call.dataVersion, call.writes, started);
    this.latency.add(performance.now() - started);
    this.statusFile.touch();
    if (outcome === null) return ABORT;
    switch (outcome.kind) {
      case 'stored':
        if (outcome.snapshot) {
          const s = outcome.snapshot;
          this.log('info', `started generation ${s.generation} from a snapshot of the database at version ${s.dataVersion} (${s.dbBytes} bytes)`);
        }
        if (outcome.supersedes !== 0n) {
          this.log('info', `version ${call.dataVersion} came again: its earlier record ${outcome.supersedes} was acknowledged but never committed, and is superseded`);
        }
        return CONTINUE;
      case 'unprotected':
        this.lastError = outcome.reason;
        this.log('unusual', `version ${call.dataVersion} is NOT backed up yet: ${outcome.reason}. The previous generation stays restorable.`);
        return CONTINUE;
      case 'refused':
        this.fail(`refusing version ${call.dataVersion}: ${outcome.reason}. ${RESTORE_HINT}`);
        return ABORT;
    }
  }

  /**
   * Records a call. A policy that cannot be met (destinations failed, or the stall limit passed)
   * stops the node; other failures (vault I/O) reopen everything and retry for a bounded time.
   */
  private async recordWithRetry(dataVersion: number, writes: readonly string[], started: number): Promise<WriteOutcome | null> {
    const deadline = Date.now() + (this.config?.failureRetrySeconds ?? 30) * 1000;
    let delay = 100;
    for (let attempt = 1; ; attempt++) {
      try {
        const node = await this.openNode(Date.now() - (performance.now() - started));
        return await node.record(dataVersion, writes, started);
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        if (err instanceof PolicyFailedError || err instanceof StallLimitError) {
          this.fail(`could not make version ${dataVersion} durable: ${msg}. ${STALL_GUIDANCE}`);
          return null;
        }
        if (this.shutdown.signal.aborted) return null;
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

  private openNode(callStartedAt: number): Promise<NodeBackup> {
    if (this.node) return Promise.resolve(this.node);
    this.opening ??= (async () => {
      this.config ??= readConfig(this.networkDir);
      this.openingSince = Date.now();
      // Opening may wait for servers (policy all): keep the status file saying so.
      this.statusFile.writeNow();
      const reporter = setInterval(() => this.statusFile.writeNow(), 10_000);
      try {
        const node = await NodeBackup.open(this.networkDir, this.config, (level, m) => this.log(level, m), this.policyEvents, {
          signal: this.shutdown.signal,
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
    this.log('broken', message);
    this.statusFile.writeNow();
  }

  private status(): Record<string, unknown> {
    const node = this.node;
    return {
      networkDir: this.networkDir,
      vault: this.config?.vault ?? null,
      initialized: this.initialized,
      ...(node ? node.journal.status() : {}),
      ...(node ? node.status() : {}),
      ...(this.openingSince !== null
        ? { openingForMs: Date.now() - this.openingSince, stalledForMs: Date.now() - this.openingSince, destinations: this.openingServers.map((d) => d.status()) }
        : {}),
      hookLatency: this.latency.summary(),
      lastError: this.lastError,
    };
  }
}
