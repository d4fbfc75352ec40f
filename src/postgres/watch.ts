// PostgresWatch: keeps checking that a PostgreSQL node's commits are zero-loss (check.ts), for a
// process that runs beside the node (the plugin). It re-checks every interval (default 10 s), keeps
// a typed status (state, reasons, standbys with lags, last change), logs the verdict at start, a
// lapse at once and again every minute while it lasts (saying what the node lives through: commits
// waiting on the primary, or running unprotected), the return to zero-loss, and calls an optional
// callback once a lapse has lasted the unprotected limit. Clock and logger are injected. The DSN
// appears only redacted. Each check opens a new session, so a changed per-role or per-database
// setting is seen at the next check.
import { checkPostgres, type CheckResult } from './check.js';
import { redactDsn, scrubSecret } from './dsn.js';
import { describeEffect, type Effect, type Reason } from './verdict.js';

/**
 * zero-loss: every commit waits for a standby's flush. not-zero-loss: not so, and never was since
 * start. broken: was zero-loss, lapsed. unreachable: the server could not be checked.
 */
export type ProtectionState = 'zero-loss' | 'not-zero-loss' | 'broken' | 'unreachable';

export interface WatchedStandby {
  name: string | null;
  state: string | null;
  syncState: string | null;
  /** Seconds, null when unknown. */
  writeLag: number | null;
  flushLag: number | null;
  replayLag: number | null;
}

export interface PostgresWatchStatus {
  state: ProtectionState;
  /** The DSN, password redacted; null before start. */
  dsn: string | null;
  reasons: Reason[];
  warnings: Reason[];
  effect: Effect | null;
  standbys: WatchedStandby[];
  /** Why the last check could not run (state unreachable). */
  error: string | null;
  /** ISO times of the last check, of the last change of state, and since when not zero-loss. */
  lastCheck: string | null;
  lastChange: string | null;
  unprotectedSince: string | null;
  checks: number;
  intervalSeconds: number;
}

export interface WatchClock {
  now(): number;
  /** Runs `fn` after `ms`; returns a function that cancels it. */
  after(ms: number, fn: () => void): () => void;
}

export const systemClock: WatchClock = {
  now: () => Date.now(),
  after: (ms, fn) => {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};

export type WatchLog = (level: 'info' | 'warn', line: string) => void;

export interface WatchOptions {
  log: WatchLog;
  clock?: WatchClock;
  /** Re-check interval (default 10 s). */
  intervalMs?: number;
  /** How often a lapse is logged again while it lasts (default 60 s). */
  repeatMs?: number;
  /** After this long not zero-loss (any state but zero-loss), `onUnprotectedLimit` is called once per lapse. */
  unprotectedLimitMs?: number;
  onUnprotectedLimit?: (status: PostgresWatchStatus) => void;
}

export const DEFAULT_WATCH_INTERVAL_MS = 10_000;
const DEFAULT_REPEAT_MS = 60_000;
/** A check never waits longer than this for the server (nor longer than the interval). */
const CHECK_TIMEOUT_MS = 5000;

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
const reasonKey = (reasons: readonly Reason[]): string => reasons.map((r) => r.code).join(',');

export class PostgresWatch {
  private readonly clock: WatchClock;
  private readonly intervalMs: number;
  private readonly repeatMs: number;
  private dsn: string | null = null;
  private cancelTimer: (() => void) | null = null;
  private running = false;
  private last: Omit<PostgresWatchStatus, 'lastCheck' | 'lastChange' | 'unprotectedSince' | 'checks' | 'intervalSeconds' | 'dsn'> = {
    state: 'unreachable',
    reasons: [],
    warnings: [],
    effect: null,
    standbys: [],
    error: 'not checked yet',
  };
  private lastCheck: number | null = null;
  private lastChange: number | null = null;
  private unprotectedSince: number | null = null;
  private lastLapseLog = 0;
  private limitFired = false;
  private wasProtected = false;
  private checks = 0;

  constructor(private readonly options: WatchOptions) {
    this.clock = options.clock ?? systemClock;
    this.intervalMs = options.intervalMs ?? DEFAULT_WATCH_INTERVAL_MS;
    this.repeatMs = options.repeatMs ?? DEFAULT_REPEAT_MS;
  }

  /** Checks at once (logging the verdict), then every interval until stop(). */
  async start(dsn: string): Promise<PostgresWatchStatus> {
    this.dsn = dsn;
    this.running = true;
    const status = await this.checkNow();
    this.schedule();
    return status;
  }

  stop(): void {
    this.running = false;
    this.cancelTimer?.();
    this.cancelTimer = null;
  }

  status(): PostgresWatchStatus {
    return {
      ...this.last,
      dsn: this.dsn === null ? null : redactDsn(this.dsn),
      lastCheck: iso(this.lastCheck),
      lastChange: iso(this.lastChange),
      unprotectedSince: iso(this.unprotectedSince),
      checks: this.checks,
      intervalSeconds: this.intervalMs / 1000,
    };
  }

  /** One check now: updates the status, logs what changed, fires the limit when due. */
  async checkNow(): Promise<PostgresWatchStatus> {
    const dsn = this.dsn;
    if (dsn === null) throw new Error('PostgresWatch.checkNow before start');
    let result: CheckResult | null = null;
    let error: string | null = null;
    try {
      result = await checkPostgres(dsn, { timeoutMs: Math.min(CHECK_TIMEOUT_MS, this.intervalMs) });
    } catch (err) {
      error = scrubSecret(err instanceof Error ? err.message : String(err), dsn);
    }
    this.record(result, error);
    return this.status();
  }

  private schedule(): void {
    if (!this.running) return;
    this.cancelTimer = this.clock.after(this.intervalMs, () => {
      void this.checkNow().finally(() => this.schedule());
    });
  }

  private record(result: CheckResult | null, error: string | null): void {
    const now = this.clock.now();
    const previous = this.checks === 0 ? null : this.last;
    const zeroLoss = result?.verdict === 'zero-loss';
    const state: ProtectionState = result === null ? 'unreachable' : zeroLoss ? 'zero-loss' : this.wasProtected ? 'broken' : 'not-zero-loss';
    this.checks++;
    this.lastCheck = now;
    this.last = {
      state,
      reasons: result?.reasons ?? [],
      warnings: result?.warnings ?? [],
      effect: result?.effect ?? null,
      standbys: (result?.standbys ?? []).map((s) => ({
        name: s.name,
        state: s.state,
        syncState: s.syncState,
        writeLag: s.writeLag,
        flushLag: s.flushLag,
        replayLag: s.replayLag,
      })),
      error,
    };
    const changed = previous === null || previous.state !== state || reasonKey(previous.reasons) !== reasonKey(this.last.reasons);
    if (previous === null || previous.state !== state) this.lastChange = now;

    if (zeroLoss) {
      const lapsed = this.unprotectedSince;
      this.wasProtected = true;
      this.unprotectedSince = null;
      this.limitFired = false;
      if (previous === null) this.options.log('info', `PostgreSQL replication: zero-loss (${this.standbyText()})`);
      else if (previous.state !== 'zero-loss')
        this.options.log('info', `PostgreSQL replication: zero-loss again after ${Math.round((now - (lapsed ?? now)) / 1000)} s (${this.standbyText()})`);
      return;
    }
    this.unprotectedSince ??= now;
    if (changed || now - this.lastLapseLog >= this.repeatMs) {
      this.lastLapseLog = now;
      this.options.log('warn', this.lapseText(now, changed));
    }
    const limit = this.options.unprotectedLimitMs;
    if (limit !== undefined && !this.limitFired && now - this.unprotectedSince >= limit) {
      this.limitFired = true;
      this.options.log(
        'warn',
        `PostgreSQL replication: not zero-loss for ${Math.round((now - this.unprotectedSince) / 1000)} s, past the unprotected limit of ${limit / 1000} s`,
      );
      this.options.onUnprotectedLimit?.(this.status());
    }
  }

  private standbyText(): string {
    const sync = this.last.standbys.filter((s) => s.syncState === 'sync' || s.syncState === 'quorum');
    const lag = (s: WatchedStandby): string => (s.flushLag === null ? '' : `, flush lag ${(s.flushLag * 1000).toFixed(1)} ms`);
    return sync.map((s) => `standby ${s.name} ${s.syncState}${lag(s)}`).join('; ') || 'no standby';
  }

  private lapseText(now: number, changed: boolean): string {
    const { state, reasons, effect, error } = this.last;
    const lasting = changed ? '' : ` for ${Math.round((now - (this.unprotectedSince ?? now)) / 1000)} s`;
    const head = `PostgreSQL replication ${state === 'not-zero-loss' ? 'NOT zero-loss' : state}${lasting}`;
    if (state === 'unreachable') return `${head}: ${error}`;
    const why = reasons.map((r) => `${r.problem} (fix: ${r.fix})`).join('; ');
    return `${head}: ${why}${effect ? `. Meanwhile ${describeEffect(effect)}` : ''}`;
  }
}
