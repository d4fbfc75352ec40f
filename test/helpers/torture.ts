// Pieces of the crash torture that are not about lnbackup itself: a seeded PRNG (so a failing run
// can be replayed with TORTURE_SEED), and finding / waiting for / killing the plugin processes a
// dead simulated lightningd left behind, identified by their command line and working directory.
import fs from 'node:fs';

/** sfc32: a small, fast, seedable PRNG with good statistical quality. */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 20; i++) this.next();
  }

  /** A float in [0, 1). */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }

  /** An integer in [lo, hi] (both included). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }

  /** One of the keys, chosen with probability proportional to its weight. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const keys = Object.keys(weights) as K[];
    const total = keys.reduce((n, k) => n + weights[k], 0);
    let x = this.next() * total;
    for (const k of keys) {
      x -= weights[k];
      if (x < 0) return k;
    }
    return keys[keys.length - 1];
  }
}

/** True while `pid` runs; a zombie (dead, waiting for its reaper) counts as gone. */
export function pidAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX]/s.test(stat);
  } catch {
    return false;
  }
}

/** True when `pid` is alive and its working directory is `cwd` (our plugin, even between fork and exec). */
export function aliveIn(pid: number, cwd: string): boolean {
  try {
    return pidAlive(pid) && fs.readlinkSync(`/proc/${pid}/cwd`) === cwd;
  } catch {
    return false;
  }
}

/** The live processes running `script` (in their command line) with working directory `cwd`. */
export function findProcesses(script: string, cwd: string): number[] {
  const found: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (!cmdline.includes(script)) continue;
      if (fs.readlinkSync(`/proc/${name}/cwd`) !== cwd) continue;
      const pid = Number(name);
      if (pidAlive(pid)) found.push(pid);
    } catch {
      // The process ended while we looked, or is not ours to inspect.
    }
  }
  return found;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits up to `timeoutMs` for every process running `script` in `cwd` to exit, then SIGKILLs (by
 * pid) those still there. Returns the pids that had to be killed.
 */
export async function reapLeftovers(script: string, cwd: string, timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = findProcesses(script, cwd);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(10);
    left = findProcesses(script, cwd);
  }
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone in the meantime.
    }
  }
  while (findProcesses(script, cwd).length > 0) await sleep(10);
  return left;
}
