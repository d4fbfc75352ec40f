// Latency figures over a sliding window of recent samples: count, p50, p99, max, in milliseconds.

export interface LatencySummary {
  readonly count: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly meanMs: number;
}

export function summarize(samples: readonly number[], count = samples.length): LatencySummary {
  if (samples.length === 0) return { count, p50Ms: 0, p99Ms: 0, maxMs: 0, meanMs: 0 };
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  const round = (v: number): number => Math.round(v * 1000) / 1000;
  let sum = 0;
  for (const s of samples) sum += s;
  return { count, p50Ms: round(at(0.5)), p99Ms: round(at(0.99)), maxMs: round(sorted[sorted.length - 1]), meanMs: round(sum / samples.length) };
}

export class LatencyWindow {
  private readonly samples: number[] = [];
  private next = 0;
  private total = 0;

  constructor(private readonly size = 10_000) {}

  add(ms: number): void {
    if (this.samples.length < this.size) this.samples.push(ms);
    else this.samples[this.next] = ms;
    this.next = (this.next + 1) % this.size;
    this.total += 1;
  }

  summary(): LatencySummary {
    return summarize(this.samples, this.total);
  }
}
