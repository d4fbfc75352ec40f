// Where a new lightningd lifetime picks up the trace: right after the committed call that produced
// the database's data_version, skipping the superseded calls an earlier lifetime already played.
import { bumpedFrom } from '../journal/dataVersion.js';
import type { TraceEntry } from './trace.js';

export class ResumeError extends Error {}

/** The index of the first trace entry the next lifetime plays, for a database at `version`. */
export function resumeIndex(entries: readonly TraceEntry[], version: number): number {
  const first = entries.find((e) => e.kind === 'call' && e.bumps);
  const startsFrom = first?.kind === 'call' ? bumpedFrom(first.writes) : null;
  if (version === 0) {
    if (startsFrom === null || startsFrom === 0) return 0;
    throw new ResumeError(`the database is empty but the trace starts from data_version ${startsFrom}`);
  }
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i];
    if (e.kind === 'call' && e.bumps && !e.superseded && e.dataVersion === version) return i + 1;
  }
  // A chain may start mid-history (it continues a copy of a node): its first bump is from `version`.
  if (startsFrom === version) return 0;
  throw new ResumeError(`the database is at data_version ${version}, which no committed call of the trace produced`);
}

/** True when the lifetime must skip this entry: a mark, or a superseded call played already. */
export function isSkipped(entry: TraceEntry, index: number, played: ReadonlySet<number>): boolean {
  return entry.kind === 'mark' || (entry.superseded && played.has(index));
}
