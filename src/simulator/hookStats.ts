// Latency statistics of one lifetime's db_write hooks (request written → reply parsed) and its
// throughput in committed transactions per second.

export interface HookStatsSummary {
  /** db_write calls played (with or without a plugin). */
  calls: number;
  /** Transactions committed (calls with a data_version bump). */
  committed: number;
  /** Hooks answered by the plugin (0 in no-plugin mode). */
  hooks: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
  /** Total time spent waiting for the plugin. */
  totalHookMs: number;
  /** Wall time from the first db_write to the last one handled. */
  wallMs: number;
  txPerSec: number;
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;

export class HookStats {
  private latencies = new Float64Array(1024);
  private hooks = 0;
  private startedNs: bigint | null = null;
  private lastNs: bigint | null = null;
  calls = 0;
  committed = 0;

  /** Marks the start of a db_write call (the first one starts the wall clock). */
  callStarted(): void {
    this.startedNs ??= process.hrtime.bigint();
    this.calls++;
  }

  /** Marks the end of a db_write call; `bumped` when it committed a transaction. */
  callEnded(bumped: boolean): void {
    this.lastNs = process.hrtime.bigint();
    if (bumped) this.committed++;
  }

  recordHook(latencyMs: number): void {
    if (this.hooks === this.latencies.length) {
      const grown = new Float64Array(this.latencies.length * 2);
      grown.set(this.latencies);
      this.latencies = grown;
    }
    this.latencies[this.hooks++] = latencyMs;
  }

  summary(): HookStatsSummary {
    const sorted = this.latencies.slice(0, this.hooks).sort();
    const pick = (q: number): number => (this.hooks ? sorted[Math.min(this.hooks - 1, Math.ceil(q * this.hooks) - 1)] : 0);
    const total = sorted.reduce((a, b) => a + b, 0);
    const wallMs = this.startedNs !== null && this.lastNs !== null ? Number(this.lastNs - this.startedNs) / 1e6 : 0;
    return {
      calls: this.calls,
      committed: this.committed,
      hooks: this.hooks,
      p50Ms: round(pick(0.5)),
      p99Ms: round(pick(0.99)),
      maxMs: round(this.hooks ? sorted[this.hooks - 1] : 0),
      meanMs: round(this.hooks ? total / this.hooks : 0),
      totalHookMs: round(total),
      wallMs: round(wallMs),
      txPerSec: wallMs > 0 ? Math.round((this.committed * 1000 * 10) / wallMs) / 10 : 0,
    };
  }
}
