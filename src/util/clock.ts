// The two clocks timestamps are taken on, named so that a signature says which one a number is
// read from, and the two are never mixed in one expression unnoticed.

/** Date.now(): wall-clock milliseconds since 1970 (what records, files and operators see; it can jump). */
export type EpochMs = number;

/** performance.now(): monotonic milliseconds since the process started (durations, stalls, latency). */
export type MonotonicMs = number;
