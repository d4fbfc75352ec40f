// The simulator's own memory across lifetimes, `<networkDir>/simulator-state.json`: which superseded
// trace calls were already played (acked, then "lightningd died"), so the next lifetime goes past them.
// Written atomically and fsynced, because the writer kills itself with SIGKILL right after.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../util/durableFs.js';
import type { TraceEntry } from './trace.js';

export const STATE_FILE = 'simulator-state.json';

interface PlayedCall {
  entry: number;
  dataVersion: number;
}

interface StateFile {
  playedSuperseded: PlayedCall[];
}

function readState(networkDir: string): StateFile {
  try {
    return JSON.parse(fs.readFileSync(path.join(networkDir, STATE_FILE), 'utf8')) as StateFile;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { playedSuperseded: [] };
    throw err;
  }
}

/** The superseded entries already played, checked against this trace chain. */
export function readPlayedSuperseded(networkDir: string, entries: readonly TraceEntry[]): Set<number> {
  const played = new Set<number>();
  for (const { entry, dataVersion } of readState(networkDir).playedSuperseded) {
    const e = entries[entry];
    if (e?.kind !== 'call' || !e.superseded || e.dataVersion !== dataVersion) {
      throw new Error(`${STATE_FILE} names entry ${entry} (data_version ${dataVersion}), not a superseded call of this trace`);
    }
    played.add(entry);
  }
  return played;
}

/** Records (durably) that the superseded call at `entry` has been played. */
export function recordPlayedSuperseded(networkDir: string, entry: number, dataVersion: number): void {
  const state = readState(networkDir);
  state.playedSuperseded.push({ entry, dataVersion });
  writeFileAtomic(path.join(networkDir, STATE_FILE), JSON.stringify(state, null, 1) + '\n', 0o644);
}
