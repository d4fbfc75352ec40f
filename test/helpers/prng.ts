// The tests' one seeded PRNG, so a failing random choice (a fuzz input, a restore version, a kill
// in the crash torture) can be reproduced from the seed the test prints.

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

/** A count or seed from the environment (to reproduce a run), or `fallback`. */
export function envCount(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  if (!/^\d+$/.test(text) || Number(text) > 0xffffffff) throw new Error(`${name} must be an integer from 0 to 4294967295, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** A copy of `bytes` with 1 to 4 random edits: a byte overwritten, the end cut off, or 2 bytes appended. */
export function mutated(prng: Prng, bytes: Buffer): Buffer {
  let m = Buffer.from(bytes);
  for (let e = prng.int(1, 4); e > 0; e--) {
    const op = prng.int(0, 2);
    if (op === 0 && m.length > 0) m[prng.int(0, m.length - 1)] = prng.int(0, 255);
    else if (op === 1) m = m.subarray(0, prng.int(0, m.length));
    else m = Buffer.concat([m, Buffer.from([prng.int(0, 255), prng.int(0, 255)])]);
  }
  return m;
}
