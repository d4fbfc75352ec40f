// One lifetime of a simulated lightningd over a trace: opens the node database, starts the plugin,
// sends getmanifest, the first db_write calls, init, then the rest, and for every call does what
// lightningd does: BEGIN, run the statements, call the hook, COMMIT only on {"result":"continue"}
// (else roll back and abort). It replays the real node's crashes at superseded calls (ack, then death
// before COMMIT), can inject crashes (SIGKILL of itself or of the plugin), and measures hook latency.
import type Database from 'better-sqlite3';
import { execStatements } from '../journal/applyWrites.js';
import type { KillPoint, SimulatorEvent } from './events.js';
import { HookStats, type HookStatsSummary } from './hookStats.js';
import { openNodeDatabase, readDataVersion } from './nodeDb.js';
import { processUsage, type ProcessUsage } from './processUsage.js';
import { RPC_FILE, SimulatedRpcSocket } from './rpcSocket.js';
import { PluginProcess, PluginTimeoutError, type PluginCommand, type RpcReply, type WaitMode } from './pluginProcess.js';
import { resumeIndex } from './resume.js';
import { readPlayedSuperseded, recordPlayedSuperseded } from './simState.js';
import type { CallEntry, TraceEntry } from './trace.js';

export interface SimulatorOptions {
  /** `<lightning-dir>/<network>`: the database, the state file and the plugin's working directory. */
  networkDir: string;
  network: string;
  entries: readonly TraceEntry[];
  /** The plugin to run, or null for "no plugin" (writes applied with no hook; superseded calls skipped). */
  plugin: PluginCommand | null;
  /** db_write calls sent before `init` (default 9 on a fresh database, 4 on a restart). */
  preInit?: number;
  /** Stop cleanly after committing this data_version. */
  untilVersion?: number;
  /** Crash (SIGKILL) the simulated lightningd at this trace entry, at this point. */
  killSelfAt?: { entry: number; point: KillPoint };
  /** SIGKILL the plugin while its hook for this trace entry is pending. */
  killPluginAt?: number;
  /** Abort when a hook gets no reply in time (lightningd itself waits forever). */
  hookTimeoutMs?: number;
  /** 'kill-process': a crash is a real SIGKILL of this process; 'simulate': roll back and return. */
  crashMode: 'kill-process' | 'simulate';
  pluginStderr?: 'inherit' | 'collect';
  /** How to wait for the plugin's answers: 'spin' as lightningd does (a busy poll holding a core), or 'idle' (default). */
  wait?: WaitMode;
  /** The node's `wallet` setting that listconfigs reports on the RPC socket (e.g. a postgres:// DSN). */
  walletDsn?: string;
  /** After the last call, stay up this long (RPC served, plugin running) before the clean shutdown. */
  lingerMs?: number;
  /** How long a clean shutdown waits for the plugin to exit before SIGKILLing it (default 10 s). */
  shutdownTimeoutMs?: number;
  onEvent?: (event: SimulatorEvent) => void;
}

export type LifetimeOutcome =
  | { kind: 'done'; dataVersion: number; stats: HookStatsSummary }
  | { kind: 'aborted'; reason: string; dataVersion: number; entry: number; lastCommitted: number; stats: HookStatsSummary }
  | { kind: 'crashed'; cause: 'superseded' | 'kill-self'; entry: number; point: KillPoint; dataVersion: number; stats: HookStatsSummary };

const FEATURE_SET = { init: '800898880a8a59a1', node: '800898880a8a59a1', channel: '', invoice: '02000002024100' };

/** Ends the lifetime the way lightningd aborts: nothing of the current call is committed. */
class Abort extends Error {}

/** Ends the lifetime by a (simulated) crash of lightningd. */
class Crash extends Error {
  constructor(
    readonly cause: 'superseded' | 'kill-self',
    readonly entry: number,
    readonly point: KillPoint,
    readonly dataVersion: number,
  ) {
    super(`lightningd crashed (${cause}) at entry ${entry}`);
  }
}

function checkContinue(reply: RpcReply): void {
  if (reply.error !== undefined) {
    throw new Abort(`plugin returned an invalid response to the db_write hook: ${JSON.stringify(reply.error)}`);
  }
  const result = reply.result as { result?: unknown } | null;
  if (typeof result !== 'object' || result === null || typeof result.result !== 'string') {
    throw new Abort(`plugin returned an invalid result to the db_write hook: ${JSON.stringify(reply.result)}`);
  }
  if (result.result !== 'continue') throw new Abort(`plugin returned failed db_write: ${JSON.stringify(result)}`);
}

function checkManifest(reply: RpcReply): void {
  if (reply.error !== undefined) throw new Abort(`getmanifest failed: ${JSON.stringify(reply.error)}`);
  const manifest = (reply.result ?? {}) as { hooks?: unknown; dynamic?: unknown };
  const hooks = Array.isArray(manifest.hooks) ? (manifest.hooks as unknown[]) : [];
  const named = (h: unknown): unknown => (typeof h === 'object' && h !== null ? (h as { name?: unknown }).name : h);
  if (!hooks.some((h) => named(h) === 'db_write')) throw new Abort('the manifest does not register the db_write hook');
  if (manifest.dynamic !== false) throw new Abort('the manifest must say "dynamic": false');
}

export class SimulatedLightningd {
  private readonly stats = new HookStats();
  private db: Database.Database | null = null;
  private plugin: PluginProcess | null = null;
  private pluginUsageAtStart: ProcessUsage | null = null;
  private rpcSocket: SimulatedRpcSocket | null = null;
  /** The plugin called lightningd's `stop`; resolves the linger early. */
  private stopRequested = false;
  private onStop: (() => void) | null = null;
  private lastCommitted = 0;
  private initSent = false;
  private callsSent = 0;

  constructor(private readonly opts: SimulatorOptions) {}

  /** Runs one lifetime; in 'kill-process' mode a crash never returns (the process is gone). */
  async run(): Promise<LifetimeOutcome> {
    const { entries, networkDir, untilVersion } = this.opts;
    const db = openNodeDatabase(networkDir);
    this.db = db;
    let played: Set<number>;
    let next: number;
    try {
      this.lastCommitted = readDataVersion(db);
      played = readPlayedSuperseded(networkDir, entries);
      next = resumeIndex(entries, this.lastCommitted);
    } catch (err) {
      db.close();
      throw err;
    }
    const playable = (i: number): boolean => {
      const e = entries[i];
      return e.kind === 'call' && !(e.superseded && (played.has(i) || this.opts.plugin === null));
    };
    while (next < entries.length && !playable(next)) next++;
    const preInit = this.opts.preInit ?? (this.lastCommitted === 0 ? 9 : 4);
    this.emit({ event: 'resumed', dataVersion: this.lastCommitted, entry: next, preInit });

    let inFlight = -1;
    try {
      if (this.opts.plugin) {
        this.rpcSocket = await SimulatedRpcSocket.start({
          networkDir,
          network: this.opts.network,
          walletDsn: this.opts.walletDsn,
          onStop: () => {
            this.stopRequested = true;
            this.emit({ event: 'rpc-stop' });
            this.onStop?.();
          },
        });
        await this.startPlugin(this.opts.plugin);
      }
      for (let i = next; i < entries.length && this.lastCommitted !== untilVersion && !this.stopRequested; i++) {
        const e = entries[i];
        if (e.kind !== 'call' || !playable(i)) continue;
        if (this.callsSent === preInit) await this.sendInit();
        inFlight = i;
        await this.playCall(i, e);
        inFlight = -1;
      }
      if (!this.initSent) await this.sendInit();
      if (this.opts.lingerMs && !this.stopRequested) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.opts.lingerMs);
          this.onStop = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      const pluginUsage = this.pluginUsageSinceStart();
      await this.plugin?.close(this.opts.shutdownTimeoutMs ?? 10_000);
      await this.rpcSocket?.close();
      db.close();
      const stats = this.stats.summary();
      this.emit({ event: 'done', dataVersion: this.lastCommitted, stats, plugin: pluginUsage });
      return { kind: 'done', dataVersion: this.lastCommitted, stats };
    } catch (err) {
      await this.stopAfterFailure(err instanceof PluginTimeoutError);
      if (err instanceof Crash) {
        const { cause, entry, point, dataVersion } = err;
        return { kind: 'crashed', cause, entry, point, dataVersion, stats: this.stats.summary() };
      }
      if (!(err instanceof Abort || err instanceof PluginTimeoutError)) throw err;
      const e = entries[inFlight];
      const dataVersion = e?.kind === 'call' ? e.dataVersion : this.lastCommitted;
      const entry = inFlight;
      const reason = err.message;
      this.emit({ event: 'aborted', reason, dataVersion, entry, lastCommitted: this.lastCommitted });
      return { kind: 'aborted', reason, dataVersion, entry, lastCommitted: this.lastCommitted, stats: this.stats.summary() };
    }
  }

  private emit(event: SimulatorEvent): void {
    this.opts.onEvent?.(event);
  }

  private async startPlugin(command: PluginCommand): Promise<void> {
    const plugin = new PluginProcess({
      command,
      cwd: this.opts.networkDir,
      stderr: this.opts.pluginStderr ?? 'inherit',
      wait: this.opts.wait,
      onLog: (level, message) => this.emit({ event: 'plugin-log', level, message }),
    });
    this.plugin = plugin;
    if (plugin.pid !== undefined) this.emit({ event: 'plugin-started', pid: plugin.pid });
    checkManifest(await this.rpc('getmanifest', { 'allow-deprecated-apis': false }));
    this.pluginUsageAtStart = plugin.pid === undefined ? null : processUsage(plugin.pid);
  }

  private async sendInit(): Promise<void> {
    this.initSent = true;
    if (!this.plugin) return;
    const reply = await this.rpc('init', {
      options: {},
      configuration: {
        'lightning-dir': this.opts.networkDir,
        'rpc-file': RPC_FILE,
        startup: true,
        network: this.opts.network,
        feature_set: FEATURE_SET,
      },
    });
    if (reply.error !== undefined) throw new Abort(`plugin init failed: ${JSON.stringify(reply.error)}`);
    const disable = (reply.result as { disable?: unknown } | null)?.disable;
    if (disable !== undefined) throw new Abort(`the plugin disabled itself: ${String(disable)}`);
  }

  /** The plugin's CPU time since its start-up ended, and its threads now. */
  private pluginUsageSinceStart(): ProcessUsage | null {
    const pid = this.plugin?.pid;
    const now = pid === undefined ? null : processUsage(pid);
    if (now === null || this.pluginUsageAtStart === null) return null;
    return { cpuMs: now.cpuMs - this.pluginUsageAtStart.cpuMs, threads: now.threads };
  }

  /** A request to the plugin whose failure (exit, protocol error, timeout) aborts the lifetime. */
  private async rpc(method: string, params: unknown, timeoutMs?: number, afterWrite?: () => void): Promise<RpcReply> {
    const pending = this.plugin!.request(method, params, timeoutMs, afterWrite);
    return pending.catch((err: Error) => {
      throw err instanceof PluginTimeoutError ? err : new Abort(`${err.message} during ${method}`);
    });
  }

  private async playCall(i: number, e: CallEntry): Promise<void> {
    const db = this.db!;
    this.stats.callStarted();
    if (e.bumps) {
      db.exec('BEGIN');
      this.execute(e);
    }
    this.killSelfIf(i, e, 'before-hook');
    this.callsSent++;
    if (this.plugin) {
      const plugin = this.plugin;
      const killNow = this.opts.killPluginAt === i ? () => plugin.kill() : undefined;
      this.rpcSocket?.hookSent();
      const answered = await this.rpc('db_write', { data_version: e.dataVersion, writes: e.writes }, this.opts.hookTimeoutMs, killNow);
      this.rpcSocket?.hookAnswered();
      this.stats.recordHook(answered.latencyMs);
      checkContinue(answered);
    }
    this.killSelfIf(i, e, 'after-ack');
    if (e.superseded) this.crash(new Crash('superseded', i, 'after-ack', e.dataVersion));
    if (e.bumps) {
      this.commit(e);
    } else {
      this.execute(e);
    }
    this.stats.callEnded(e.bumps);
    if (e.bumps) this.emit({ event: 'committed', dataVersion: e.dataVersion, entry: i });
    this.killSelfIf(i, e, 'after-commit');
  }

  private execute(e: CallEntry): void {
    try {
      execStatements(this.db!, e.writes);
    } catch (err) {
      throw new Abort(`sqlite: ${(err as Error).message} (${e.source}:${e.line})`);
    }
  }

  private commit(e: CallEntry): void {
    try {
      this.db!.exec('COMMIT');
    } catch (err) {
      throw new Abort(`sqlite: COMMIT failed: ${(err as Error).message} (${e.source}:${e.line})`);
    }
    this.lastCommitted = e.dataVersion;
  }

  private killSelfIf(i: number, e: CallEntry, point: KillPoint): void {
    const at = this.opts.killSelfAt;
    if (at && at.entry === i && at.point === point) this.crash(new Crash('kill-self', i, point, e.dataVersion));
  }

  /** lightningd dies here: a real SIGKILL of this process, or (simulated) the same effect. */
  private crash(crash: Crash): never {
    if (crash.cause === 'superseded') recordPlayedSuperseded(this.opts.networkDir, crash.entry, crash.dataVersion);
    const { cause, entry, point, dataVersion } = crash;
    this.emit({ event: 'crash', cause, entry, point, dataVersion });
    if (this.opts.crashMode === 'kill-process') process.kill(process.pid, 'SIGKILL');
    throw crash;
  }

  /** After an abort or a simulated crash: roll back, let the plugin see EOF (or kill it), close. */
  private async stopAfterFailure(pluginHung: boolean): Promise<void> {
    if (this.db!.inTransaction) this.db!.exec('ROLLBACK');
    if (pluginHung) this.plugin?.kill();
    await this.plugin?.close(this.opts.shutdownTimeoutMs ?? 10_000);
    await this.rpcSocket?.close();
    this.db!.close();
  }
}
