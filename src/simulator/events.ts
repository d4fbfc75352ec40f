// The events a simulated lightningd lifetime reports; main.ts prints each as one JSON line and
// runner.ts parses them back.
import type { HookStatsSummary } from './hookStats.js';
import type { ProcessUsage } from './processUsage.js';

/** Where a scripted crash of the simulated lightningd happens within one call. */
export type KillPoint = 'before-hook' | 'after-ack' | 'after-commit';

export const KILL_POINTS: readonly KillPoint[] = ['before-hook', 'after-ack', 'after-commit'];

export type SimulatorEvent =
  /** The lifetime starts at trace entry `entry` with the database at `dataVersion`. */
  | { event: 'resumed'; dataVersion: number; entry: number; preInit: number }
  | { event: 'plugin-started'; pid: number }
  | { event: 'plugin-log'; level: string; message: string }
  | { event: 'committed'; dataVersion: number; entry: number }
  /** The plugin called lightningd's `stop`: the node shuts down cleanly after the call in progress. */
  | { event: 'rpc-stop' }
  /** lightningd "dies" here: a superseded call was acked, or a kill was injected. */
  | { event: 'crash'; cause: 'superseded' | 'kill-self'; entry: number; point: KillPoint; dataVersion: number }
  /**
   * lightningd aborts without committing the call at `entry` (data_version `dataVersion`); `entry` is
   * -1 and `dataVersion` the last committed one when no db_write was in flight (getmanifest, init).
   */
  | { event: 'aborted'; reason: string; dataVersion: number; entry: number; lastCommitted: number }
  /**
   * `plugin`: the plugin's CPU time from the end of its start-up (its getmanifest answer) to its last
   * answer, and its threads then (null with no plugin, or where /proc cannot tell).
   */
  | { event: 'done'; dataVersion: number; stats: HookStatsSummary; plugin: ProcessUsage | null };
