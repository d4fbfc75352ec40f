// The one place that calls the Reed-Solomon library (@ronomon/reed-solomon, a native addon whose
// work runs on libuv's thread pool): encoding parity blocks and reconstructing lost blocks of one
// stripe, as promises. A stripe is k data blocks and m parity blocks of the same size (a multiple
// of 8 bytes), each set back to back in its own buffer.
import { createRequire } from 'node:module';
import type * as ReedSolomonModule from '@ronomon/reed-solomon';

// The package's entry point is the compiled addon (binding.node), which only require() loads.
const require = createRequire(import.meta.url);
const rs = require('@ronomon/reed-solomon') as typeof ReedSolomonModule;

const contexts = new Map<string, Buffer>();

function context(k: number, m: number): Buffer {
  const key = `${k}/${m}`;
  let c = contexts.get(key);
  if (!c) {
    if (!Number.isInteger(k) || !Number.isInteger(m) || k < 1 || m < 1 || k > rs.MAX_K || m > rs.MAX_M) {
      throw new Error(`Reed-Solomon needs 1..${rs.MAX_K} data and 1..${rs.MAX_M} parity shards, not ${k} and ${m}`);
    }
    c = rs.create(k, m);
    contexts.set(key, c);
  }
  return c;
}

function run(k: number, m: number, sources: number, targets: number, data: Buffer, parity: Buffer, blockBytes: number): Promise<void> {
  if (blockBytes <= 0 || blockBytes % 8 !== 0) throw new Error(`a stripe's block size must be a positive multiple of 8, not ${blockBytes}`);
  if (data.length < k * blockBytes || parity.length < m * blockBytes) throw new Error('a stripe buffer is shorter than its blocks');
  const ctx = context(k, m);
  return new Promise((resolve, reject) => {
    rs.encode(ctx, sources, targets, data, 0, k * blockBytes, parity, 0, m * blockBytes, (err) => (err ? reject(err) : resolve()));
  });
}

/** Computes the m parity blocks of one stripe from its k data blocks. */
export function encodeStripe(k: number, m: number, data: Buffer, parity: Buffer, blockBytes: number): Promise<void> {
  const sources = 2 ** k - 1;
  const targets = (2 ** m - 1) * 2 ** k;
  return run(k, m, sources, targets, data, parity, blockBytes);
}

/**
 * Rebuilds the blocks named in `lost` (0..k-1 data, k..k+m-1 parity; at most m of them) in place
 * from all the others.
 */
export function reconstructStripe(k: number, m: number, data: Buffer, parity: Buffer, blockBytes: number, lost: readonly number[]): Promise<void> {
  if (lost.length === 0) return Promise.resolve();
  if (lost.length > m) throw new Error(`a stripe with ${m} parity blocks cannot rebuild ${lost.length} lost blocks`);
  let targets = 0;
  for (const i of lost) {
    if (!Number.isInteger(i) || i < 0 || i >= k + m) throw new Error(`block ${i} is not in a stripe of ${k}+${m} blocks`);
    targets |= 1 << i;
  }
  const sources = (2 ** (k + m) - 1) & ~targets;
  return run(k, m, sources >>> 0, targets >>> 0, data, parity, blockBytes);
}
