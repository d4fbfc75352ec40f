// The first versions of a recorded trace as a plain .jsonl file (parsed fast by every simulator
// lifetime), for tests that replay a trace many times.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

/** Writes the entries of `trace` up to data_version `versions` (markers kept) into `dir`; returns the file. */
export function traceHead(trace: string, versions: number, dir: string): string {
  const lines = zlib.gunzipSync(fs.readFileSync(trace)).toString('utf8').split('\n');
  const kept: string[] = [];
  for (const line of lines) {
    if (line.trim() === '') continue;
    const obj = JSON.parse(line) as { data_version?: number };
    if (obj.data_version !== undefined && obj.data_version > versions) break;
    kept.push(line);
  }
  const file = path.join(dir, `${path.basename(trace).replace(/\.jsonl(\.gz)?$/, '')}-first-${versions}.jsonl`);
  fs.writeFileSync(file, kept.join('\n') + '\n');
  return file;
}
