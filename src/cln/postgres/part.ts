// The PostgreSQL part of lnbackup-cln: on a node whose wallet is PostgreSQL (its db_write calls carry
// no statements, so the vault cannot protect it), it keeps checking that the node's commits are
// zero-loss (src/postgres/watch.ts) and shows it in lnbackup-status. After `init` it asks lightningd
// for the wallet DSN (`listconfigs`, never from inside a hook: lightningd serves no RPC while a
// db_write is pending), starts the watch, and logs every lapse. With `pgUnprotectedLimitSeconds`
// in lnbackup.json, a lapse that lasts that long stops lightningd cleanly (its `stop` command).
import fs from 'node:fs';
import { configPath, readConfig } from '../config.js';
import type { InitParams, PartContext, PluginPart } from '../part.js';
import { LightningRpc, rpcSocketPath } from '../rpc/client.js';
import { redactDsn } from '../../postgres/dsn.js';
import { walletDsnFromListconfigs } from '../../postgres/walletDsn.js';
import { PostgresWatch, type PostgresWatchStatus } from '../../postgres/watch.js';

export interface PostgresPartStatus {
  /** 'postgres': the watch runs; 'sqlite': nothing to watch; 'unknown': not asked yet, or lightningd could not say. */
  readonly wallet: 'postgres' | 'sqlite' | 'unknown';
  readonly watch: PostgresWatchStatus | null;
  /** Why the wallet is unknown (lightningd's RPC failed), or null. */
  readonly error: string | null;
}

interface PostgresSettings {
  readonly intervalMs: number | undefined;
  readonly unprotectedLimitMs: number | undefined;
}

/** The PostgreSQL settings of lnbackup.json, when the node has one (a PostgreSQL node may have no vault). */
function settingsOf(networkDir: string): PostgresSettings {
  if (!fs.existsSync(configPath(networkDir))) return { intervalMs: undefined, unprotectedLimitMs: undefined };
  const c = readConfig(networkDir);
  return {
    intervalMs: c.pgCheckIntervalSeconds === undefined ? undefined : c.pgCheckIntervalSeconds * 1000,
    unprotectedLimitMs: c.pgUnprotectedLimitSeconds == null ? undefined : c.pgUnprotectedLimitSeconds * 1000,
  };
}

export class PostgresPart implements PluginPart<PostgresPartStatus> {
  readonly name = 'postgres';
  private rpc: LightningRpc | null = null;
  private watch: PostgresWatch | null = null;
  private wallet: PostgresPartStatus['wallet'] = 'unknown';
  private error: string | null = null;
  private closed = false;

  constructor(
    private readonly networkDir: string,
    private readonly ctx: PartContext,
  ) {}

  init(params: InitParams): void {
    this.start(params).catch((err: unknown) => {
      this.error = err instanceof Error ? err.message : String(err);
      this.ctx.log('unusual', `could not tell whether this node's wallet is PostgreSQL: ${this.error}`);
      this.ctx.statusChanged();
    });
  }

  status(): PostgresPartStatus {
    return { wallet: this.wallet, watch: this.watch?.status() ?? null, error: this.error };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watch?.stop();
    this.rpc?.close();
  }

  private async start(params: InitParams): Promise<void> {
    const rpc = await LightningRpc.connect(rpcSocketPath(params));
    if (this.closed) return rpc.close();
    this.rpc = rpc;
    const dsn = walletDsnFromListconfigs(await rpc.call('listconfigs'));
    if (dsn === null) {
      this.wallet = 'sqlite';
      this.rpc = null;
      rpc.close();
      return;
    }
    this.wallet = 'postgres';
    const settings = settingsOf(this.networkDir);
    const watch = new PostgresWatch({
      log: (level, line) => {
        this.ctx.log(level === 'warn' ? 'broken' : 'info', line);
        this.ctx.statusUrgent();
      },
      intervalMs: settings.intervalMs,
      unprotectedLimitMs: settings.unprotectedLimitMs,
      onUnprotectedLimit: (status) => this.stopNode(status),
    });
    this.watch = watch;
    this.ctx.log('info', `PostgreSQL wallet ${redactDsn(dsn)}: watching its replication every ${(settings.intervalMs ?? 10_000) / 1000} s`);
    await watch.start(dsn);
    if (this.closed) watch.stop();
  }

  /** The unprotected limit passed: lightningd stops cleanly, as the stall limit stops it. */
  private stopNode(status: PostgresWatchStatus): void {
    this.ctx.log(
      'broken',
      `PostgreSQL: not zero-loss since ${status.unprotectedSince ?? '?'} (${status.reasons.map((r) => r.code).join(', ')}), past pgUnprotectedLimitSeconds: stopping lightningd`,
    );
    this.ctx.statusUrgent();
    this.rpc?.call('stop').catch((err: unknown) => this.ctx.log('broken', `lightningd's stop failed: ${(err as Error).message}; stop it by hand`));
  }
}
