// The lnbackup-cln plugin's logic, independent of stdio: answers getmanifest and init, handles
// each db_write call (durable in the vault before `continue`; `abort` when the node must not go
// on), and serves lnbackup-status. The journal is opened at the first call that needs it, so a
// lightningd started only for --help never takes the vault's lock.
import { Journal, type WriteOutcome } from '../journal/journal.js';
import { loadRootKey } from '../keys/rootKey.js';
import { vaultKeysFromRoot } from '../vault/keys.js';
import { LatencyWindow } from '../util/latency.js';
import { configPath, readConfig, resolveIn, type PluginConfig } from './config.js';
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

export interface PluginIo {
  /** Writes one protocol message to lightningd. */
  send(text: string): void;
  /** Sleeps synchronously (the hook is pending, lightningd waits for us anyway). */
  sleep(ms: number): void;
}

const RESTORE_HINT =
  "Do NOT start this node again on this database. Restore the newest state from the backup with 'lnbackup restore --vault <vault> --hsm-secret <hsm_secret> --to <lightningd.sqlite3>' (see 'lnbackup restore --help'), then start lightningd.";

export class LnbackupPlugin {
  private journal: Journal | null = null;
  private config: PluginConfig | null = null;
  private readonly latency = new LatencyWindow();
  private initialized = false;
  private lastError: string | null = null;
  private postgresNoticeGiven = false;

  constructor(
    private readonly networkDir: string,
    private readonly io: PluginIo,
  ) {}

  handle(req: JsonRpcRequest): void {
    const id = req.id;
    switch (req.method) {
      case 'getmanifest':
        if (id !== undefined) this.io.send(result(id, MANIFEST));
        return;
      case 'init':
        this.initialized = true;
        if (id !== undefined) this.io.send(result(id, {}));
        return;
      case 'db_write':
        if (id !== undefined) this.io.send(result(id, this.dbWrite(req.params)));
        return;
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

  close(): void {
    this.journal?.close();
    this.journal = null;
  }

  private dbWrite(params: unknown): typeof CONTINUE | typeof ABORT {
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
    const outcome = this.recordWithRetry(call.dataVersion, call.writes);
    this.latency.add(performance.now() - started);
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

  /** Records a call; on I/O failure reopens the vault and retries for a bounded time. */
  private recordWithRetry(dataVersion: number, writes: readonly string[]): WriteOutcome | null {
    const deadline = Date.now() + (this.config?.failureRetrySeconds ?? 30) * 1000;
    let delay = 100;
    for (let attempt = 1; ; attempt++) {
      try {
        return this.openJournal().record(dataVersion, writes);
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        this.close();
        const fatal = this.config === null || Date.now() + delay > deadline;
        this.fail(
          `could not make version ${dataVersion} durable (attempt ${attempt}): ${msg}` +
            (fatal ? '. Stopping lightningd before it commits anything unrecorded; fix the vault and start it again.' : `; retrying in ${delay} ms`),
        );
        if (fatal) return null;
        this.io.sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  private openJournal(): Journal {
    if (this.journal) return this.journal;
    this.config ??= readConfig(this.networkDir);
    const c = this.config;
    const keyOrigin = 'hsmSecret' in c.key ? { hsmSecret: resolveIn(this.networkDir, c.key.hsmSecret) } : { keyFile: resolveIn(this.networkDir, c.key.keyFile) };
    const root = loadRootKey(keyOrigin);
    if (c.nodeId && root.nodeId && root.nodeId !== c.nodeId) {
      throw new Error(`this node's hsm_secret gives node id ${root.nodeId}, but ${configPath(this.networkDir)} was written for ${c.nodeId}`);
    }
    const keys = vaultKeysFromRoot(root.key);
    root.key.fill(0);
    this.journal = Journal.open(c.vault, keys, resolveIn(this.networkDir, c.database), (notice) => this.log('info', notice));
    if (this.journal.status().vaultId !== c.vaultId) {
      const found = this.journal.status().vaultId;
      this.close();
      throw new Error(`the vault at ${c.vault} has id ${found}, but this node was set up with vault ${c.vaultId}; re-run 'lnbackup init'`);
    }
    this.lastError = null;
    return this.journal;
  }

  private fail(message: string): void {
    this.lastError = message;
    this.log('broken', message);
  }

  private status(): Record<string, unknown> {
    let journal: Journal | null = null;
    try {
      journal = this.openJournal();
    } catch (err) {
      this.lastError = err instanceof Error ? err.message : String(err);
    }
    return {
      networkDir: this.networkDir,
      vault: this.config?.vault ?? null,
      initialized: this.initialized,
      ...(journal ? journal.status() : {}),
      hookLatency: this.latency.summary(),
      lastError: this.lastError,
    };
  }
}
