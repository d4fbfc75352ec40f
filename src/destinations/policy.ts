// The durability policy: how many destinations must hold a call's records before lightningd may
// commit. `all` waits for every destination (an unreachable one stalls the node, fail-safe);
// `quorum=K` waits for K and lets the others catch up in the background, their lag visible in
// status. While a call waits, the policy reports the stall at a bounded rate, and past the stall
// limit (if one is set) gives up so the plugin can stop the node cleanly with guidance.
import { DestinationFailedError, type Destination, type StoredCall } from './destination.js';
import type { MonotonicMs } from '../util/clock.js';

export type PolicySpec = { readonly kind: 'all' } | { readonly kind: 'quorum'; readonly k: number };

export const STALL_REPORT_MS = 10_000;

export function parsePolicy(text: string): PolicySpec {
  if (text === 'all') return { kind: 'all' };
  const m = /^quorum=(\d{1,3})$/.exec(text);
  if (m && Number(m[1]) >= 1) return { kind: 'quorum', k: Number(m[1]) };
  throw new Error(`unknown durability policy '${text}': use 'all' or 'quorum=K' (K >= 1)`);
}

export function formatPolicy(spec: PolicySpec): string {
  return spec.kind === 'all' ? 'all' : `quorum=${spec.k}`;
}

/** The policy cannot be met any more: too many destinations failed for good. */
export class PolicyFailedError extends Error {}

/** A call waited longer than the stall limit. */
export class StallLimitError extends Error {}

export interface PolicyEvents {
  /** A call has waited `waitedMs` (reported every STALL_REPORT_MS while it lasts). */
  onStall(waitedMs: number, description: string): void;
  /** The stalled call became durable after `waitedMs`. */
  onRecovered(waitedMs: number): void;
  /** A destination that was not required failed (quorum: the call went on without it). */
  onBackgroundFailure(destination: string, message: string): void;
}

/** A call handed to the policy: when the policy is met, and when every destination holds it. */
export interface PolicyStore {
  /** Resolves once the policy's number of destinations hold the call; rejects with PolicyFailedError or StallLimitError. */
  readonly held: Promise<void>;
  /** Settles once every destination holds it (rejects if one failed; handled, so it may be ignored). */
  readonly everywhere: Promise<void>;
}

interface Waiting {
  readonly call: StoredCall;
  readonly startedAt: MonotonicMs;
  reportedAt: MonotonicMs;
  readonly reject: (err: Error) => void;
}

export class DurabilityPolicy {
  private waiting: Waiting | null = null;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly destinations: readonly Destination[],
    readonly spec: PolicySpec,
    private readonly stallLimitMs: number | null,
    private readonly events: PolicyEvents,
  ) {
    if (destinations.length === 0) throw new Error('no destination to store records in');
    const required = this.required;
    if (required > destinations.length) {
      throw new Error(`policy ${formatPolicy(spec)} needs ${required} destinations, but only ${destinations.length} are configured`);
    }
    this.timer = setInterval(() => this.checkStall(), 250);
    this.timer.unref();
  }

  /** How many destinations must hold a call before `continue`. */
  get required(): number {
    return this.spec.kind === 'all' ? this.destinations.length : this.spec.k;
  }

  /**
   * Hands the call to every destination; `held` resolves when the policy's number of them hold it.
   * The stall is measured from `startedAt` (performance.now() when lightningd sent the call).
   */
  store(call: StoredCall, startedAt: MonotonicMs = performance.now()): PolicyStore {
    const delivered = this.destinations.map((d) => d.store(call));
    const everywhere = Promise.all(delivered).then(() => undefined);
    everywhere.catch(() => undefined); // failures reach the caller through `held`
    return { held: this.held(call, startedAt, delivered), everywhere };
  }

  private held(call: StoredCall, startedAt: MonotonicMs, delivered: readonly Promise<void>[]): Promise<void> {
    const total = this.destinations.length;
    const required = this.required;
    // A lone local vault cannot stall (it succeeds or fails at once): skip the bookkeeping.
    if (total === 1 && this.destinations[0].kind === 'vault') return delivered[0];
    return new Promise<void>((resolve, reject) => {
      let durable = 0;
      let failed = 0;
      let settled = false;
      const waiting: Waiting = { call, startedAt, reportedAt: 0, reject: (err) => finish(err) };
      const finish = (err: Error | null): void => {
        if (settled) return;
        settled = true;
        if (this.waiting === waiting) {
          if (waiting.reportedAt !== 0 && !err) this.events.onRecovered(performance.now() - waiting.startedAt);
          this.waiting = null;
        }
        if (err) reject(err);
        else resolve();
      };
      this.waiting = waiting;
      this.destinations.forEach((d, i) => {
        delivered[i].then(
          () => {
            if (++durable >= required) finish(null);
          },
          (err: unknown) => {
            failed++;
            const message = err instanceof Error ? err.message : String(err);
            if (settled) {
              this.events.onBackgroundFailure(d.name, message);
            } else if (failed > total - required) {
              const why = err instanceof DestinationFailedError ? message : `${d.name}: ${message}`;
              finish(new PolicyFailedError(`policy ${formatPolicy(this.spec)} can no longer be met: ${why}`));
            }
          },
        );
      });
    });
  }

  private checkStall(): void {
    const w = this.waiting;
    if (!w) return;
    const now = performance.now();
    const waited = now - w.startedAt;
    if (this.stallLimitMs !== null && waited >= this.stallLimitMs) {
      w.reject(
        new StallLimitError(
          `version ${w.call.dataVersion} has waited ${(waited / 1000).toFixed(1)} s for ${this.describeLagging()}, past the stall limit of ${(this.stallLimitMs / 1000).toFixed(0)} s`,
        ),
      );
      return;
    }
    if (waited >= STALL_REPORT_MS && now - w.reportedAt >= STALL_REPORT_MS) {
      w.reportedAt = now;
      this.events.onStall(waited, `version ${w.call.dataVersion} is waiting for ${this.describeLagging()}`);
    }
  }

  /** Which destinations hold the wait up, and why. */
  describeLagging(): string {
    const lagging = this.destinations.map((d) => d.status()).filter((s) => s.state !== 'ok');
    if (lagging.length === 0) return 'its destinations';
    return lagging.map((s) => `${s.name} (${s.state}${s.lastError ? `: ${s.lastError}` : ''})`).join(', ');
  }

  /** When the current call started waiting (ms ago), or null when none waits. */
  stalledForMs(): number | null {
    return this.waiting ? performance.now() - this.waiting.startedAt : null;
  }

  close(): void {
    clearInterval(this.timer);
  }
}
