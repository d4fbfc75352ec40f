// Reads recorded db_write traffic (traces) into typed entries, chains trace segments into one node's
// history (with data_version filters), checks that the history is continuous, and flags the calls
// the real lightningd acknowledged but never committed ("superseded": the same version comes again).
import fs from 'node:fs';
import zlib from 'node:zlib';
import { bumpedFrom, isU32, nextVersion } from '../journal/dataVersion.js';

interface Origin {
  /** The trace file and 1-based line the entry came from, for error messages. */
  source: string;
  line: number;
}

export interface CallEntry extends Origin {
  kind: 'call';
  dataVersion: number;
  writes: string[];
  /** True when the last statement bumps data_version (a real transaction). */
  bumps: boolean;
  /** True when lightningd acked this call but never committed it (set by loadTraceChain). */
  superseded: boolean;
}

export interface MarkEntry extends Origin {
  kind: 'mark';
  text: string;
}

export type TraceEntry = CallEntry | MarkEntry;

/** One trace file, optionally restricted to the calls whose data_version lies in [from, to]. */
export interface TraceSegment {
  path: string;
  from?: number;
  to?: number;
}

export class TraceFormatError extends Error {}

function parseLine(text: string, source: string, line: number): TraceEntry {
  const where = `${source}:${line}`;
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new TraceFormatError(`${where}: not JSON (${(err as Error).message})`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new TraceFormatError(`${where}: expected a JSON object`);
  }
  const rec = obj as Record<string, unknown>;
  if ('MARK' in rec) {
    if (typeof rec.MARK !== 'string' || Object.keys(rec).length !== 1) {
      throw new TraceFormatError(`${where}: a marker must be exactly {"MARK": "<text>"}`);
    }
    return { kind: 'mark', text: rec.MARK, source, line };
  }
  const { data_version: dataVersion, writes } = rec;
  if (!isU32(dataVersion)) throw new TraceFormatError(`${where}: data_version must be a u32`);
  if (!Array.isArray(writes) || !writes.every((w) => typeof w === 'string')) {
    throw new TraceFormatError(`${where}: writes must be an array of strings`);
  }
  const from = bumpedFrom(writes);
  if (from !== null && nextVersion(from) !== dataVersion) {
    throw new TraceFormatError(`${where}: data_version ${dataVersion} but the bump is from ${from}`);
  }
  return { kind: 'call', dataVersion, writes, bumps: from !== null, superseded: false, source, line };
}

/** Parses a trace's text (one JSON object per line; blank lines ignored). */
export function parseTraceText(text: string, source: string): TraceEntry[] {
  const entries: TraceEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '') entries.push(parseLine(lines[i], source, i + 1));
  }
  return entries;
}

/** Reads a `.jsonl` or gzip-compressed `.jsonl.gz` trace (detected by its magic bytes). */
export function readTraceFile(file: string): TraceEntry[] {
  const raw = fs.readFileSync(file);
  const gz = raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b;
  return parseTraceText((gz ? zlib.gunzipSync(raw) : raw).toString('utf8'), file);
}

/** Parses `FILE[@FROM-TO]` (either bound may be omitted: `@240-`, `@-42`). */
export function parseSegmentSpec(spec: string): TraceSegment {
  const at = spec.lastIndexOf('@');
  const range = at >= 0 ? /^(\d*)-(\d*)$/.exec(spec.slice(at + 1)) : null;
  if (!range) return { path: spec };
  const segment: TraceSegment = { path: spec.slice(0, at) };
  if (range[1] !== '') segment.from = Number(range[1]);
  if (range[2] !== '') segment.to = Number(range[2]);
  return segment;
}

/** The segment's entries: calls in the version range, and the marks that precede a kept call. */
function filterSegment(entries: TraceEntry[], seg: TraceSegment): TraceEntry[] {
  const inRange = (e: CallEntry): boolean => (seg.from === undefined || e.dataVersion >= seg.from) && (seg.to === undefined || e.dataVersion <= seg.to);
  const kept: TraceEntry[] = [];
  let marks: TraceEntry[] = [];
  let lastKept = false;
  for (const e of entries) {
    if (e.kind === 'mark') {
      marks.push(e);
      continue;
    }
    lastKept = inRange(e);
    if (lastKept) kept.push(...marks, e);
    marks = [];
  }
  if (lastKept) kept.push(...marks);
  return kept;
}

/** Flags every bump call followed, before any other bump, by another bump to the same version. */
function markSuperseded(entries: TraceEntry[]): void {
  let previous: CallEntry | null = null;
  for (const e of entries) {
    if (e.kind !== 'call' || !e.bumps) continue;
    if (previous && previous.dataVersion === e.dataVersion) previous.superseded = true;
    previous = e;
  }
}

/** Every bump must start from the version the history is at (superseded calls included). */
function checkContinuity(entries: TraceEntry[]): void {
  let current: number | null = null;
  for (const e of entries) {
    if (e.kind !== 'call' || !e.bumps) continue;
    const from = bumpedFrom(e.writes);
    if (current !== null && from !== current) {
      throw new TraceFormatError(
        `${e.source}:${e.line}: the history is at data_version ${current} but this call bumps from ${from}` + ' (the trace chain is not continuous)',
      );
    }
    if (!e.superseded) current = e.dataVersion;
  }
}

/** Loads the segments in order as one node history, with the superseded calls flagged. */
export function loadTraceChain(segments: readonly TraceSegment[]): TraceEntry[] {
  const entries = segments.flatMap((seg) => filterSegment(readTraceFile(seg.path), seg));
  markSuperseded(entries);
  checkContinuity(entries);
  return entries;
}
