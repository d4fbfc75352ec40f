// Types for @ronomon/reed-solomon 6 (a native addon: Cauchy Reed-Solomon erasure coding that runs
// on libuv's thread pool). Only what src/vault/redundancy/reedSolomon.ts uses.
declare module '@ronomon/reed-solomon' {
  /** Largest number of data shards (24). */
  export const MAX_K: number;
  /** Largest number of parity shards (6). */
  export const MAX_M: number;
  /** An encoding context for k data and m parity shards (reusable, also concurrently). */
  export function create(k: number, m: number): Buffer;
  /**
   * Encodes the `targets` shards (bit flags: data shard i is bit i, parity shard j is bit k + j)
   * from the `sources` shards (at least k of them). The k data shards lie back to back in
   * buffer[bufferOffset, bufferOffset + bufferSize), the m parity shards in
   * parity[parityOffset, parityOffset + paritySize); shard size = bufferSize / k = paritySize / m,
   * a multiple of 8. Runs on the thread pool; `callback` is called once done.
   */
  export function encode(
    context: Buffer,
    sources: number,
    targets: number,
    buffer: Buffer,
    bufferOffset: number,
    bufferSize: number,
    parity: Buffer,
    parityOffset: number,
    paritySize: number,
    callback: (error: Error | undefined | null) => void,
  ): void;
}
