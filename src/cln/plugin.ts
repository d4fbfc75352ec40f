// The lnbackup-cln plugin's router, independent of stdio (main.ts feeds it): it answers
// getmanifest from its parts' entries, init, and lnbackup-status (the whole plugin's typed status,
// also kept in lnbackup-status.json), and hands every hook call and RPC method to the part that
// declared it. The plugin protocol is in pluginProtocol.ts and docs/CORE-LIGHTNING.md.
//
// Adding a part (peer storage, the PostgreSQL watch, metrics...):
//   1. Write it in its own folder under src/cln/ as a class implementing PluginPart (part.ts): its
//      manifest entries (options, rpcMethods), hooks, init, a typed status() and close().
//   2. Add it to `Parts` below and construct it in the constructor (it gets a PartContext: log,
//      status changes, the shutdown signal).
//   3. Add its status to PluginStatus under its own key (the backup part's fields stay at the top
//      level, where lnbackup-status.json has always had them), and fill it in status().
//   Only the backup part is on the db_write path. A part that needs lightningd's RPC opens
//   src/cln/rpc/ itself from the init parameters, never from a hook (lint keeps the backup part,
//   journal/, vault/ and destinations/ from importing it).
import { BackupPart, type BackupStatus } from './backup/part.js';
import { MetricsPart, type MetricsPartStatus } from './metrics/part.js';
import { PostgresPart, type PostgresPartStatus } from './postgres/part.js';
import type { Handler, InitParams, PartContext, PluginPart } from './part.js';
import { MANIFEST_BASE, STATUS_METHOD, error, logNotification, parseInitParams, result, type JsonRpcRequest } from './pluginProtocol.js';
import { StatusFile } from './statusFile.js';
import type { LogLevel } from '../util/log.js';

export interface PluginIo {
  /** Writes one protocol message to lightningd. */
  send(text: string): void;
}

/** The plugin's parts, by name. */
export interface Parts {
  readonly backup: BackupPart;
  readonly postgres: PostgresPart;
  readonly metrics: MetricsPart;
}

/** What lnbackup-status answers and lnbackup-status.json holds. */
export type PluginStatus = {
  readonly networkDir: string;
  /** lightningd has sent `init` (db_write calls may come before it). */
  readonly initialized: boolean;
  /** The PostgreSQL watch (a node whose wallet is PostgreSQL). */
  readonly postgres: PostgresPartStatus;
  /** The Prometheus endpoint (`metrics` in lnbackup.json). */
  readonly metrics: MetricsPartStatus;
} & BackupStatus;

export class LnbackupPlugin {
  private readonly parts: Parts;
  private readonly hooks = new Map<string, Handler>();
  private readonly methods = new Map<string, Handler>();
  private readonly shutdown = new AbortController();
  private initialized = false;
  private readonly statusFile: StatusFile;

  constructor(
    private readonly networkDir: string,
    private readonly io: PluginIo,
  ) {
    this.statusFile = new StatusFile(networkDir, () => this.status());
    const ctx: PartContext = {
      log: (level, message) => this.log(level, message),
      statusChanged: () => this.statusFile.touch(),
      statusUrgent: () => this.statusFile.writeNow(),
      shutdown: this.shutdown.signal,
    };
    this.parts = {
      backup: new BackupPart(networkDir, ctx),
      postgres: new PostgresPart(networkDir, ctx),
      metrics: new MetricsPart(networkDir, ctx, () => this.status()),
    };
    for (const part of this.allParts()) {
      for (const [name, handle] of Object.entries(part.hooks ?? {})) this.hooks.set(name, handle);
      for (const m of part.rpcMethods ?? []) this.methods.set(m.name, m.handle);
    }
  }

  /** Handles one request; hook calls must be handed in one at a time, in order (main.ts). */
  async handle(req: JsonRpcRequest): Promise<void> {
    const id = req.id;
    const reply = (value: unknown): void => {
      if (id !== undefined) this.io.send(result(id, value));
    };
    switch (req.method) {
      case 'getmanifest':
        return reply(this.manifest());
      case 'init':
        this.initialized = true;
        this.init(parseInitParams(req.params));
        return reply({});
      case STATUS_METHOD:
        return reply(this.status());
    }
    const handler = this.hooks.get(req.method) ?? this.methods.get(req.method);
    if (handler) {
      const started = performance.now();
      reply(await handler(req.params));
      // After the answer is written: the hook's latency, as lightningd waited for it.
      if (req.method === 'db_write') this.parts.metrics.hookAnswered((performance.now() - started) / 1000);
      return;
    }
    if (id !== undefined) this.io.send(error(id, -32601, `lnbackup does not know the method '${req.method}'`));
  }

  log(level: LogLevel, message: string): void {
    this.io.send(logNotification(level, `lnbackup: ${message}`));
  }

  /** Closes every part; an opening still waiting for servers is given up. */
  async close(): Promise<void> {
    this.shutdown.abort();
    this.statusFile.close(); // the last state written still shows the destinations
    await Promise.all(this.allParts().map((p) => p.close()));
  }

  status(): PluginStatus {
    return {
      networkDir: this.networkDir,
      initialized: this.initialized,
      ...this.parts.backup.status(),
      postgres: this.parts.postgres.status(),
      metrics: this.parts.metrics.status(),
    };
  }

  private allParts(): PluginPart<object>[] {
    return Object.values(this.parts) as PluginPart<object>[];
  }

  private manifest(): object {
    const parts = this.allParts();
    return {
      options: parts.flatMap((p) => p.options ?? []),
      rpcmethods: [
        ...MANIFEST_BASE.rpcmethods,
        ...parts.flatMap((p) => (p.rpcMethods ?? []).map(({ name, usage, description }) => ({ name, usage, description }))),
      ],
      hooks: parts.flatMap((p) => Object.keys(p.hooks ?? {}).map((name) => ({ name }))),
      dynamic: MANIFEST_BASE.dynamic,
    };
  }

  private init(params: InitParams): void {
    for (const part of this.allParts()) part.init?.(params);
  }
}
