// Small helpers shared by the benchmark's sections: quantiles of latency samples, medians of runs,
// fixed-width tables, number formatting, and a timer.

export interface Dist {
  readonly n: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly meanMs: number;
  readonly maxMs: number;
}

/** p50/p99/mean/max of samples in ms; the same quantile rule as the simulator's HookStats. */
export function dist(samples: ArrayLike<number>): Dist {
  const n = samples.length;
  if (n === 0) return { n: 0, p50Ms: 0, p99Ms: 0, meanMs: 0, maxMs: 0 };
  const sorted = Float64Array.from(samples).sort();
  const pick = (q: number): number => sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i];
  return { n, p50Ms: round3(pick(0.5)), p99Ms: round3(pick(0.99)), meanMs: round3(sum / n), maxMs: round3(sorted[n - 1]) };
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export const round3 = (v: number): number => Math.round(v * 1000) / 1000;
export const round2 = (v: number): number => Math.round(v * 100) / 100;

/** Milliseconds since `startNs` (from process.hrtime.bigint()). */
export function msSince(startNs: bigint): number {
  return Number(process.hrtime.bigint() - startNs) / 1e6;
}

export const now = (): bigint => process.hrtime.bigint();

export function fmtMs(ms: number | null): string {
  if (ms === null || Number.isNaN(ms)) return 'n/a';
  return ms >= 100 ? `${ms.toFixed(0)} ms` : ms >= 10 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(3)} ms`;
}

export function fmtS(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

export function fmtX(ratio: number): string {
  return Number.isFinite(ratio) ? `${ratio.toFixed(2)}x` : 'n/a';
}

export function fmtInt(v: number): string {
  return Math.round(v).toLocaleString('en-US');
}

export function fmtMB(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** Left-aligned first column, right-aligned others. */
export function table(header: readonly string[], rows: readonly (readonly string[])[], indent = '  '): string[] {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)));
  const line = (r: readonly string[]): string =>
    indent +
    r
      .map((cell, c) => (c === 0 ? (cell ?? '').padEnd(widths[c]) : (cell ?? '').padStart(widths[c])))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}
